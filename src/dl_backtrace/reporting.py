"""Explanation reports: what ``dlbacktrace demo`` and ``dlbacktrace explain`` write (report.html and a relevance
file), built from a DLBacktrace after predict + evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .relevance_io import save_relevance
from .results import Relevance
from .rules.registry import Pair
from .viz.graph import _magnitude, to_svg, top_k_view
from .viz.heatmap import heatmap_png
from .viz.report import Report
from .viz.summary import top_nodes
from .viz.tokens import tokens_html

__all__ = ["write_report", "summary_line"]


def summary_line(rel: Relevance) -> str:
    """What a terminal shows after an explanation: every stream's seed, inputs, sinks and error."""
    return rel.describe()


def _total(v: Any) -> float:
    t = v.positive if isinstance(v, Pair) else v
    return float(t.sum()) if isinstance(t, torch.Tensor) else 0.0


def _predictions(report: Report, logits: torch.Tensor, labels: list[str] | None) -> None:
    if logits.dim() != 2:
        report.paragraph(f"output shape {tuple(logits.shape)}")
        return
    probs = logits.float().softmax(-1)
    rows = []
    for b in range(logits.shape[0]):
        k = int(probs[b].argmax())
        rows.append([b, labels[k] if labels else k, f"{float(probs[b, k]):.3f}"])
    report.table(["example", "predicted", "probability"], rows)


def _inputs(report: Report, rel: Relevance, inputs: dict[str, torch.Tensor], tokens: list[list[str]] | None) -> None:
    for name, x in inputs.items():
        r = rel.get(name)
        if r is None:
            continue
        if x.is_floating_point() and x.dim() == 4:
            for b in range(min(x.shape[0], 10)):
                rb = Pair(r.positive[b], r.negative[b]) if isinstance(r, Pair) else r[b]
                report.image(heatmap_png(x[b], rb), f"{name}[{b}]: relevance {_total(rb):.2f}")
        elif tokens is not None and name == "input_ids":
            for b, toks in enumerate(tokens):
                rb = Pair(r.positive[b], r.negative[b]) if isinstance(r, Pair) else r[b]
                report.raw(tokens_html(toks, rb, f"example {b}"))


def write_report(dlb: Any, rel: Relevance, inputs: dict[str, torch.Tensor], out_dir: str | Path, title: str,
                 labels: list[str] | None = None, tokens: list[list[str]] | None = None, top_k: int = 15) -> Path:
    """Write ``out_dir/report.html`` (prediction, input heatmaps, top-k graph, conservation, top nodes) and
    ``out_dir/relevance.safetensors``; returns the report's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(title)
    report.heading("Prediction")
    _predictions(report, dlb.node_io["output"][1], labels)
    report.heading("Conservation")
    note = rel.describe().splitlines()[-1] if rel.mode == "contrast" else ""
    report.conservation(rel.stream_totals(), note)
    report.heading(f"Input relevance ({rel.mode} mode)")
    _inputs(report, rel, inputs, tokens)
    report.heading(f"The {top_k} most relevant nodes")
    prog = dlb.engine.program
    report.raw(f'<div class="graph">{to_svg(top_k_view(prog.traced.graph, prog.analysis, rel, top_k))}</div>')
    total = _magnitude(rel["output"]) or 1.0
    modules = getattr(rel, "modules", {})
    rows = [[n, modules.get(n, ""), f"{100 * s:.1f}%"] for n, s in top_nodes(rel, top_k)]
    report.table(["node", "module", "share of |relevance|"],
                 rows + [["(output)", "", f"{100 * _magnitude(rel['output']) / total:.0f}%"]])
    save_relevance(rel, out / "relevance.safetensors")
    report.paragraph("All node relevance is in relevance.safetensors (dl_backtrace.load_relevance reads it).")
    return report.write(out / "report.html")
