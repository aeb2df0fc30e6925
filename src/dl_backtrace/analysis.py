"""Static analysis of a traced graph, done once per trace:

- which nodes carry relevance (``live``: float tensors computed from a float user input or from an embedding of
  user ids), which are user ids moved around (``ids``), and which are constants (parameters, buffers, masks,
  positions, anything computed only from those or from integer inputs; RELEVANCE.md 3.8);
- decomposed activations and RMSNorm statistics (patterns.py);
- the activation that gates each contribution node (section 2, clarification 7.4);
- additive attention masks that pass relevance through (7.6);
- which nodes relevance can reach from the output, and which of those have no rule (3.9).
"""

from __future__ import annotations

import logging
import operator
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.fx import Node

from .errors import UnsupportedOp
from .patterns import ActivationPattern, find_activation_patterns, find_matmul_bias, find_rms_statistics
from .rules import RULES, Rule
from .rules.activation import activation_of, activation_rule
from .rules.affine import MATMUL_BIAS
from .rules.gates import Activation
from .rules.registry import aten_op

__all__ = ["Analysis", "analyse", "node_location"]

log = logging.getLogger(__name__)
aten = torch.ops.aten
LIVE, IDS, CONST = "live", "ids", "const"
_IDS_CONSUMERS = {aten.embedding.default}
_VALUE_INDEPENDENT = {aten.zeros_like.default, aten.ones_like.default, aten.full_like.default,
                      aten.empty_like.default, aten.new_zeros.default, aten.new_ones.default,
                      aten.new_full.default, aten.new_empty.default, aten.rand_like.default,
                      aten.randn_like.default}
_PATTERN_RULE = Rule(fn=activation_rule, family="activation")


@dataclass
class Analysis:
    kind: dict[Node, str]
    output: Node
    overrides: dict[Node, tuple[Rule, list[Node]]] = field(default_factory=dict)
    gate: dict[Node, Activation] = field(default_factory=dict)
    attrs: dict[Node, dict[str, Any]] = field(default_factory=dict)
    reachable: set[Node] = field(default_factory=set)
    unsupported: list[UnsupportedOp] = field(default_factory=list)
    nonneg: set[Node] = field(default_factory=set)  # outputs known to be >= 0 (|x| = x, no abs needed)
    needed: set[Node] = field(default_factory=set)  # values some rule reads (a lean run records only these)
    order: list[Node] = field(default_factory=list)  # every node, in graph order
    slots: dict[Node, list[Any]] = field(default_factory=dict)  # input slots per node, computed once

    def rule(self, node: Node) -> tuple[Rule | None, list[Node]]:
        if node in self.overrides:
            return self.overrides[node]
        return RULES.get(node.target), node.all_input_nodes

    def is_live(self, node: Node) -> bool:
        return self.kind.get(node, CONST) != CONST


def _vals(v: Any) -> list[Any]:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _is_float(v: Any) -> bool:
    return any(isinstance(t, torch.Tensor) and t.is_floating_point() for t in _vals(v))


def _is_int(v: Any) -> bool:
    return any(isinstance(t, torch.Tensor) and not t.is_floating_point() for t in _vals(v))


def _kind_of(n: Node, kind: dict[Node, str], user_inputs: set[str]) -> str:
    val = n.meta.get("val")
    if n.op == "placeholder":
        if n.name not in user_inputs:
            return CONST
        return LIVE if _is_float(val) else IDS
    if n.op != "call_function":
        return CONST
    ins = [kind.get(a, CONST) for a in n.all_input_nodes]
    if n.target in _IDS_CONSUMERS:
        return LIVE if len(n.args) > 1 and kind.get(n.args[1], CONST) != CONST else CONST
    if n.target in _VALUE_INDEPENDENT:
        return CONST
    if n.target is operator.getitem:
        parent = kind.get(n.args[0], CONST)
        return parent if parent != CONST and (_is_float(val) if parent == LIVE else _is_int(val)) else CONST
    if LIVE in ins and _is_float(val):
        return LIVE
    rule = RULES.get(n.target)
    if IDS in ins and _is_int(val) and rule is not None and rule.family == "shape":
        return IDS
    return CONST


