"""Scatter-style writes: the combine step of Mixture-of-Experts layers and of index-based updates.

- Writes that overwrite (``index_put`` without accumulate, ``scatter`` of a source, ``index_copy``,
  ``masked_scatter``) are data movement (RELEVANCE.md 3.1): each output element came from one input element;
  relevance on elements written from a constant is a sink.
- Writes that accumulate (``index_put(accumulate=True)``, ``index_add``, ``scatter_add``,
  ``scatter_reduce(reduce="sum")``) compute y_j = self_j + sum_{i -> j} src_i: a sum of contributions, so the
  contribution rule of 2.1 applies with the operands' elements as c (like an add of two activations), and a
  constant operand (e.g. the zeros the experts are added into) is the bias.

Both are computed with the op itself and its adjoint (``torch.func.vjp``): no loops over positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._adjoint import vjp_of
from .contribution import Terms, contribute, per_stream, rel_float
from .registry import Flow, RuleContext, aten_op, register
from .shape import _args_with, generic_move

aten = torch.ops.aten


@dataclass
class Scatter(Terms):
    """y = f(live operands) + bias with f linear and its coefficients 0 or 1 (an accumulating scatter)."""

    fn: Callable[..., Tensor]  # f of the live operands, constants zeroed
    xs: list[Tensor]
    y: Tensor
    bias: Tensor | None

    def abs_sum(self) -> Tensor:
        return self.fn(*[x.abs() for x in self.xs])

    def pos_neg(self) -> tuple[Tensor, Tensor]:
        return self.fn(*[x.clamp(min=0) for x in self.xs]), self.fn(*[(-x).clamp(min=0) for x in self.xs])

    def _adj(self, g: Tensor) -> tuple[Tensor, ...]:
        return vjp_of(self.fn, tuple(torch.zeros_like(x) for x in self.xs), g)

    def back(self, s: Tensor, d: Tensor | None) -> tuple[Tensor, ...]:
        out = [x.abs() * a for x, a in zip(self.xs, self._adj(s))]
        if d is not None:
            out = [o.addcmul_(x, a) for o, x, a in zip(out, self.xs, self._adj(d))]
        return tuple(out)

    def back_split(self, a: Tensor, b: Tensor) -> tuple[Tensor, ...]:
        return tuple(x.clamp(min=0) * ga + (-x).clamp(min=0) * gb
                     for x, ga, gb in zip(self.xs, self._adj(a), self._adj(b)))


def _accumulates(node: torch.fx.Node) -> bool:
    """index_put with accumulate=True (the other ops registered with it always overwrite)."""
    if node.target is not aten_op("index_put"):
        return False
    return bool(node.args[3] if len(node.args) > 3 else node.kwargs.get("accumulate", False))


def _accumulate_rule(ctx: RuleContext, r: Any) -> Flow:
    floats = [i for i, t in enumerate(ctx.inputs) if t.is_floating_point()]
    live = [i for i in floats if ctx.live[i]]
    zeroed = {i: torch.zeros_like(rel_float(ctx.inputs[i])) for i in floats}

    def fn(*xs: Tensor) -> Tensor:
        args, kwargs = _args_with(ctx, {**zeroed, **dict(zip(live, xs))})
        return ctx.node.target(*args, **kwargs)

    xs = [rel_float(ctx.inputs[i]) for i in live]
    y = rel_float(ctx.out)
    bias = y - fn(*xs) if len(live) < len(floats) else None
    flow = contribute(r, Scatter(fn, xs, y, bias), ctx.gate)
    by_input = dict(zip(live, flow.inputs))
    return Flow(tuple(by_input.get(i) for i in range(len(ctx.inputs))), flow.sink)


def _sum_reduce(node: torch.fx.Node) -> bool:
    reduce = node.args[4] if len(node.args) > 4 else node.kwargs.get("reduce")
    return reduce == "sum"


_ACCUMULATING = [aten_op("index_add"), aten_op("scatter_add")]
_OVERWRITING = [aten_op("scatter", "src"), aten_op("index_copy"),
                aten_op("masked_scatter")]


@register(aten_op("index_put"), *_OVERWRITING, family="contribution", paired=True, reads=lambda n: "all")
def index_put_rule(ctx: RuleContext, r: Any) -> Flow:
    """Accumulating index_put: contribution rule; the overwriting forms: data movement."""
    if _accumulates(ctx.node):
        return _accumulate_rule(ctx, r)
    return per_stream(r, lambda rr: generic_move(ctx, rr))


@register(*_ACCUMULATING, family="contribution", paired=True)
def scatter_add_rule(ctx: RuleContext, r: Any) -> Flow:
    return _accumulate_rule(ctx, r)


@register(aten_op("scatter_reduce", "two"), family="contribution", paired=True, supports=_sum_reduce)
def scatter_reduce_rule(ctx: RuleContext, r: Any) -> Flow:
    return _accumulate_rule(ctx, r)
