"""The small trained model bundled for the demo: a CNN for scikit-learn's 8x8 handwritten digits.

Weights and ten sample images live in ``data/digits_cnn.pt`` (plain tensors, loaded with
``torch.load(weights_only=True)``: no pickled code). ``scripts/train_demo_model.py`` rebuilds the file.
"""

from __future__ import annotations

from importlib import resources

import torch
from torch import nn

__all__ = ["DigitsCNN", "load_demo"]


class DigitsCNN(nn.Module):
    """conv(1->8) relu, conv(8->16) relu, maxpool 2, linear(16*4*4 -> 32) relu, linear(32 -> 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x))
        h = self.pool(torch.relu(self.conv2(h)))
        return self.fc2(torch.relu(self.fc1(h.flatten(1))))


def load_demo() -> tuple[DigitsCNN, torch.Tensor, torch.Tensor]:
    """(trained model in eval mode, sample images (10, 1, 8, 8) scaled to [0, 1], their labels)."""
    path = resources.files("dl_backtrace") / "data" / "digits_cnn.pt"
    with resources.as_file(path) as p:
        blob = torch.load(p, weights_only=True)
    model = DigitsCNN()
    model.load_state_dict(blob["state_dict"])
    return model.eval(), blob["images"], blob["labels"]
