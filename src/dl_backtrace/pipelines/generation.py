"""Generation with per-token relevance.

Tokens are produced with the model's own KV cache (decoding.py). A generated token is explained by one
propagation over the full sequence so far (prompt + tokens generated before it), seeded at that token: its
relevance over every earlier position. The causal LM is traced once for any sequence length (a dynamic sequence
dimension); if export cannot do that for a model, each new length is traced once instead (logged).
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.export import Dim

from ..engine import Engine
from ..errors import TraceError
from ..results import Relevance
from ..rules.registry import Pair
from .decoding import Step, beam_search, decode, positions_of
from .processors import GenerationSettings

__all__ = ["TokenExplainer", "generate", "steps_to_explain"]

log = logging.getLogger(__name__)


def steps_to_explain(which: Any, n_steps: int) -> set[int]:
    """``dlb_tokens_count`` / ``explain_tokens``: an int N (the first N), a list of step indices, "all", "none"."""
    if which is None or which == "all":
        return set(range(n_steps))
    if which == "none" or which is False:
        return set()
    if isinstance(which, int):
        return set(range(min(which, n_steps)))
    if isinstance(which, Iterable):
        return {int(i) for i in which if 0 <= int(i) < n_steps}
    raise ValueError(f"explain_tokens must be an int, a list of steps, 'all' or 'none', got {which!r}")


class TokenExplainer:
    """Explains next-token predictions of a causal LM on sequences of any length (traced once)."""

    def __init__(self, model: torch.nn.Module, ids: Tensor, mask: Tensor, device: Any = None) -> None:
        params = inspect.signature(model.forward).parameters
        self.with_positions = "position_ids" in params
        example = self._inputs(ids, mask)
        seq = Dim("seq", min=2, max=int(getattr(getattr(model, "config", None), "max_position_embeddings", 0)
                                        or 8192))
        dynamic = {k: {1: seq} for k in example}
        try:
            self.engine = Engine(model, (), example, dynamic_shapes=dynamic, device=device)
        except TraceError as e:
            log.warning("could not trace %s for every sequence length (%s); tracing each length once instead",
                        type(model).__name__, str(e).splitlines()[0])
            self.engine = Engine(model, (), example, device=device)
        self.engine.check()

    def _inputs(self, ids: Tensor, mask: Tensor) -> dict[str, Tensor]:
        out = {"input_ids": ids, "attention_mask": mask}
        if self.with_positions:
            out["position_ids"] = positions_of(mask)
        return out

    def explain(self, ids: Tensor, mask: Tensor, targets: Tensor, mode: str = "default", multiplier: float = 100.0,
                scaler: float | None = None, temperature: float = 1.0) -> Relevance:
        """Relevance of ``targets`` (one token per row) as the next token after ``ids``."""
        if ids.shape[1] < 2:
            ids, mask = _pad_left(ids, mask)
        run = self.engine.run((), self._inputs(ids, mask), temperature)
        return self.engine.explain(run, task="generation", target=[int(t) for t in targets], mode=mode,
                                   multiplier=multiplier, scaler=scaler)


def _pad_left(ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """The traced graph needs two positions at least: a masked pad in front changes nothing."""
    return (torch.cat([torch.zeros_like(ids[:, :1]), ids], 1), torch.cat([torch.zeros_like(mask[:, :1]), mask], 1))


def _tokens(tokenizer: Any, ids: Tensor) -> list[list[str]] | None:
    if tokenizer is None:
        return None
    return [tokenizer.convert_ids_to_tokens(row.tolist()) for row in ids]


def _entry(step: int, ids: Tensor, mask: Tensor, tokens: Tensor, rel: Relevance, tokenizer: Any) -> dict[str, Any]:
    tok_rel = rel["input_ids"]
    width = (tok_rel.positive if isinstance(tok_rel, Pair) else tok_rel).shape[1]
    if width != ids.shape[1]:  # drop the pad added for a one-token prompt
        tok_rel = Pair(tok_rel[0][:, 1:], tok_rel[1][:, 1:]) if isinstance(tok_rel, Pair) else tok_rel[:, 1:]
    names = _tokens(tokenizer, tokens[:, None])
    return {"step": step, "token_id": tokens.tolist(), "token": [n[0] for n in names] if names else None,
            "relevance": tok_rel, "tokens": _tokens(tokenizer, ids), "attention_mask": mask,
            "conservation_error": rel.conservation_error}


def _progress(total: int, enabled: bool | None) -> Any:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="explaining tokens", unit="token")


def generate(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor | None, s: GenerationSettings,
             explainer: TokenExplainer | None, which: Any = "all", tokenizer: Any = None, mode: str = "default",
             multiplier: float = 100.0, scaler: float | None = None, return_scores: bool = False,
             progress: bool | None = None) -> dict[str, Any]:
    """Decode, and explain the steps ``which`` selects (none when ``explainer`` is None)."""
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    if s.num_beams > 1:
        seq, _ = beam_search(model, input_ids, mask, s)
        steps = list(_beam_steps(seq, mask))
    else:
        steps = list(decode(model, input_ids, mask, s))
    explain = steps_to_explain(which, len(steps)) if explainer is not None else set()
    bar = _progress(len(explain), progress) if explain else None
    trace = []
    for st in steps:
        if st.index in explain:
            rel = explainer.explain(st.input_ids, st.attention_mask, st.tokens, mode, multiplier, scaler,
                                    s.temperature)
            trace.append(_entry(st.index, st.input_ids, st.attention_mask, st.tokens, rel, tokenizer))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    generated = torch.cat([input_ids] + [st.tokens[:, None] for st in steps], 1) if steps else input_ids
    return {"generated_ids": generated, "relevance_trace": trace,
            "scores_trace": [st.scores for st in steps] if return_scores else None,
            "generated_tokens": _tokens(tokenizer, generated[:, input_ids.shape[1]:])}


def _beam_steps(seq: Tensor, prompt_mask: Tensor) -> Iterable[Step]:
    """The chosen beam as a sequence of steps (to explain each of its tokens)."""
    prompt = prompt_mask.shape[1]
    mask = torch.cat([prompt_mask, torch.ones_like(seq[:, prompt:])], 1)
    for i in range(seq.shape[1] - prompt):
        t = prompt + i
        yield Step(i, seq[:, :t], mask[:, :t], seq[:, t], torch.empty(0), torch.empty(0),
                   torch.zeros(seq.shape[0], dtype=torch.bool))
