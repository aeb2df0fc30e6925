"""Generation: decoding equals HuggingFace generate (greedy, beam, seeded sampling), the relevance trace has one
conserving entry per explained step, and the last one equals a direct evaluation on the same sequence."""

from __future__ import annotations

import pytest
import torch

from dl_backtrace.pipelines.generation import steps_to_explain
from dl_backtrace.pytorch_backtrace import DLBacktrace, DLBAutoSampler

transformers = pytest.importorskip("transformers")


def _llama() -> torch.nn.Module:
    cfg = transformers.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=64, vocab_size=99, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def _gpt2() -> torch.nn.Module:
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=99, n_positions=64, bos_token_id=1,
                                  eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def lm(request):
    model = _llama() if request.param == "llama" else _gpt2()
    ids = torch.randint(3, 99, (2, 5), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    ids[1, :2], mask[1, :2] = 0, 0  # left padding
    return model, DLBacktrace(model, {"input_ids": ids, "attention_mask": mask}), ids, mask


@pytest.mark.parametrize("opts", [dict(), dict(num_beams=3), dict(num_beams=2, length_penalty=0.5, early_stopping=True),
                                  dict(repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=3)],
                         ids=["greedy", "beam", "beam-penalty", "penalties"])
def test_decoding_matches_hf_generate(lm, opts) -> None:
    model, dlb, ids, mask = lm
    res = dlb.run_task(task="generation", inputs={"input_ids": ids, "attention_mask": mask}, max_new_tokens=6,
                       explain_tokens="none", **opts)
    ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, **opts)
    assert res["generated_ids"].tolist() == ref.tolist()
    assert res["relevance_computed"] is False


def test_sampling_is_reproducible_and_matches_hf_with_the_same_seed(lm) -> None:
    model, dlb, ids, mask = lm
    opts = dict(max_new_tokens=6, do_sample=True, top_k=20, top_p=0.9, temperature=0.8)
    a = dlb.run_task(task="generation", inputs={"input_ids": ids, "attention_mask": mask}, explain_tokens="none",
                     seed=7, **opts)
    b = dlb.run_task(task="generation", inputs={"input_ids": ids, "attention_mask": mask}, explain_tokens="none",
                     generator=torch.Generator().manual_seed(7), **opts)
    assert torch.equal(a["generated_ids"], b["generated_ids"])
    torch.manual_seed(11)
    ours = dlb.run_task(task="generation", inputs={"input_ids": ids, "attention_mask": mask}, explain_tokens="none",
                        **opts)
    torch.manual_seed(11)
    ref = model.generate(input_ids=ids, attention_mask=mask, **opts)
    assert ours["generated_ids"].tolist() == ref.tolist()


@pytest.mark.parametrize("mode", ["default", "contrast"])
def test_relevance_trace_conserves_and_equals_direct_evaluation(lm, mode: str) -> None:
    model, dlb, ids, mask = lm
    res = dlb.run_task(task="generation", inputs={"input_ids": ids, "attention_mask": mask}, max_new_tokens=4,
                       mode=mode, multiplier=10.0)
    trace = res["relevance_trace"]
    assert [e["step"] for e in trace] == list(range(res["generated_ids"].shape[1] - ids.shape[1]))
    for e in trace:
        assert e["conservation_error"] <= 1e-4
        rel = e["relevance"]
        pos = rel.positive if mode == "contrast" else rel
        assert pos.shape == (2, ids.shape[1] + e["step"])
        assert torch.all(pos[1, :2] == 0)  # padding
    last = trace[-1]
    seq = res["generated_ids"][:, : ids.shape[1] + last["step"]]
    seq_mask = torch.cat([mask, torch.ones(2, last["step"], dtype=mask.dtype)], 1)
    direct = DLBacktrace(model, {"input_ids": seq, "attention_mask": seq_mask,
                                 "position_ids": (seq_mask.cumsum(-1) - 1).clamp(min=0)})
    direct.predict(input_ids=seq, attention_mask=seq_mask, position_ids=(seq_mask.cumsum(-1) - 1).clamp(min=0))
    want = direct.evaluation(mode=mode, task="generation", target=last["token_id"], multiplier=10.0)["input_ids"]
    got = last["relevance"]
    for k in ((0, 1) if mode == "contrast" else (None,)):
        a, b = (got[k], want[k]) if k is not None else (got, want)
        assert torch.allclose(a, b, atol=1e-5 * float(b.abs().max()))


def test_explain_tokens_selects_steps(lm) -> None:
    _, dlb, ids, mask = lm
    res = dlb.run_task(task="generation", inputs={"input_ids": ids, "attention_mask": mask}, max_new_tokens=5,
                       dlb_tokens_count=2)
    assert [e["step"] for e in res["relevance_trace"]] == [0, 1]
    res = dlb.run_task(task="generation", inputs={"input_ids": ids, "attention_mask": mask}, max_new_tokens=5,
                       explain_tokens=[1, 3])
    assert [e["step"] for e in res["relevance_trace"]] == [1, 3]
    assert steps_to_explain("all", 3) == {0, 1, 2} and steps_to_explain("none", 3) == set()
    with pytest.raises(ValueError):
        steps_to_explain(2.5, 3)


def test_positional_inputs_on_a_cache_argument_are_refused() -> None:
    model = _gpt2()
    ids = torch.randint(3, 99, (1, 4))
    with pytest.raises(Exception, match="pass the inputs by name"):
        DLBacktrace(model, (ids, torch.ones_like(ids)))


def test_sampler_front_ends_and_beam_relevance(lm) -> None:
    model, dlb, ids, mask = lm
    sampler = DLBAutoSampler(dlb)
    greedy = sampler.greedy(input_ids=ids, attention_mask=mask, max_new_tokens=3)
    auto = dlb.sample_auto(None, ids, mask, max_new_tokens=3)
    assert torch.equal(greedy["generated_ids"], auto["generated_ids"])
    beam = sampler.beam(num_beams=2, input_ids=ids, attention_mask=mask, max_new_tokens=3)
    assert len(beam["relevance_trace"]) == beam["generated_ids"].shape[1] - ids.shape[1]
    assert all(e["conservation_error"] <= 1e-4 for e in beam["relevance_trace"])
    with pytest.raises(ValueError, match="temperature"):
        dlb.run_task(task="generation", inputs={"input_ids": ids}, temperature=0.0)
