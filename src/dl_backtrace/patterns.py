"""Decomposed activations and norms, recognised in the graph (RELEVANCE.md 3.3, 7.5, 7.9).

An activation written out of primitive ops (x * sigmoid(0.75 x), the erf and tanh GELU expansions,
x / (1 + exp(-x)), ...) is found as a small element-wise region with one live input x and one output, and
identified by evaluating it on a probe (float64) and comparing with the known activations. The region's
output then passes relevance straight to x, and x's producer is gated by that activation.

The decomposed RMSNorm x * rsqrt(mean(x^2) + eps) is found structurally; its statistics branch is a constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.fx import Node

from .rules.gates import Activation, gelu, swish

__all__ = ["ActivationPattern", "find_activation_patterns", "find_rms_statistics"]

aten = torch.ops.aten

_ELEMENTWISE = {
    aten.mul.Tensor, aten.mul.Scalar, aten.add.Tensor, aten.add.Scalar, aten.sub.Tensor, aten.sub.Scalar,
    aten.rsub.Scalar, aten.div.Tensor, aten.div.Scalar, aten.sigmoid.default, aten.tanh.default, aten.erf.default,
    aten.pow.Tensor_Scalar, aten.neg.default, aten.exp.default, aten.reciprocal.default,
}
_MAX_REGION = 16


@dataclass(frozen=True)
class ActivationPattern:
    x: Node
    out: Node
    region: frozenset[Node]
    activation: Activation


def _inputs_ok(u: Node, x: Node, region: set[Node]) -> bool:
    for a in list(u.args) + list(u.kwargs.values()):
        if isinstance(a, Node) and a is not x and a not in region:
            return False
        if isinstance(a, (list, tuple)):
            return False
    return True


def _grow(x: Node, order: dict[Node, int]) -> tuple[Node, list[Node]] | None:
    region: list[Node] = []
    members: set[Node] = set()
    pending = set(x.users)
    while pending and len(region) < _MAX_REGION:
        u = min(pending, key=order.__getitem__)
        pending.discard(u)
        if u.op != "call_function" or u.target not in _ELEMENTWISE or not _inputs_ok(u, x, members):
            return None
        region.append(u)
        members.add(u)
        exits = [n for n in region if any(v not in members for v in n.users)]
        if len(region) >= 2 and set(x.users) <= members and exits == [u]:
            return u, region
        pending |= set(u.users)
    return None


def _probe(x: Node, region: list[Node], t: torch.Tensor) -> torch.Tensor:
    vals: dict[Node, torch.Tensor] = {x: t}
    for n in region:
        args = [vals[a] if isinstance(a, Node) else a for a in n.args]
        kwargs = {k: vals[v] if isinstance(v, Node) else v for k, v in n.kwargs.items()}
        vals[n] = n.target(*args, **kwargs)
    return vals[region[-1]]


def _identify(f: torch.Tensor, t: torch.Tensor) -> Activation | None:
    f1 = float(f[(t - 1.0).abs().argmin()])
    candidates = [gelu("none"), gelu("tanh"), Activation("mish", -6.0, None, False, F.mish),
                  Activation("hardswish", -3.0, None, False, F.hardswish)]
    if 0.0 < f1 < 1.0:
        beta = math.log(f1 / (1.0 - f1))
        for b in (1.0, 0.75, 1.702):
            if abs(beta - b) < 1e-6:
                beta = b
        candidates.insert(0, swish(beta))
    for act in candidates:
        if torch.allclose(act.f(t), f, rtol=1e-6, atol=1e-9):
            return act
    return None


def find_activation_patterns(graph: torch.fx.Graph, live: set[Node]) -> list[ActivationPattern]:
    order = {n: i for i, n in enumerate(graph.nodes)}
    t = torch.linspace(-10.0, 10.0, 2001, dtype=torch.float64)
    found: list[ActivationPattern] = []
    for x in graph.nodes:
        if x not in live or len(x.users) < 1:
            continue
        grown = _grow(x, order)
        if grown is None:
            continue
        out, region = grown
        try:
            f = _probe(x, region, t)
        except (RuntimeError, TypeError):
            continue
        act = _identify(f, t)
        if act is not None:
            found.append(ActivationPattern(x, out, frozenset(region), act))
    return found


_CASTS = {aten._to_copy.default, aten.clone.default, aten.alias.default}


def _strip(n: object) -> object:
    while isinstance(n, Node) and n.op == "call_function" and n.target in _CASTS:
        n = n.args[0]
    return n


def _squared(n: object) -> object:
    n = _strip(n)
    if not isinstance(n, Node) or n.op != "call_function":
        return None
    if n.target is aten.pow.Tensor_Scalar and n.args[1] == 2:
        return _strip(n.args[0])
    if n.target is aten.mul.Tensor and _strip(n.args[0]) is _strip(n.args[1]):
        return _strip(n.args[0])
    return None


def _rms_source(b: object) -> object:
    """The tensor whose RMS ``b`` is: b = rsqrt(mean(a^2) + eps), modulo casts; else None."""
    b = _strip(b)
    if not isinstance(b, Node) or b.target is not aten.rsqrt.default:
        return None
    s = _strip(b.args[0])
    if isinstance(s, Node) and s.target in (aten.add.Tensor, aten.add.Scalar) and not isinstance(s.args[1], Node):
        s = _strip(s.args[0])
    if not isinstance(s, Node) or s.target is not aten.mean.dim:
        return None
    return _squared(s.args[0])


def find_rms_statistics(graph: torch.fx.Graph) -> dict[Node, Node]:
    """mul nodes of a decomposed RMSNorm -> the statistics operand (to be treated as a constant)."""
    out: dict[Node, Node] = {}
    for n in graph.nodes:
        if n.op != "call_function" or n.target is not aten.mul.Tensor:
            continue
        a, b = n.args[0], n.args[1]
        for x, stat in ((a, b), (b, a)):
            if isinstance(stat, Node) and _rms_source(stat) is not None and _rms_source(stat) is _strip(x):
                out[n] = stat
    return out


_PRODUCTS = {aten.mm.default, aten.matmul.default, aten.bmm.default}


def _shape(n: Any) -> tuple[int, ...] | None:
    val = n.meta.get("val") if isinstance(n, Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def find_matmul_bias(graph: torch.fx.Graph, live: set[Node]) -> dict[Node, list[Node]]:
    """``add(matmul(x, W), b)`` with exactly one live operand of the product, the product used only by the add
    and a constant ``b`` that broadcasts without enlarging the product: add node -> [a, b of the product, bias].
    These are linear layers written by hand (RELEVANCE.md 2.1: product and bias add are one node)."""
    found: dict[Node, list[Node]] = {}
    for n in graph.nodes:
        if n.target is not aten.add.Tensor or len(n.args) != 2 or n.kwargs.get("alpha", 1) != 1:
            continue
        for prod, bias in ((n.args[0], n.args[1]), (n.args[1], n.args[0])):
            if not (isinstance(prod, Node) and isinstance(bias, Node) and prod.target in _PRODUCTS):
                continue
            ops = prod.args[:2]
            if len(prod.users) != 1 or bias in live or sum(o in live for o in ops) != 1:
                continue
            shape, bshape = _shape(prod), _shape(bias)
            if shape is None or bshape is None or torch.broadcast_shapes(shape, bshape) != shape:
                continue
            found[n] = [ops[0], ops[1], bias]
            break
    return found
