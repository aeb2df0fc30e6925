"""The auto sampler: greedy, temperature, top-k, top-p and beam search with per-token relevance. A thin front end
of ``run_task(task="generation")``."""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["DLBAutoSampler"]


class DLBAutoSampler:
    """``DLBAutoSampler(dlb, tokenizer).generate(prompt="...", max_new_tokens=8, top_p=0.9)``.

    Decoding follows HuggingFace ``generate``: ``do_sample`` (inferred from temperature/top_k/top_p when not
    given), ``num_beams``, ``length_penalty``, ``early_stopping``, ``repetition_penalty``,
    ``no_repeat_ngram_size``, ``min_new_tokens``, ``max_new_tokens``, ``eos_token_id``, ``pad_token_id``,
    ``generator``/``seed``. ``explain_tokens`` (alias ``dlb_tokens_count``) picks the explained steps."""

    def __init__(self, dlb: Any, tokenizer: Any = None) -> None:
        self.dlb = dlb
        self.tokenizer = tokenizer

    def generate(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                 prompt: str | list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        if prompt is not None:
            if self.tokenizer is None:
                raise ValueError("a text prompt needs a tokenizer: DLBAutoSampler(dlb, tokenizer)")
            enc = self.tokenizer(prompt, return_tensors="pt", padding=True)
            input_ids, attention_mask = enc["input_ids"], enc.get("attention_mask")
        if input_ids is None:
            raise ValueError("give input_ids (and attention_mask) or a prompt")
        inputs = {"input_ids": input_ids}
        if attention_mask is not None:
            inputs["attention_mask"] = attention_mask
        return self.dlb.run_task(task="generation", inputs=inputs, tokenizer=self.tokenizer, **kwargs)

    def greedy(self, **kwargs: Any) -> dict[str, Any]:
        return self.generate(do_sample=False, num_beams=1, **kwargs)

    def sample(self, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, **kwargs: Any) -> dict[str, Any]:
        return self.generate(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p, **kwargs)

    def beam(self, num_beams: int = 4, **kwargs: Any) -> dict[str, Any]:
        return self.generate(num_beams=num_beams, **kwargs)
