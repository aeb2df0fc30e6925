"""Mixture-of-Experts decoders (transformers 5.x grouped experts): explained end to end by the one engine, and
per-layer, per-expert relevance read off the explanation."""

from __future__ import annotations

import pytest
import torch

from dl_backtrace import DLBacktrace, MoEBacktrace
from dl_backtrace.errors import DLBacktraceError
from tests.models.zoo import SMALL, build

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "OlmoeForCausalLM") or int(transformers.__version__.split(".")[0]) < 5:
    pytest.skip("grouped MoE experts need transformers >= 5", allow_module_level=True)

TOP_K = 2
MOE = {  # name -> (model class, config class, extra config)
    "qwen2_moe": ("Qwen2MoeForCausalLM", "Qwen2MoeConfig",
                  {"num_key_value_heads": 2, "num_experts": 4, "num_experts_per_tok": TOP_K,
                   "moe_intermediate_size": 16, "shared_expert_intermediate_size": 32}),
    "olmoe": ("OlmoeForCausalLM", "OlmoeConfig", {"num_key_value_heads": 2, "num_experts": 4,
                                                  "num_experts_per_tok": TOP_K, "eos_token_id": 1}),
    "mixtral": ("MixtralForCausalLM", "MixtralConfig", {"num_key_value_heads": 2, "num_local_experts": 4,
                                                        "num_experts_per_tok": TOP_K}),
    "gpt_oss": ("GptOssForCausalLM", "GptOssConfig", {"num_key_value_heads": 2, "num_local_experts": 4,
                                                      "num_experts_per_tok": TOP_K, "head_dim": 8,
                                                      "sliding_window": 4}),
    "jetmoe": ("JetMoeForCausalLM", "JetMoeConfig", {"num_key_value_heads": 2, "num_local_experts": 4,
                                                     "num_experts_per_tok": TOP_K, "kv_channels": 8}),
}


def _model(name: str) -> torch.nn.Module:
    cls, cfg_cls, extra = MOE[name]
    torch.manual_seed(0)
    return getattr(transformers, cls)(getattr(transformers, cfg_cls)(**{**SMALL, **extra})).eval()


def _ids(batch: int = 2, length: int = 7, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 99, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(MOE))
def test_moe_model_explains_and_reports_experts(name: str) -> None:
    model, ids = _model(name), _ids()
    dlb = MoEBacktrace(model, (_ids(seed=2),))  # traced on other tokens: the routing is not baked in
    out = dlb.predict(ids)["output"][1]
    with torch.no_grad():
        expected = model(ids, use_cache=False).logits
    assert torch.allclose(out, expected, atol=1e-5, rtol=0), float((out - expected).abs().max())
    for mode in ("default", "contrast"):
        assert dlb.evaluation(mode=mode, task="generation").conservation_error <= 1e-4, mode
    rel = dlb.evaluation(task="generation")
    experts = dlb.expert_relevance()
    assert len(experts) == model.config.num_hidden_layers
    for layer in dlb.expert_layers:
        ex = experts[layer.path]
        assert ex.per_token.shape == (2, 7, 4)
        assert (ex.routed.sum(-1) == TOP_K).all()  # every token goes to exactly top-k experts
        assert float(ex.per_token[~ex.routed].abs().max()) == 0.0
        total = float(rel[layer.rows.name].sum())
        assert abs(float(ex.per_token.sum()) - total) <= 1e-5 * max(abs(total), 1e-6)


def test_expert_relevance_of_a_batch_equals_single_examples() -> None:
    model, ids = _model("qwen2_moe"), _ids()
    dlb = MoEBacktrace(model, (ids,))
    dlb.predict(ids)
    rel = dlb.evaluation(task="generation")
    batch = dlb.expert_relevance()
    for b in range(2):
        one = MoEBacktrace(model, (ids[b:b + 1],))
        one.predict(ids[b:b + 1])
        single_rel = one.evaluation(task="generation")
        torch.testing.assert_close(single_rel["input_ids"][0], rel["input_ids"][b], rtol=1e-4, atol=1e-6)
        for path, ex in one.expert_relevance().items():
            torch.testing.assert_close(ex.per_token[0], batch[path].per_token[b], rtol=1e-4, atol=1e-6)
            assert torch.equal(ex.routed[0], batch[path].routed[b])


def test_moe_backtrace_refuses_a_dense_model() -> None:
    with pytest.raises(DLBacktraceError, match="no expert layers"):
        MoEBacktrace(build("llama"), (_ids(1),))
    dense = DLBacktrace(build("llama"), (_ids(1),))
    dense.predict(_ids(1))
    dense.evaluation(task="generation")
    assert dense.expert_relevance() == {}


def test_bfloat16_moe_explains_through_native_grouped_products() -> None:
    """In bf16 transformers calls torch's own grouped product (aten._grouped_mm) where this torch has one."""
    model, ids = _model("qwen2_moe").to(torch.bfloat16), _ids()
    dlb = MoEBacktrace(model, (ids,))
    assert dlb.expert_layers
    out = dlb.predict(ids)["output"][1]
    with torch.no_grad():
        expected = model(ids, use_cache=False).logits
    assert torch.equal(out, expected)
    assert dlb.evaluation(task="generation").conservation_error <= 1e-4
    experts = dlb.expert_relevance()
    assert all((ex.routed.sum(-1) == TOP_K).all() for ex in experts.values())


@pytest.mark.parametrize("impl", ["eager", "batched_mm"])
def test_other_expert_implementations_are_traced_grouped_and_restored(impl: str) -> None:
    """The eager loop over experts cannot be exported; it is traced with grouped products (same mathematics)
    and the model's own setting is left as it was."""
    model, ids = _model("qwen2_moe"), _ids()
    model.set_experts_implementation(impl)
    before = model.get_experts_implementation()
    dlb = MoEBacktrace(model, (ids,))
    assert model.get_experts_implementation() == before
    out = dlb.predict(ids)["output"][1]
    with torch.no_grad():
        expected = model(ids, use_cache=False).logits
    assert torch.allclose(out, expected, atol=1e-5, rtol=0)
    assert dlb.evaluation(task="generation").conservation_error <= 1e-4
    assert len(dlb.expert_relevance()) == model.config.num_hidden_layers


def test_expert_map_shows_every_layer_and_expert(tmp_path) -> None:
    model, ids = _model("olmoe"), _ids()
    dlb = MoEBacktrace(model, (ids,))
    dlb.predict(ids)
    dlb.evaluation(task="generation")
    page = (tmp_path / "experts.html")
    dlb.visualize_expert_relevance(str(page), example=1)
    text = page.read_text()
    experts = dlb.expert_relevance()
    for path, ex in experts.items():
        assert path in text
        assert f"{float(ex.per_expert[1].max()):.3g}" in text  # the cells carry example 1's values
    assert text.count("<td title=") == 4 * len(experts)
    png = dlb.visualize_expert_relevance(str(tmp_path / "experts.png"))
    assert (tmp_path / "experts.png").read_bytes()[:4] == b"\x89PNG" and png.endswith(".png")
