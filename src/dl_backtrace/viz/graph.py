"""Graph pictures: the whole traced graph, or only its top-k most relevant nodes.

Data-movement chains (view, permute, getitem, ...) and constants are folded away so a ResNet-sized graph stays
readable. Drawn with graphviz when the ``dot`` program is installed; otherwise laid out here (layers by depth)
and written as SVG directly, or as PNG through matplotlib.
"""

from __future__ import annotations

import html
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.fx import Node

from ..analysis import Analysis, node_location
from ..rules import RULES
from ..rules.registry import Pair

__all__ = ["GraphView", "graph_view", "top_k_view", "write_graph"]


@dataclass
class GraphView:
    """Boxes (node name -> label, share of relevance) and edges between them."""

    labels: dict[str, str] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)


def _magnitude(v: Any) -> float:
    t = v.net if isinstance(v, Pair) else v
    return float(t.detach().abs().sum()) if isinstance(t, torch.Tensor) else 0.0


def _short(n: Node) -> str:
    target = str(n.target).replace("aten.", "").split(".")[0] if n.op == "call_function" else n.op
    return target.replace("<built-in function ", "").rstrip(">")


def _label(n: Node, share: float | None) -> str:
    module = node_location(n)[0]
    text = f"{n.name}\\n{_short(n)}" + (f" [{module}]" if module else "")
    return text + (f"\\n{100 * share:.1f}%" if share is not None else "")


def _folded(n: Node, a: Analysis) -> bool:
    """Constants and data movement with one live input disappear from the picture."""
    if n.op in ("output", "get_attr") or not a.is_live(n):
        return True
    rule = RULES.get(n.target) if n.op == "call_function" else None
    live_inputs = [m for m in n.all_input_nodes if a.is_live(m)]
    return rule is not None and rule.family == "shape" and len(live_inputs) == 1


def _visible_parents(n: Node, keep: set[Node], a: Analysis, memo: dict[Node, set[Node]]) -> set[Node]:
    if n in memo:
        return memo[n]
    out: set[Node] = set()
    for m in n.all_input_nodes:
        if m in keep:
            out.add(m)
        elif a.is_live(m):
            out |= _visible_parents(m, keep, a, memo)
    memo[n] = out
    return out


def _view(graph: torch.fx.Graph, a: Analysis, keep: set[Node], relevance: dict[str, Any] | None) -> GraphView:
    total = _magnitude(relevance["output"]) if relevance and "output" in relevance else 0.0
    view = GraphView()
    memo: dict[Node, set[Node]] = {}
    for n in graph.nodes:
        if n not in keep:
            continue
        share = (_magnitude(relevance[n.name]) / total if total and n.name in relevance else None) if relevance \
            else None
        view.labels[n.name] = _label(n, share)
        view.shares[n.name] = share or 0.0
        view.edges += [(p.name, n.name) for p in sorted(_visible_parents(n, keep, a, memo), key=lambda m: m.name)]
    return view


def graph_view(graph: torch.fx.Graph, a: Analysis, relevance: dict[str, Any] | None = None) -> GraphView:
    """The whole graph, data movement and constants folded."""
    return _view(graph, a, {n for n in graph.nodes if not _folded(n, a)}, relevance)


def top_k_view(graph: torch.fx.Graph, a: Analysis, relevance: dict[str, Any], top_k: int | None = 15,
               threshold: float | None = None) -> GraphView:
    """The ``top_k`` nodes by relevance magnitude (share of the output's) at or above ``threshold``."""
    total = _magnitude(relevance.get("output")) or 1.0
    scored = [(n, _magnitude(relevance[n.name]) / total) for n in graph.nodes
              if n.name in relevance and not _folded(n, a)]
    if threshold is not None:
        scored = [(n, s) for n, s in scored if s >= threshold]
    scored.sort(key=lambda p: -p[1])
    keep = {n for n, _ in (scored if top_k is None else scored[:top_k])}
    return _view(graph, a, keep, relevance)


def _layers(view: GraphView) -> dict[str, int]:
    depth: dict[str, int] = {}
    parents: dict[str, list[str]] = {k: [] for k in view.labels}
    for src, dst in view.edges:
        parents[dst].append(src)
    for name in view.labels:  # labels are in graph (topological) order
        depth[name] = 1 + max((depth[p] for p in parents[name]), default=-1)
    return depth


