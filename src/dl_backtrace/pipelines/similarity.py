"""``task="similarity"``: explain the cosine similarity of a sentence embedding to a reference.

The embedding model (a sentence-transformers model, or a HuggingFace encoder whose token states are mean-pooled
over the attention mask) is wrapped so that forward returns cos(e(text), e(reference)) as a ``[B, 1]`` output,
and that one unit is explained. With a reference *text* both texts are inputs: their dot product is a product of
two activations (RELEVANCE.md 3.5: half to each side) and the norms divide (3.5: the numerator takes all), so
each text gets per-token relevance. With a reference *embedding* (a tensor) only the text is explained.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["CosineSimilarity", "explain_similarity"]


class CosineSimilarity(nn.Module):
    """cos(embed(input), embed(reference)) as a [B, 1] output (reference: a second text or a fixed embedding)."""

    def __init__(self, encoder: nn.Module, reference_embedding: Tensor | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        if reference_embedding is not None:
            self.register_buffer("reference", reference_embedding.detach().reshape(1, -1).float().clone())
        else:
            self.reference = None

    def embed(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        enc = self.encoder
        if hasattr(enc, "tokenizer") and isinstance(enc, nn.Sequential):  # sentence-transformers
            return enc({"input_ids": input_ids, "attention_mask": attention_mask})["sentence_embedding"]
        states = enc(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        w = attention_mask.to(states.dtype)[..., None]
        return (states * w).sum(1) / w.sum(1).clamp(min=1.0)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, reference_input_ids: Tensor | None = None,
                reference_attention_mask: Tensor | None = None) -> Tensor:
        a = self.embed(input_ids, attention_mask)
        if reference_input_ids is not None:
            b = self.embed(reference_input_ids, reference_attention_mask)
        else:
            b = self.reference.to(a.dtype)
        return ((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))).unsqueeze(-1)


def _encode(tokenizer: Any, text: Any) -> dict[str, Tensor]:
    if isinstance(text, dict):
        return {k: v for k, v in text.items() if k in ("input_ids", "attention_mask")}
    if tokenizer is None:
        raise ValueError("similarity with text needs a tokenizer: run_task(..., tokenizer=tokenizer)")
    enc = tokenizer([text] if isinstance(text, str) else list(text), return_tensors="pt", padding=True)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def explain_similarity(encoder: nn.Module, inputs: Any, reference: Any, tokenizer: Any = None,
                       mode: str = "default", multiplier: float = 100.0, device: Any = "cpu") -> dict[str, Any]:
    """Predict and explain cos(e(inputs), e(reference)). ``reference``: a text, a tokenised dict or an embedding
    tensor. Returns ``predictions`` (the cosine, [B]), ``relevance`` (``input_ids`` [B, T] and, for a text
    reference, ``reference_input_ids``), ``tokens`` / ``reference_tokens`` when a tokenizer is given and
    ``conservation_error``."""
    from ..backtrace import DLBacktrace

    if reference is None:
        raise ValueError("task='similarity' needs reference=: a text, a tokenised dict, or an embedding tensor")
    feed = _encode(tokenizer, inputs)
    if isinstance(reference, Tensor):
        model, example = CosineSimilarity(encoder, reference).eval(), dict(feed)
    else:
        ref = _encode(tokenizer, reference)
        if ref["input_ids"].shape[0] == 1 and feed["input_ids"].shape[0] > 1:
            ref = {k: v.expand(feed["input_ids"].shape[0], -1) for k, v in ref.items()}
        model = CosineSimilarity(encoder).eval()
        example = dict(feed, reference_input_ids=ref["input_ids"], reference_attention_mask=ref["attention_mask"])
    dlb = DLBacktrace(model, example, device=device)
    node_io = dlb.predict(**example)
    rel = dlb.evaluation(mode=mode, multiplier=multiplier, task="regression", target=0)
    out: dict[str, Any] = {"task": "similarity", "predictions": node_io["output"][1][:, 0],
                           "relevance": rel.inputs, "relevance_computed": True, "node_io": node_io,
                           "conservation_error": rel.conservation_error, "node_relevance": rel}
    if tokenizer is not None:
        out["tokens"] = [tokenizer.convert_ids_to_tokens(r.tolist()) for r in example["input_ids"]]
        if "reference_input_ids" in example:
            out["reference_tokens"] = [tokenizer.convert_ids_to_tokens(r.tolist())
                                       for r in example["reference_input_ids"]]
    return out
