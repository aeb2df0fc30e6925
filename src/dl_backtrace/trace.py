"""Trace a model to an ATen graph with ``torch.export`` (RELEVANCE rules are keyed by ATen ops).

The exported program is decomposed with torch's default table minus every op that has its own rule (linear,
convolutions, layer_norm, sdpa, activations, ...), so the graph is functional (no in-place ops) and as high
level as our rules allow. User inputs keep the names of ``forward``'s arguments; parameters, buffers and
constants come from the graph signature.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.export import ExportedProgram
from torch.export.graph_signature import ConstantArgument, InputKind, TensorArgument
from torch.fx import Node

from .errors import TraceError
from .rules import RULES

__all__ = ["Traced", "trace", "bind_inputs", "flatten_inputs", "decomposition_table", "constants_of", "select_output"]

log = logging.getLogger(__name__)


def decomposition_table() -> dict[Any, Any]:
    """torch's default decompositions, minus the ops we have rules for (they stay whole in the graph)."""
    table = dict(torch.export.default_decompositions())
    for op in RULES:
        if not isinstance(op, str):
            table.pop(op, None)
    return table


@dataclass
class Traced:
    """A traced model: the exported program and what the engine needs to run it."""

    program: ExportedProgram
    graph: torch.fx.Graph
    input_names: list[str]  # names of the user tensor inputs (forward argument names), in placeholder order
    user_nodes: list[Node]  # their placeholders, same order
    constants: dict[str, torch.Tensor]  # placeholder name -> parameter / buffer / constant
    output_node: Node  # the node whose value is the explained output
    output_index: int  # its position among the flattened outputs
    signature: inspect.Signature | None
    example_shapes: tuple[tuple[str, tuple[int, ...], torch.dtype], ...]
    output_name: str = "output"  # the explained output's key path (``logits``, ``sentence_embedding``, ``0``)


