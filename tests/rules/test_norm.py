"""Norms are identity on x (3.4, 7.9): fused ops and the decomposed RMSNorm; a hand-written LayerNorm goes
through the generic rules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.helpers import random_seed, run_seed


class ManualRMS(nn.Module):
    def __init__(self, cast: bool) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.rand(6) + 0.5)
        self.cast = cast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(torch.float32) if self.cast else x
        var = h.pow(2).mean(-1, keepdim=True)
        return self.w * (h * torch.rsqrt(var + 1e-6)).to(x.dtype)


@pytest.mark.parametrize("norm", [nn.LayerNorm(6), nn.RMSNorm(6), ManualRMS(False), ManualRMS(True),
                                  nn.GroupNorm(2, 6)], ids=["layer_norm", "rms_norm", "rms_manual",
                                                            "rms_manual_cast", "group_norm"])
def test_norm_is_identity_on_x(norm: nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, generator=gen) * 2
    res = run_seed(norm, (x,), random_seed(gen))
    assert torch.allclose(res.input(), res.seed, atol=1e-6)
    assert not res.prop.sinks or res.sink_total() == 0.0


class HandLayerNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + 1e-5)


def test_hand_written_layer_norm_uses_generic_rules() -> None:
    """sub of two activations (x - mean) is a contribution node, the quotient goes to the numerator: relevance is
    conserved without any special case, and it is not the identity."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, generator=gen)
    res = run_seed(HandLayerNorm(), (x,), random_seed(gen))
    assert abs(float(res.input().sum()) + res.sink_total() - float(res.seed.sum())) < 1e-4
    assert not torch.allclose(res.input(), res.seed)
