"""Benchmark models (random weights, no hub): name -> (model, inputs as a dict, task)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

Case = tuple[torch.nn.Module, dict[str, torch.Tensor], str]


def _vision(name: str, size: int = 224) -> Case:
    import torchvision

    model = getattr(torchvision.models, name)(weights=None).eval()
    if name.startswith("vit"):
        torch.nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zero-initialises the head
    return model, {"x": torch.randn(1, 3, size, size)}, "classification"


def _ids(vocab: int, tokens: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(3, vocab, (1, tokens), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def bert_base(tokens: int = 128) -> Case:
    import transformers

    cfg = transformers.BertConfig()  # bert-base: 12 layers, 768 hidden, 12 heads
    return transformers.BertForSequenceClassification(cfg).eval(), _ids(cfg.vocab_size, tokens), "classification"


def gpt2_small(tokens: int = 128) -> Case:
    import transformers

    cfg = transformers.GPT2Config()
    return transformers.GPT2LMHeadModel(cfg).eval(), _ids(cfg.vocab_size, tokens), "generation"


def llama_05b(tokens: int = 128) -> Case:
    """A 0.5B-class Llama (Qwen2-0.5B shapes with a 32k vocabulary): 24 layers, 896 hidden, GQA 14/2."""
    import transformers

    cfg = transformers.LlamaConfig(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                   num_attention_heads=14, num_key_value_heads=2, vocab_size=32000,
                                   tie_word_embeddings=True, max_position_embeddings=2048)
    return transformers.LlamaForCausalLM(cfg).eval(), _ids(cfg.vocab_size, tokens), "generation"


def llama_tiny(tokens: int = 32) -> Case:
    import transformers

    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=1000)
    return transformers.LlamaForCausalLM(cfg).eval(), _ids(cfg.vocab_size, tokens), "generation"


def olmoe_small(tokens: int = 128) -> Case:
    """An OLMoE-shaped MoE decoder, scaled down: 8 layers, 512 hidden, 16 experts of 256, top-4."""
    import transformers

    cfg = transformers.OlmoeConfig(hidden_size=512, intermediate_size=256, num_hidden_layers=8,
                                   num_attention_heads=8, num_key_value_heads=8, num_experts=16,
                                   num_experts_per_tok=4, vocab_size=32000, eos_token_id=1)
    return transformers.OlmoeForCausalLM(cfg).eval(), _ids(cfg.vocab_size, tokens), "generation"


MODELS: dict[str, Callable[[], Case]] = {
    "resnet18": lambda: _vision("resnet18"),
    "resnet50": lambda: _vision("resnet50"),
    "mobilenet_v2": lambda: _vision("mobilenet_v2"),
    "vit_b_16": lambda: _vision("vit_b_16"),
    "bert_base": bert_base,
    "gpt2_small": gpt2_small,
    "llama_0.5b": llama_05b,
    "llama_tiny": llama_tiny,
    "olmoe_small": olmoe_small,
}


def build(name: str, seed: int = 0) -> Case:
    torch.manual_seed(seed)
    return MODELS[name]()


def median_time(fn: Callable[[], Any], runs: int) -> float:
    """Median wall time of ``fn()`` over ``runs`` calls, in seconds."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def logits(out: Any) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out
