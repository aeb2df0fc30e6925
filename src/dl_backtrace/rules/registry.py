"""The rule registry: one pure function per op family, keyed by the ATen op overload.

A rule receives a :class:`RuleContext` (the node, its recorded inputs and output, what the graph analysis found)
and the relevance of the node's output, and returns the relevance of each tensor input (``None`` where an input
gets none), optionally with a bias sink (relevance absorbed by the node itself).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Union

import torch
from torch import Tensor

__all__ = ["Pair", "Flow", "RuleContext", "Rule", "RULES", "register", "rule_for"]


class Pair(NamedTuple):
    """Relevance of one tensor in contrast mode: evidence for (positive) and against (negative)."""

    positive: Tensor
    negative: Tensor

    @property
    def net(self) -> Tensor:
        return self.positive - self.negative


RelevanceValue = Union[Tensor, Pair]  # noqa: UP007  (runtime alias)


@dataclass
class Flow:
    """What a rule returns when it also absorbs relevance (a bias sink, relevance landing on constants)."""

    inputs: tuple[Any, ...]
    sink: Any = None


@dataclass
class RuleContext:
    """Everything a rule may read about one node. Rules never mutate it."""

    node: torch.fx.Node
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    out: Any
    inputs: list[Tensor]  # tensor inputs, flattened in argument order
    input_nodes: list[torch.fx.Node]
    live: list[bool]  # per tensor input: does it carry relevance?
    slots: list[tuple[int | str, int | None]]  # per tensor input: (argument position or kwarg, index in a list)
    mode: str = "default"
    gate: Any = None  # Activation gating this node (contribution rules only)
    attrs: dict[str, Any] = field(default_factory=dict)  # analysis annotations (e.g. "passthrough")
    cache: Any = None  # per-trace cache of derived parameters (|W|, float copies)
    nonneg_inputs: list[bool] | None = None  # per tensor input: known >= 0 from the graph (a ReLU output, ...)

    def arg(self, i: int, default: Any = None) -> Any:
        return self.args[i] if len(self.args) > i else default

    def is_live(self, pos: int | str, sub: int | None = None) -> bool:
        """Does the tensor at argument ``pos`` (list element ``sub``) carry relevance?"""
        for slot, flag in zip(self.slots, self.live):
            if slot == (pos, sub):
                return flag
        return False

    def bound(self) -> dict[str, Any]:
        """Arguments by schema name, defaults filled in (for ATen ops)."""
        schema = getattr(self.node.target, "_schema", None)
        if schema is None:
            return {str(i): a for i, a in enumerate(self.args)} | dict(self.kwargs)
        out: dict[str, Any] = {}
        for i, a in enumerate(schema.arguments):
            if i < len(self.args) and not a.kwarg_only:
                out[a.name] = self.args[i]
            elif a.name in self.kwargs:
                out[a.name] = self.kwargs[a.name]
            elif a.has_default_value():
                out[a.name] = a.default_value
        return out

    def nonneg(self, pos: int | str, sub: int | None = None) -> bool:
        """Is the input at ``pos`` known to be non-negative (so |x| = x needs no computation)?"""
        if self.nonneg_inputs is None:
            return False
        for slot, flag in zip(self.slots, self.nonneg_inputs):
            if slot == (pos, sub):
                return flag
        return False

    def node_of(self, pos: int | str, sub: int | None = None) -> torch.fx.Node | None:
        for slot, n in zip(self.slots, self.input_nodes):
            if slot == (pos, sub):
                return n
        return None

    def derived(self, pos: int | str, tag: str, value: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        """``fn(value)``, cached across calls when the argument is a parameter or buffer."""
        if self.cache is None:
            return fn(value)
        return self.cache.get(self.node_of(pos), tag, value, fn)

    def route(self, by_arg: dict[int | str, Any]) -> tuple[Any, ...]:
        """Align relevance given per argument position (a list for list arguments) with ``inputs``."""
        out = []
        for pos, sub in self.slots:
            v = by_arg.get(pos)
            out.append(v if sub is None or v is None else v[sub])
        return tuple(out)


RuleFn = Callable[[RuleContext, Any], Sequence[Any] | Flow]


@dataclass(frozen=True)
class Rule:
    """A registered rule. ``paired`` rules handle contrast mode themselves (they receive a :class:`Pair`);
    every other rule is applied to each stream separately. ``family`` names the op family (used by the graph
    analysis: "shape" nodes are data movement, "contribution" nodes are gated by the activation they feed).
    ``routes`` says which tensor inputs (by position) can receive relevance; None means every live one."""

    fn: RuleFn
    family: str
    paired: bool = False
    routes: Callable[[torch.fx.Node], Sequence[int]] | None = None
    reads: Callable[[torch.fx.Node], str] | None = None  # "none" | "inputs" | "all"; None: by family
    supports: Callable[[torch.fx.Node], bool] | None = None  # False: this call of the op has no rule

    def reads_of(self, node: torch.fx.Node) -> str:
        """Which recorded values the rule reads besides shapes: nothing, its inputs, or inputs and output."""
        if self.reads is not None:
            return self.reads(node)
        return _READS.get(self.family, "all")


_READS = {"activation": "none", "norm": "none", "embedding": "none", "product": "none", "attention": "inputs",
          "shape": "inputs", "contribution": "all", "select": "all"}


class _Registry(dict):
    """Rules keyed by op overload; ops of other libraries (which exist only once that library is imported) may be
    registered by their qualified name (``"namespace::op"``) and are found through any overload of that op."""

    def get(self, key: Any, default: Any = None) -> Any:
        found = super().get(key)
        if found is None and isinstance(key, torch._ops.OpOverload):
            found = super().get(key._schema.name)
        return default if found is None else found

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None


RULES: dict[Any, Rule] = _Registry()


def register(
    *ops: Any, family: str, paired: bool = False, routes: Callable[[torch.fx.Node], Sequence[int]] | None = None,
    reads: Callable[[torch.fx.Node], str] | None = None,
    supports: Callable[[torch.fx.Node], bool] | None = None,
) -> Callable[[RuleFn], RuleFn]:
    """Register ``fn`` as the rule of every op in ``ops``. Registering an op twice raises."""

    def deco(fn: RuleFn) -> RuleFn:
        for op in ops:
            if op is None:
                continue
            if op in RULES:
                raise ValueError(f"a rule for {op} is already registered ({RULES[op].fn.__qualname__})")
            RULES[op] = Rule(fn=fn, family=family, paired=paired, routes=routes, reads=reads, supports=supports)
        return fn

    return deco


def rule_for(target: Any) -> Rule | None:
    return RULES.get(target)


def op_or_none(packet: Any, overload: str) -> Any:
    """``aten.<op>.<overload>`` when this torch build has it, else None (ops differ between 2.6 and 2.14)."""
    if packet is None:
        return None
    return getattr(packet, overload, None)


def aten_op(name: str, overload: str = "default") -> Any:
    return op_or_none(getattr(torch.ops.aten, name, None), overload)


GETITEM = operator.getitem
