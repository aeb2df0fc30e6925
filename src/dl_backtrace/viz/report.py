"""A self-contained HTML report (images inline as base64, graph as inline SVG, no external resources)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Report"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; } td, th { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: left; }
.num { text-align: right; font-variant-numeric: tabular-nums; } .ok { color: #1a7f37; } .bad { color: #b42318; }
.card { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; } .graph { overflow: auto; max-height: 900px; }
"""


@dataclass
class Report:
    title: str
    sections: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.sections.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str) -> None:
        self.sections.append(f"<p>{html.escape(text)}</p>")

    def raw(self, markup: str) -> None:
        """Markup built by this package (already escaped)."""
        self.sections.append(markup)

    def image(self, png: bytes, caption: str = "") -> None:
        data = base64.b64encode(png).decode()
        cap = f"<div>{html.escape(caption)}</div>" if caption else ""
        self.sections.append(f'<div class="card"><img alt="{html.escape(caption)}" '
                             f'src="data:image/png;base64,{data}">{cap}</div>')

    def table(self, header: list[str], rows: list[list[object]]) -> None:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
        self.sections.append(f"<table><tr>{head}</tr>{body}</table>")

    def conservation(self, streams: list[dict[str, Any]], note: str = "") -> None:
        """One row per stream (default: relevance; contrast: for / against): seed, inputs, sinks, error."""
        worst = max((t["error"] for t in streams), default=0.0)
        cls = "ok" if worst <= 1e-4 else "bad"  # NaN is "bad" too
        self.table(["stream", "seeded at the output", "reached the inputs", "absorbed by bias sinks",
                    "conservation error"],
                   [[t["stream"], f"{t['seed']:.4f}", f"{t['inputs']:.4f}", f"{t['sinks']:.4f}", f"{t['error']:.2e}"]
                    for t in streams])
        self.sections.append(f'<p class="{cls}">conservation error |seed - inputs - sinks| / |seed| per stream'
                             f"{'; ' + html.escape(note) if note else ''}</p>")

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        body = "\n".join(self.sections)
        path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}"
                        f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>"
                        f"{body}</body></html>")
        return path
