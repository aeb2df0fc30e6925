"""Activation gating (RELEVANCE.md section 2): the activation that consumes a contribution node decides which of
the node's pools (positive P, negative N) can matter for the output.

Monotone f with range (l, u): T < l => P := 0, T > u => N := 0.
Non-monotone f (silu/swish, gelu, hardswish, mish): the same range tests, then where P > 0 and N > 0:
f(T) == f(P + max(b, 0)) => N := 0, else f(T) == f(-(N + max(-b, 0))) => P := 0.

Choices for activations the paper's table does not list (tested in tests/rules/test_gates.py):
- ReLU: never gated (the paper-era implementation never applied its bound 0, see RELEVANCE.md section 2).
- hardtanh(min, max) / relu6 / clamp(min, max): monotone with range (min, max); a lower bound of exactly 0 (or a
  missing bound) is not applied, for the same reason as ReLU (relu6 = hardtanh(0, 6) is gated only above 6).
- hardsigmoid: monotone, range (-3, 3) (it is constant outside).
- hardswish: non-monotone, range (-3, -) (zero below -3), f = hardswish.
- mish: non-monotone like swish, range (-6, -), f = mish.
- leaky_relu, elu/celu/selu, softplus, log_sigmoid: not gated (no saturating range that silences one pool).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Activation", "gate_masks", "ACTIVATIONS"]


@dataclass(frozen=True)
class Activation:
    """An activation as far as gating is concerned. ``f`` is only used by non-monotone ones."""

    name: str
    lower: float | None = None
    upper: float | None = None
    monotone: bool = True
    f: Callable[[Tensor], Tensor] | None = field(default=None, compare=False, hash=False)
    param: float | None = None  # distinguishes e.g. swish betas or hardtanh bounds in equality

    @property
    def gates(self) -> bool:
        return self.lower is not None or self.upper is not None or not self.monotone


def _swish(beta: float) -> Callable[[Tensor], Tensor]:
    return lambda x: x * torch.sigmoid(beta * x)


def swish(beta: float) -> Activation:
    """x * sigmoid(beta * x); aten.silu is beta = 1, the paper's swish is beta = 0.75."""
    return Activation("swish", lower=-6.0, monotone=False, f=_swish(beta), param=float(beta))


def gelu(approximate: str = "none") -> Activation:
    fn = (lambda x: F.gelu(x, approximate="tanh")) if approximate == "tanh" else F.gelu
    return Activation("gelu", lower=-6.0, monotone=False, f=fn, param=1.0 if approximate == "tanh" else 0.0)


def hardtanh(lo: float | None, hi: float | None) -> Activation:
    """hardtanh / relu6 / clamp: monotone with range (lo, hi); a missing bound or a lower bound of 0 is not
    applied (like ReLU)."""
    lower = None if lo is None or lo == 0 else float(lo)
    upper = None if hi is None else float(hi)
    return Activation("hardtanh", lower=lower, upper=upper, param=hash((lower, upper)))


ACTIVATIONS: dict[str, Activation] = {
    "identity": Activation("identity"),
    "relu": Activation("relu"),
    "tanh": Activation("tanh", lower=-2.0, upper=2.0),
    "sigmoid": Activation("sigmoid", lower=-4.0, upper=4.0),
    "softmax": Activation("softmax", lower=-1.0, upper=2.0),
    "hardsigmoid": Activation("hardsigmoid", lower=-3.0, upper=3.0),
    "hardswish": Activation("hardswish", lower=-3.0, monotone=False, f=F.hardswish),
    "mish": Activation("mish", lower=-6.0, monotone=False, f=F.mish),
    "leaky_relu": Activation("leaky_relu"),
    "elu": Activation("elu"),
    "softplus": Activation("softplus"),
    "log_sigmoid": Activation("log_sigmoid"),
}


def gate_masks(act: Activation, t: Tensor, p: Tensor, n: Tensor, b: Tensor | None) -> tuple[Tensor, Tensor]:
    """Which units lose their positive pool (first mask) or negative pool (second mask).

    ``t`` is the pre-activation T = P - N + b, ``p``/``n`` the pools, ``b`` the bias (or None)."""
    kill_p = t < act.lower if act.lower is not None else None
    kill_n = t > act.upper if act.upper is not None else None
    if act.monotone:
        return _or_false(kill_p, t), _or_false(kill_n, t)
    f = act.f
    ft = f(t)
    eq_p = ft == f(p if b is None else p + b.clamp(min=0))
    eq_n = ft == f(n.neg() if b is None else (n + (-b).clamp(min=0)).neg_())
    both = (p > 0).logical_and_(n > 0)
    for k in (kill_p, kill_n):
        if k is not None:
            both.logical_and_(k.logical_not())
    new_n = both.logical_and(eq_p)
    new_p = both.logical_and_(eq_p.logical_not_()).logical_and_(eq_n)
    return (new_p if kill_p is None else kill_p.logical_or_(new_p)), (new_n if kill_n is None
                                                                    else kill_n.logical_or_(new_n))


def _or_false(mask: Tensor | None, like: Tensor) -> Tensor:
    return mask if mask is not None else torch.zeros_like(like, dtype=torch.bool)
