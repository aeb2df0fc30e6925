"""Affine contribution nodes (RELEVANCE.md 2.1): products with a coefficient operand (linear, addmm, mm, bmm,
matmul, einsum, every convolution) and linear maps with non-negative coefficients (average pooling, mean, sum,
interpolation). A product of two activations (both operands carry relevance) uses the same contraction with no
gating and no paired contrast rule, half of each contribution to each operand (RELEVANCE.md 3.6 step 1, 7.8).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ._adjoint import ConvParams, conv_input_adjoint, flip_weight, flippable, sum_to, vjp_of
from .contribution import Terms, _safe_div, contribute, per_stream, rel_float
from .registry import Flow, Rule, RuleContext, aten_op, register

aten = torch.ops.aten
Op2 = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Product(Terms):
    """y = op(x, c) + bias (or op(c, x)) with x the live operand and c a coefficient (parameter or constant)."""

    op: Op2
    adj: Callable[[Tensor, Tensor], Tensor]  # adjoint in x: adj(g, c) is shaped like x
    x: Tensor
    coef: Tensor
    abs_coef: Tensor
    live_first: bool
    y: Tensor
    bias: Tensor | None
    x_nonneg: bool = False  # known from the graph (e.g. a ReLU output): |x| = x

    @property
    def abs_x(self) -> Tensor:
        if self.x_nonneg:
            return self.x
        if not hasattr(self, "_abs_x"):
            self._abs_x = self.x.abs()
        return self._abs_x

    def _apply(self, x: Tensor, c: Tensor) -> Tensor:
        return self.op(x, c) if self.live_first else self.op(c, x)

    def abs_sum(self) -> Tensor:
        return self._apply(self.abs_x, self.abs_coef)

    def pos_neg(self) -> tuple[Tensor, Tensor]:
        xp, xn = self.x.clamp(min=0), (-self.x).clamp(min=0)
        cp, cn = self.coef.clamp(min=0), (-self.coef).clamp(min=0)
        return self._apply(xp, cp) + self._apply(xn, cn), self._apply(xp, cn) + self._apply(xn, cp)

    def back(self, s: Tensor, d: Tensor | None) -> tuple[Tensor]:
        r = self.adj(s, self.abs_coef).mul_(self.abs_x)
        if d is not None:
            r = r.addcmul_(self.x, self.adj(d, self.coef))
        return (r,)

    def back_split(self, a: Tensor, b: Tensor) -> tuple[Tensor]:
        cp, cn = self.coef.clamp(min=0), (-self.coef).clamp(min=0)
        xp, xn = self.x.clamp(min=0), (-self.x).clamp(min=0)
        return (xp * (self.adj(a, cp) + self.adj(b, cn)) + xn * (self.adj(a, cn) + self.adj(b, cp)),)


def bilinear(r: Tensor, a: Tensor, b: Tensor, op: Op2, adjs: tuple[Any, Any], bias: Tensor | None) -> Flow:
    """Both operands carry relevance: contribution rule over the contracted axis, half to each operand."""
    aa, ab = a.abs(), b.abs()
    total = op(aa, ab)
    den = total if bias is None else total + bias.abs()
    g = _safe_div(r, den)
    return Flow((0.5 * aa * adjs[0](g, ab), 0.5 * ab * adjs[1](g, aa)), r - g * total)


def product_rule(ctx: RuleContext, r: Any, pos: tuple[int, int], op: Op2, adjs: tuple[Any, Any],
                 bias: Tensor | None) -> Flow:
    """Shared body of every product rule; ``pos`` are the argument positions of the two operands."""
    ia, ib = pos
    a, b = ctx.args[ia], ctx.args[ib]
    la, lb = ctx.is_live(ia), ctx.is_live(ib)
    y = rel_float(ctx.out)
    bias = rel_float(bias) if bias is not None else None
    if la and lb:
        a, b = rel_float(a), rel_float(b)
        flow = per_stream(r, lambda rr: bilinear(rr, a, b, op, adjs, bias))
        return Flow(ctx.route({ia: flow.inputs[0], ib: flow.inputs[1]}), flow.sink)
    ix, ic = (ia, ib) if la else (ib, ia)
    coef = ctx.derived(ic, "float", ctx.args[ic], rel_float)
    abs_coef = ctx.derived(ic, "abs", ctx.args[ic], lambda t: rel_float(t).abs())
    terms = Product(op, adjs[0] if la else adjs[1], rel_float(ctx.args[ix]), coef, abs_coef, la, y, bias,
                    ctx.nonneg(ix))
    flow = contribute(r, terms, ctx.gate)
    return Flow(ctx.route({ix: flow.inputs[0]}), flow.sink)


# -- linear / matmul family -------------------------------------------------------------------------------------

def _lin_adj_x(g: Tensor, w: Tensor) -> Tensor:
    return g @ w


def _lin_adj_w(g: Tensor, x: Tensor) -> Tensor:
    return g.reshape(-1, g.shape[-1]).mT @ x.reshape(-1, x.shape[-1])


@register(aten.linear.default, family="contribution", paired=True)
def linear_rule(ctx: RuleContext, r: Any) -> Flow:
    return product_rule(ctx, r, (0, 1), F.linear, (_lin_adj_x, _lin_adj_w), ctx.arg(2))


def _mm_adjs(a_shape: torch.Size, b_shape: torch.Size) -> tuple[Any, Any]:
    return (lambda g, b: sum_to(g @ b.mT, a_shape), lambda g, a: sum_to(a.mT @ g, b_shape))


@register(aten.mm.default, aten.bmm.default, aten_op("matmul"), family="contribution", paired=True)
def matmul_rule(ctx: RuleContext, r: Any) -> Flow:
    a, b = ctx.args[0], ctx.args[1]
    if a.dim() < 2 or b.dim() < 2:
        return product_rule(ctx, r, (0, 1), torch.matmul, _vjp_adjs(torch.matmul, a, b), None)
    return product_rule(ctx, r, (0, 1), torch.matmul, _mm_adjs(a.shape, b.shape), None)


def matmul_bias_rule(ctx: RuleContext, r: Any) -> Flow:
    """``matmul(a, b) + bias`` re-fused into one contribution node (RELEVANCE.md 2.1: a linear layer's product and
    its bias add are ONE node). ``ctx.args`` = (a, b, bias); ``ctx.out`` is the sum, bias included."""
    a, b, bias = ctx.args
    adjs = _vjp_adjs(torch.matmul, a, b) if a.dim() < 2 or b.dim() < 2 else _mm_adjs(a.shape, b.shape)
    return product_rule(ctx, r, (0, 1), torch.matmul, adjs, bias)


MATMUL_BIAS = Rule(fn=matmul_bias_rule, family="contribution", paired=True)


@register(aten.addmm.default, family="contribution", paired=True, routes=lambda n: (1, 2))
def addmm_rule(ctx: RuleContext, r: Any) -> Flow:
    kw = ctx.bound()
    alpha, beta = kw.get("alpha", 1), kw.get("beta", 1)
    bias = ctx.args[0] if beta == 1 else ctx.args[0] * beta
    op: Op2 = torch.matmul if alpha == 1 else (lambda a, b: alpha * (a @ b))
    adj_scale = 1 if alpha == 1 else alpha
    adjs = (lambda g, b: adj_scale * (g @ b.mT), lambda g, a: adj_scale * (a.mT @ g))
    return product_rule(ctx, r, (1, 2), op, adjs, bias)


def _vjp_adjs(op: Op2, a: Tensor, b: Tensor) -> tuple[Any, Any]:
    def adj_a(g: Tensor, c: Tensor) -> Tensor:
        return vjp_of(lambda t: op(t, c), (torch.zeros(a.shape, dtype=g.dtype, device=g.device),), g)[0]

    def adj_b(g: Tensor, c: Tensor) -> Tensor:
        return vjp_of(lambda t: op(c, t), (torch.zeros(b.shape, dtype=g.dtype, device=g.device),), g)[0]

    return adj_a, adj_b


@register(aten.einsum.default, family="contribution", paired=True,
          supports=lambda n: isinstance(n.args[1], (list, tuple)) and len(n.args[1]) == 2)
def einsum_rule(ctx: RuleContext, r: Any) -> Flow:
    """Two-operand einsum: the operand list becomes positions 0 and 1 of :func:`product_rule`."""
    eq, ops = ctx.args[0], ctx.args[1]
    if len(ops) != 2:
        raise NotImplementedError(f"einsum with {len(ops)} operands at node {ctx.node.name}: only 2 are supported")
    op: Op2 = lambda a, b: torch.einsum(eq, a, b)  # noqa: E731
    flat = replace(ctx, args=tuple(ops), kwargs={}, slots=[(sub, None) for _, sub in ctx.slots])
    return product_rule(flat, r, (0, 1), op, _vjp_adjs(op, ops[0], ops[1]), None)


# -- convolutions ---------------------------------------------------------------------------------------------

def _conv_params(ctx: RuleContext) -> tuple[ConvParams | None, Tensor | None]:
    kw = ctx.bound()
    x = ctx.args[0]
    nd = x.dim() - 2
    transposed = bool(kw.get("transposed", "output_padding" in kw))
    padding = kw.get("padding", 0)
    if isinstance(padding, str):
        if padding == "valid":
            padding = 0
        else:
            return None, kw.get("bias")
    cp = ConvParams(nd, kw.get("stride", 1), padding, kw.get("dilation", 1), transposed,
                    kw.get("output_padding", 0), kw.get("groups", 1))
    return cp, kw.get("bias")


def _bias_view(bias: Tensor | None, nd: int) -> Tensor | None:
    return None if bias is None else bias.reshape((-1,) + (1,) * nd)


@register(aten.convolution.default, aten.conv1d.default, aten.conv2d.default, aten.conv3d.default,
          aten_op("conv1d", "padding"), aten_op("conv2d", "padding"), aten_op("conv3d", "padding"),
          aten.conv_transpose1d.default, aten.conv_transpose2d.input, aten.conv_transpose3d.input,
          family="contribution", paired=True, routes=lambda n: (0, 1))
def conv_rule(ctx: RuleContext, r: Any) -> Flow:
    x, w = ctx.args[0], ctx.args[1]
    cp, bias = _conv_params(ctx)
    bias = _bias_view(bias, x.dim() - 2)
    if cp is None:  # padding="same" given as a string: exact adjoint through vjp of the op itself
        rest = ctx.args[3:]
        op: Op2 = lambda a, b: ctx.node.target(a, b, None, *rest)  # noqa: E731
        return product_rule(ctx, r, (0, 1), op, _vjp_adjs(op, x, w), bias)
    in_shape = x.shape
    flipped: dict[int, Tensor] = {}
    if flippable(cp, w) and not ctx.is_live(1):
        for tag, fn in (("float", rel_float), ("abs", lambda t: rel_float(t).abs())):
            base = ctx.derived(1, tag, w, fn)
            flipped[id(base)] = ctx.derived(1, f"flip_{tag}", w, lambda t, fn=fn: flip_weight(fn(t), cp))
    adjs = (lambda g, c: conv_input_adjoint(g, c, cp, in_shape, flipped.get(id(c))), _vjp_adjs(cp.apply, x, w)[1])
    return product_rule(ctx, r, (0, 1), cp.apply, adjs, bias)


# -- linear maps with non-negative coefficients ----------------------------------------------------------------

@dataclass
class LinearMap(Terms):
    """y = L(x) with non-negative coefficients: |c_ij| = L_ji |x_i| (pooling, mean, sum, interpolation)."""

    fn: Callable[[Tensor], Tensor]
    x: Tensor
    y: Tensor
    bias: Tensor | None = None

    def abs_sum(self) -> Tensor:
        return self.fn(self.x.abs())

    def pos_neg(self) -> tuple[Tensor, Tensor]:
        return self.fn(self.x.clamp(min=0)), self.fn((-self.x).clamp(min=0))

    def adj(self, g: Tensor) -> Tensor:
        return vjp_of(self.fn, (torch.zeros_like(self.x),), g)[0]

    def back(self, s: Tensor, d: Tensor | None) -> tuple[Tensor]:
        r = self.adj(s) * self.x.abs()
        if d is not None:
            r = r.addcmul_(self.x, self.adj(d))
        return (r,)

    def back_split(self, a: Tensor, b: Tensor) -> tuple[Tensor]:
        return (self.x.clamp(min=0) * self.adj(a) + (-self.x).clamp(min=0) * self.adj(b),)


class _Reduction(LinearMap):
    """mean/sum over dims: the adjoint is a broadcast (no vjp needed)."""

    def __init__(self, fn: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, dims: list[int], keep: bool,
                 scale: float) -> None:
        super().__init__(fn, x, y)
        self.dims, self.keep, self.scale = sorted(d % max(x.dim(), 1) for d in dims), keep, scale

    def adj(self, g: Tensor) -> Tensor:
        if not self.keep:
            for d in self.dims:
                g = g.unsqueeze(d)
        g = g.expand(self.x.shape)
        return g * self.scale if self.scale != 1.0 else g


def _reduction_terms(ctx: RuleContext, x: Tensor, y: Tensor) -> LinearMap:
    kw = ctx.bound()
    dims = kw.get("dim")
    dims = list(range(x.dim())) if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0) else dims
    dims = [dims] if isinstance(dims, int) else list(dims)
    is_mean = "mean" in ctx.node.target.__name__
    k = 1
    for d in dims:
        k *= x.shape[d]
    fn = lambda t: ctx.node.target(t, *ctx.args[1:], **ctx.kwargs)  # noqa: E731
    return _Reduction(fn, x, y, dims, bool(kw.get("keepdim", False)), 1.0 / k if is_mean else 1.0)


_POOLS = [aten_op(n, o) for n, o in [
    ("avg_pool1d", "default"), ("avg_pool2d", "default"), ("avg_pool3d", "default"),
    ("adaptive_avg_pool1d", "default"), ("adaptive_avg_pool2d", "default"), ("adaptive_avg_pool3d", "default"),
    ("_adaptive_avg_pool2d", "default"), ("_adaptive_avg_pool3d", "default"),
    ("upsample_nearest1d", "vec"), ("upsample_nearest2d", "vec"), ("upsample_nearest3d", "vec"),
    ("upsample_nearest1d", "default"), ("upsample_nearest2d", "default"), ("upsample_nearest3d", "default"),
    ("_upsample_nearest_exact1d", "vec"), ("_upsample_nearest_exact2d", "vec"), ("_upsample_nearest_exact3d", "vec"),
    ("upsample_linear1d", "vec"), ("upsample_bilinear2d", "vec"), ("upsample_trilinear3d", "vec"),
    ("upsample_linear1d", "default"), ("upsample_bilinear2d", "default"), ("upsample_trilinear3d", "default"),
]]
_REDUCTIONS = [aten.mean.dim, aten.mean.default, aten.sum.dim_IntList, aten.sum.default]


@register(*_POOLS, family="contribution", paired=True, routes=lambda n: (0,))
def pool_rule(ctx: RuleContext, r: Any) -> Flow:
    x = rel_float(ctx.args[0])
    fn = lambda t: ctx.node.target(t, *ctx.args[1:], **ctx.kwargs)  # noqa: E731
    flow = contribute(r, LinearMap(fn, x, rel_float(ctx.out)), ctx.gate)
    return Flow(ctx.route({0: flow.inputs[0]}), flow.sink)


@register(*_REDUCTIONS, family="contribution", paired=True, routes=lambda n: (0,))
def reduction_rule(ctx: RuleContext, r: Any) -> Flow:
    x = rel_float(ctx.args[0])
    flow = contribute(r, _reduction_terms(ctx, x, rel_float(ctx.out)), ctx.gate)
    return Flow(ctx.route({0: flow.inputs[0]}), flow.sink)
