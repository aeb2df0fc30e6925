"""Adjoints (transposed applications) of the linear maps the contribution rules use.

Where torch has a direct transposed op (matmul with transposes, conv_transpose for conv) we call it; anything
else goes through ``torch.func.vjp`` of the op itself, which is exact for linear maps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["vjp_of", "sum_to", "conv_input_adjoint", "ConvParams"]


def vjp_of(fn: Callable[..., Tensor], primals: Sequence[Tensor], cotangent: Tensor) -> tuple[Tensor, ...]:
    """Adjoint of the (multi-)linear map ``fn`` at ``primals`` applied to ``cotangent``."""
    _, pull = torch.func.vjp(fn, *primals)
    return pull(cotangent)


def sum_to(t: Tensor, shape: torch.Size) -> Tensor:
    """Reduce a broadcast result back to ``shape`` (the adjoint of broadcasting)."""
    if t.shape == shape:
        return t
    lead = t.dim() - len(shape)
    if lead > 0:
        t = t.sum(dim=tuple(range(lead)))
    dims = [i for i, (a, b) in enumerate(zip(t.shape, shape)) if b == 1 and a != 1]
    if dims:
        t = t.sum(dim=dims, keepdim=True)
    return t.reshape(shape)


class ConvParams:
    """Normalised convolution arguments (as aten.convolution takes them)."""

    def __init__(self, nd: int, stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                 transposed: bool, output_padding: Sequence[int], groups: int) -> None:
        self.nd = nd
        self.stride = _expand(stride, nd)
        self.padding = _expand(padding, nd)
        self.dilation = _expand(dilation, nd)
        self.transposed = bool(transposed)
        self.output_padding = _expand(output_padding, nd)
        self.groups = int(groups)

    def apply(self, x: Tensor, w: Tensor) -> Tensor:
        return torch.ops.aten.convolution.default(x, w, None, self.stride, self.padding, self.dilation,
                                                  self.transposed, self.output_padding, self.groups)


def _expand(v: Sequence[int] | int, nd: int) -> list[int]:
    if isinstance(v, int):
        return [v] * nd
    v = list(v)
    return v * nd if len(v) == 1 else v


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def flippable(cp: ConvParams, w: Tensor) -> bool:
    """A stride-1 convolution's adjoint is a plain convolution with the flipped, transposed kernel (mkldnn's
    forward kernels are faster than conv_transpose, most of all on small maps)."""
    return (not cp.transposed and all(s == 1 for s in cp.stride)
            and all(p <= d * (k - 1) for p, d, k in zip(cp.padding, cp.dilation, w.shape[2:])))


def flip_weight(w: Tensor, cp: ConvParams) -> Tensor:
    """(C_out, C_in/g, *k) -> (C_in, C_out/g, *k) flipped in space: the kernel of the adjoint convolution."""
    g = cp.groups
    c_out, c_in_g = w.shape[:2]
    k = w.shape[2:]
    t = w.reshape(g, c_out // g, c_in_g, *k).transpose(1, 2).reshape(c_in_g * g, c_out // g, *k)
    return t.flip(list(range(2, 2 + cp.nd))).contiguous()


def conv_input_adjoint(g: Tensor, w: Tensor, cp: ConvParams, in_shape: torch.Size,
                       w_flipped: Tensor | None = None) -> Tensor:
    """The adjoint of x -> conv(x, w) (or conv_transpose) applied to ``g``, shaped like the input."""
    if w_flipped is not None:
        pad = [d * (k - 1) - p for p, d, k in zip(cp.padding, cp.dilation, w.shape[2:])]
        return _CONV[cp.nd](g, w_flipped, None, 1, pad, cp.dilation, cp.groups)
    if cp.transposed:
        out = _CONV[cp.nd](g, w, None, cp.stride, cp.padding, cp.dilation, cp.groups)
        if tuple(out.shape[2:]) == tuple(in_shape[2:]):
            return out
    else:
        opad = []
        for i in range(cp.nd):
            full = (g.shape[2 + i] - 1) * cp.stride[i] - 2 * cp.padding[i] + cp.dilation[i] * (w.shape[2 + i] - 1) + 1
            opad.append(in_shape[2 + i] - full)
        if all(0 <= p < max(s, d) for p, s, d in zip(opad, cp.stride, cp.dilation)):
            return _CONV_T[cp.nd](g, w, None, cp.stride, cp.padding, opad, cp.groups, cp.dilation)
    x0 = torch.zeros(in_shape, dtype=g.dtype, device=g.device)
    return vjp_of(lambda x: cp.apply(x, w), (x0,), g)[0]
