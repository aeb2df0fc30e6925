"""``dlbacktrace demo``: explain the bundled trained digits CNN end to end and print what it found."""

from __future__ import annotations

import argparse

import torch

from ..demo_model import load_demo
from ..pytorch_backtrace import DLBacktrace

_SHADES = " .:-=+*#%@"


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="explain a small trained model bundled with the package")
    p.add_argument("--digit", type=int, default=3, choices=range(10), help="which sample digit to explain")
    p.add_argument("--top", type=int, default=8, help="how many of the most relevant pixels to list")
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
    x = images[args.digit: args.digit + 1]
    dlb = DLBacktrace(model, (x,))
    node_io = dlb.predict(x)
    logits = node_io[list(node_io)[-1]][1][0]
    rel = dlb.evaluation(mode="default", multiplier=100.0, task="multi-class classification")
    r = rel["x"][0, 0]
    print(f"digits CNN (trained on scikit-learn digits), sample of a {int(labels[args.digit])}: "
          f"predicted {int(logits.argmax())} (p = {float(logits.softmax(-1).max()):.3f})")
    print(f"relevance: {float(rel['output'].sum()):.1f} seeded at the output; "
          f"{float(r.sum()):.2f} reached the pixels, {sum(float(s.sum()) for s in rel.bias_sinks.values()):.2f} "
          f"went to bias sinks; conservation error {rel.conservation_error:.1e}")
    print("\n  input (8x8)        relevance (~ = negative)")
    for a, b in zip(_heatmap(x[0, 0]), _heatmap(r)):
        print(f"  {a}   {b}")
    flat = r.flatten()
    top = flat.abs().argsort(descending=True)[: args.top]
    print(f"\ntop {args.top} pixels (row, col): relevance")
    for i in top.tolist():
        print(f"  ({i // 8}, {i % 8}): {float(flat[i]):+.3f}")
    return 0
