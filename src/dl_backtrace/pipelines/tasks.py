"""``run_task``: one call from inputs to predictions and relevance, for classification (text, image, token),
regression, segmentation and generation; ``"auto"`` picks the task from the model and says which."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch
from torch import Tensor

from ..task_inference import infer_task
from .generation import generate
from .processors import settings_from

__all__ = ["run_task", "detect_task", "TASK_OF"]

log = logging.getLogger(__name__)

TASK_OF = {"text-classification": "classification", "image-classification": "classification",
           "classification": "classification", "token-classification": "token-classification",
           "regression": "regression", "segmentation": "segmentation", "binary-segmentation": "segmentation",
           "generation": "generation", "text-generation": "generation"}
def detect_task(dlb: Any, feed: dict[str, Tensor]) -> tuple[str, str]:
    """(task, why): the engine's own inference (:func:`dl_backtrace.task_inference.infer_task`); causal LMs are
    recognised by their class without running them."""
    if _is_lm(dlb.model):
        return "generation", f"model class {type(dlb.model).__name__}"
    ints = any(not t.is_floating_point() for t in feed.values())
    return infer_task(dlb.model, _output(dlb, feed), dlb.traced.output_name, ints)


def _as_inputs(dlb: Any, inputs: Any, tokenizer: Any) -> dict[str, Tensor]:
    if isinstance(inputs, (str, list)) and (isinstance(inputs, str) or isinstance(inputs[0], str)):
        if tokenizer is None:
            raise ValueError("text inputs need a tokenizer: run_task(..., tokenizer=tokenizer)")
        return dict(tokenizer(inputs, return_tensors="pt", padding=True))
    if isinstance(inputs, dict):
        return dict(inputs)
    args = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    names = dlb.traced.input_names
    return dict(zip(names, args))


def run_task(dlb: Any, task: str = "auto", inputs: Any = None, tokenizer: Any = None, mode: str = "default",
             multiplier: float = 100.0, scaler: float | None = None, thresholding: float = 0.5,
             temperature: float = 1.0, return_scores: bool = False, return_relevance: bool = False,
             return_layerwise_output: bool = False, debug: bool = False, progress: bool | None = None,
             **generation_kwargs: Any) -> dict[str, Any]:
    """See :meth:`dl_backtrace.DLBacktrace.run_task`."""
    if debug:
        logging.getLogger("dl_backtrace").setLevel(logging.DEBUG)
    if temperature is None or float(temperature) <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if task == "similarity":
        from .similarity import explain_similarity

        reference = generation_kwargs.pop("reference", None)
        if generation_kwargs:
            raise TypeError(f"unexpected arguments for task 'similarity': {sorted(generation_kwargs)}")
        return explain_similarity(dlb.model, inputs, reference, tokenizer, mode, multiplier, dlb.device)
    feed = _as_inputs(dlb, inputs, tokenizer)
    if task == "auto":
        task, why = detect_task(dlb, feed)
        warnings.warn(f"run_task(task='auto') chose {task!r} ({why}); pass task=... to choose", UserWarning,
                      stacklevel=3)
    if task not in TASK_OF:
        raise ValueError(f"unknown task {task!r}; valid: 'auto', 'similarity', {', '.join(sorted(TASK_OF))}")
    if TASK_OF[task] == "generation":
        return _generation(dlb, feed, tokenizer, mode, multiplier, scaler, temperature, return_scores,
                           progress, generation_kwargs)
    if generation_kwargs:
        raise TypeError(f"unexpected arguments for task {task!r}: {sorted(generation_kwargs)}")
    node_io = dlb.predict(**feed, temperature=temperature)
    rel = dlb.evaluation(mode=mode, multiplier=multiplier, scaler=scaler, thresholding=thresholding,
                         task=TASK_OF[task])
    out: dict[str, Any] = {"task": task, "predictions": node_io["output"][1], "relevance": rel.inputs,
                           "relevance_computed": True, "node_io": node_io,
                           "conservation_error": rel.conservation_error}
    if tokenizer is not None and "input_ids" in feed:
        out["tokens"] = [tokenizer.convert_ids_to_tokens(r.tolist()) for r in feed["input_ids"]]
    if return_relevance:
        out["node_relevance"] = rel
    if return_layerwise_output:
        out["layerwise_output"] = {k: v.output for k, v in node_io.items()}
    return out


def _is_lm(model: torch.nn.Module) -> bool:
    name = type(model).__name__
    return any(h in name for h in ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration"))


def _output(dlb: Any, feed: dict[str, Tensor]) -> Tensor:
    return dlb.predict(**feed)["output"][1]


def _generation(dlb: Any, feed: dict[str, Tensor], tokenizer: Any, mode: str, multiplier: float,
                scaler: float | None, temperature: float, return_scores: bool, progress: bool | None,
                kwargs: dict[str, Any]) -> dict[str, Any]:
    which = kwargs.pop("dlb_tokens_count", kwargs.pop("explain_tokens", "all"))
    kwargs.setdefault("temperature", temperature)
    settings = settings_from(kwargs, dlb.model)
    if kwargs:
        raise TypeError(f"unexpected generation arguments: {sorted(kwargs)}")
    home = next(iter(dlb.model.parameters())).device  # decoding runs the model where it lives
    ids = feed["input_ids"].to(home)
    mask = feed.get("attention_mask")
    mask = mask.to(home) if mask is not None else torch.ones_like(ids)
    explainer = None
    if which not in ("none", 0, False):
        explainer = dlb.token_explainer(ids, mask)
    res = generate(dlb.model, ids, mask, settings, explainer, which, tokenizer, mode, multiplier, scaler,
                   return_scores, progress)
    trace = res["relevance_trace"]
    res.update({"task": "generation", "predictions": res["generated_ids"], "relevance_computed": bool(trace),
                "relevance": {"input_ids": trace[-1]["relevance"]} if trace else {},
                "node_io": None})
    if tokenizer is not None:
        res["generated_text"] = tokenizer.batch_decode(res["generated_ids"], skip_special_tokens=True)
    return res
