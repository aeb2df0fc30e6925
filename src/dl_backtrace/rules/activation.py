"""Element-wise activations (RELEVANCE.md 3.3): relevance passes through unchanged (R_in = R). Their type and
range gate the contribution node that feeds them (section 2); :func:`activation_of` tells the graph analysis
which :class:`~dl_backtrace.rules.gates.Activation` an op node is.
"""

from __future__ import annotations

from typing import Any

import torch

from .gates import ACTIVATIONS, Activation, gelu, hardtanh, swish
from .registry import RuleContext, aten_op, register

aten = torch.ops.aten

_SIMPLE: dict[Any, str] = {
    aten.relu.default: "relu",
    aten.tanh.default: "tanh",
    aten.sigmoid.default: "sigmoid",
    aten._softmax.default: "softmax",
    aten.softmax.int: "softmax",
    aten._log_softmax.default: "softmax",
    aten.log_softmax.int: "softmax",
    aten_op("_safe_softmax"): "softmax",
    aten.hardsigmoid.default: "hardsigmoid",
    aten.hardswish.default: "hardswish",
    aten.mish.default: "mish",
    aten.leaky_relu.default: "leaky_relu",
    aten.elu.default: "elu",
    aten.softplus.default: "softplus",
    aten_op("celu"): "elu",
    aten_op("selu"): "elu",
    aten_op("log_sigmoid"): "log_sigmoid",
}
_SIMPLE = {k: v for k, v in _SIMPLE.items() if k is not None}


def activation_of(node: torch.fx.Node) -> Activation | None:
    """The gating activation an op node applies, or None if it is not an activation."""
    t = node.target
    if t in _SIMPLE:
        return ACTIVATIONS[_SIMPLE[t]]
    if t is aten.silu.default:
        return swish(1.0)
    if t is aten.gelu.default:
        return gelu(str(node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none")))
    if t is aten.hardtanh.default:
        lo = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
        hi = node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", 1.0)
        return hardtanh(float(lo), float(hi))
    if t is aten_op("relu6"):
        return hardtanh(0.0, 6.0)
    if t in _CLAMPS:
        return _clamp_of(node)
    return None


def _clamp_of(node: torch.fx.Node) -> Activation:
    """clamp(x, min, max), clamp_min(x, min), clamp_max(x, max): hardtanh with those bounds (None: unbounded)."""
    t, args = node.target, node.args
    if t is aten.clamp_min.default:
        return hardtanh(_bound(args[1]), None)
    if t is aten.clamp_max.default:
        return hardtanh(None, _bound(args[1]))
    lo = args[1] if len(args) > 1 else node.kwargs.get("min")
    hi = args[2] if len(args) > 2 else node.kwargs.get("max")
    return hardtanh(_bound(lo), _bound(hi))


def _bound(v: Any) -> float | None:
    return None if v is None else float(v)


_CLAMPS = {aten.clamp.default, aten.clamp_min.default, aten.clamp_max.default}
_ALL = [*_SIMPLE, aten.silu.default, aten.gelu.default, aten.hardtanh.default, aten_op("relu6"), *_CLAMPS]


@register(*_ALL, family="activation", routes=lambda n: (0,))
def activation_rule(ctx: RuleContext, r: Any) -> tuple[Any, ...]:
    return ctx.route({0: r})
