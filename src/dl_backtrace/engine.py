"""The engine behind both public APIs: trace once per input signature, run, seed, propagate, collect."""

from __future__ import annotations

import logging
import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .analysis import Analysis, analyse, node_location
from .errors import TraceError, UnsupportedOp, UnsupportedOpError
from .execute import Execution, execute, recording_module
from .precision import canonical_precision, numerics
from .propagate import propagate
from .results import Relevance
from .rules._cache import DerivedCache
from .rules.contribution import rel_float
from .rules.registry import Pair
from .seeds import canonical_task, make_seed
from .task_inference import announce, infer_task
from .trace import Traced, bind_inputs, constants_of, flatten_inputs, trace

__all__ = ["Engine", "Program", "Run", "resolve_device", "same_device", "move_program"]

log = logging.getLogger(__name__)

try:  # torch >= 2.6 ships the pass; the submodule must be imported (``torch.export.passes`` is not an attribute)
    from torch.export.passes import move_to_device_pass as _move_pass
except ImportError:  # pragma: no cover - older torch: re-export on a moved copy (see Engine._build)
    _move_pass = None


def _canonical(dev: torch.device) -> torch.device:
    """``cuda`` and ``cuda:0`` name the same device when 0 is the current one; compare them as equal."""
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if dev.type == "cpu":
        return torch.device("cpu")
    return dev


def same_device(a: str | torch.device, b: str | torch.device) -> bool:
    return _canonical(torch.device(a)) == _canonical(torch.device(b))


def move_program(program: torch.export.ExportedProgram, device: torch.device) -> torch.export.ExportedProgram:
    """The exported program with its parameters, buffers and constants on ``device``."""
    if _move_pass is None:
        raise TraceError(f"this torch ({torch.__version__}) cannot move an exported program; move the model to "
                         f"{device} yourself before explaining it")
    return _move_pass(program, device)


