"""RELEVANCE.md section 6, checked by hand in both modes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dl_backtrace.pytorch_backtrace import DLBacktrace


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.4, -0.5]]))
            self.fc.bias.copy_(torch.tensor([0.1, -0.2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


@pytest.fixture()
def dlb() -> DLBacktrace:
    x = torch.tensor([[1.0, 2.0, 3.0]])
    d = DLBacktrace(Tiny(), (x,))
    out = d.predict(x)["output"][1]
    assert torch.allclose(out, torch.tensor([[1.8, -0.8]]))
    return d


def test_default_mode_by_hand(dlb: DLBacktrace) -> None:
    rel = dlb.evaluation(mode="default", multiplier=100.0, task="multi-class classification", target=1)
    # unit 2: c = (0.1, 0.8, -1.5), P = 0.9, N = 1.5, |b| = 0.2, D = 2.6
    expected = torch.tensor([0.1, 0.8, 1.5]) * 100.0 / 2.6
    assert torch.allclose(rel["x"][0], expected, atol=1e-4)
    assert torch.allclose(rel.bias_sinks["linear"][0], torch.tensor([0.0, 100.0 * 0.2 / 2.6]), atol=1e-4)
    assert abs(float(rel["x"].sum()) + float(rel.bias_sinks["linear"].sum()) - 100.0) < 1e-4
    assert rel.conservation_error < 1e-6


def test_contrast_mode_by_hand(dlb: DLBacktrace) -> None:
    rel = dlb.evaluation(mode="contrast", multiplier=100.0, task="multi-class classification", target=0)
    seed = rel["output"]
    # c = 100 / 1.8; R+ = (100, 0); R- = (0, c * -0.8)
    assert torch.allclose(seed.positive[0], torch.tensor([100.0, 0.0]))
    assert torch.allclose(seed.negative[0], torch.tensor([0.0, -0.8 * 100.0 / 1.8]), atol=1e-4)
    # unit 1 only positive (0.5, 0.6, 0.6): both streams ∝ c/P; unit 2 mixed, t < 0, R+ = 0 >= R- -> crossed
    pos = torch.tensor([0.5, 0.6, 0.6]) / 1.7 * 100.0
    neg = torch.tensor([0.1, 0.8, 0.0]) / 0.9 * (-0.8 * 100.0 / 1.8)
    assert torch.allclose(rel["x"].positive[0], pos, atol=1e-3)
    assert torch.allclose(rel["x"].negative[0], neg, atol=1e-3)
    assert torch.allclose(rel["x"].positive[0], torch.tensor([29.412, 35.294, 35.294]), atol=1e-3)
    assert torch.allclose(rel["x"].negative[0], torch.tensor([-4.938, -39.506, 0.0]), atol=1e-3)
    assert torch.allclose(rel["x"].net[0], pos - neg, atol=1e-3)
