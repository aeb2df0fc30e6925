"""Property tests: random small MLP/CNN graphs (random widths, activations, residual adds) conserve relevance in
both modes, never produce NaN/inf, and explain a batch exactly as its examples one by one."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from dl_backtrace.pytorch_backtrace import DLBacktrace

ACTS = [nn.ReLU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.GELU, nn.Identity, nn.Hardswish, nn.LeakyReLU]


class RandomNet(nn.Module):
    def __init__(self, widths: list[int], acts: list[int], residual: list[bool], conv: bool, classes: int) -> None:
        super().__init__()
        self.conv = conv
        self.stem = nn.Conv1d(2, widths[0], 3, padding=1) if conv else nn.Linear(6, widths[0])
        self.layers = nn.ModuleList()
        self.acts = nn.ModuleList(ACTS[a]() for a in acts)
        self.residual = residual
        w_in = widths[0]
        for w_out, res in zip(widths[1:] + [widths[-1]], residual):
            w_out = w_in if res else w_out
            self.layers.append(nn.Conv1d(w_in, w_out, 3, padding=1) if conv else nn.Linear(w_in, w_out))
            w_in = w_out
        self.head = nn.Linear(w_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for layer, act, res in zip(self.layers, self.acts, self.residual):
            out = act(layer(h))
            h = out + h if res else out
        if self.conv:
            h = h.mean(-1)
        return self.head(h)


@st.composite
def nets(draw: st.DrawFn) -> tuple[RandomNet, torch.Tensor]:
    depth = draw(st.integers(1, 4))
    widths = draw(st.lists(st.integers(2, 9), min_size=depth, max_size=depth))
    acts = draw(st.lists(st.integers(0, len(ACTS) - 1), min_size=depth, max_size=depth))
    residual = draw(st.lists(st.booleans(), min_size=depth, max_size=depth))
    conv = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    net = RandomNet(widths, acts, residual, conv, draw(st.integers(2, 5))).eval()
    scale = draw(st.sampled_from([0.5, 1.0, 4.0]))
    x = torch.randn(2, 2, 7) * scale if conv else torch.randn(2, 6) * scale
    return net, x


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nets(), st.sampled_from(["default", "contrast"]))
def test_random_graphs_conserve_and_batch_equals_single(case: tuple[RandomNet, torch.Tensor], mode: str) -> None:
    net, x = case
    dlb = DLBacktrace(net, (x,))
    dlb.predict(x)
    rel = dlb.evaluation(mode=mode, task="classification")
    assert rel.conservation_error <= 1e-4
    streams = (lambda v: [v.positive, v.negative]) if mode == "contrast" else (lambda v: [v])
    for v in rel.values():
        for t in streams(v):
            assert torch.isfinite(t).all()
    for b in range(x.shape[0]):
        dlb.predict(x[b:b + 1])
        one = dlb.evaluation(mode=mode, task="classification")
        for a, c in zip(streams(rel["x"]), streams(one["x"])):
            tol = 1e-5 * max(float(c.abs().max()), 1e-3)
            assert torch.allclose(a[b], c[0], atol=tol)
