"""CPU vs CUDA agreement of the relevance (RELEVANCE.md section 5: within 1e-4 relative).

Runs each model on the CPU and on CUDA from the same weights and input, in default and contrast mode, and
prints the maximum difference of the input relevance relative to its largest magnitude. Exits 1 on a
mismatch, 0 when every check passes, 3 when no CUDA device is present.

    python scripts/gpu_check.py [--size 64] [--models resnet18 ...]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

from dl_backtrace.pytorch_backtrace import DLBacktrace

TOL = 1e-4


def _torchvision(name: str) -> nn.Module:
    import torchvision

    return getattr(torchvision.models, name)(weights=None)


class _Seg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.up = nn.Sequential(nn.ConvTranspose2d(8, 8, 2, stride=2), nn.Tanh())
        self.head = nn.Conv2d(11, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(torch.cat([self.up(self.down(x)), x], 1)))


class _Seq(nn.Module):
    def __init__(self, out: int) -> None:
        super().__init__()
        self.emb, self.conv, self.head = nn.Embedding(50, 16), nn.Conv1d(16, 16, 3, padding=1), nn.Linear(16, out)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(nn.functional.gelu(self.conv(self.emb(input_ids).transpose(1, 2))).transpose(1, 2))


def _hf(kind: str) -> nn.Module:
    import transformers

    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=256)
    if kind == "bert":
        return transformers.BertForSequenceClassification(transformers.BertConfig(**small))
    if kind == "olmoe":  # grouped expert products (aten._grouped_mm on CUDA in bf16)
        return transformers.OlmoeForCausalLM(transformers.OlmoeConfig(num_experts=4, num_experts_per_tok=2,
                                                                      eos_token_id=1, **small))
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(num_key_value_heads=2, **small))


def models(size: int) -> dict[str, tuple[nn.Module, tuple[torch.Tensor, ...], str]]:
    img = torch.randn(2, 3, size, size)
    ids = torch.randint(0, 50, (2, 12))
    out: dict[str, tuple[nn.Module, tuple[torch.Tensor, ...], str]] = {
        "mlp": (nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 5)), (torch.randn(2, 20),),
                "classification"),
        "regression": (nn.Sequential(nn.Linear(20, 32), nn.SiLU(), nn.Linear(32, 3)), (torch.randn(2, 20),),
                       "regression"),
        "segmentation": (_Seg(), (img,), "binary-segmentation"),
        "token-classification": (_Seq(4), (ids,), "token-classification"),
        "generation": (_Seq(50), (ids,), "generation"),
    }
    for name in ["resnet18", "resnet50", "vgg11_bn", "mobilenet_v2", "efficientnet_b0", "densenet121"]:
        out[name] = (_torchvision(name), (img,), "classification")
    tokens = torch.randint(3, 256, (2, 16))
    out["bert"] = (_hf("bert"), (tokens, torch.ones_like(tokens)), "classification")
    out["llama"] = (_hf("llama"), ({"input_ids": tokens, "attention_mask": torch.ones_like(tokens)},), "generation")
    out["olmoe"] = (_hf("olmoe"), ({"input_ids": tokens, "attention_mask": torch.ones_like(tokens)},), "generation")
    return out


def check_bf16(name: str, model: nn.Module, inputs: tuple, task: str) -> bool:
    """bf16 on CUDA against fp32 on CUDA: relevance is computed in float32 either way; the difference is the
    model's own bf16 rounding, so this reports it and checks conservation and finiteness only."""
    ok = True
    for mode in ("default", "contrast"):
        rels = []
        for dtype in (torch.float32, torch.bfloat16):
            m = model.to("cuda", dtype=dtype).eval()
            dlb = DLBacktrace(m, _example(inputs), device="cuda")
            dlb.predict(*inputs)
            rel = dlb.evaluation(mode=mode, task=task)
            good = rel.conservation_error <= 1e-3 and all(torch.isfinite(t).all() for t in _input_rel(rel, mode))
            ok &= good
            rels.append(_input_rel(rel, mode))
        diff = max(float((a - b).abs().max() / a.abs().max().clamp(min=1e-12)) for a, b in zip(*rels))
        print(f"{name:16s} {mode:8s} bf16 vs fp32 max rel diff {diff:.2e}  {'OK' if ok else 'FAILED'}", flush=True)
    model.to("cpu", dtype=torch.float32)
    return ok


def _example(inputs: tuple) -> object:
    return inputs[0] if len(inputs) == 1 and isinstance(inputs[0], dict) else inputs


def _input_rel(rel: object, mode: str) -> list[torch.Tensor]:
    r = rel.input_relevance
    r = r.get("input_ids", next(iter(r.values()))) if isinstance(r, dict) else r
    return [r.positive, r.negative] if mode == "contrast" else [r]


def check(name: str, model: nn.Module, inputs: tuple[torch.Tensor, ...], task: str) -> bool:
    ok = True
    model = model.eval()
    for mode in ("default", "contrast"):
        results = []
        for device in ("cpu", "cuda"):
            t0 = time.perf_counter()
            dlb = DLBacktrace(model, _example(inputs), device=device)
            dlb.predict(*inputs)
            rel = dlb.evaluation(mode=mode, task=task)
            results.append((_input_rel(rel, mode), rel.conservation_error, time.perf_counter() - t0))
        (cpu, cpu_err, t_cpu), (gpu, gpu_err, t_gpu) = results
        worst = max(float((a - b).abs().max() / a.abs().max().clamp(min=1e-12)) for a, b in zip(cpu, gpu))
        good = worst <= TOL and gpu_err <= 1e-4
        ok &= good
        print(f"{name:16s} {mode:8s} max rel diff {worst:.2e}  conservation cpu {cpu_err:.1e} cuda {gpu_err:.1e}  "
              f"({t_cpu:.1f}s / {t_gpu:.1f}s)  {'OK' if good else 'MISMATCH'}", flush=True)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--models", nargs="*")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing checked")
        return 3
    torch.manual_seed(0)
    ok = True
    for name, (model, inputs, task) in models(args.size).items():
        if args.models and name not in args.models:
            continue
        ok &= check(name, model, inputs, task)
        if name in ("bert", "llama", "olmoe"):
            ok &= check_bf16(name, model, inputs, task)
    print("ALL OK" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