def _layout(view: GraphView) -> tuple[dict[str, tuple[float, float]], float, float]:
    depth = _layers(view)
    rows: dict[int, list[str]] = {}
    for name, d in depth.items():
        rows.setdefault(d, []).append(name)
    width = max((len(r) for r in rows.values()), default=1) * 230.0 + 40
    pos = {}
    for d, names in rows.items():
        for i, name in enumerate(names):
            pos[name] = (20 + (i + 0.5) * (width - 40) / len(names), 40 + d * 90.0)
    return pos, width, 80 + max(rows, default=0) * 90.0 + 40


def _color(share: float) -> str:
    s = max(0.0, min(1.0, share))
    return f"rgb({255},{int(255 - 170 * s)},{int(255 - 220 * s)})"


def to_svg(view: GraphView) -> str:
    pos, width, height = _layout(view)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
             f'font-family="sans-serif" font-size="11">']
    for src, dst in view.edges:
        (x1, y1), (x2, y2) = pos[src], pos[dst]
        parts.append(f'<line x1="{x1:.0f}" y1="{y1 + 22:.0f}" x2="{x2:.0f}" y2="{y2 - 22:.0f}" stroke="#888"/>')
    for name, label in view.labels.items():
        x, y = pos[name]
        parts.append(f'<rect x="{x - 105:.0f}" y="{y - 22:.0f}" width="210" height="44" rx="6" '
                     f'fill="{_color(view.shares[name])}" stroke="#444"/>')
        for i, line in enumerate(label.split("\\n")):
            parts.append(f'<text x="{x:.0f}" y="{y - 8 + 13 * i:.0f}" text-anchor="middle">'
                         f"{html.escape(line[:38])}</text>")
    parts.append("</svg>")
    return "\n".join(parts)


def to_dot(view: GraphView) -> str:
    lines = ["digraph G {", '  node [shape=box, style="rounded,filled", fontname="sans-serif", fontsize=10];']
    for name, label in view.labels.items():
        r = int(255 - 170 * min(1.0, view.shares[name]))
        lines.append(f'  "{name}" [label="{label}", fillcolor="#ff{r:02x}{r:02x}"];')
    lines += [f'  "{s}" -> "{d}";' for s, d in view.edges]
    return "\n".join(lines + ["}"])


def _png_matplotlib(view: GraphView, path: Path) -> None:
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError(f"writing {path.name} as PNG needs matplotlib: pip install 'dl_backtrace[viz]' (or save "
                          "as .svg or .dot, which need nothing)") from e

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos, width, height = _layout(view)
    fig = plt.figure(figsize=(max(4.0, width / 100), max(3.0, height / 100)), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    for src, dst in view.edges:
        ax.plot([pos[src][0], pos[dst][0]], [pos[src][1] + 22, pos[dst][1] - 22], color="#888", lw=0.8)
    for name, label in view.labels.items():
        x, y = pos[name]
        s = max(0.0, min(1.0, view.shares[name]))
        ax.add_patch(plt.Rectangle((x - 105, y - 22), 210, 44, fc=(1, 1 - 0.67 * s, 1 - 0.86 * s), ec="#444"))
        ax.text(x, y, label.replace("\\n", "\n"), ha="center", va="center", fontsize=7)
    fig.savefig(path)
    plt.close(fig)


def write_graph(view: GraphView, path: str | Path) -> Path:
    """Write ``view`` as .svg, .png or .dot (by suffix; none means .png)."""
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    fmt = path.suffix.lower().lstrip(".")
    dot = shutil.which("dot")
    if fmt == "dot":
        path.write_text(to_dot(view))
    elif dot is not None and fmt in ("svg", "png", "pdf"):
        subprocess.run([dot, f"-T{fmt}", "-o", str(path)], input=to_dot(view), text=True, check=True)
    elif fmt == "svg":
        path.write_text(to_svg(view))
    elif fmt == "png":
        _png_matplotlib(view, path)
    else:
        raise ValueError(f"graph files are .svg, .png or .dot, not {path.suffix!r}")
    return path