def node_location(n: Node) -> tuple[str, str]:
    """(module path, last user source line) of a node, for error messages."""
    stack = n.meta.get("nn_module_stack") or {}
    module = list(stack.values())[-1][0] if stack else ""
    trace = (n.meta.get("stack_trace") or "").strip().splitlines()
    loc = ""
    for line in reversed(trace):
        if line.strip().startswith("File "):
            loc = line.strip()
            break
    return module, loc


def _consumer_activation(n: Node, pattern_of: dict[Node, ActivationPattern]) -> Activation | None:
    """The one activation every consumer path of n ends in (through data movement only), else None."""
    found: set[Activation] = set()
    stack, seen = list(n.users), set()
    while stack:
        u = stack.pop()
        if u in seen:
            continue
        seen.add(u)
        if u in pattern_of:
            found.add(pattern_of[u].activation)
            continue
        act = activation_of(u) if u.op == "call_function" else None
        rule = RULES.get(u.target) if u.op == "call_function" else None
        if act is not None:
            found.add(act)
        elif rule is not None and rule.family == "shape":
            stack.extend(u.users)
        else:
            return None
    return found.pop() if len(found) == 1 else None


_SCALES = {aten.mul.Tensor, aten.mul.Scalar, aten.div.Tensor, aten.div.Scalar, aten.add.Tensor, aten.add.Scalar,
           aten.sub.Tensor}
_PRODUCTS = {aten.bmm.default, aten.mm.default, aten.matmul.default, aten.einsum.default}


def _from_attention_scores(n: Node, kind: dict[Node, str]) -> bool:
    """Does n come from a product of two activations (Q K^T), through data movement, scales and masks?"""
    for _ in range(32):
        if n.op != "call_function":
            return False
        if n.target in _PRODUCTS:
            return sum(kind.get(a, CONST) == LIVE for a in n.all_input_nodes) == 2
        rule = RULES.get(n.target)
        live_in = [a for a in n.all_input_nodes if kind.get(a, CONST) == LIVE]
        if len(live_in) != 1 or not (n.target in _SCALES or (rule is not None and rule.family == "shape")):
            return False
        n = live_in[0]
    return False


def _is_mask_add(n: Node, kind: dict[Node, str], gate: Activation | None) -> bool:
    if n.target not in (aten.add.Tensor, aten.sub.Tensor) or gate is None or gate.name != "softmax":
        return False
    live_in = [a for a in n.args[:2] if isinstance(a, Node) and kind.get(a, CONST) == LIVE]
    return len(live_in) == 1 and _from_attention_scores(live_in[0], kind)


def _passthrough(n: Node, a: Analysis) -> bool:
    """Explicitly asked-for pass-through: relevance to the first live input shaped like the output."""
    shape = getattr(n.meta.get("val"), "shape", None)
    for m in n.all_input_nodes:
        if a.is_live(m) and getattr(m.meta.get("val"), "shape", None) == shape:
            warnings.warn(f"no rule for {n.target} at node {n.name}: passing relevance through to {m.name} "
                          "(passthrough_unsupported=True; results are approximate there)", UserWarning, stacklevel=2)
            a.overrides[n] = (_PATTERN_RULE, [m])
            return True
    return False


def _reach(graph: torch.fx.Graph, a: Analysis, passthrough: bool) -> None:
    a.reachable = {a.output}
    for n in reversed(list(graph.nodes)):
        if n not in a.reachable or n.op != "call_function":
            continue
        rule, inputs = a.rule(n)
        if rule is not None and rule.supports is not None and n not in a.overrides and not rule.supports(n):
            rule = None  # e.g. einsum with three operands: reported like any op without a rule
        if rule is None and passthrough and _passthrough(n, a):
            rule, inputs = a.rule(n)
        if rule is None:  # report it, and keep walking so every op without a rule is listed at once
            module, loc = node_location(n)
            a.unsupported.append(UnsupportedOp(str(n.target), n.name, module, loc))
        routes = rule.routes(n) if rule is not None and rule.routes is not None and n not in a.overrides else None
        for m in inputs if routes is None else _routed(n, routes):
            if a.is_live(m):
                a.reachable.add(m)