def resolve_device(device: str | torch.device | None) -> torch.device | None:
    """The device explanations run on. CUDA asked for on a machine without it falls back to CPU, loudly."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(f"device={str(device)!r} was asked for but CUDA is not available here; running on the CPU",
                      RuntimeWarning, stacklevel=3)
        return torch.device("cpu")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        warnings.warn("device='mps' is not available here; running on the CPU", RuntimeWarning, stacklevel=3)
        return torch.device("cpu")
    return _canonical(dev)


@dataclass
class Program:
    """One trace with its analysis and cached derived parameters."""

    traced: Traced
    analysis: Analysis
    cache: DerivedCache
    feed: dict[str, Tensor]  # parameters, buffers, constants by placeholder name
    recorder: Any = None  # the generated module that returns every node's value
    modules: dict[str, str] | None = None  # node name -> module path
    lean_recorder: Any = None  # the same returning only what the rules read (built on first use)


@dataclass
class Run:
    program: Program
    execution: Execution
    inputs: dict[str, Tensor]  # user tensor inputs by name
    temperature: float = 1.0

    @property
    def output(self) -> Tensor:
        y = self.execution.value(self.program.analysis.output)
        return y / self.temperature if self.temperature != 1.0 else y


def _model_device(model: torch.nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return _canonical(t.device)
    return torch.device("cpu")


def _to(v: Any, device: torch.device) -> Any:
    return v.to(device) if isinstance(v, Tensor) and v.device != device else v


class Engine:
    """Traces ``model`` on example inputs and explains runs of it."""

    def __init__(self, model: torch.nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None = None,
                 dynamic_shapes: Any = None, device: str | torch.device | None = None,
                 passthrough_unsupported: bool = False, max_programs: int = 8,
                 output: str | int | None = None) -> None:
        if max_programs < 1:
            raise ValueError(f"max_programs must be >= 1, got {max_programs}")
        self.model = model
        self.device = resolve_device(device) or _model_device(model)
        self.dynamic_shapes = dynamic_shapes
        self.passthrough = passthrough_unsupported
        self.max_programs = max_programs
        self.output = output
        self._programs: OrderedDict[Any, Program] = OrderedDict()  # per input signature, least recent first
        self._lock = threading.RLock()  # tracing and the program cache: one thread at a time
        self.program = self._build(args, dict(kwargs or {}))

    def _build(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Program:
        home = _model_device(self.model)
        args = tuple(_to(a, home) for a in args)
        kwargs = {k: _to(v, home) for k, v in kwargs.items()}
        traced = trace(self.model, args, kwargs, self.dynamic_shapes, self.output)
        if not same_device(home, self.device):
            traced = self._move(traced)
        a = analyse(traced.graph, {n.name for n in traced.user_nodes}, traced.output_node, self.passthrough)
        cacheable = {n for n in traced.graph.nodes if n.op == "placeholder" and n.name in traced.constants}
        prog = Program(traced, a, DerivedCache(cacheable), dict(traced.constants),
                       recording_module(traced.program.graph_module),
                       {n.name: node_location(n)[0] for n in traced.graph.nodes})
        with self._lock:
            self._programs[self._key(traced.example_shapes)] = prog
            while len(self._programs) > self.max_programs:
                self._programs.popitem(last=False)
        return prog

    def _move(self, traced: Traced) -> Traced:
        traced.program = move_program(traced.program, self.device)
        traced.constants = constants_of(traced.program)
        return traced

    def _key(self, shapes: Any) -> Any:
        return None if self.dynamic_shapes is not None else shapes

    @property
    def unsupported(self) -> list[UnsupportedOp]:
        return self.program.analysis.unsupported

    def check(self) -> None:
        if self.unsupported:
            raise UnsupportedOpError(self.unsupported)

    def program_for(self, inputs: dict[str, Any]) -> Program:
        """The program traced for these inputs' shapes and dtypes (traced now if new; thread-safe, LRU-bounded
        by ``max_programs``)."""
        shapes = tuple((k, tuple(v.shape), v.dtype) for k, v in flatten_inputs(inputs).items())
        key = self._key(shapes)
        with self._lock:
            prog = self._programs.get(key)
            if prog is not None:
                self._programs.move_to_end(key)
                return prog
            log.info("input shapes %s differ from the traced ones; tracing again (pass dynamic_shapes to "
                     "trace once for all shapes)", [s[1] for s in shapes])
            try:
                return self._build((), inputs)
            except TraceError as e:
                traced = [(k, list(shape)) for k, shape, _ in self.program.traced.example_shapes]
                got = [(k, list(shape)) for k, shape, _ in shapes]
                raise TraceError(f"expected inputs shaped like the traced example {traced}, got {got}, and the "
                                 f"model could not be traced at the new shapes: {str(e).splitlines()[0]}") from e

    def run(self, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None = None, temperature: float = 1.0,
            lean: bool = False, precision: str = "fp32") -> Run:
        """Execute the traced graph. ``lean`` records only the values the rules read (no node_io);
        ``precision`` "fp32" runs fp32 products in strict IEEE fp32, "fast" lets GPUs use TF32."""
        _check_temperature(temperature)
        bound = bind_inputs(self.program.traced.signature, args, dict(kwargs or {}))
        bound = {k: _to(_as_tensor_input(k, v), self.device) for k, v in bound.items()}
        prog = self.program_for(bound)
        flat = flatten_inputs(bound)
        names = prog.traced.input_names
        if set(flat) != set(names):
            raise TraceError(f"the model was traced with inputs {names}, got {sorted(flat)}; pass the same inputs "
                             "as input_for_graph")
        _check_finite(flat)
        feed = dict(prog.feed)
        feed.update({n.name: flat[name] for n, name in zip(prog.traced.user_nodes, names)})
        if prog.analysis.unsupported and not self.passthrough:
            raise UnsupportedOpError(prog.analysis.unsupported)
        gm = prog.traced.program.graph_module
        if lean and prog.lean_recorder is None:
            prog.lean_recorder = recording_module(gm, prog.analysis.needed)
        with numerics(precision):
            ex = execute(gm, _placeholders(prog), feed, prog.lean_recorder if lean else prog.recorder)
        return Run(prog, ex, {name: flat[name] for name in names}, float(temperature))

    def explain(self, run: Run, task: str | None = None, target: Any = None, mode: str = "default",
                multiplier: float = 100.0, scaler: float | None = None, thresholding: float = 0.5,
                keep_nodes: bool = True, free_values: bool = False, precision: str = "fp32") -> Relevance:
        mode = _canonical_mode(mode)
        precision = canonical_precision(precision)
        y = rel_float(run.output)
        if task is None:
            ints = any(not v.is_floating_point() for v in run.inputs.values())
            task, why = infer_task(self.model, y, run.program.traced.output_name, ints)
            announce(task, why)
        positions = _last_tokens(run, y) if canonical_task(task) == "generation" else None
        seed = make_seed(y, task, target, multiplier, scaler, thresholding, mode == "contrast", positions)
        prog = run.program
        with torch.no_grad(), numerics(precision):
            prop = propagate(prog.analysis, run.execution, seed, mode, prog.cache, keep_nodes, free_values)
            res = _collect(prog, run, prop, seed, mode, task, target)
            _surface_non_finite(res, prog, prop)
        return res


def _check_temperature(temperature: Any) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    if not math.isfinite(float(temperature)) or float(temperature) <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def _as_tensor_input(name: str, v: Any) -> Any:
    """numpy arrays are the common mistake: say how to convert them instead of failing inside torch.export."""
    if type(v).__module__ == "numpy" and hasattr(v, "shape"):
        raise TypeError(f"input {name!r} is a numpy array; convert it with torch.as_tensor({name})")
    return v


def _check_finite(flat: Mapping[str, Tensor]) -> None:
    for name, v in flat.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise ValueError(f"input {name!r} holds {bad} NaN/inf value(s); relevance of a non-finite input is "
                             "undefined: clean the input first")


def _last_tokens(run: Run, y: Tensor) -> Tensor | None:
    """Per example, the last position whose attention_mask is set (right padding), when the model takes one."""
    mask = run.inputs.get("attention_mask")
    if mask is None or y.dim() != 3 or mask.dim() != 2 or tuple(mask.shape) != tuple(y.shape[:2]):
        return None
    idx = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask != 0, idx, torch.full_like(idx, -1)).amax(1).clamp(min=0).cpu()


def _finite(v: Any) -> Tensor:
    if isinstance(v, Pair):
        return torch.isfinite(v.positive).all() & torch.isfinite(v.negative).all()
    return torch.isfinite(v).all() if isinstance(v, Tensor) else torch.tensor(True)


def _surface_non_finite(res: Relevance, prog: Program, prop: Any) -> None:
    """NaN/inf anywhere in the seed, the inputs' relevance or the sinks is never hidden: the result's
    conservation error becomes NaN and a warning names the first node (in walk order) where it appeared."""
    flags = [_finite(v) for v in (res.seed, *res.inputs.values(), *res.bias_sinks.values())]
    devices = {f.device for f in flags}  # one host sync per device, not one per sink
    if all(bool(torch.stack([f for f in flags if f.device == d]).all()) for d in devices):
        return
    res.non_finite = "the seed (the model output is not finite)" if not bool(_finite(res.seed)) else None
    for node in reversed(prog.analysis.order):
        if res.non_finite is not None:
            break
        for kind, v in (("relevance", prop.relevance.get(node)), ("bias sink", prop.sinks.get(node))):
            if v is not None and not bool(_finite(v)):
                where = prog.modules.get(node.name, "") if prog.modules else ""
                res.non_finite = f"the {kind} of node {node.name!r}" + (f" (module {where})" if where else "")
                break
    if res.non_finite is None:
        res.non_finite = "an input's relevance (node relevance was not kept: explain with nodes=True to locate it)"
    warnings.warn(f"relevance is not finite: the first NaN/inf appeared in {res.non_finite}; "
                  "conservation_error is NaN", RuntimeWarning, stacklevel=4)


def _placeholders(prog: Program) -> list[Any]:
    return [n for n in prog.traced.graph.nodes if n.op == "placeholder"]


def _canonical_mode(mode: str) -> str:
    m = str(mode).lower()
    if m in ("default", "proportional"):
        return "default"
    if m in ("contrast", "contrastive"):
        return "contrast"
    raise ValueError(f"unknown mode {mode!r}; use 'default' or 'contrast' (also 'contrastive')")


def _zeros_like(v: Tensor, like: Any) -> Any:
    z = torch.zeros(v.shape, dtype=torch.float32 if v.dtype != torch.float64 else v.dtype, device=v.device)
    return Pair(z, z.clone()) if isinstance(like, Pair) else z


def _collect(prog: Program, run: Run, prop: Any, seed: Any, mode: str, task: str, target: Any) -> Relevance:
    values: dict[str, Any] = {}
    for node, r in prop.relevance.items():
        if isinstance(r, (Tensor, Pair)):
            values[node.name] = r
    names = prog.traced.input_names
    for node, name in zip(prog.traced.user_nodes, names):
        r = prop.relevance.get(node)
        values.pop(node.name, None)
        values[name] = r if r is not None else _zeros_like(run.inputs[name], seed)
    values["output"] = seed
    sinks = {n.name: s for n, s in prop.sinks.items()}
    res = Relevance(values, names, sinks, seed, mode, task, target)
    res.modules = prog.modules or {}
    return res
