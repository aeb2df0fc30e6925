"""Run the traced graph and record every node's output.

The graph runs as generated Python code (a copy of the graph whose output is every intermediate value), so a
recorded run costs about what the model's own forward does. If a node fails, the run is repeated node by node
to name the failing node and its user code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch.fx import Node
from torch.fx.node import map_arg

from .errors import NodeExecutionError

__all__ = ["NodeRecord", "Execution", "execute", "recording_module"]

_NODE_ERRORS = (RuntimeError, ValueError, TypeError, IndexError, KeyError, AssertionError, NotImplementedError)


class NodeRecord(NamedTuple):
    """What one node saw and produced: unpacks as ``(inputs, output)``."""

    inputs: tuple[Any, ...]
    output: Any


@dataclass
class Execution:
    """Values of the nodes of one run, in graph order. A lean run records only the values the rules read; any
    other node reads as a shape-only stand-in (a tensor on the meta device)."""

    values: dict[Node, Any] = field(default_factory=dict)
    lean: bool = False

    def value(self, node: Node) -> Any:
        v = self.values.get(node, _MISSING)
        return _meta_like(node.meta.get("val")) if v is _MISSING else v

    def args_of(self, node: Node) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The evaluated arguments of ``node`` (its inputs replaced by their recorded values)."""
        get = self.value if self.lean else self.values.__getitem__
        return map_arg(node.args, get), map_arg(node.kwargs, get)

    @property
    def calls(self) -> dict[Node, tuple[tuple[Any, ...], dict[str, Any]]]:
        return {n: self.args_of(n) for n in self.values if n.op == "call_function"}


_MISSING = object()


def _meta_like(val: Any) -> Any:
    if isinstance(val, torch.Tensor):
        return torch.empty(val.shape, dtype=val.dtype, device="meta")
    if isinstance(val, (tuple, list)):
        return type(val)(_meta_like(v) for v in val)
    return val


def recording_module(gm: torch.fx.GraphModule, keep: set[Node] | None = None) -> tuple[torch.fx.GraphModule,
                                                                                          list[Node]]:
    """A copy of ``gm`` returning the value of every computed node (or of those in ``keep``), and those nodes
    (in the original graph). Values not returned are freed during the run, as in a plain forward."""
    graph = torch.fx.Graph()
    mapping: dict[Node, Node] = {}
    graph.graph_copy(gm.graph, mapping)
    computed = [n for n in gm.graph.nodes if n.op in ("call_function", "call_method", "call_module", "get_attr")
                and (keep is None or n in keep)]
    graph.output(tuple(mapping[n] for n in computed))
    return torch.fx.GraphModule(gm, graph), computed


class _Locator(torch.fx.Interpreter):
    """Node-by-node rerun used only to name a failing node."""

    def run_node(self, n: Node) -> Any:
        try:
            return super().run_node(n)
        except _NODE_ERRORS as e:
            trace = (n.meta.get("stack_trace") or "").strip()
            raise NodeExecutionError(
                f"node '{n.name}' failed: {type(e).__name__}: {e}\n  {n.format_node()}\n"
                f"  user code:\n{trace or '    (no stack trace recorded)'}"
            ) from e


def execute(gm: torch.fx.GraphModule, placeholders: list[Node], feed: Mapping[str, Any],
            recorder: tuple[torch.fx.GraphModule, list[Node]] | None = None) -> Execution:
    """Run ``gm`` on ``feed`` (placeholder name -> value) under no_grad, recording every node."""
    missing = [p.name for p in placeholders if p.name not in feed]
    if missing:
        raise NodeExecutionError(f"no value for graph inputs {missing}")
    inputs = [feed[p.name] for p in placeholders]
    module, computed = recorder or recording_module(gm)
    with torch.no_grad():
        try:
            outs = module(*inputs)
        except _NODE_ERRORS:
            _Locator(gm).run(*inputs, enable_io_processing=False)
            raise
    run = Execution(dict(zip(placeholders, inputs)), lean=len(computed) < sum(
        n.op not in ("placeholder", "output") for n in gm.graph.nodes))
    run.values.update(zip(computed, outs))
    return run
