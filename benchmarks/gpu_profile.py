"""Where an explanation's time goes on the GPU: kernel time vs wall time (launch-bound or compute-bound).

For each model: one ``predict + evaluation`` under ``torch.profiler`` after a warm-up. Prints wall ms, the sum of
GPU kernel time, the number of kernel launches, the GPU-busy share (kernel time / wall) and the kernels that
take the most time. A busy share far below 1 means the explanation waits on Python and launches, not on the GPU.

    python benchmarks/gpu_profile.py --models resnet50 bert_base [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dl_backtrace.pytorch_backtrace import DLBacktrace  # noqa: E402
from models import MODELS, build  # noqa: E402


def _kernel_us(evt: object) -> float:
    for name in ("device_time_total", "cuda_time_total", "self_device_time_total"):
        v = getattr(evt, name, None)
        if v is not None:
            return float(v)
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["resnet50"], choices=sorted(MODELS))
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--top", type=int, default=6)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing profiled")
        return 3
    dtype = getattr(torch, args.dtype)
    print("| model | wall ms | kernel ms | launches | GPU busy | top kernels (ms) |")
    print("|---|---:|---:|---:|---:|---|")
    for name in args.models:
        model, inputs, task = build(name)
        model = model.to("cuda", dtype=dtype)
        inputs = {k: v.to("cuda", dtype=dtype) if v.is_floating_point() else v.to("cuda") for k, v in inputs.items()}
        dlb = DLBacktrace(model, inputs, device="cuda")
        for _ in range(2):
            dlb.predict(**inputs)
            dlb.evaluation(task=task, device=None)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            dlb.predict(**inputs)
            dlb.evaluation(task=task, device=None)
            torch.cuda.synchronize()
            wall = (time.perf_counter() - t0) * 1e3
        kernels = [e for e in prof.events() if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
        total = sum(_kernel_us(e) for e in kernels) / 1e3
        by_name: dict[str, float] = {}
        for e in kernels:
            by_name[e.name] = by_name.get(e.name, 0.0) + _kernel_us(e) / 1e3
        top = sorted(by_name.items(), key=lambda kv: -kv[1])[: args.top]
        tops = "; ".join(f"{k[:40]} {v:.2f}" for k, v in top)
        print(f"| {name} ({args.dtype}) | {wall:.1f} | {total:.1f} | {len(kernels)} | {total / wall:.0%} | {tops} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
