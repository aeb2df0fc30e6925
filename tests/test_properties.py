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


def _extreme(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Inputs at the edges of float32: subnormal (1e-39), huge (1e30) and mixed scales in one example."""
    if kind == "subnormal":
        return x * 1e-39
    if kind == "huge":
        return x * 1e30
    scales = torch.tensor([1e-37, 1.0, 1e25, 1e-40, 3e3, 1e-20])
    return x * scales[torch.arange(x.shape[-1]) % len(scales)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nets(), st.sampled_from(["default", "contrast"]), st.sampled_from(["subnormal", "huge", "mixed"]))
def test_extreme_value_scales_stay_finite_and_conserve(case: tuple[RandomNet, torch.Tensor], mode: str,
                                                       kind: str) -> None:
    net, x = case
    x = _extreme(x, kind)
    y = net(x)
    if not torch.isfinite(y).all():  # the model itself overflowed: nothing to explain
        return
    dlb = DLBacktrace(net, (x,))
    dlb.predict(x)
    rel = dlb.evaluation(mode=mode, task="classification")
    assert rel.non_finite is None
    for v in rel.values():
        for t in ([v.positive, v.negative] if mode == "contrast" else [v]):
            assert torch.isfinite(t).all()
    assert rel.conservation_error <= 1e-4


def test_subnormal_pools_in_contrast_mode_are_finite() -> None:
    """The two cases the real-use probe found: a subnormal input through Linear -> Linear, and a sigmoid output
    of ~6e-39 (its pre-activation far below the range), in both modes."""
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Linear(2, 1), nn.Linear(1, 2)).eval()
    sig = nn.Sequential(nn.Linear(3, 2), nn.Sigmoid(), nn.Linear(2, 3)).eval()
    with torch.no_grad():
        sig[0].weight.fill_(1.0)
        sig[0].bias.fill_(-88.0)
    for net, x in ((lin, torch.tensor([[1e-37, 1.0]])), (sig, torch.tensor([[0.1, 0.2, 0.3]]))):
        for mode in ("default", "contrast"):
            dlb = DLBacktrace(net, (x,))
            dlb.predict(x)
            rel = dlb.evaluation(mode=mode, task="classification")
            r_in = rel.input_relevance
            streams = [r_in.positive, r_in.negative] if mode == "contrast" else [r_in]
            assert all(bool(torch.isfinite(t).all()) for t in streams), (mode, streams)
            assert rel.conservation_error <= 1e-5


def test_nan_is_surfaced_never_hidden() -> None:
    """A NaN weight on the path: conservation_error is NaN in both modes and a warning names the node."""
    import math
    import warnings

    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        net[0].weight[1, 1] = float("nan")
    x = torch.randn(1, 3)
    dlb = DLBacktrace(net, (x,))
    dlb.predict(x)
    for mode in ("default", "contrast"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rel = dlb.evaluation(mode=mode, task="classification", target=0)
        assert math.isnan(rel.conservation_error)
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(messages) == 1 and "not finite" in messages[0]
        assert rel.non_finite is not None
        assert "node" in rel.non_finite or "seed" in rel.non_finite
