"""The result of an explanation: node name -> relevance, plus inputs, bias sinks and the conservation error.

In default mode each value is a tensor shaped like the node's output. In contrast mode each value is a
:class:`~dl_backtrace.rules.registry.Pair` ``(positive, negative)`` with ``.net = positive - negative``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .rules.registry import Pair

__all__ = ["Relevance", "conservation_error"]


def _total(v: Any, k: int | None = None) -> float:
    if v is None:
        return 0.0
    if isinstance(v, Pair):
        return _total(v[k if k is not None else 0])
    return float(v.detach().sum())  # torch sums float32 pairwise: accurate far below the 1e-4 we report against


def _abs_total(v: Any, k: int) -> float:
    t = v[k] if isinstance(v, Pair) else v
    return float(t.detach().abs().sum())


def conservation_error(seed: Any, inputs: dict[str, Any], sinks: dict[str, Any], stream: int = 0) -> float:
    """|sum seed - sum input relevance - sum sinks| / |sum seed| for one stream (denominator sum|seed| when the
    seed's signed total is ~0, e.g. a negative stream of mixed-sign logits)."""
    s = _total(seed, stream)
    rest = sum(_total(v, stream) for v in inputs.values()) + sum(_total(v, stream) for v in sinks.values())
    if not (math.isfinite(s) and math.isfinite(rest)):
        return math.nan
    den = abs(s)
    if den <= 1e-12 * max(_abs_total(seed, stream), 1e-300):
        den = _abs_total(seed, stream)
    return abs(s - rest) / den if den > 0 else 0.0


def _to(v: Any, device: torch.device | str) -> Any:
    if isinstance(v, Pair):
        return Pair(v.positive.to(device), v.negative.to(device))
    return v.to(device) if isinstance(v, Tensor) else v


class Relevance(dict):
    """Mapping node name -> relevance (inputs under their ``forward`` argument names, every node, ``output``).

    Attributes: ``bias_sinks`` (node name -> relevance absorbed there), ``conservation_error`` (relative; the
    max over streams in contrast mode), ``inputs`` (input name -> relevance), ``mode``, ``task``, ``seed``.
    """

    def __init__(self, values: dict[str, Any], inputs: list[str], sinks: dict[str, Any], seed: Any, mode: str,
                 task: str, target: Any = None, tokens: list[str] | None = None) -> None:
        super().__init__(values)
        self.input_names = list(inputs)
        self.bias_sinks = dict(sinks)
        self.seed = seed
        self.mode = mode
        self.task = task
        self.target = target
        self.tokens = tokens
        self.non_finite: str | None = None  # where the first NaN/inf appeared, if any (set by the engine)
        self.modules: dict[str, str] = {}  # node name -> module path (set by the engine)
        self.metadata: dict[str, str] = {}  # a loaded file's metadata
        self._errors: tuple[float, ...] | None = None

    @property
    def conservation_errors(self) -> tuple[float, ...]:
        """Conservation error per stream (one in default mode; positive and negative in contrast mode).
        Computed on first access (it sums every sink once)."""
        if self._errors is None:
            streams = (0, 1) if self.mode == "contrast" else (0,)
            self._errors = tuple(conservation_error(self.seed, self.inputs, self.bias_sinks, s) for s in streams)
        return self._errors

    @property
    def conservation_error(self) -> float:
        """|sum seed - sum input relevance - sum sinks| / |sum seed| (the max over streams in contrast mode;
        NaN when any stream's is: a NaN is never hidden behind the other stream)."""
        errors = self.conservation_errors
        return math.nan if any(math.isnan(e) for e in errors) else max(errors)

    def stream_totals(self) -> list[dict[str, Any]]:
        """Per stream (default mode: one; contrast: "for" = positive, "against" = negative): the seed's total,
        what reached the inputs, what the bias sinks absorbed, and that stream's conservation error."""
        names = ("for", "against") if self.mode == "contrast" else ("relevance",)
        out = []
        for k, name in enumerate(names):
            out.append({"stream": name, "seed": _total(self.seed, k),
                        "inputs": sum(_total(v, k) for v in self.inputs.values()),
                        "sinks": sum(_total(v, k) for v in self.bias_sinks.values()),
                        "error": self.conservation_errors[k]})
        return out

    def describe(self) -> str:
        """One line per stream: seed, input total, sinks, error (and what .net is in contrast mode)."""
        lines = [f"{t['stream']}: seed {t['seed']:.4g}, reached the inputs {t['inputs']:.4g}, bias sinks "
                 f"{t['sinks']:.4g}, conservation error {t['error']:.1e}" for t in self.stream_totals()]
        if self.mode == "contrast":
            net = sum(_total(v, 0) - _total(v, 1) for v in self.inputs.values())
            lines.append(f"net = for - against at the inputs: {net:.4g} (each stream is conserved on its own; "
                         "the against stream is negative where competing outputs are negative, so net can "
                         "exceed the seed)")
        return "\n".join(lines)

    @property
    def inputs(self) -> dict[str, Any]:
        return {k: self[k] for k in self.input_names}

    @property
    def input_relevance(self) -> Any:
        """The relevance of the only input (or a dict of them when the model takes several)."""
        ins = self.inputs
        return next(iter(ins.values())) if len(ins) == 1 else ins

    def to(self, device: torch.device | str) -> Relevance:
        out = Relevance({k: _to(v, device) for k, v in self.items()}, self.input_names,
                        {k: _to(v, device) for k, v in self.bias_sinks.items()}, _to(self.seed, device),
                        self.mode, self.task, self.target, self.tokens)
        out.modules, out.non_finite, out.metadata = self.modules, self.non_finite, self.metadata
        return out

    def _repr_html_(self) -> str:
        from .viz.summary import summary_html

        return summary_html(self)

    def show(self, stream: Any = None) -> str:
        """Write a summary (inputs, each stream's conservation, most relevant nodes, token colours) to
        ``stream`` (default: standard output) and return it."""
        import sys

        from .viz.summary import summary_text

        text = summary_text(self)
        (stream or sys.stdout).write(text + "\n")
        return text

    def save(self, path: str, precision: str = "fp32") -> dict[str, float]:
        """Write a safetensors relevance file (see :func:`dl_backtrace.save_relevance`)."""
        from .relevance_io import save_relevance

        return save_relevance(self, path, precision)

    @property
    def node_relevance(self) -> dict[str, Any]:
        """Relevance by node name and by module path (a module maps to its last node, i.e. its output)."""
        out = dict(self)
        for node, module in getattr(self, "modules", {}).items():
            if module and node in self:
                out[module] = self[node]
        return out

    def __repr__(self) -> str:
        streams = "; ".join(f"{t['stream']}: seed {t['seed']:.4g} inputs {t['inputs']:.4g} sinks {t['sinks']:.4g}"
                            for t in self.stream_totals())
        return (f"Relevance(mode={self.mode!r}, task={self.task!r}, nodes={len(self)}, inputs={self.input_names}, "
                f"conservation_error={self.conservation_error:.2e}, {streams})")
