"""Max and selection (RELEVANCE.md 3.2, 7.8): relevance goes to the winning element; ties share equally.

max_pool windows are read one kernel offset at a time as strided views of the (-inf padded) input; the winners
of each window are the elements equal to the window's output, counted first, then each gets its share added
back through the same view. Index-returning ops without a tie-aware form (adaptive max pooling, topk, sort) route to the
indices they return.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .contribution import rel_float
from .registry import RuleContext, aten_op, register

aten = torch.ops.aten


def _tuple(v: Any, nd: int) -> list[int]:
    if isinstance(v, int):
        return [v] * nd
    v = list(v)
    return v * nd if len(v) == 1 else v


@dataclass(frozen=True)
class _Windows:
    """Pooling windows over the last ``nd`` axes, with the (-inf) padding that makes every window full."""

    kernel: list[int]
    stride: list[int]
    dilation: list[int]
    padding: list[int]
    pads: list[int]  # F.pad order (last axis first): the lower pad is ``padding``, the upper one covers ceil_mode

    def offset_view(self, xp: Tensor, offset: tuple[int, ...], out_shape: torch.Size) -> Tensor:
        """The element at kernel offset ``offset`` of every window: a strided view shaped like the output."""
        nd = len(offset)
        idx = tuple(slice(o * d, o * d + s * (n - 1) + 1, s) for o, d, s, n in
                    zip(offset, self.dilation, self.stride, out_shape[-nd:]))
        return xp[(Ellipsis,) + idx]


def _windows(x_shape: torch.Size, out_shape: torch.Size, kw: dict[str, Any], nd: int) -> _Windows:
    kernel = _tuple(kw["kernel_size"], nd)
    stride = _tuple(kw.get("stride") or kernel, nd)
    padding = _tuple(kw.get("padding", 0), nd)
    dilation = _tuple(kw.get("dilation", 1), nd)
    first = len(x_shape) - nd
    pads: list[int] = []
    for i in reversed(range(nd)):
        span = dilation[i] * (kernel[i] - 1) + 1
        need = (out_shape[first + i] - 1) * stride[i] + span
        pads += [padding[i], max(padding[i], need - x_shape[first + i] - padding[i])]
    return _Windows(kernel, stride, dilation, padding, pads)


def _share_to_winners(x: Tensor, y: Tensor, r: Tensor, win: _Windows) -> Tensor:
    """R_in_i = sum over the windows w holding i of [x_i == y_w] r_w / (number of winners of w): one pass per
    kernel offset (a loop over the k kernel positions, each vectorised over every window)."""
    xp = F.pad(x, win.pads, value=float("-inf"))
    offsets = list(itertools.product(*[range(k) for k in win.kernel]))
    count = torch.zeros_like(y)
    for off in offsets:
        count += win.offset_view(xp, off, y.shape) == y
    share = r / count.clamp_(min=1)
    rp = torch.zeros_like(xp)
    for off in offsets:
        view = win.offset_view(rp, off, y.shape)
        view.add_(share * (win.offset_view(xp, off, y.shape) == y))
    crop = tuple(slice(p, p + n) for p, n in zip(win.padding, x.shape[-len(win.kernel):]))
    return rp[(Ellipsis,) + crop]


_MAXPOOLS = {aten_op("max_pool1d"): 1, aten_op("max_pool2d"): 2, aten_op("max_pool3d"): 3,
             aten_op("max_pool2d_with_indices"): 2, aten_op("max_pool3d_with_indices"): 3,
             aten_op("max_pool1d_with_indices"): 1}
_MAXPOOLS = {k: v for k, v in _MAXPOOLS.items() if k is not None}


@register(*_MAXPOOLS, family="select", routes=lambda n: (0,))
def max_pool_rule(ctx: RuleContext, r: Any) -> tuple[Any, ...]:
    nd = _MAXPOOLS[ctx.node.target]
    r = r[0] if isinstance(r, list) else r
    y = ctx.out[0] if isinstance(ctx.out, (tuple, list)) else ctx.out
    x = rel_float(ctx.args[0])
    return ctx.route({0: _share_to_winners(x, rel_float(y), r, _windows(x.shape, y.shape, ctx.bound(), nd))})


def _reduce_dims(ctx: RuleContext, x: Tensor) -> tuple[list[int], bool]:
    kw = ctx.bound()
    dim = kw.get("dim")
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        return list(range(x.dim())), False if "keepdim" not in kw else bool(kw["keepdim"])
    dims = [dim] if isinstance(dim, int) else list(dim)
    return [d % x.dim() for d in dims], bool(kw.get("keepdim", False))


_SELECTS = [aten.amax.default, aten.amin.default, aten.max.dim, aten.min.dim, aten.max.default, aten.min.default]


@register(*_SELECTS, family="select", routes=lambda n: (0,))
def max_reduce_rule(ctx: RuleContext, r: Any) -> tuple[Any, ...]:
    r = r[0] if isinstance(r, list) else r
    y = ctx.out[0] if isinstance(ctx.out, (tuple, list)) else ctx.out
    x = ctx.args[0]
    dims, keep = _reduce_dims(ctx, x)
    if not keep:
        for d in sorted(dims):
            y, r = y.unsqueeze(d), r.unsqueeze(d)
    win = x == y
    count = win.sum(dim=dims, keepdim=True).clamp(min=1)
    return ctx.route({0: win.to(r.dtype) / count.to(r.dtype) * r})


_INDEXED = [aten_op("adaptive_max_pool1d"), aten_op("adaptive_max_pool2d"), aten_op("adaptive_max_pool3d")]


@register(*_INDEXED, family="select", routes=lambda n: (0,))
def adaptive_max_rule(ctx: RuleContext, r: Any) -> tuple[Any, ...]:
    """Routes to the indices the op returns (ties: the first winner)."""
    r = r[0] if isinstance(r, list) else r
    x, idx = ctx.args[0], ctx.out[1]
    nd = len(ctx.args[1]) if isinstance(ctx.args[1], (list, tuple)) else 1
    lead = x.shape[: x.dim() - nd]
    flat = torch.zeros(lead + (x.shape[x.dim() - nd:].numel(),), dtype=r.dtype, device=r.device)
    flat = flat.scatter_add(-1, idx.reshape(lead + (-1,)), r.reshape(lead + (-1,)))
    return ctx.route({0: flat.reshape(x.shape)})


@register(aten.topk.default, aten.sort.default, aten_op("sort", "stable"), family="select", routes=lambda n: (0,))
def topk_rule(ctx: RuleContext, r: Any) -> tuple[Any, ...]:
    """topk / sort: relevance of each selected value goes to the element it came from."""
    r0 = r[0] if isinstance(r, list) else r
    x, idx = ctx.args[0], ctx.out[1]
    kw = ctx.bound()
    dim = kw.get("dim", -1) % max(x.dim(), 1)
    out = torch.zeros(x.shape, dtype=r0.dtype, device=r0.device).scatter_add(dim, idx, r0)
    return ctx.route({0: out})
