"""Token-by-token decoding with the model's own KV cache: greedy and sampling (a step generator) and beam search
(the HuggingFace algorithm: top 2*num_beams continuations per step, length penalty, early stopping)."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .processors import GenerationSettings, process_logits, warp_logits

__all__ = ["Step", "decode", "beam_search", "positions_of"]


@dataclass
class Step:
    """One decoding step: the sequence it continued and the tokens it chose."""

    index: int
    input_ids: Tensor  # (B, T) before this step's token
    attention_mask: Tensor  # (B, T)
    tokens: Tensor  # (B,) chosen tokens (pad for finished rows)
    logits: Tensor  # (B, V) raw next-token logits
    scores: Tensor  # (B, V) after the processors
    finished: Tensor  # (B,) rows that had finished before this step


def positions_of(mask: Tensor) -> Tensor:
    """Position ids for (left-)padded rows, as HuggingFace generate computes them."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def _cache_kwarg(model: torch.nn.Module) -> str:
    """transformers 5.2x renamed ``past_key_values`` to ``cache``; older releases only know the former."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params and "past_key_values" not in params else "past_key_values"


def _call(model: torch.nn.Module, ids: Tensor, mask: Tensor, past: Any, new: int) -> Any:
    """One forward with the KV cache; returns (logits, cache)."""
    pos = positions_of(mask)[:, -new:]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated.*")
        out = model(input_ids=ids[:, -new:], attention_mask=mask, position_ids=pos, use_cache=True,
                    **{_cache_kwarg(model): past})
    names = getattr(out, "keys", lambda: [])()
    cache = out["cache"] if "cache" in names else getattr(out, "past_key_values", None)
    return out.logits, cache


def decode(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor | None,
           s: GenerationSettings) -> Iterator[Step]:
    """Greedy or sampled decoding, one :class:`Step` per new token, until max_new_tokens or every row ends."""
    ids = input_ids
    mask = attention_mask if attention_mask is not None else torch.ones_like(ids)
    finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    eos = torch.tensor(s.eos, device=ids.device, dtype=ids.dtype)
    past, new = None, ids.shape[1]
    for i in range(s.max_new_tokens):
        all_logits, past = _call(model, ids, mask, past, new)
        new = 1
        logits = all_logits[:, -1, :].float()
        scores = process_logits(logits, ids, mask.bool(), i, s)
        if s.do_sample:
            scores = warp_logits(scores, s)
            nxt = torch.multinomial(scores.softmax(-1), 1, generator=s.generator)[:, 0]
        else:
            nxt = scores.argmax(-1)
        nxt = torch.where(finished, torch.full_like(nxt, s.pad), nxt)
        yield Step(i, ids, mask, nxt, logits, scores, finished.clone())
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if len(s.eos):
            finished |= torch.isin(nxt, eos)
            if bool(finished.all()):
                return


def _gather(t: Tensor, idx: Tensor) -> Tensor:
    while idx.dim() < t.dim():
        idx = idx.unsqueeze(-1)
    return torch.take_along_dim(t, idx, dim=1)


@dataclass
class _Beams:
    running: Tensor  # (B, K, L) running sequences
    running_scores: Tensor  # (B, K)
    done: Tensor  # (B, K, L) finished sequences
    done_scores: Tensor  # (B, K)
    finished: Tensor  # (B, K) slot holds a finished sequence
    improvable: Tensor  # (B, 1) early-stop heuristic not yet satisfied
    origin: Tensor  # (B, K) which previous beam each running beam continues
    done_len: Tensor  # (B, K) generated length of each finished sequence


def _init_beams(ids: Tensor, k: int, max_len: int, fill: int) -> _Beams:
    b, t = ids.shape
    running = torch.full((b, k, max_len), fill, dtype=ids.dtype, device=ids.device)
    running[:, :, :t] = ids[:, None, :]
    scores = torch.zeros(b, k, device=ids.device)
    scores[:, 1:] = -1e9
    return _Beams(running, scores, running.clone(), torch.full((b, k), -1e9, device=ids.device),
                  torch.zeros(b, k, dtype=torch.bool, device=ids.device),
                  torch.ones(b, 1, dtype=torch.bool, device=ids.device),
                  torch.arange(k, device=ids.device).expand(b, k), torch.zeros(b, k, dtype=torch.long,
                                                                            device=ids.device))


def _beam_step(st: _Beams, log_probs: Tensor, cur: int, prompt: int, s: GenerationSettings, eos: Tensor) -> None:
    b, k = st.running_scores.shape
    keep = max(2, 1 + len(s.eos)) * k
    total = (log_probs.reshape(b, k, -1) + st.running_scores[:, :, None]).reshape(b, -1)
    if s.do_sample:
        idx = torch.multinomial(total.softmax(-1), keep, generator=s.generator)
        top, order = torch.gather(total, 1, idx).sort(dim=-1, descending=True)
        idx = idx.gather(-1, order)
    else:
        top, idx = torch.topk(total, keep)
    vocab = log_probs.shape[-1]
    beam, tok = idx // vocab, idx % vocab
    cand = _gather(st.running, beam)
    cand[:, :, cur] = tok
    hits = (cur + 1 >= st.running.shape[-1]) | torch.isin(tok, eos)
    running_top = top + hits.float() * -1e9
    nxt = torch.topk(running_top, k)[1]
    st.running, st.running_scores, st.origin = _gather(cand, nxt), _gather(running_top, nxt), _gather(beam, nxt)
    first_k = torch.zeros(keep, dtype=torch.bool, device=top.device)
    first_k[:k] = True
    just_done = hits & first_k[None, :]
    penalised = top / ((cur + 1 - prompt) ** s.length_penalty)
    full = st.finished.all(-1, keepdim=True) & (s.early_stopping is True)
    penalised = penalised + full.float() * -1e9 + (~st.improvable).float() * -1e9 + (~just_done).float() * -1e9
    merged_scores = torch.cat([st.done_scores, penalised], 1)
    best = torch.topk(merged_scores, k)[1]
    st.done = _gather(torch.cat([st.done, cand], 1), best)
    st.done_scores = _gather(merged_scores, best)
    st.finished = _gather(torch.cat([st.finished, just_done], 1), best)
    new_len = torch.full_like(tok, cur + 1 - prompt)
    st.done_len = _gather(torch.cat([st.done_len, new_len], 1), best)


def _still_improvable(st: _Beams, cur: int, prompt: int, max_len: int, s: GenerationSettings) -> Tensor:
    length = (max_len if s.early_stopping == "never" and s.length_penalty > 0 else cur) - prompt
    best_running = st.running_scores[:, :1] / (length ** s.length_penalty)
    worst_done = torch.where(st.finished, st.done_scores.min(1, keepdim=True)[0], torch.full_like(best_running, -1e9))
    return st.improvable & (best_running > worst_done).any(-1, keepdim=True)


def beam_search(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor | None,
                s: GenerationSettings) -> tuple[Tensor, Tensor]:
    """Best sequence per row (B, prompt + new) and its length-penalised score (B,)."""
    b, prompt = input_ids.shape
    k, max_len = s.num_beams, prompt + s.max_new_tokens
    mask0 = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    fill = (s.pad_token_id or s.eos[0]) if s.eos else -1  # what HuggingFace leaves after a sequence's end
    st = _init_beams(input_ids, k, max_len, fill)
    eos = torch.tensor(s.eos, device=input_ids.device, dtype=input_ids.dtype)
    mask = mask0.repeat_interleave(k, 0)
    past, cur = None, prompt
    while cur < max_len:
        flat = st.running[:, :, :cur].reshape(b * k, cur)
        all_logits, cache = _call(model, flat, mask, past, cur if past is None else 1)
        logits = all_logits[:, -1, :].float()
        log_probs = process_logits(torch.log_softmax(logits, -1), flat, mask.bool(), cur - prompt, s)
        if s.do_sample:
            log_probs = warp_logits(log_probs, s, keep=len(s.eos) + 1)
        _beam_step(st, log_probs, cur, prompt, s, eos)
        past = _reorder(cache, (st.origin + torch.arange(b, device=flat.device)[:, None] * k).reshape(-1))
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        cur += 1
        st.improvable = _still_improvable(st, cur, prompt, max_len, s)
        if not bool(st.improvable.any()) or bool(st.finished.all() and s.early_stopping is True):
            break
    return st.done[:, 0, : prompt + int(st.done_len[:, 0].max())], st.done_scores[:, 0]


def _reorder(past: Any, beam_idx: Tensor) -> Any:
    if past is None:
        return None
    if hasattr(past, "reorder_cache"):
        past.reorder_cache(beam_idx)
        return past
    return tuple(tuple(t.index_select(0, beam_idx) for t in layer) for layer in past)
