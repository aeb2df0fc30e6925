"""Data movement (3.1): exact routing (the adjoint of the op); fast adjoints equal the generic vjp rule;
relevance on elements made from constants is a sink (7.8)."""

from __future__ import annotations

import operator

import pytest
import torch
from torch import nn

from dl_backtrace.propagate import _context
from dl_backtrace.rules import shape
from tests.helpers import random_seed, run_seed

aten = torch.ops.aten


class Moves(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.view(2, 3, 4).permute(0, 2, 1).transpose(1, 2)  # (2, 3, 4)
        b = a.unsqueeze(1).expand(2, 2, 3, 4).flatten(1)  # duplicated elements
        c = torch.cat([b[:, :5], b[:, 3:9]], dim=1)
        parts = torch.split(c, [4, 7], dim=1)
        d = parts[1].squeeze() * 2.0
        e = x.view(2, 12).select(1, 3)[:, None] + d[:, 1:2]
        return torch.cat([d, e, x.view(2, 12)[:, ::2]], dim=1)


def test_fast_adjoints_equal_generic_rule() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 12, generator=gen)
    res = run_seed(Moves(), (x,), random_seed(gen))
    a = res.run.program.analysis
    checked = 0
    for node, r in res.prop.relevance.items():
        if node.op != "call_function" or node.target not in shape._FAST:
            continue
        ctx = _context(node, a, res.run.execution, "default", None)
        fast = ctx.route(shape._FAST[node.target](ctx, r))
        generic = shape.generic_move(ctx, r).inputs if node.target is not operator.getitem else fast
        for f, g in zip(fast, generic):
            if isinstance(f, list):
                for fi, gi in zip(f, g):
                    assert (fi is None) == (gi is None) and (fi is None or torch.allclose(fi, gi))
            elif f is not None:
                assert torch.allclose(f, g), node.name
        checked += 1
    assert checked >= 8
    total = float(res.input().sum()) + res.sink_total()
    assert abs(total - float(res.seed.sum())) < 1e-5 * float(res.seed.sum())


class PadCatWhere(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = nn.functional.pad(x, (1, 2), value=3.0)
        c = torch.cat([p, torch.ones(x.shape[0], 2)], dim=1)
        return torch.where(c > 0.5, c, torch.zeros_like(c) - 1.0)


def test_relevance_on_constants_is_a_sink() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, generator=gen)
    res = run_seed(PadCatWhere(), (x,), random_seed(gen))
    seed = res.seed
    # elements from x that survive the where: exactly their seed relevance reaches x
    keep = (x > 0.5)
    assert torch.allclose(res.input(), torch.where(keep, seed[:, 1:5], torch.zeros_like(x)))
    total = float(res.input().sum()) + res.sink_total()
    assert abs(total - float(seed.sum())) < 1e-5 * float(seed.sum())
    assert res.sink_total() > 0


@pytest.mark.parametrize("dims", [(0, 2, 1), (2, 0, 1)])
def test_permute_adjoint_is_inverse(dims: tuple[int, ...]) -> None:
    class P(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.permute(*dims) * 1.0

    x = torch.randn(2, 3, 4)
    res = run_seed(P(), (x,), lambda y: torch.arange(y.numel(), dtype=torch.float32).reshape(y.shape))
    assert torch.equal(res.input(), res.seed.permute(*[dims.index(i) for i in range(3)]))
