"""The small modern API: ``Explainer(model, example_inputs).attribute(x, target=...)``, ``explain``,
``coverage``."""

from __future__ import annotations

from typing import Any

import torch

from .backtrace import _as_args
from .engine import Engine
from .errors import UnsupportedOp
from .results import Relevance

__all__ = ["Explainer", "explain", "coverage"]


class Explainer:
    """Trace once, explain many inputs. Batch on dim 0; results stay on the compute device."""

    def __init__(self, model: torch.nn.Module, example_inputs: Any, *, dynamic_shapes: Any = None,
                 device: str | torch.device | None = None, passthrough_unsupported: bool = False,
                 max_programs: int = 8, output: str | int | None = None) -> None:
        args, kwargs = _as_args(example_inputs)
        self.engine = Engine(model, args, kwargs, dynamic_shapes, device, passthrough_unsupported, max_programs,
                             output)
        self.engine.check()

    def attribute(self, *inputs: Any, target: Any = None, mode: str = "default", task: str | None = None,
                  multiplier: float = 100.0, scaler: float | None = None, thresholding: float = 0.5,
                  temperature: float = 1.0, nodes: bool = True, precision: str = "fp32",
                  **kw_inputs: Any) -> Relevance:
        """Explain one batch. ``res.input_relevance`` is shaped like the input (a dict for several inputs).

        ``nodes=False`` returns only the inputs' relevance and frees every activation as soon as the backward
        walk has used it: the lean setting for large models (peak memory about that of one autograd backward).
        ``precision="fp32"`` (default) computes in strict IEEE fp32 on every device; ``"fast"`` lets a GPU use
        TF32 for the forward and the relevance products (conservation is reported either way)."""
        if len(inputs) == 1 and isinstance(inputs[0], dict) and not kw_inputs and self._keyword_dict(inputs[0]):
            inputs, kw_inputs = (), dict(inputs[0])  # like the constructor: a dict of forward's keyword inputs
        run = self.engine.run(inputs, kw_inputs, temperature, lean=not nodes, precision=precision)
        return self.engine.explain(run, task, target, mode, multiplier, scaler, thresholding,
                                   keep_nodes=nodes, free_values=not nodes, precision=precision)

    __call__ = attribute

    def _keyword_dict(self, d: dict) -> bool:
        """Whether a lone dict holds forward's keyword arguments (else it is forward's one dict argument)."""
        sig = self.engine.program.traced.signature
        if sig is None:
            return True
        params = sig.parameters
        named = {k for k, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if set(d) <= named:  # forward(input_ids=..., attention_mask=...)
            return True
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
        return takes_kwargs and len(named) != 1  # forward(features, **kw) takes the dict itself

_ENGINE_KEYWORDS = ("dynamic_shapes", "device", "passthrough_unsupported", "max_programs", "output")


def explain(model: torch.nn.Module, inputs: Any, **kwargs: Any) -> Relevance:
    """One-shot: trace ``model`` on ``inputs`` and explain them. Keywords of :class:`Explainer` (``device``,
    ``output``, ``dynamic_shapes``, ...) go to the constructor, the rest to :meth:`Explainer.attribute`."""
    engine = {k: kwargs.pop(k) for k in _ENGINE_KEYWORDS if k in kwargs}
    args, kw = _as_args(inputs)
    return Explainer(model, inputs, **engine).attribute(*args, **kw, **kwargs)


def coverage(model: torch.nn.Module, example_inputs: Any, **kwargs: Any) -> list[UnsupportedOp]:
    """Ops on the relevance path that have no rule, with where they come from. Runs nothing but the trace."""
    args, kw = _as_args(example_inputs)
    return Engine(model, args, kw, **kwargs).unsupported
