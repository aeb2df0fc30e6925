"""Token heatmaps: HTML (every token escaped) and terminal (24-bit ANSI colours); for generation a tokens x
steps map. Colours: red for positive relevance, blue for negative, intensity by magnitude."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..rules.registry import Pair

__all__ = ["tokens_html", "tokens_ansi", "generation_html", "visualize_tokenwise_relevance_map"]


def _values(scores: Any) -> list[float]:
    t = scores.net if isinstance(scores, Pair) else scores
    if isinstance(t, Tensor):
        return [float(v) for v in t.detach().float().cpu().reshape(-1)]
    return [float(v) for v in t]


def _rgb(v: float, scale: float) -> tuple[int, int, int]:
    a = min(1.0, abs(v) / scale) if scale > 0 else 0.0
    return (255, int(255 - 200 * a), int(255 - 200 * a)) if v >= 0 else (int(255 - 200 * a), int(255 - 200 * a), 255)


def tokens_html(tokens: list[str], scores: Any, title: str | None = None) -> str:
    """One line of tokens, each with a background by its relevance and the value in its tooltip."""
    vals = _values(scores)
    scale = max((abs(v) for v in vals), default=0.0)
    spans = []
    for tok, v in zip(tokens, vals):
        r, g, b = _rgb(v, scale)
        spans.append(f'<span class="tok" title="{v:.4g}" style="background: rgb({r},{g},{b}); padding: 1px 2px; '
                     f'margin: 1px; border-radius: 3px">{html.escape(tok)}</span>')
    head = f"<div><b>{html.escape(title)}</b></div>" if title else ""
    return f'<div class="dlb-tokens">{head}{"".join(spans)}</div>'


def tokens_ansi(tokens: list[str], scores: Any) -> str:
    """The same for a terminal (24-bit colour escapes)."""
    vals = _values(scores)
    scale = max((abs(v) for v in vals), default=0.0)
    out = []
    for tok, v in zip(tokens, vals):
        r, g, b = _rgb(v, scale)
        out.append(f"\x1b[48;2;{r};{g};{b}m\x1b[30m{tok}\x1b[0m")
    return " ".join(out)


def generation_html(trace: list[dict[str, Any]], example: int = 0) -> str:
    """Tokens x steps: one row per explained step, its relevance over the sequence that preceded the token."""
    rows = []
    for entry in trace:
        rel = entry["relevance"]
        r = (rel.net if isinstance(rel, Pair) else rel)[example]
        toks = entry["tokens"][example] if entry.get("tokens") else [str(i) for i in range(r.shape[-1])]
        token = entry["token"][example] if entry.get("token") else str(entry["token_id"][example])
        rows.append(f"<tr><td>{entry['step']}</td><td><b>{html.escape(token)}</b></td>"
                    f"<td>{tokens_html(toks, r)}</td></tr>")
    return ('<table class="dlb-generation"><tr><th>step</th><th>token</th><th>relevance of the preceding '
            f'tokens</th></tr>{"".join(rows)}</table>')


def write_map(output_path: str | Path, page: Callable[[], str], png: Callable[[Path], Path]) -> Path:
    """Write a map as PNG when the path ends in .png, else as an HTML page around ``page()``."""
    path = Path(output_path)
    if path.suffix.lower() == ".png":
        return png(path)
    path.write_text(f"<!doctype html><meta charset='utf-8'><body>{page()}</body>")
    return path


def visualize_tokenwise_relevance_map(trace: list[dict[str, Any]], output_path: str | Path = "token_map.html",
                                      example: int = 0) -> Path:
    """Write the tokens x steps map of a generation's ``relevance_trace`` (HTML, or PNG by suffix)."""
    return write_map(output_path, lambda: generation_html(trace, example), lambda p: _png(trace, p, example))


def _png(trace: list[dict[str, Any]], path: Path, example: int) -> Path:
    from .heatmap import _plt

    plt = _plt()
    width = max(e["relevance"][0].shape[-1] if isinstance(e["relevance"], Pair) else e["relevance"].shape[-1]
                for e in trace)
    grid = torch.full((len(trace), width), float("nan"))
    for i, e in enumerate(trace):
        r = e["relevance"].net if isinstance(e["relevance"], Pair) else e["relevance"]
        grid[i, : r.shape[-1]] = r[example].float().cpu()
    lim = float(grid.nan_to_num(0).abs().max()) or 1.0
    fig, ax = plt.subplots(figsize=(max(4, width * 0.4), max(2, len(trace) * 0.4)))
    ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xlabel("position")
    ax.set_ylabel("generated step")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
