"""Run the traced graph and record, per node, its evaluated arguments and its output."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch.fx import Node

from .errors import NodeExecutionError

__all__ = ["NodeRecord", "Execution", "execute"]

_NODE_ERRORS = (RuntimeError, ValueError, TypeError, IndexError, KeyError, AssertionError, NotImplementedError)


class NodeRecord(NamedTuple):
    """What one node saw and produced: unpacks as ``(inputs, output)``."""

    inputs: tuple[Any, ...]
    output: Any


@dataclass
class Execution:
    """Values of every node of one run (outputs, and the evaluated arguments of call nodes)."""

    values: dict[Node, Any] = field(default_factory=dict)
    calls: dict[Node, tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)


class _Recorder(torch.fx.Interpreter):
    def __init__(self, gm: torch.fx.GraphModule, run: Execution) -> None:
        super().__init__(gm, garbage_collect_values=False)
        self.rec = run

    def run_node(self, n: Node) -> Any:
        with self._set_current_node(n):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            try:
                out = getattr(self, n.op)(n.target, args, kwargs)
            except _NODE_ERRORS as e:
                trace = (n.meta.get("stack_trace") or "").strip()
                raise NodeExecutionError(
                    f"node '{n.name}' failed: {type(e).__name__}: {e}\n  {n.format_node()}\n"
                    f"  user code:\n{trace or '    (no stack trace recorded)'}"
                ) from e
        if n.op == "call_function":
            self.rec.calls[n] = (args, kwargs)
        self.rec.values[n] = out
        return out


def execute(gm: torch.fx.GraphModule, placeholders: list[Node], feed: Mapping[str, Any]) -> Execution:
    """Run ``gm`` with ``feed`` (placeholder name -> value) under no_grad, recording every node."""
    missing = [p.name for p in placeholders if p.name not in feed]
    if missing:
        raise NodeExecutionError(f"no value for graph inputs {missing}")
    run = Execution()
    with torch.no_grad():
        _Recorder(gm, run).run(*[feed[p.name] for p in placeholders], enable_io_processing=False)
    return run
