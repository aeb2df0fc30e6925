"""Mixture-of-Experts maps: layers x experts (relevance through each expert, one example), as an HTML table with
the token count of each cell, or a PNG. Colours as elsewhere: red positive, blue negative."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import torch

from .tokens import _rgb, write_map

__all__ = ["experts_html", "visualize_expert_relevance"]


def _grid(experts: dict[str, Any], example: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    layers = list(experts)
    width = max((int(ex.per_expert.shape[-1]) for ex in experts.values()), default=0)
    rel = torch.full((len(layers), width), float("nan"))
    count = torch.zeros((len(layers), width), dtype=torch.int64)
    for i, ex in enumerate(experts.values()):
        e = int(ex.per_expert.shape[-1])
        rel[i, :e] = ex.per_expert[example].detach().float().cpu()
        count[i, :e] = ex.tokens_per_expert[example].cpu()
    return layers, rel, count


def experts_html(experts: dict[str, Any], example: int = 0) -> str:
    """One row per MoE layer, one cell per expert: its relevance (colour, value) and how many tokens it got."""
    layers, rel, count = _grid(experts, example)
    scale = float(rel.nan_to_num(0).abs().max()) if rel.numel() else 0.0
    head = "".join(f"<th>{e}</th>" for e in range(rel.shape[1]))
    rows = []
    for i, name in enumerate(layers):
        cells = []
        for e in range(rel.shape[1]):
            v = float(rel[i, e])
            if v != v:  # this layer has fewer experts
                cells.append("<td></td>")
                continue
            r, g, b = _rgb(v, scale)
            cells.append(f'<td title="{int(count[i, e])} tokens" style="background: rgb({r},{g},{b}); '
                         f'padding: 2px 6px; text-align: right">{v:.3g}<br><small>{int(count[i, e])}</small></td>')
        rows.append(f"<tr><td>{html.escape(name)}</td>{''.join(cells)}</tr>")
    return (f'<table class="dlb-experts"><tr><th>layer \\ expert</th>{head}</tr>{"".join(rows)}</table>'
            "<p><small>cell: relevance through the expert (tokens routed to it below)</small></p>")


def visualize_expert_relevance(experts: dict[str, Any], output_path: str | Path = "experts.html",
                               example: int = 0) -> Path:
    """Write the layers x experts map of ``expert_relevance()`` (HTML, or PNG by suffix)."""
    return write_map(output_path, lambda: experts_html(experts, example), lambda p: _png(experts, p, example))


def _png(experts: dict[str, Any], path: Path, example: int) -> Path:
    from .heatmap import _plt

    plt = _plt()
    layers, rel, _ = _grid(experts, example)
    lim = float(rel.nan_to_num(0).abs().max()) or 1.0
    fig, ax = plt.subplots(figsize=(max(4, rel.shape[1] * 0.4 + 3), max(2, len(layers) * 0.35 + 1)))
    im = ax.imshow(rel, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_yticks(range(len(layers)), layers, fontsize=7)
    ax.set_xlabel("expert")
    fig.colorbar(im, ax=ax, label="relevance")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
