"""Which task to explain when the caller gives none: one decision for Python, the CLI and the server.

From the model class (HuggingFace naming: ``...ForCausalLM`` -> generation, ``...ForSequenceClassification`` ->
classification, ...), else from the explained output. A model without a task head (a base encoder or decoder,
a sentence-embedding model) has no sensible default: its outputs are hidden units, and "the argmax hidden unit"
explains nothing, so it is refused with what to do instead. The choice is announced with ``warnings.warn``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

__all__ = ["infer_task", "announce", "EMBEDDING_OUTPUTS"]

_CLASS_HINTS = [("ForCausalLM", "generation"), ("LMHeadModel", "generation"),
                ("ForConditionalGeneration", "generation"), ("ForSequenceClassification", "text-classification"),
                ("ForTokenClassification", "token-classification"),
                ("ForImageClassification", "image-classification"), ("ForSemanticSegmentation", "segmentation")]
EMBEDDING_OUTPUTS = {"last_hidden_state", "pooler_output", "sentence_embedding", "token_embeddings",
                     "hidden_states", "embeddings", "image_embeds", "text_embeds"}


def _no_task(model: torch.nn.Module, shape: tuple[int, ...], output_name: str) -> ValueError:
    return ValueError(
        f"cannot choose a task for {type(model).__name__}: its output {output_name!r} {list(shape)} holds hidden "
        "units (an embedding), not class scores or logits. Use a model with a task head (...ForCausalLM, "
        "...ForSequenceClassification, ...), task='similarity' with a reference to explain an embedding's cosine "
        "similarity, or name a task and a target unit explicitly (e.g. task='regression', target=0)")


def infer_task(model: torch.nn.Module, y: torch.Tensor, output_name: str = "output",
               int_inputs: bool = False) -> tuple[str, str]:
    """(task, why) for explaining output ``y`` of ``model``; raises ValueError where nothing sensible exists."""
    name = type(model).__name__
    for hint, task in _CLASS_HINTS:
        if hint in name:
            return task, f"model class {name}"
    shape = tuple(y.shape)
    if output_name in EMBEDDING_OUTPUTS:
        raise _no_task(model, shape, output_name)
    config: Any = getattr(model, "config", None)
    if config is not None and hasattr(config, "model_type"):  # a HuggingFace model without a recognised head
        if y.dim() == 3 and shape[-1] == getattr(config, "vocab_size", None):
            return "generation", f"output {list(shape)} spans the vocabulary"
        raise _no_task(model, shape, output_name)
    if y.dim() <= 2:
        kind = "text-classification" if int_inputs else "image-classification" if y.dim() == 2 else "classification"
        return kind, f"output {list(shape)}: argmax class of each row"
    if y.dim() == 3:
        return ("generation", f"output {list(shape)} with token inputs: next token at the last position") \
            if int_inputs else ("token-classification", f"output {list(shape)}: each position's argmax class")
    return "segmentation", f"output {list(shape)}: pixels above the threshold"


def announce(task: str, why: str) -> None:
    warnings.warn(f"no task given: explaining as {task!r} ({why}); pass task=... to choose", UserWarning,
                  stacklevel=4)
