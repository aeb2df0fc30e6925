"""Element-wise nodes: add/sub (contribution rule, RELEVANCE.md 2.1), products and quotients (3.5), neg (7.8).

add/sub of two activations: both operands are contributions (sub: negated), with broadcasting.
add/sub of a constant or parameter: the constant is the bias b_j of the contribution rule, except an additive
attention mask (the analysis marks it ``passthrough``), which passes relevance through (7.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._adjoint import sum_to
from .contribution import Terms, contribute, rel_float
from .registry import Flow, Pair, RuleContext, register

aten = torch.ops.aten


@dataclass
class Sum(Terms):
    """y = sum_k coef_k * x_k + bias (element-wise, broadcasting), x_k the live operands."""

    parts: list[tuple[Tensor, float]]
    y: Tensor
    bias: Tensor | None
    nonneg: list[bool] | None = None  # per part: known >= 0 (and coefficient > 0): |t| = t

    def _terms(self) -> list[Tensor]:
        return [p * c if c != 1 else p for p, c in self.parts]

    def _abs_terms(self) -> list[Tensor]:
        if not hasattr(self, "_abs"):
            flags = self.nonneg or [False] * len(self.parts)
            self._abs = [t if ok and c > 0 else t.abs() for t, ok, (_, c) in zip(self._terms(), flags, self.parts)]
        return self._abs

    def abs_sum(self) -> Tensor:
        terms = self._abs_terms()
        out = terms[0] + terms[1] if len(terms) == 2 else terms[0].expand_as(self.y).clone()
        return out if out.shape == self.y.shape else out.expand_as(self.y).contiguous()

    def pos_neg(self) -> tuple[Tensor, Tensor]:
        p = n = None
        for t in self._terms():
            tp, tn = t.clamp(min=0), (-t).clamp(min=0)
            p, n = (tp, tn) if p is None else (p + tp, n + tn)
        shape = self.y.shape
        return p.expand(shape).contiguous(), n.expand(shape).contiguous()

    def back(self, s: Tensor, d: Tensor | None) -> tuple[Tensor, ...]:
        out = []
        for (x, _c), t, at in zip(self.parts, self._terms(), self._abs_terms()):
            r = at * s
            if d is not None:
                r = r.addcmul_(t, d)
            out.append(sum_to(r, x.shape))
        return tuple(out)

    def back_split(self, a: Tensor, b: Tensor) -> tuple[Tensor, ...]:
        return tuple(sum_to(t.clamp(min=0) * a + (-t).clamp(min=0) * b, x.shape)
                     for (x, _), t in zip(self.parts, self._terms()))


def _as_bias(v: Any, like: Tensor, scale: float) -> Tensor | None:
    if isinstance(v, Tensor):
        b = rel_float(v)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        if v == 0:
            return None
        b = torch.tensor(float(v), dtype=like.dtype, device=like.device)
    else:
        return None
    return b * scale if scale != 1 else b


def _signs(target: Any, alpha: float) -> tuple[float, float]:
    if target in (aten.sub.Tensor, aten.sub.Scalar):
        return 1.0, -alpha
    if target in (aten.rsub.Tensor, aten.rsub.Scalar):
        return -alpha, 1.0
    return 1.0, alpha


@register(aten.add.Tensor, aten.add.Scalar, aten.sub.Tensor, aten.sub.Scalar, aten.rsub.Tensor, aten.rsub.Scalar,
          family="contribution", paired=True)
def add_rule(ctx: RuleContext, r: Any) -> Flow:
    alpha = ctx.bound().get("alpha", 1)
    ca, cb = _signs(ctx.node.target, float(alpha))
    a, b = ctx.args[0], ctx.args[1]
    la, lb = ctx.is_live(0), ctx.is_live(1)
    if ctx.attrs.get("passthrough"):
        pos = 0 if la else 1
        shape = ctx.args[pos].shape
        routed = Pair(sum_to(r.positive, shape), sum_to(r.negative, shape)) if isinstance(r, Pair) else sum_to(r, shape)
        return Flow(ctx.route({pos: routed}))
    y = rel_float(ctx.out)
    parts, positions, bias = [], [], None
    for pos, (v, c, live) in enumerate(((a, ca, la), (b, cb, lb))):
        if live:
            parts.append((rel_float(v), c))
            positions.append(pos)
        else:
            bias = _as_bias(v, y, c)
    flow = contribute(r, Sum(parts, y, bias, [ctx.nonneg(p) for p in positions]), ctx.gate)
    return Flow(ctx.route(dict(zip(positions, flow.inputs))), flow.sink)


@register(aten.mul.Tensor, aten.mul.Scalar, family="product")
def mul_rule(ctx: RuleContext, r: Tensor) -> tuple[Any, ...]:
    """One operand constant: all to the other. Both live (gated MLPs, GLU, attention weights): R/2 to each."""
    live = [ctx.is_live(0), ctx.is_live(1)]
    share = 0.5 if all(live) else 1.0
    out: dict[int | str, Any] = {}
    for pos in (0, 1):
        if live[pos]:
            out[pos] = sum_to(r * share if share != 1.0 else r, ctx.args[pos].shape)
    return ctx.route(out)


@register(aten.div.Tensor, aten.div.Scalar, family="product", routes=lambda n: (0,))
def div_rule(ctx: RuleContext, r: Tensor) -> Flow:
    """x / y: all to x; the normaliser y gets none. c / y with c constant: a sink."""
    if ctx.is_live(0):
        return Flow(ctx.route({0: sum_to(r, ctx.args[0].shape)}))
    return Flow(ctx.route({}), r)


@register(aten.neg.default, family="product")
def neg_rule(ctx: RuleContext, r: Tensor) -> tuple[Any, ...]:
    """neg: identity (7.8): relevance keeps its sign through a negation."""
    return ctx.route({0: r})
