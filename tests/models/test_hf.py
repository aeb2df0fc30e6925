"""HuggingFace encoders and decoders (RELEVANCE.md 3.4-3.8): the recorded output equals the model's logits,
relevance is conserved in both modes, relevance["input_ids"] is per token [B, T], padding gets exactly 0, sdpa
and eager attention give the same relevance, and padded batches equal the unpadded examples."""

from __future__ import annotations

import pytest
import torch

import dl_backtrace
from dl_backtrace.pytorch_backtrace import DLBacktrace
from tests.models.zoo import HF, build, task_of


def _inputs(name: str, batch: int = 2, length: int = 10) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 99, (batch, length), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _tokens(rel, mode: str) -> torch.Tensor:
    return rel["input_ids"].net if mode == "contrast" else rel["input_ids"]


@pytest.mark.parametrize("name", list(HF))
def test_model_explains_in_both_attention_implementations(name: str) -> None:
    inputs = _inputs(name)
    sdpa = build(name, "sdpa")
    eager = build(name, "eager")
    eager.load_state_dict(sdpa.state_dict())
    assert not dl_backtrace.coverage(sdpa, inputs)
    tokens = {}
    for impl, model in (("sdpa", sdpa), ("eager", eager)):
        dlb = DLBacktrace(model, inputs)
        out = dlb.predict(**inputs)["output"][1]
        with torch.no_grad():
            expected = model(**inputs, use_cache=False).logits if HF[name][3] == "decoder" else model(**inputs).logits
        assert torch.allclose(out, expected, atol=1e-6, rtol=0), (impl, float((out - expected).abs().max()))
        for mode in ("default", "contrast"):
            rel = dlb.evaluation(mode=mode, task=task_of(name))
            assert rel.conservation_error <= 1e-4, (impl, mode, rel.conservation_error)
            assert _tokens(rel, mode).shape == inputs["input_ids"].shape
            tokens[impl, mode] = _tokens(rel, mode)
    for mode in ("default", "contrast"):
        a, b = tokens["sdpa", mode], tokens["eager", mode]
        assert torch.allclose(a, b, atol=1e-4 * float(b.abs().max())), float((a - b).abs().max())


def _pad(ids: torch.Tensor, length: int, side: str, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    n = ids.shape[-1]
    padded = torch.full((length,), pad_id, dtype=ids.dtype)
    mask = torch.zeros(length, dtype=torch.long)
    sl = slice(length - n, length) if side == "left" else slice(0, n)
    padded[sl], mask[sl] = ids, 1
    return padded, mask


# Encoders classify from the first position, so only right padding keeps their output unchanged.
PADDINGS = [("bert", "right"), ("distilbert", "right")] + [(n, s) for n in ("gpt2", "llama", "qwen2")
                                                             for s in ("left", "right")]


@pytest.mark.parametrize("name,side", PADDINGS)
def test_padded_batch_equals_unpadded_examples(name: str, side: str) -> None:
    decoder = HF[name][3] == "decoder"
    model = build(name)
    gen = torch.Generator().manual_seed(2)
    seqs = [torch.randint(3, 99, (n,), generator=gen) for n in (9, 5)]
    rows = [_pad(s, 9, side) for s in seqs]
    ids = torch.stack([r[0] for r in rows])
    mask = torch.stack([r[1] for r in rows])
    batch = {"input_ids": ids, "attention_mask": mask}
    if decoder:  # positions as generate() computes them for padded prompts
        batch["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    dlb = DLBacktrace(model, batch)
    dlb.predict(**batch)
    rel = dlb.evaluation(task=task_of(name))["input_ids"]
    assert torch.all(rel[mask == 0] == 0.0), "padding positions must get exactly 0"
    for b, s in enumerate(seqs):
        single = {"input_ids": s[None], "attention_mask": torch.ones(1, len(s), dtype=torch.long)}
        one = DLBacktrace(model, single)
        one.predict(**single)
        want = one.evaluation(task=task_of(name))["input_ids"][0]
        got = rel[b][mask[b] == 1]
        assert torch.allclose(got, want, atol=1e-4 * float(want.abs().max())), (b, got, want)


def test_token_type_and_position_embeddings_are_not_mixed_into_tokens() -> None:
    """Constant-id embeddings (positions, default token types) are bias adds (7.7): their share is a sink, and the
    token relevance is exactly the word-embedding node's relevance summed over the width."""
    model = build("bert")
    inputs = _inputs("bert")
    dlb = DLBacktrace(model, inputs)
    dlb.predict(**inputs)
    rel = dlb.evaluation(task="classification")
    graph = dlb.traced.graph
    word = next(n for n in graph.nodes if n.target is torch.ops.aten.embedding.default
                and n.args[1].name == "input_ids")
    assert torch.allclose(rel["input_ids"], rel[word.name].sum(-1))
    others = [n for n in graph.nodes if n.target is torch.ops.aten.embedding.default and n is not word]
    assert others and all(n.name not in rel for n in others)
    assert any(float(s.abs().sum()) > 0 for k, s in rel.bias_sinks.items() if k.startswith("add"))
