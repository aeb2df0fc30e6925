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


def conv_input_adjoint(g: Tensor, w: Tensor, cp: ConvParams, in_shape: torch.Size) -> Tensor:
    """The adjoint of x -> conv(x, w) (or conv_transpose) applied to ``g``, shaped like the input."""
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
