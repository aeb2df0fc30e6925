"""Shared test helpers: run the engine on a module with an arbitrary output seed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dl_backtrace.engine import Engine, Run
from dl_backtrace.propagate import Propagation, propagate
from dl_backtrace.rules.registry import Pair


@dataclass
class Result:
    engine: Engine
    run: Run
    prop: Propagation
    seed: Any

    def input(self, i: int = 0) -> Any:
        node = self.run.program.traced.user_nodes[i]
        return self.prop.relevance.get(node)

    def nodes(self, target: Any) -> list[torch.fx.Node]:
        return [n for n in self.run.program.traced.graph.nodes if n.target is target]

    def rel(self, node: torch.fx.Node) -> Any:
        return self.prop.relevance.get(node)

    def sink_total(self, stream: int | None = None) -> float:
        tot = 0.0
        for s in self.prop.sinks.values():
            s = s[stream] if stream is not None else s
            tot += float(s.double().sum())
        return tot


def run_seed(module: nn.Module, inputs: tuple[Tensor, ...], seed_fn: Callable[[Tensor], Any],
             mode: str = "default") -> Result:
    """Trace ``module``, run it on ``inputs`` and propagate ``seed_fn(output)`` in ``mode``."""
    eng = Engine(module.eval(), inputs)
    eng.check()
    run = eng.run(inputs)
    seed = seed_fn(run.output.float())
    prog = run.program
    with torch.no_grad():
        prop = propagate(prog.analysis, run.execution, seed, mode, prog.cache)
    return Result(eng, run, prop, seed)


def random_seed(gen: torch.Generator, contrast: bool = False) -> Callable[[Tensor], Any]:
    def fn(y: Tensor) -> Any:
        a = torch.rand(y.shape, generator=gen) * 2 + 0.1
        if not contrast:
            return a
        b = torch.randn(y.shape, generator=gen)
        return Pair(a, b)

    return fn


def assert_close(actual: Tensor, expected: Tensor, rel: float = 1e-5, what: str = "") -> None:
    actual, expected = actual.double(), expected.double()
    scale = float(expected.abs().max().clamp(min=1e-12))
    err = float((actual - expected).abs().max()) / scale
    assert err <= rel, f"{what}: max error {err:.3e} (relative to max |expected| {scale:.3e})"