def _routed(n: Node, positions: Iterable[int]) -> list[Node]:
    out = []
    for p in positions:
        v = n.args[p] if p < len(n.args) else None
        out += [x for x in _vals(v) if isinstance(x, Node)]
    return out


_NONNEG = {aten.relu.default, aten.sigmoid.default, aten._softmax.default, aten.softmax.int,
           aten.hardsigmoid.default, aten_op("relu6")} - {None}
_KEEPS_SIGN = {aten.max_pool2d.default, aten.max_pool1d.default, aten.max_pool3d.default,
               aten.max_pool2d_with_indices.default, aten.avg_pool2d.default, aten.avg_pool1d.default,
               aten.adaptive_avg_pool2d.default, aten.adaptive_avg_pool1d.default, aten.mean.dim,
               aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.permute.default,
               aten.transpose.int, aten.flatten.using_ints, aten.clone.default, aten.dropout.default,
               aten.cat.default, aten.unsqueeze.default, aten.squeeze.dim, aten.expand.default,
               aten.amax.default, aten.upsample_nearest2d.vec, aten.upsample_bilinear2d.vec}


def _nonneg(graph: torch.fx.Graph) -> set[Node]:
    """Nodes whose output is >= 0 by construction: ReLU-like activations, and pooling or data movement of those."""
    out: set[Node] = set()
    for n in graph.nodes:
        if n.op != "call_function":
            continue
        hard = n.target is aten.hardtanh.default and len(n.args) > 1 and float(n.args[1]) >= 0
        if n.target in _NONNEG or hard:
            out.add(n)
        elif (n.target in _KEEPS_SIGN or n.target is operator.getitem) and n.all_input_nodes and all(
                m in out for m in n.all_input_nodes if _is_float(m.meta.get("val"))):
            out.add(n)
    return out


def _needed(a: Analysis) -> set[Node]:
    """Values the backward walk reads: the explained output, and per reachable node what its rule reads."""
    out = {a.output}
    for n in a.reachable:
        if n.op != "call_function":
            continue
        rule, inputs = a.rule(n)
        reads = rule.reads_of(n) if rule is not None and rule is not _PATTERN_RULE else "none"
        if reads == "all" and rule.family == "contribution" and n not in a.gate:
            reads = "inputs"  # the output (pre-activation) matters only to gating
        if reads in ("inputs", "all"):
            out.update(inputs)
        if reads == "all":
            out.add(n)
    return out


def analyse(graph: torch.fx.Graph, user_inputs: set[str], output: Node, passthrough: bool = False) -> Analysis:
    kind: dict[Node, str] = {}
    for n in graph.nodes:
        kind[n] = _kind_of(n, kind, user_inputs)
    a = Analysis(kind=kind, output=output)
    for mul, stat in find_rms_statistics(graph).items():
        a.attrs.setdefault(mul, {})["const_args"] = stat.name
        kind[stat] = CONST
    pattern_of: dict[Node, ActivationPattern] = {}
    live = {n for n, k in kind.items() if k == LIVE}
    for p in find_activation_patterns(graph, live):
        a.overrides[p.out] = (_PATTERN_RULE, [p.x])
        pattern_of.update({m: p for m in p.region})
    for add, operands in find_matmul_bias(graph, live).items():
        a.overrides.setdefault(add, (MATMUL_BIAS, operands))
    _reach(graph, a, passthrough)
    a.nonneg = _nonneg(graph)
    a.order = list(graph.nodes)
    for n in a.reachable:
        rule, _ = a.rule(n)
        if rule is None or rule.family != "contribution" or rule is _PATTERN_RULE:
            continue
        act = _consumer_activation(n, pattern_of)
        if _is_mask_add(n, kind, act):
            a.attrs.setdefault(n, {})["passthrough"] = True
        elif act is not None and act.gates:
            a.gate[n] = act
    a.needed = _needed(a)
    return a
