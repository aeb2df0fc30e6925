"""Generation settings and the logits processors of the sampler, in the order HuggingFace applies them:
repetition penalty, no-repeat n-grams, min new tokens; then (sampling only) temperature, top-k, top-p."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

__all__ = ["GenerationSettings", "process_logits", "warp_logits", "settings_from"]


@dataclass
class GenerationSettings:
    """Decoding options (HuggingFace names). ``do_sample`` None means: sample when temperature != 1, top_k or
    top_p ask for it; greedy otherwise. ``generator``/``seed`` make sampling reproducible."""

    max_new_tokens: int = 20
    min_new_tokens: int = 0
    do_sample: bool | None = None
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    generator: torch.Generator | None = field(default=None, repr=False)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature is None or float(self.temperature) <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if self.num_beams < 1 or self.max_new_tokens < 0 or not 0 < self.top_p <= 1:
            raise ValueError("need num_beams >= 1, max_new_tokens >= 0 and 0 < top_p <= 1")
        if self.do_sample is None:
            self.do_sample = self.temperature != 1.0 or self.top_k > 0 or self.top_p < 1.0
        if self.generator is None and self.seed is not None:
            self.generator = torch.Generator().manual_seed(int(self.seed))

    @property
    def eos(self) -> list[int]:
        e = self.eos_token_id
        return [] if e is None else ([int(e)] if isinstance(e, int) else [int(x) for x in e])

    @property
    def pad(self) -> int:
        if self.pad_token_id is not None:
            return int(self.pad_token_id)
        return self.eos[0] if self.eos else 0


def settings_from(kwargs: dict[str, Any], model: torch.nn.Module | None = None) -> GenerationSettings:
    """Pick the generation options out of ``kwargs`` (they are removed); defaults from the model's config."""
    names = {f.name for f in fields(GenerationSettings)}
    chosen = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
    cfg = getattr(model, "generation_config", None) or getattr(model, "config", None)
    for key in ("eos_token_id", "pad_token_id"):
        if chosen.get(key) is None and cfg is not None and getattr(cfg, key, None) is not None:
            chosen[key] = getattr(cfg, key)
    return GenerationSettings(**chosen)


def _repetition(scores: Tensor, ids: Tensor, valid: Tensor, penalty: float) -> Tensor:
    """Tokens already in the (non-padding) sequence: logits < 0 multiplied by the penalty, others divided."""
    seen = torch.zeros(scores.shape[0], scores.shape[1] + 1, dtype=torch.bool, device=scores.device)
    seen.scatter_(1, ids.masked_fill(~valid, scores.shape[1]), True)
    penalised = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen[:, :-1], penalised, scores)


def _no_repeat(scores: Tensor, ids: Tensor, n: int) -> Tensor:
    """Ban tokens that would repeat an n-gram already in the sequence."""
    if ids.shape[1] + 1 < n:
        return scores
    scores = scores.clone()
    for b, row in enumerate(ids.tolist()):
        prefix = tuple(row[len(row) - n + 1:]) if n > 1 else ()
        banned = [g[-1] for g in zip(*[row[i:] for i in range(n)]) if tuple(g[:-1]) == prefix]
        if banned:
            scores[b, banned] = float("-inf")
    return scores


def process_logits(scores: Tensor, ids: Tensor, valid: Tensor, new_tokens: int, s: GenerationSettings) -> Tensor:
    """Processors applied in every decoding mode."""
    if s.repetition_penalty != 1.0:
        scores = _repetition(scores, ids, valid, s.repetition_penalty)
    if s.no_repeat_ngram_size > 0:
        scores = _no_repeat(scores, ids, s.no_repeat_ngram_size)
    if new_tokens < s.min_new_tokens and s.eos:
        scores = scores.clone()
        scores[:, s.eos] = float("-inf")
    return scores


def warp_logits(scores: Tensor, s: GenerationSettings, keep: int = 1) -> Tensor:
    """Sampling warpers: temperature, top-k, top-p (keep at least ``keep`` tokens)."""
    if s.temperature != 1.0:
        scores = scores / s.temperature
    if s.top_k > 0:
        k = min(max(s.top_k, keep), scores.shape[-1])
        kth = torch.topk(scores, k)[0][..., -1, None]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if s.top_p < 1.0:
        sorted_logits, order = torch.sort(scores, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum <= (1 - s.top_p)
        drop[..., -keep:] = False
        scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return scores
