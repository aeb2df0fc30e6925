"""Data movement (RELEVANCE.md 3.1): relevance goes back to the element it came from; duplicated elements sum.

One generic rule serves every op: the adjoint (``torch.func.vjp``) of the op on the recorded inputs. Output
elements that come from no live input (pad values, the constant branch of where/masked_fill, constants in cat)
carry relevance onto a constant: that part is reported as a sink (7.8). Common ops take a direct adjoint (no vjp)
for speed; tests check those against the generic one.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._adjoint import sum_to, vjp_of
from .contribution import rel_float
from .registry import Flow, RuleContext, aten_op, register

aten = torch.ops.aten

_NAMES = [
    ("view", "default"), ("_unsafe_view", "default"), ("reshape", "default"), ("view_copy", "default"),
    ("permute", "default"), ("permute_copy", "default"), ("transpose", "int"), ("transpose_copy", "int"),
    ("t", "default"), ("t_copy", "default"), ("squeeze", "dim"), ("squeeze", "dims"), ("squeeze", "default"),
    ("squeeze_copy", "dim"), ("squeeze_copy", "dims"), ("unsqueeze", "default"), ("unsqueeze_copy", "default"),
    ("expand", "default"), ("expand_copy", "default"), ("repeat", "default"), ("cat", "default"),
    ("stack", "default"), ("split", "Tensor"), ("split_with_sizes", "default"), ("split_copy", "Tensor"),
    ("chunk", "default"), ("unbind", "int"), ("slice", "Tensor"), ("slice_copy", "Tensor"), ("select", "int"),
    ("select_copy", "int"), ("index", "Tensor"), ("_unsafe_index", "Tensor"), ("gather", "default"),
    ("narrow", "default"), ("constant_pad_nd", "default"), ("pad", "default"), ("clone", "default"),
    ("_to_copy", "default"), ("to", "dtype"), ("to", "dtype_layout"), ("to", "device"), ("alias", "default"),
    ("alias_copy", "default"), ("dropout", "default"), ("detach", "default"), ("lift_fresh_copy", "default"),
    ("flatten", "using_ints"), ("unflatten", "int"), ("roll", "default"), ("flip", "default"),
    ("movedim", "int"), ("index_select", "default"), ("where", "self"), ("where", "ScalarOther"),
    ("where", "ScalarSelf"), ("masked_fill", "Scalar"), ("masked_fill", "Tensor"), ("slice_scatter", "default"),
    ("select_scatter", "default"), ("repeat_interleave", "self_int"), ("unfold", "default"),
    ("diagonal", "default"), ("contiguous", "default"), ("_reshape_alias", "default"), ("as_strided", "default"),
    ("reflection_pad1d", "default"), ("reflection_pad2d", "default"), ("replication_pad1d", "default"),
    ("replication_pad2d", "default"), ("pixel_shuffle", "default"), ("pixel_unshuffle", "default"),
    ("channel_shuffle", "default"), ("native_dropout", "default"),
]
DATA_MOVEMENT = [op for op in (aten_op(n, o) for n, o in _NAMES) if op is not None]
# ops whose output can hold elements that come from no tensor input (pads, fill values)
_MAKES_CONSTANTS = {aten_op(n, o) for n, o in [
    ("constant_pad_nd", "default"), ("pad", "default"), ("where", "ScalarOther"), ("where", "ScalarSelf"),
    ("masked_fill", "Scalar"), ("masked_fill", "Tensor")]} - {None}


def _args_with(ctx: RuleContext, repl: dict[int, Tensor]) -> tuple[list[Any], dict[str, Any]]:
    """ctx.args/kwargs with the tensor inputs at positions ``repl`` (indices into ctx.inputs) replaced."""
    args, kwargs = list(ctx.args), dict(ctx.kwargs)
    for i, t in repl.items():
        pos, sub = ctx.slots[i]
        box: Any = kwargs if isinstance(pos, str) else args
        if sub is None:
            box[pos] = t
        else:
            box[pos] = list(box[pos])
            box[pos][sub] = t
    return args, kwargs


def _float_outputs(ctx: RuleContext) -> list[int] | None:
    """Indices of the floating outputs of a tuple-output op (None for a single output)."""
    if not isinstance(ctx.out, (tuple, list)):
        return None
    return [i for i, o in enumerate(ctx.out) if isinstance(o, Tensor) and o.is_floating_point()]


def _cotangent(ctx: RuleContext, r: Any, keep: list[int] | None) -> Any:
    if keep is None:
        return r
    outs = ctx.out
    return tuple(r[i] if r[i] is not None else torch.zeros(outs[i].shape, dtype=_dtype_of(r), device=outs[i].device)
                 for i in keep)


def _dtype_of(r: list[Any]) -> torch.dtype:
    return next(t.dtype for t in r if t is not None)


def generic_move(ctx: RuleContext, r: Any) -> Flow:
    """Adjoint of the op on the live inputs; relevance on elements made from constants is a sink."""
    live = [i for i, flag in enumerate(ctx.live) if flag]
    floats = [i for i, t in enumerate(ctx.inputs) if t.is_floating_point()]
    keep = _float_outputs(ctx)
    cot = _cotangent(ctx, r, keep)
    primals = tuple(rel_float(ctx.inputs[i]) if ctx.inputs[i].is_floating_point() else ctx.inputs[i].float()
                    for i in live)

    def fn(*xs: Tensor) -> Any:
        args, kwargs = _args_with(ctx, dict(zip(live, xs)))
        out = ctx.node.target(*args, **kwargs)
        return out if keep is None else tuple(out[i] for i in keep)

    grads = vjp_of(fn, primals, cot)
    by_input = dict(zip(live, grads))
    sink = None
    if not isinstance(r, list) and (ctx.node.target in _MAKES_CONSTANTS or set(floats) - set(live)):
        sink = r * (1.0 - _from_live_mask(ctx, live, floats))
    return Flow(tuple(by_input.get(i) for i in range(len(ctx.inputs))), sink)


def _from_live_mask(ctx: RuleContext, live: list[int], floats: list[int]) -> Tensor:
    """1 where an output element is a copy of a live input element, 0 where it comes from a constant."""
    idx = sorted(set(live) | set(floats))
    primals = tuple((rel_float(ctx.inputs[i]) if ctx.inputs[i].is_floating_point() else ctx.inputs[i].float())
                    .contiguous() for i in idx)  # forward AD refuses overlapping (expanded) primals
    tangents = tuple(torch.ones_like(p) if i in live else torch.zeros_like(p) for i, p in zip(idx, primals))

    def fn(*xs: Tensor) -> Tensor:
        args, kwargs = _args_with(ctx, dict(zip(idx, xs)))
        return ctx.node.target(*args, **kwargs)

    return torch.func.jvp(fn, primals, tangents)[1]


# -- direct adjoints of the most frequent ops (same result as generic_move, no vjp) ------------------------------

def _reshape(ctx: RuleContext, r: Tensor) -> Any:
    return {0: r.reshape(ctx.args[0].shape)}


def _permute(ctx: RuleContext, r: Tensor) -> Any:
    dims = [d % r.dim() for d in ctx.args[1]]
    inv = [0] * len(dims)
    for i, d in enumerate(dims):
        inv[d] = i
    return {0: r.permute(inv)}


def _transpose(ctx: RuleContext, r: Tensor) -> Any:
    return {0: r.transpose(ctx.args[1], ctx.args[2])}


def _same(ctx: RuleContext, r: Tensor) -> Any:
    x = ctx.args[0]
    moved = r.device != x.device and x.device.type != "meta"  # meta: a lean run kept only x's shape
    return {0: r.to(x.device) if moved else r}


def _expand(ctx: RuleContext, r: Tensor) -> Any:
    return {0: sum_to(r, ctx.args[0].shape)}


def _cat(ctx: RuleContext, r: Tensor) -> Any:
    dim = ctx.bound().get("dim", 0)
    sizes = [t.shape[dim] if t.dim() > 0 else 0 for t in ctx.args[0]]
    return {0: list(r.split(sizes, dim=dim))}


def _zeros_for(r: list[Any], outs: Any) -> list[Tensor]:
    like = next(t for t in r if t is not None)
    return [ri if ri is not None else torch.zeros(o.shape, dtype=like.dtype, device=like.device)
            for ri, o in zip(r, outs)]


def _split(ctx: RuleContext, r: Any) -> Any:
    dim = ctx.bound().get("dim", 0)
    parts = _zeros_for(r, ctx.out)
    return {0: torch.cat(parts, dim=dim)}


def _unbind(ctx: RuleContext, r: Any) -> Any:
    dim = ctx.bound().get("dim", 0)
    return {0: torch.stack(_zeros_for(r, ctx.out), dim=dim)}


def _getitem(ctx: RuleContext, r: Any) -> Any:
    out: list[Any] = [None] * len(ctx.args[0])
    out[ctx.args[1]] = r
    return {0: out}


_FAST: dict[Any, Callable[[RuleContext, Any], Any]] = {
    **{aten_op(n, o): _reshape for n, o in [("view", "default"), ("_unsafe_view", "default"),
                                             ("reshape", "default"), ("flatten", "using_ints"),
                                             ("unflatten", "int"), ("squeeze", "dim"), ("squeeze", "dims"),
                                             ("squeeze", "default"), ("unsqueeze", "default")]},
    aten.permute.default: _permute, aten.transpose.int: _transpose, aten.expand.default: _expand,
    **{aten_op(n, o): _same for n, o in [("clone", "default"), ("alias", "default"), ("_to_copy", "default"),
                                          ("detach", "default"), ("lift_fresh_copy", "default"),
                                          ("dropout", "default"), ("contiguous", "default")]},
    aten.cat.default: _cat, aten.split.Tensor: _split, aten.split_with_sizes.default: _split,
    aten.unbind.int: _unbind, operator.getitem: _getitem,
}


def _reads(node: Any) -> str:
    """Fast adjoints read only shapes (when every float input is live; a constant input needs the generic
    rule, which reads values). cat is the one fast op that commonly mixes in constants."""
    return "none" if node.target in _FAST and node.target is not aten.cat.default else "inputs"


@register(*DATA_MOVEMENT, operator.getitem, family="shape", reads=_reads)
def move_rule(ctx: RuleContext, r: Any) -> Any:
    fast = _FAST.get(ctx.node.target)
    if fast is None or not all(flag for t, flag in zip(ctx.inputs, ctx.live) if _is_float(t)):
        return generic_move(ctx, r)
    return ctx.route(fast(ctx, r))


def _is_float(t: Any) -> bool:
    return isinstance(t, Tensor) and t.is_floating_point()
