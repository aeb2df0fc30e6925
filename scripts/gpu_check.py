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
    return out


def _input_rel(rel: object, mode: str) -> list[torch.Tensor]:
    r = rel.input_relevance
    return [r.positive, r.negative] if mode == "contrast" else [r]


def check(name: str, model: nn.Module, inputs: tuple[torch.Tensor, ...], task: str) -> bool:
    ok = True
    model = model.eval()
    for mode in ("default", "contrast"):
        results = []
        for device in ("cpu", "cuda"):
            t0 = time.perf_counter()
            dlb = DLBacktrace(model, inputs, device=device)
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
    print("ALL OK" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
