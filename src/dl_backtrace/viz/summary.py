"""How a :class:`~dl_backtrace.results.Relevance` shows itself: an HTML summary (notebooks) and a terminal one."""

from __future__ import annotations

import html
from typing import Any

from .graph import _magnitude
from .tokens import tokens_ansi, tokens_html

__all__ = ["summary_html", "summary_text", "top_nodes"]


def top_nodes(res: Any, k: int = 10) -> list[tuple[str, float]]:
    """(node, share of the output's relevance magnitude), largest first; inputs and the seed excluded."""
    total = _magnitude(res.get("output")) or 1.0
    skip = set(res.input_names) | {"output"}
    scored = [(name, _magnitude(v) / total) for name, v in res.items() if name not in skip]
    return sorted(scored, key=lambda p: -p[1])[:k]


def _token_rows(res: Any, html_out: bool) -> list[str]:
    if not res.tokens or "input_ids" not in res:
        return []
    rel = res["input_ids"]
    out = []
    for b, toks in enumerate(res.tokens):
        row = rel[b] if not isinstance(rel, tuple) else type(rel)(rel[0][b], rel[1][b])
        out.append(tokens_html(toks, row) if html_out else tokens_ansi(toks, row))
    return out


def summary_html(res: Any) -> str:
    rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{res.modules.get(n, '') if hasattr(res, 'modules') else ''}"
                   f"</td><td>{100 * s:.1f}%</td></tr>" for n, s in top_nodes(res))
    tokens = "".join(_token_rows(res, True))
    streams = "<br>".join(html.escape(line) for line in res.describe().splitlines())
    return (f"<div><b>Relevance</b> mode={html.escape(res.mode)}, task={html.escape(str(res.task))}, "
            f"conservation error {res.conservation_error:.2e}, inputs {html.escape(', '.join(res.input_names))}"
            f"<br>{streams}{tokens}<table><tr><th>node</th><th>module</th><th>share</th></tr>{rows}</table></div>")


def summary_text(res: Any) -> str:
    lines = [f"Relevance: mode={res.mode} task={res.task} conservation error {res.conservation_error:.2e}"]
    lines += [f"  {line}" for line in res.describe().splitlines()]
    for name in res.input_names:
        v = res[name]
        t = v.net if isinstance(v, tuple) else v
        lines.append(f"  input {name}: shape {tuple(t.shape)}, sum {float(t.sum()):.4g}")
    lines += _token_rows(res, False)
    lines.append("  most relevant nodes:")
    lines += [f"    {name:30s} {100 * s:6.1f}%" for name, s in top_nodes(res)]
    return "\n".join(lines)
