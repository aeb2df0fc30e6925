"""Explanation cost as a multiple of a plain forward pass, measured in one process.

For each model: median time of ``model(x)`` under ``torch.no_grad()``, of ``predict + evaluation`` (the trace is
built once, outside the timing), and of one autograd gradient x input (forward + input-gradient backward with
frozen parameters: the physical floor for a backward-style explanation). Prints a markdown table.

    python benchmarks/explain_vs_forward.py [--models resnet18 resnet50] [--runs 5] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from dl_backtrace.pytorch_backtrace import DLBacktrace


def _vision(name: str, size: int = 224) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], str]:
    import torchvision

    return getattr(torchvision.models, name)(weights=None).eval(), (torch.randn(1, 3, size, size),), "classification"


MODELS: dict[str, Callable[[], tuple[torch.nn.Module, tuple[torch.Tensor, ...], str]]] = {
    "resnet18": lambda: _vision("resnet18"),
    "resnet50": lambda: _vision("resnet50"),
    "mobilenet_v2": lambda: _vision("mobilenet_v2"),
    "vit_b_16": lambda: _vision("vit_b_16"),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median(fn: Callable[[], object], runs: int, device: torch.device) -> float:
    fn()
    _sync(device)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(name: str, runs: int, device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    model, inputs, task = MODELS[name]()
    model = model.to(device=device, dtype=dtype if dtype != torch.float32 else None)
    inputs = tuple(x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device) for x in inputs)
    for p in model.parameters():
        p.requires_grad_(False)

    def forward() -> object:
        with torch.no_grad():
            return model(*inputs)

    def grad_x_input() -> object:
        xs = [x.clone().requires_grad_(True) if x.is_floating_point() else x for x in inputs]
        out = model(*xs)
        out = out.logits if hasattr(out, "logits") else out
        out.flatten(1).max(1).values.sum().backward()
        return [x.grad * x for x in xs if x.is_floating_point()]

    dlb = DLBacktrace(model, inputs, device=device)

    def explain() -> object:
        dlb.predict(*inputs)
        return dlb.evaluation(task=task, device=None)

    t_fwd = _median(forward, runs, device)
    t_grad = _median(grad_x_input, runs, device)
    t_exp = _median(explain, runs, device)
    return {"forward_ms": t_fwd * 1e3, "grad_ms": t_grad * 1e3, "explain_ms": t_exp * 1e3,
            "ratio_forward": t_exp / t_fwd, "ratio_grad": t_exp / t_grad}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "resnet50"], choices=sorted(MODELS))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # a benchmark setting, never done by the library
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, device {device}, dtype {args.dtype}, threads {torch.get_num_threads()}, "
          f"median of {args.runs} runs after warm-up\n")
    print("| model | forward ms | grad x input ms | predict+evaluation ms | / forward | / grad x input |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.models:
        r = bench(name, args.runs, device, dtype)
        print(f"| {name} | {r['forward_ms']:.1f} | {r['grad_ms']:.1f} | {r['explain_ms']:.1f} | "
              f"{r['ratio_forward']:.2f}x | {r['ratio_grad']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
