"""add/sub (contribution rule, bias and residual), products and quotients (3.5), the mask pass-through (7.6)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests import reference as ref
from tests.helpers import assert_close, random_seed, run_seed


class Residual(nn.Module):
    def __init__(self, op: str, act: nn.Module) -> None:
        super().__init__()
        self.op, self.act = op, act
        self.fc = nn.Linear(4, 4)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        h = self.fc(a)
        out = h + b if self.op == "add" else h - b
        return self.act(out)


@pytest.mark.parametrize("op", ["add", "sub"])
@pytest.mark.parametrize("act", [nn.Identity(), nn.Sigmoid()], ids=["none", "sigmoid"])
def test_residual_add_is_contribution_rule(op: str, act: nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, generator=gen) * 3
    b = torch.randn(1, 4, generator=gen) * 3  # broadcast over the batch
    res = run_seed(Residual(op, act), (a, b), random_seed(gen))
    add = next(n for n in res.run.program.traced.graph.nodes if n.target in (torch.ops.aten.add.Tensor,
                                                                              torch.ops.aten.sub.Tensor))
    h = res.run.execution.values[add.args[0]]
    r = res.rel(add)
    gate = ref.REF_GATES["sigmoid"] if isinstance(act, nn.Sigmoid) else None
    assert ref.same_gate(res.run.program.analysis.gate.get(add), gate)
    want_b = torch.zeros(4, dtype=torch.float64)
    for i in range(3):
        for j in range(4):
            c = torch.tensor([[float(h[i, j]), float(b[0, j]) * (1 if op == "add" else -1)]])
            r_in, _ = ref.default_ref(c, torch.zeros(1), r[i, j:j + 1], gate)
            assert abs(float(res.rel(add.args[0])[i, j]) - float(r_in[0])) < 1e-5 * float(r.abs().max())
            want_b[j] += r_in[1]
    assert_close(res.input(1)[0], want_b, what="broadcast operand")


class BiasAdd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.tensor([0.5, -1.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x * 2.0 + self.b)


def test_add_of_parameter_is_bias_with_sink() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, generator=gen) * 2
    res = run_seed(BiasAdd(), (x,), random_seed(gen))
    add = res.nodes(torch.ops.aten.add.Tensor)[0]
    r = res.rel(add)
    h = x * 2.0
    for i in range(2):
        for j in range(3):
            want, sink = ref.default_ref(h[i, j].reshape(1, 1), BiasAdd().b.detach()[j:j + 1], r[i, j:j + 1],
                                         ref.REF_GATES["tanh"])
            assert abs(float(res.input()[i, j]) - float(want[0])) < 1e-5
            assert abs(float(res.prop.sinks[add][i, j]) - float(sink[0])) < 1e-5


class Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.g, self.u = nn.Linear(3, 5), nn.Linear(3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.silu(self.g(x)) * self.u(x) / 3.0


def test_product_of_two_activations_halves_and_division_goes_to_numerator() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, generator=gen)
    res = run_seed(Gated(), (x,), random_seed(gen))
    mul = res.nodes(torch.ops.aten.mul.Tensor)[0]
    div = res.nodes(torch.ops.aten.div.Tensor)[0]
    assert torch.allclose(res.rel(mul), res.seed)  # x / 3: all to the numerator
    assert torch.allclose(res.rel(mul.args[1]), res.seed / 2)  # u half
    assert torch.allclose(res.rel(mul.args[0]), res.seed / 2)  # silu(g) half
    assert div not in res.prop.sinks


class ScaledMask(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = torch.matmul(q, k.transpose(-1, -2)) * 0.5
        s = s + (1.0 - mask[:, None, :].float()) * -1e4
        return torch.softmax(s, dim=-1)


def test_additive_attention_mask_passes_through() -> None:
    gen = torch.Generator().manual_seed(3)
    q, k = torch.randn(1, 3, 4, generator=gen), torch.randn(1, 3, 4, generator=gen)
    mask = torch.tensor([[1, 1, 0]])
    res = run_seed(ScaledMask(), (q, k, mask), random_seed(gen))
    add = res.nodes(torch.ops.aten.add.Tensor)[-1]
    assert res.run.program.analysis.attrs[add].get("passthrough")
    assert add not in res.prop.sinks
    total = float(res.input(0).sum() + res.input(1).sum())
    assert abs(total - float(res.seed.sum())) < 1e-4 * float(res.seed.sum())