def flatten_inputs(bound: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Tensor leaves of the bound inputs, named after their argument (a dict argument's entries by their keys,
    ``name.i`` inside lists and tuples)."""
    out: dict[str, torch.Tensor] = {}
    for name, value in bound.items():
        if isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, Mapping):  # a dict argument (sentence-transformers' features): its keys name it
            for path, v in pytree.tree_flatten_with_path(dict(value))[0]:
                if isinstance(v, torch.Tensor):
                    key = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
                    out[key if key not in bound and key not in out else f"{name}.{key}"] = v
        else:
            leaves = [v for v in pytree.tree_leaves(value) if isinstance(v, torch.Tensor)]
            out.update({f"{name}.{i}": v for i, v in enumerate(leaves)})
    return out


def _signature(model: torch.nn.Module) -> inspect.Signature | None:
    try:
        return inspect.signature(model.forward)
    except (TypeError, ValueError):
        return None


_CACHE_ARGS = {"past_key_values", "cache", "past", "layer_past"}


def bind_inputs(sig: inspect.Signature | None, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Map positional and keyword inputs to forward's argument names, in signature order."""
    if sig is None:
        return {f"arg{i}": a for i, a in enumerate(args)} | dict(kwargs)
    try:
        bound = sig.bind_partial(*args, **kwargs)
    except TypeError as e:
        raise TraceError(f"inputs do not match forward{sig}: {e}") from e
    out: dict[str, Any] = {}
    for i, name in enumerate(list(bound.arguments)[: len(args)]):
        if name in _CACHE_ARGS and isinstance(bound.arguments[name], torch.Tensor):
            raise TraceError(f"positional input {i} lands on forward's '{name}' argument; pass the inputs by name, "
                             "e.g. input_for_graph={'input_ids': ids, 'attention_mask': mask}")
    for name, value in bound.arguments.items():
        param = sig.parameters[name]
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif param.kind is inspect.Parameter.VAR_POSITIONAL:
            out.update({f"{name}_{i}": v for i, v in enumerate(value)})
        else:
            out[name] = value
    return out


def _output_names(spec: Any) -> list[str]:
    """A name per flattened output leaf: its key path (``logits``, ``sentence_embedding``, ``0``, ``1.0``)."""
    skeleton = pytree.tree_unflatten(list(range(spec.num_leaves)), spec)
    names = []
    for path, _ in pytree.tree_flatten_with_path(skeleton)[0]:
        parts = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        names.append(".".join(parts) if parts else "output")
    return names


def _describe(leaf: Any, name: str) -> str:
    if not isinstance(leaf, Node):
        return f"{name} (a constant)"
    val = leaf.meta.get("val")
    shape = list(val.shape) if isinstance(val, torch.Tensor) else "?"
    dtype = str(val.dtype).replace("torch.", "") if isinstance(val, torch.Tensor) else "?"
    note = " - an input passed through" if leaf.op == "placeholder" else ""
    return f"{name} {shape} {dtype}{note}"


def _why_not(leaf: Any) -> str | None:
    """Why an output leaf cannot be explained, or None when it can."""
    if not isinstance(leaf, Node):
        return "it is a constant"
    if leaf.op == "placeholder":
        return "it is an input passed through unchanged"
    val = leaf.meta.get("val")
    if isinstance(val, torch.Tensor) and not (val.is_floating_point() or val.is_complex()):
        return f"it is an integer/bool tensor ({val.dtype})"
    return None


def select_output(leaves: list[Any], names: list[str], output: str | int | None) -> int:
    """The index of the explained output: ``output`` (a name or an index) if given, else ``logits``, else the
    only tensor. Anything ambiguous or unexplainable is refused with the outputs found and the fix."""
    found = "; ".join(_describe(leaf, n) for leaf, n in zip(leaves, names))
    fix = ("choose one with output='NAME' (DLBacktrace(model, inputs, output=...) or Explainer(..., output=...)), "
           "or wrap the model so that forward returns the one tensor to explain")
    if output is not None:
        if isinstance(output, bool) or not isinstance(output, (int, str)):
            raise TraceError(f"output must be an output name or index, got {output!r}; the model returns: {found}")
        if isinstance(output, int) and not 0 <= output < len(leaves) or isinstance(output, str) and output not in names:
            raise TraceError(f"the model has no output {output!r}; it returns: {found}")
        idx = output if isinstance(output, int) else names.index(output)
    elif "logits" in names:
        idx = names.index("logits")
    else:
        tensors = [i for i, leaf in enumerate(leaves) if isinstance(leaf, Node)]
        if len(tensors) != 1:
            raise TraceError(f"the model returns {len(tensors)} tensors and none is named 'logits': {found}; {fix}")
        idx = tensors[0]
    why = _why_not(leaves[idx])
    if why is not None:
        raise TraceError(f"cannot explain output {names[idx]!r}: {why}. The model returns: {found}; {fix}")
    return idx


def _shapes(bound: Mapping[str, Any]) -> tuple[tuple[str, tuple[int, ...], torch.dtype], ...]:
    return tuple((k, tuple(v.shape), v.dtype) for k, v in flatten_inputs(bound).items())


def _export(model: torch.nn.Module, bound: dict[str, Any], dynamic_shapes: Any) -> ExportedProgram:
    dyn = dynamic_shapes
    if isinstance(dyn, (list, tuple)):
        dyn = dict(zip(bound.keys(), dyn))
    if isinstance(dyn, dict):  # export wants an entry for every argument we pass
        dyn = {k: dyn.get(k) for k in bound}
    try:
        ep = torch.export.export(model, (), kwargs=bound, dynamic_shapes=dyn, strict=False)
        return ep.run_decompositions(decomposition_table())
    except (RuntimeError, TypeError, ValueError, AssertionError, NotImplementedError) as e:
        raise TraceError(
            f"torch.export could not trace {type(model).__name__}: {type(e).__name__}: {e}\n"
            "Check that the model runs on input_for_graph, is in eval() mode, and that its forward has no "
            "data-dependent Python control flow (see the torch.export documentation)."
        ) from e


@contextlib.contextmanager
def _grouped_experts(model: torch.nn.Module) -> Iterator[None]:
    """HuggingFace MoE models are traced with grouped expert products: the eager loop over experts cannot be
    exported (data-dependent), and batched products gather one weight matrix per token. Same mathematics; the
    model's own setting is restored afterwards."""
    get = getattr(model, "get_experts_implementation", None)
    before = get() if callable(get) else None
    if not before or all(v in (None, "grouped_mm") for v in before.values()):
        yield
        return
    try:
        model.set_experts_implementation("grouped_mm")
    except ValueError:  # a model without switchable experts (dense, or its own expert code)
        yield
        return
    log.info("tracing %s with grouped expert products (was %s)", type(model).__name__, before)
    try:
        yield
    finally:
        model.set_experts_implementation(before)


def trace(model: torch.nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None = None,
          dynamic_shapes: Any = None, output: str | int | None = None) -> Traced:
    """Export ``model`` on example inputs and return the decomposed ATen graph with its metadata. ``output``
    names (or indexes) the output to explain when the model returns several (default: ``logits``, or the
    only tensor)."""
    sig = _signature(model)
    bound = bind_inputs(sig, args, kwargs or {})
    if sig is not None and "use_cache" in sig.parameters and "use_cache" not in bound:
        bound["use_cache"] = False  # an explanation needs no KV cache (and a cache object cannot be exported)
    was_training = model.training
    if was_training:
        warnings.warn(f"{type(model).__name__} is in training mode; tracing it in eval() mode (dropout off, batch "
                      "norm statistics frozen). Call model.eval() to silence this.", UserWarning, stacklevel=4)
        model.eval()
    try:
        with _grouped_experts(model):
            ep = _export(model, bound, dynamic_shapes)
    finally:
        if was_training:
            model.train()
    user_nodes = [_placeholder(ep, s.arg.name) for s in ep.graph_signature.input_specs
                  if s.kind == InputKind.USER_INPUT and isinstance(s.arg, TensorArgument)]
    names = list(flatten_inputs(bound).keys())
    if len(names) != len(user_nodes):
        raise TraceError(f"traced {len(user_nodes)} tensor inputs but got {len(names)} ({names})")
    out_node = next(n for n in ep.graph.nodes if n.op == "output")
    leaves = list(out_node.args[0]) if isinstance(out_node.args[0], (list, tuple)) else [out_node.args[0]]
    out_names = _output_names(ep.call_spec.out_spec)
    idx = select_output(leaves, out_names, output)
    return Traced(ep, ep.graph, names, user_nodes, constants_of(ep), leaves[idx], idx, sig, _shapes(bound),
                  out_names[idx])


def _placeholder(ep: ExportedProgram, name: str) -> Node:
    return next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == name)


def constants_of(ep: ExportedProgram) -> dict[str, Any]:
    """Values of every graph input that is not a user tensor: parameters, buffers, lifted constants, and user
    inputs that export specialised (a ``use_cache=False`` flag keeps a placeholder fed with its constant)."""
    out: dict[str, Any] = {}
    for s in ep.graph_signature.input_specs:
        if s.kind in (InputKind.PARAMETER, InputKind.BUFFER):
            out[s.arg.name] = ep.state_dict[s.target] if s.target in ep.state_dict else ep.constants[s.target]
        elif s.kind == InputKind.CONSTANT_TENSOR:
            out[s.arg.name] = ep.constants[s.target]
        elif s.kind == InputKind.USER_INPUT and isinstance(s.arg, ConstantArgument):
            out[s.arg.name] = s.arg.value
    return out
