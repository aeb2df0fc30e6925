"""RELEVANCE.md section 5: with all weights, biases and inputs >= 0, default mode equals the LRP-0 (z) rule
R_in_i = sum_j c_ij / (sum_i c_ij + b_j) R_j, written here layer by layer."""

from __future__ import annotations

import torch
from torch import nn

from dl_backtrace.pytorch_backtrace import DLBacktrace


def _lrp0_linear(x: torch.Tensor, layer: nn.Linear, r: torch.Tensor) -> torch.Tensor:
    z = x @ layer.weight.T + layer.bias  # (B, out)
    return x * ((r / z) @ layer.weight)


def _lrp0_conv(x: torch.Tensor, layer: nn.Conv2d, r: torch.Tensor) -> torch.Tensor:
    xr = x.clone().requires_grad_(True)
    z = layer(xr)
    (g,) = torch.autograd.grad(z, xr, grad_outputs=r / z)
    return x * g


def test_non_negative_network_equals_lrp0() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    fc1, fc2 = nn.Linear(3 * 4 * 4, 6), nn.Linear(6, 3)
    with torch.no_grad():
        for p in [*conv.parameters(), *fc1.parameters(), *fc2.parameters()]:
            p.abs_()
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), fc1, nn.Tanh(), fc2).eval()
    x = torch.rand(2, 2, 4, 4)
    dlb = DLBacktrace(model, (x,))
    dlb.predict(x)
    rel = dlb.evaluation(task="classification")
    with torch.no_grad():
        h1 = torch.relu(conv(x))
        h2 = torch.tanh(fc1(h1.flatten(1)))
        y = fc2(h2)
    seed = torch.zeros_like(y).scatter_(1, y.argmax(1, keepdim=True), 100.0)
    r2 = _lrp0_linear(h2, fc2, seed)
    r1 = _lrp0_linear(h1.flatten(1), fc1, r2).reshape(h1.shape)
    r0 = _lrp0_conv(x, conv, r1)
    assert torch.allclose(rel.input_relevance, r0.detach(), rtol=1e-4, atol=1e-5)
