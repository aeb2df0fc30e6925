"""Affine family (linear, conv, conv_transpose, pooling, mean/sum, products of two activations) against the
loop references of tests/reference.py, in default mode (with every gate) and contrast mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests import reference as ref
from tests.helpers import assert_close, random_seed, run_seed

aten = torch.ops.aten
GATES = [nn.Identity(), nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.Softmax(dim=-1), nn.SiLU(), nn.GELU(),
         nn.GELU(approximate="tanh"), nn.Hardtanh(-1.5, 2.0), nn.ReLU6(), nn.Hardswish(), nn.Hardsigmoid(),
         nn.Mish(), nn.SELU(), nn.CELU(), nn.LogSigmoid()]


def _gate_of(res, node):
    return res.run.program.analysis.gate.get(node)


def _seeded(gen, contrast=False):
    return random_seed(gen, contrast)


@pytest.mark.parametrize("act", GATES, ids=lambda m: type(m).__name__ + getattr(m, "approximate", ""))
def test_linear_default_matches_reference_with_gate(act: nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    lin = nn.Linear(7, 6)
    with torch.no_grad():
        lin.weight.mul_(4.0)
        lin.bias.copy_(torch.randn(6, generator=gen))
    x = torch.randn(3, 7, generator=gen) * 2.0
    res = run_seed(nn.Sequential(lin, act), (x,), _seeded(gen))
    node = res.nodes(aten.linear.default)[0]
    gate = ref.ref_gate_of_module(act)  # the contract's gate, from the reference's own table
    assert ref.same_gate(_gate_of(res, node), gate), f"the library gates {type(act).__name__} differently"
    r_out = res.rel(node)
    for b in range(x.shape[0]):
        want, sink = ref.default_ref(ref.linear_c(x[b], lin.weight.detach()), lin.bias.detach(), r_out[b], gate)
        assert_close(res.input()[b], want, what=f"R_in example {b}")
        assert_close(res.prop.sinks[node][b], sink, what=f"sink example {b}")


def test_gates_fire_in_linear_test() -> None:
    """The gated cases above must actually exercise gating (units outside the activation range)."""
    gen = torch.Generator().manual_seed(0)
    lin = nn.Linear(7, 6)
    with torch.no_grad():
        lin.weight.mul_(4.0)
        lin.bias.copy_(torch.randn(6, generator=gen))
    x = torch.randn(3, 7, generator=gen) * 2.0
    y = lin(x)
    assert int((y < -4).sum()) > 0 and int((y > 4).sum()) > 0 and int((y.abs() < 2).sum()) > 0


def test_linear_contrast_matches_reference() -> None:
    gen = torch.Generator().manual_seed(1)
    lin = nn.Linear(6, 5)
    x = torch.randn(2, 6, generator=gen)
    x[0, :3] = x[0, :3].abs()
    with torch.no_grad():
        lin.weight[0] = lin.weight[0].abs()  # a unit with only positive contributions (for x[0, :3] > 0 only)
    res = run_seed(nn.Sequential(lin, nn.Tanh()), (x,), _seeded(gen, contrast=True), mode="contrast")
    node = res.nodes(aten.linear.default)[0]
    r = res.rel(node)
    for b in range(2):
        c = ref.linear_c(x[b], lin.weight.detach())
        p, n, _ = ref.contrast_ref(c, lin.bias.detach(), r.positive[b], r.negative[b])
        assert_close(res.input().positive[b], p, what="R+")
        assert_close(res.input().negative[b], n, what="R-")


CONVS = [
    (nn.Conv1d(3, 4, 3), (2, 3, 9)),
    (nn.Conv1d(4, 4, 3, stride=2, padding=2, dilation=2, groups=2), (2, 4, 11)),
    (nn.Conv2d(2, 3, 3, padding=1), (1, 2, 6, 6)),
    (nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4), (2, 4, 7, 7)),  # depthwise
    (nn.Conv2d(2, 4, (2, 3), stride=(2, 1), dilation=(1, 2), bias=False), (1, 2, 6, 7)),
]


@pytest.mark.parametrize("conv,shape", CONVS, ids=lambda v: str(v) if isinstance(v, tuple) else type(v).__name__)
@pytest.mark.parametrize("act", [nn.Identity(), nn.Tanh()], ids=["none", "tanh"])
def test_conv_default_matches_reference(conv: nn.Module, shape: tuple[int, ...], act: nn.Module) -> None:
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        conv.weight.mul_(3.0)
    x = torch.randn(shape, generator=gen)
    res = run_seed(nn.Sequential(conv, act), (x,), _seeded(gen))
    node = next(n for n in res.run.program.traced.graph.nodes if "conv" in str(n.target))
    r_out = res.rel(node)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
    out_sp = tuple(r_out.shape[2:])
    b_full = bias.repeat_interleave(int(torch.tensor(out_sp).prod()))
    for b in range(shape[0]):
        c = ref.conv_c(x[b], conv.weight.detach(), conv.stride, conv.padding, conv.dilation, conv.groups, out_sp)
        assert ref.same_gate(_gate_of(res, node), ref.ref_gate_of_module(act))
        want, _ = ref.default_ref(c, b_full, r_out[b].reshape(-1), ref.ref_gate_of_module(act))
        assert_close(res.input()[b].reshape(-1), want, what=f"conv R_in {b}")


@pytest.mark.parametrize("mode", ["default", "contrast"])
@pytest.mark.parametrize("nd", [1, 2])
def test_conv_transpose_matches_reference(mode: str, nd: int) -> None:
    gen = torch.Generator().manual_seed(3)
    conv = (nn.ConvTranspose1d(3, 2, 3, stride=2, padding=1) if nd == 1 else
            nn.ConvTranspose2d(2, 2, 2, stride=2))
    shape = (2, 3, 5) if nd == 1 else (1, 2, 3, 3)
    x = torch.randn(shape, generator=gen)
    res = run_seed(conv, (x,), _seeded(gen, mode == "contrast"), mode=mode)
    node = next(n for n in res.run.program.traced.graph.nodes if "conv" in str(n.target))
    r_out = res.rel(node)
    out_sp = tuple(res.run.output.shape[2:])
    b_full = conv.bias.detach().repeat_interleave(int(torch.tensor(out_sp).prod()))
    for b in range(shape[0]):
        c = ref.conv_transpose_c(x[b], conv.weight.detach(), conv.stride, conv.padding, out_sp)
        if mode == "default":
            want, _ = ref.default_ref(c, b_full, r_out[b].reshape(-1))
            assert_close(res.input()[b].reshape(-1), want, what="convT")
        else:
            p, n, _ = ref.contrast_ref(c, b_full, r_out.positive[b].reshape(-1), r_out.negative[b].reshape(-1))
            assert_close(res.input().positive[b].reshape(-1), p, what="convT R+")
            assert_close(res.input().negative[b].reshape(-1), n, what="convT R-")


@pytest.mark.parametrize("mode", ["default", "contrast"])
def test_avg_pool_matches_reference(mode: str) -> None:
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 6, 6, generator=gen)
    res = run_seed(nn.AvgPool2d(2), (x,), _seeded(gen, mode == "contrast"), mode=mode)
    r = res.seed
    for b in range(2):
        c = ref.avg_pool_c(x[b], 2, 2, (3, 3))
        zeros = torch.zeros(c.shape[0])
        if mode == "default":
            want, _ = ref.default_ref(c, zeros, r[b].reshape(-1))
            assert_close(res.input()[b].reshape(-1), want, what="avgpool")
        else:
            p, n, _ = ref.contrast_ref(c, zeros, r.positive[b].reshape(-1), r.negative[b].reshape(-1))
            assert_close(res.input().positive[b].reshape(-1), p, what="avgpool R+")
            assert_close(res.input().negative[b].reshape(-1), n, what="avgpool R-")


class _Reduce(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) if self.how == "mean" else x.sum(dim=-1, keepdim=True)


@pytest.mark.parametrize("how", ["mean", "sum"])
def test_mean_and_sum_match_reference(how: str) -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 4, 5, generator=gen)
    res = run_seed(_Reduce(how), (x,), _seeded(gen))
    r = res.seed
    for b in range(2):
        xb = x[b].reshape(-1, 20) if how == "mean" else x[b].reshape(-1, 5)
        rb = r[b].reshape(-1)
        for j in range(xb.shape[0]):
            want, _ = ref.default_ref(xb[j][None, :], torch.zeros(1), rb[j:j + 1])
            got = res.input()[b].reshape(xb.shape)[j]
            assert_close(got, want, what=f"{how} row {j}")


class _TwoLive(nn.Module):
    def forward(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, v)


def test_product_of_two_activations_splits_half_to_each_operand() -> None:
    """Section 3.6 step 1 / 7.8: contribution rule over the contracted axis, half to each operand."""
    gen = torch.Generator().manual_seed(6)
    a = torch.randn(2, 3, 4, generator=gen)
    v = torch.randn(2, 4, 5, generator=gen)
    res = run_seed(_TwoLive(), (a, v), _seeded(gen))
    r = res.seed
    for b in range(2):
        c3 = torch.zeros(15, 4, dtype=torch.float64)
        for t in range(3):
            for d in range(5):
                for s in range(4):
                    c3[t * 5 + d, s] = float(a[b, t, s]) * float(v[b, s, d])
        rc, _ = ref.bilinear_ref(c3, r[b].reshape(-1))
        want_a = torch.zeros(3, 4, dtype=torch.float64)
        want_v = torch.zeros(4, 5, dtype=torch.float64)
        for t in range(3):
            for d in range(5):
                for s in range(4):
                    want_a[t, s] += rc[t * 5 + d, s] / 2
                    want_v[s, d] += rc[t * 5 + d, s] / 2
        assert_close(res.input(0)[b], want_a, what="R_a")
        assert_close(res.input(1)[b], want_v, what="R_v")


class HandLinear(nn.Module):
    """``act(x @ W.T + b)`` written by hand: the product and its bias add are one node (RELEVANCE.md 2.1)."""

    def __init__(self, lin: nn.Linear, act: nn.Module) -> None:
        super().__init__()
        self.w = nn.Parameter(lin.weight.detach().clone())
        self.b = nn.Parameter(lin.bias.detach().clone())
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x @ self.w.T + self.b)


@pytest.mark.parametrize("mode", ["default", "contrast"])
@pytest.mark.parametrize("act", [nn.Identity(), nn.Tanh(), nn.SiLU()], ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("shape", [(3, 7), (2, 4, 7)])
def test_hand_written_linear_is_refused_into_one_node(mode: str, act: nn.Module, shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(6)
    lin = nn.Linear(7, 5)
    with torch.no_grad():
        lin.weight.mul_(4.0)
        lin.bias.copy_(torch.randn(5, generator=gen))
    x = torch.randn(*shape, generator=gen) * 2.0
    seed_fn = random_seed(gen, contrast=mode == "contrast")
    seed = seed_fn(torch.zeros(*shape[:-1], 5))
    fused = run_seed(HandLinear(lin, act), (x,), lambda y: seed, mode)
    layer = run_seed(nn.Sequential(lin, act), (x,), lambda y: seed, mode)
    add = fused.nodes(aten.add.Tensor)[0]
    assert _gate_of(fused, add) == _gate_of(layer, layer.nodes(aten.linear.default)[0])
    for k in ((0, 1) if mode == "contrast" else (None,)):
        got, want = fused.input(), layer.input()
        got, want = (got, want) if k is None else (got[k], want[k])
        assert_close(got, want, rel=1e-6, what=f"R_in stream {k}")
        assert fused.sink_total(k) == pytest.approx(layer.sink_total(k), rel=1e-5, abs=1e-5)


def test_worked_example_holds_for_the_hand_written_form() -> None:
    """RELEVANCE.md 6 with x @ W.T + b instead of nn.Linear."""
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.4, -0.5]]))
        lin.bias.copy_(torch.tensor([0.1, -0.2]))
    res = run_seed(HandLinear(lin, nn.Identity()), (torch.tensor([[1.0, 2.0, 3.0]]),),
                   lambda y: torch.tensor([[0.0, 100.0]]))
    assert_close(res.input()[0], torch.tensor([0.1, 0.8, 1.5]) * 100 / 2.6, rel=1e-6, what="R_in")
    assert res.sink_total() == pytest.approx(100 * 0.2 / 2.6, rel=1e-6)
