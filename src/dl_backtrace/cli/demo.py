"""``dlbacktrace demo``: explain the bundled trained digits CNN end to end and write an HTML report."""

from __future__ import annotations

import argparse

import torch

from ..demo_model import load_demo
from ..pytorch_backtrace import DLBacktrace
from ..reporting import write_report

_SHADES = " .:-=+*#%@"


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="explain a small trained model bundled with the package (writes a report)")
    p.add_argument("--digit", type=int, default=3, choices=range(10), help="which sample digit to show here")
    p.add_argument("--top", type=int, default=8, help="how many of the most relevant pixels to list")
    p.add_argument("--mode", default="default", choices=["default", "contrast"])
    p.add_argument("--out", default="dlbacktrace-demo", help="folder for report.html (default: dlbacktrace-demo)")
    p.set_defaults(func=run_demo)


def _heatmap(r: torch.Tensor) -> list[str]:
    scale = float(r.abs().max()) or 1.0
    rows = []
    for row in r:
        cells = []
        for v in row.tolist():
            k = min(int(abs(v) / scale * (len(_SHADES) - 1) + 0.5), len(_SHADES) - 1)
            cells.append((_SHADES[k] if v >= 0 else "~") * 2)
        rows.append("".join(cells))
    return rows


def run_demo(args: argparse.Namespace) -> int:
    model, images, labels = load_demo()
    dlb = DLBacktrace(model, (images,))
    node_io = dlb.predict(images)
    rel = dlb.evaluation(mode=args.mode, multiplier=100.0, task="multi-class classification")
    logits = node_io[list(node_io)[-1]][1]
    d = args.digit
    x_rel = rel["x"].net if args.mode == "contrast" else rel["x"]
    r = x_rel[d, 0]
    correct = int((logits.argmax(1) == labels).sum())
    print(f"digits CNN (trained on scikit-learn digits): {correct}/10 sample digits classified correctly")
    print(f"sample of a {int(labels[d])}: predicted {int(logits[d].argmax())} (p = "
          f"{float(logits[d].softmax(-1).max()):.3f})")
    print("relevance of the whole batch of 10, per stream:")
    for line in rel.describe().splitlines():
        print(f"  {line}")
    print("\n  input (8x8)        relevance (~ = negative)")
    for a, b in zip(_heatmap(images[d, 0]), _heatmap(r)):
        print(f"  {a}   {b}")
    flat = r.flatten()
    print(f"\ntop {args.top} pixels (row, col): relevance")
    for i in flat.abs().argsort(descending=True)[: args.top].tolist():
        print(f"  ({i // 8}, {i % 8}): {float(flat[i]):+.3f}")
    path = write_report(dlb, rel, {"x": images}, args.out, "dl_backtrace demo: a digits CNN explained",
                        labels=[str(k) for k in range(10)])
    print(f"\nreport written to {path.resolve()}")
    return 0
