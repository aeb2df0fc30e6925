"""The reverse walk: from the seeded output back to the inputs, one rule call per node that holds relevance.

The loop names no op: it looks up the node's rule (or the analysis' override), builds its context, and adds
the returned relevance to the node's inputs. In contrast mode a rule that is not ``paired`` is applied to each
stream separately. Relevance returned for a constant input is that node's sink.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.fx import Node

from .analysis import Analysis
from .errors import UnsupportedOpError
from .execute import Execution
from .rules.registry import Flow, Pair, RuleContext

__all__ = ["Propagation", "propagate", "input_slots"]


@dataclass
class Propagation:
    relevance: dict[Node, Any] = field(default_factory=dict)
    sinks: dict[Node, Any] = field(default_factory=dict)


def input_slots(node: Node) -> list[tuple[tuple[int | str, int | None], Node]]:
    """Every Node argument of ``node`` with its (position or kwarg, list index), duplicates kept."""
    out: list[tuple[tuple[int | str, int | None], Node]] = []
    items: list[tuple[int | str, Any]] = list(enumerate(node.args)) + list(node.kwargs.items())
    for pos, a in items:
        if isinstance(a, Node):
            out.append(((pos, None), a))
        elif isinstance(a, (list, tuple)):
            out += [((pos, i), x) for i, x in enumerate(a) if isinstance(x, Node)]
    return out


def _add(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, list):
        return [_add(x, y) for x, y in zip(a, b)]
    if isinstance(a, Pair):
        return Pair(a.positive + b.positive, a.negative + b.negative)
    return a + b


def _add_sink(a: Any, b: Any) -> Any:
    """Sinks of one node: same shape adds element-wise, otherwise totals (a 0-dim tensor)."""
    if a is None:
        return b
    if isinstance(a, Pair):
        return Pair(_add_sink(a.positive, b.positive), _add_sink(a.negative, b.negative))
    return a + b if a.shape == b.shape else a.sum() + b.sum()


def _stream(r: Any, k: int) -> Any:
    if isinstance(r, Pair):
        return r[k]
    if isinstance(r, list):
        return [_stream(x, k) for x in r]
    return r


def _zip(p: Any, n: Any) -> Any:
    if p is None and n is None:
        return None
    if isinstance(p, list) or isinstance(n, list):
        p = p if p is not None else [None] * len(n)
        n = n if n is not None else [None] * len(p)
        return [_zip(x, y) for x, y in zip(p, n)]
    return Pair(p if p is not None else torch.zeros_like(n), n if n is not None else torch.zeros_like(p))


def _as_flow(out: Any) -> Flow:
    return out if isinstance(out, Flow) else Flow(tuple(out))


def _call(rule: Any, ctx: RuleContext, r: Any) -> Flow:
    if ctx.mode != "contrast" or rule.paired:
        return _as_flow(rule.fn(ctx, r))
    pos, neg = _as_flow(rule.fn(ctx, _stream(r, 0))), _as_flow(rule.fn(ctx, _stream(r, 1)))
    return Flow(tuple(_zip(a, b) for a, b in zip(pos.inputs, neg.inputs)), _zip(pos.sink, neg.sink))


def _context(node: Node, a: Analysis, run: Execution, mode: str, cache: Any) -> RuleContext:
    if node in a.overrides:
        _, inputs = a.overrides[node]
        slots = [((i, None), m) for i, m in enumerate(inputs)]
        args, kwargs = tuple(run.value(m) for m in inputs), {}
    else:
        slots = a.slots.get(node)
        if slots is None:
            slots = a.slots[node] = input_slots(node)
        args, kwargs = run.args_of(node)
    nodes = [m for _, m in slots]
    return RuleContext(node=node, args=args, kwargs=kwargs, out=run.value(node),
                       inputs=[run.value(m) for m in nodes], input_nodes=nodes,
                       live=[a.is_live(m) for m in nodes], slots=[s for s, _ in slots], mode=mode,
                       gate=a.gate.get(node), attrs=a.attrs.get(node, {}), cache=cache,
                       nonneg_inputs=[m in a.nonneg for m in nodes])


def propagate(a: Analysis, run: Execution, seed: Tensor | Pair, mode: str, cache: Any = None,
              keep_nodes: bool = True, free_values: bool = False) -> Propagation:
    """Walk the graph backwards from ``a.output`` seeded with ``seed``.

    ``keep_nodes=False`` keeps only the inputs' relevance (each node's is dropped once passed on);
    ``free_values=True`` drops each recorded activation once no rule needs it any more (the run cannot be
    explained again). Both bound the peak memory to about what autograd holds for one backward."""
    prop = Propagation()
    rel = prop.relevance
    rel[a.output] = seed
    for node in reversed(a.order):
        r = rel.get(node)
        if r is None or node.op != "call_function":
            if free_values and node.op != "placeholder":
                run.values.pop(node, None)
            continue
        rule, _ = a.rule(node)
        if rule is None:
            raise UnsupportedOpError(a.unsupported)
        ctx = _context(node, a, run, mode, cache)
        flow = _call(rule, ctx, r)
        for m, live, ri in zip(ctx.input_nodes, ctx.live, flow.inputs):
            if ri is None:
                continue
            if live:
                rel[m] = _add(rel.get(m), ri)
            else:
                prop.sinks[node] = _add_sink(prop.sinks.get(node), ri)
        if flow.sink is not None:
            prop.sinks[node] = _add_sink(prop.sinks.get(node), flow.sink)
        if not keep_nodes:
            del rel[node]
        if free_values:
            run.values.pop(node, None)
    return prop
