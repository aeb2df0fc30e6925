"""Train the demo model on scikit-learn's digits and write src/dl_backtrace/data/digits_cnn.pt.

Run once (needs scikit-learn): python scripts/train_demo_model.py. Deterministic (seeded, CPU)."""

from __future__ import annotations

from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn

from dl_backtrace.demo_model import DigitsCNN

OUT = Path(__file__).resolve().parents[1] / "src" / "dl_backtrace" / "data" / "digits_cnn.pt"


def main() -> None:
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(digits.target)
    perm = torch.randperm(len(x))
    x, y = x[perm], y[perm]
    train, test = slice(0, 1500), slice(1500, None)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _epoch in range(40):
        model.train()
        for i in range(0, 1500, 64):
            xb, yb = x[train][i:i + 64], y[train][i:i + 64]
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(x[test]).argmax(1) == y[test]).float().mean())
    print(f"held-out accuracy: {acc:.3f} on {len(y[test])} images")
    idx = torch.stack([torch.nonzero(y[test] == d)[0, 0] for d in range(10)])
    blob = {"state_dict": model.state_dict(), "images": x[test][idx].clone(), "labels": y[test][idx].clone(),
            "accuracy": torch.tensor(acc)}
    torch.save(blob, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
