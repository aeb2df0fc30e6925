"""Coverage sweep beyond the test suite: build many architectures with tiny random configs, explain a batch of 2
and print the conservation error (or the ops without a rule, or the error). Not part of CI (minutes of CPU).

    python scripts/model_sweep.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dl_backtrace import Explainer, coverage

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=99,
             max_position_embeddings=64)
TEXT = {  # name -> (model class, config class, extra config); input_ids [2, 12]
    "albert": ("AlbertForSequenceClassification", "AlbertConfig", {"embedding_size": 16}),
    "deberta_v2": ("DebertaV2ForSequenceClassification", "DebertaV2Config", {}),
    "xlm_roberta": ("XLMRobertaForSequenceClassification", "XLMRobertaConfig", {"pad_token_id": 1}),
    "mpnet": ("MPNetForSequenceClassification", "MPNetConfig", {}),
    "modernbert": ("ModernBertForSequenceClassification", "ModernBertConfig",
                   {"global_attn_every_n_layers": 2, "local_attention": 8, "pad_token_id": 0, "eos_token_id": 1,
                    "bos_token_id": 2, "cls_token_id": 2, "sep_token_id": 1}),
    "gemma": ("GemmaForCausalLM", "GemmaConfig", {"num_key_value_heads": 2, "head_dim": 8}),
    "gemma2": ("Gemma2ForCausalLM", "Gemma2Config", {"num_key_value_heads": 2, "head_dim": 8}),
    "gemma3": ("Gemma3ForCausalLM", "Gemma3TextConfig", {"num_key_value_heads": 2, "head_dim": 8}),
    "qwen3": ("Qwen3ForCausalLM", "Qwen3Config", {"num_key_value_heads": 2, "head_dim": 8}),
    "gpt_neox": ("GPTNeoXForCausalLM", "GPTNeoXConfig", {}),
    "falcon": ("FalconForCausalLM", "FalconConfig", {}),
    "opt": ("OPTForCausalLM", "OPTConfig", {"ffn_dim": 64, "word_embed_proj_dim": 32}),
    "bloom": ("BloomForCausalLM", "BloomConfig", {"n_layer": 2, "n_head": 4}),
    "gptj": ("GPTJForCausalLM", "GPTJConfig", {"n_embd": 32, "n_layer": 2, "n_head": 4, "rotary_dim": 4}),
    "phi": ("PhiForCausalLM", "PhiConfig", {}),
    "olmo": ("OlmoForCausalLM", "OlmoConfig", {}),
    "t5_encoder": ("T5EncoderModel", "T5Config", {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2,
                                                  "num_heads": 4}),
    "mixtral": ("MixtralForCausalLM", "MixtralConfig", {"num_key_value_heads": 2, "num_local_experts": 4,
                                                        "num_experts_per_tok": 2}),
    "qwen3_moe": ("Qwen3MoeForCausalLM", "Qwen3MoeConfig", {"num_key_value_heads": 2, "num_experts": 4,
                                                            "num_experts_per_tok": 2, "moe_intermediate_size": 16,
                                                            "head_dim": 8}),
}
IMAGE = {  # pixel_values [2, 3, 32, 32]
    "deit": ("DeiTForImageClassification", "DeiTConfig", {"image_size": 32, "patch_size": 8}),
    "beit": ("BeitForImageClassification", "BeitConfig", {"image_size": 32, "patch_size": 8}),
    "clip_vision": ("CLIPVisionModel", "CLIPVisionConfig", {"image_size": 32, "patch_size": 8}),
    "convnext_hf": ("ConvNextForImageClassification", "ConvNextConfig",
                    {"hidden_sizes": [8, 16], "depths": [1, 1], "num_stages": 2}),
    "resnet_hf": ("ResNetForImageClassification", "ResNetConfig",
                  {"hidden_sizes": [8, 16], "depths": [1, 1], "embedding_size": 8}),
    "dinov2": ("Dinov2Model", "Dinov2Config", {"image_size": 32, "patch_size": 8}),
}
VISION = ["alexnet", "squeezenet1_1", "shufflenet_v2_x0_5", "mnasnet0_5", "mobilenet_v3_small", "googlenet",
          "regnet_y_400mf", "convnext_tiny", "resnext50_32x4d", "efficientnet_v2_s", "inception_v3"]
SEGMENTATION = ["fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"]


class _First(nn.Module):
    """Keep the first output (a tuple or an ``{"out": ...}`` dict) of a wrapped module, optionally pooled."""

    def __init__(self, core: nn.Module, head: nn.Module | None = None) -> None:
        super().__init__()
        self.core, self.head = core, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.core(x)
        y = y["out"] if isinstance(y, dict) else (y[0] if isinstance(y, tuple) else y)
        return self.head(y.mean(1)) if self.head is not None else y


def _hf(spec: tuple[str, str, dict[str, Any]], text: bool) -> Callable[[], tuple[nn.Module, dict, str | None]]:
    def make() -> tuple[nn.Module, dict, str | None]:
        import transformers

        cls, cfg_cls, extra = spec
        model = getattr(transformers, cls)(getattr(transformers, cfg_cls)(**{**SMALL, **extra}))
        if text:
            ids = torch.randint(3, 99, (2, 12))
            return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, None
        return model, {"pixel_values": torch.randn(2, 3, 32, 32)}, None
    return make


def _tv(name: str, seg: bool = False) -> Callable[[], tuple[nn.Module, dict, str | None]]:
    def make() -> tuple[nn.Module, dict, str | None]:
        import torchvision

        if seg:
            model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=3)
            return _First(model), {"x": torch.randn(1, 3, 64, 64)}, "segmentation"
        kw = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
        size = 299 if name == "inception_v3" else 96
        return torchvision.models.get_model(name, weights=None, num_classes=10, **kw), \
            {"x": torch.randn(2, 3, size, size)}, None
    return make


def cases() -> dict[str, Callable[[], tuple[nn.Module, dict, str | None]]]:
    out: dict[str, Callable[[], tuple[nn.Module, dict, str | None]]] = {}
    out.update({n: _tv(n) for n in VISION})
    out.update({n: _tv(n, seg=True) for n in SEGMENTATION})
    out["r3d_18"] = lambda: (__import__("torchvision").models.video.r3d_18(weights=None, num_classes=3),
                             {"x": torch.randn(1, 3, 4, 32, 32)}, None)
    for n, core in (("lstm", nn.LSTM), ("gru", nn.GRU), ("rnn", nn.RNN)):
        out[n] = lambda core=core: (_First(core(8, 16, batch_first=True), nn.Linear(16, 3)),
                                    {"x": torch.randn(2, 5, 8)}, None)
    layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, dropout=0.0)
    out["transformer_encoder"] = lambda: (_First(nn.TransformerEncoder(layer, 2), nn.Linear(16, 3)),
                                          {"x": torch.randn(2, 5, 16)}, None)
    out.update({n: _hf(s, True) for n, s in TEXT.items()})
    out.update({n: _hf(s, False) for n, s in IMAGE.items()})
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    failed = 0
    for name, make in cases().items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        torch.manual_seed(0)
        model, inputs, task = make()
        model = model.eval()
        missing = coverage(model, inputs)
        if missing:
            print(f"{name:28s} NO RULE FOR {sorted({m.op for m in missing})}", flush=True)
            failed += 1
            continue
        extra: dict[str, Any] = {}
        if task == "segmentation":  # random weights give small scores: seed every pixel (threshold below all)
            with torch.no_grad():
                extra["thresholding"] = float(model(**inputs).amax(1).min()) - 1.0
        res = Explainer(model, inputs).attribute(**inputs, task=task, **extra)
        ok = res.conservation_error <= 1e-4
        failed += not ok
        print(f"{name:28s} conservation {res.conservation_error:.1e}  {time.perf_counter() - t0:5.1f}s"
              f"{'' if ok else '  NOT CONSERVED'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
