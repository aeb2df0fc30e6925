"""Tiny HuggingFace models built from configs with random weights (no hub): hidden <= 64, <= 2 layers."""

from __future__ import annotations

from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=99,
             max_position_embeddings=64)
# name -> (model class, config class, extra config, kind)
HF: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "bert": ("BertForSequenceClassification", "BertConfig", {}, "encoder"),
    "roberta": ("RobertaForSequenceClassification", "RobertaConfig", {"pad_token_id": 1}, "encoder"),
    "distilbert": ("DistilBertForSequenceClassification", "DistilBertConfig",
                   {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64}, "encoder"),
    "electra": ("ElectraForSequenceClassification", "ElectraConfig", {"embedding_size": 32}, "encoder"),
    "gpt2": ("GPT2LMHeadModel", "GPT2Config", {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64,
                                               "bos_token_id": 0, "eos_token_id": 0}, "decoder"),
    "llama": ("LlamaForCausalLM", "LlamaConfig", {"num_key_value_heads": 2}, "decoder"),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", {"num_key_value_heads": 2}, "decoder"),
    "mistral": ("MistralForCausalLM", "MistralConfig", {"num_key_value_heads": 2}, "decoder"),
    "phi3": ("Phi3ForCausalLM", "Phi3Config", {"num_key_value_heads": 2, "pad_token_id": 0, "bos_token_id": 1,
                                               "eos_token_id": 2}, "decoder"),
}


def build(name: str, attn: str = "sdpa", seed: int = 0) -> torch.nn.Module:
    cls, cfg_cls, extra, _ = HF[name]
    cfg = getattr(transformers, cfg_cls)(**{**SMALL, **extra})
    cfg._attn_implementation = attn
    torch.manual_seed(seed)
    return getattr(transformers, cls)(cfg).eval()


def task_of(name: str) -> str:
    return "generation" if HF[name][3] == "decoder" else "classification"
