"""Explanation cost as a multiple of a plain forward pass, measured in one process.

Per model, interleaved over the runs (so machine drift hits every measurement alike), after a warm-up:
- forward: ``model(**inputs)`` under ``torch.no_grad()``;
- grad x input: forward + input-gradient backward with frozen parameters (for token models the gradient is
  taken at the input embeddings): the physical floor of a backward-style explanation;
- explain: ``predict + evaluation`` of the seed-compatible API (every node's relevance kept), the trace built
  once outside the timing.
Medians are printed, with the ratios. Peak extra memory (``--memory``): on CUDA ``max_memory_allocated`` above
the resident model; on CPU the rise of the peak RSS (VmHWM, reset through /proc/self/clear_refs) above the RSS
before the call, measured in a child process whose malloc returns every block of 16 KiB or more to the system
on free (MALLOC_MMAP_THRESHOLD_), so RSS follows live memory. Explanation memory is for the lean setting
(``Explainer.attribute(nodes=False)``: input relevance only, activations freed once used) and for the full
seed-API setting (every node's relevance kept), next to autograd's forward + backward (grad x input).

    python benchmarks/explain_vs_forward.py --models resnet18 resnet50 [--runs 5] [--threads 2] [--memory]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dl_backtrace  # noqa: E402
from dl_backtrace.pytorch_backtrace import DLBacktrace  # noqa: E402
from models import MODELS, build, logits  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0


def peak_extra_bytes(fn: Callable[[], object], device: torch.device) -> int:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    base = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (Linux)
    fn()
    return _status("VmHWM") - base


def _grad_x_input(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> Callable[[], object]:
    def run() -> object:
        if "input_ids" in inputs:
            emb = model.get_input_embeddings()(inputs["input_ids"]).detach().requires_grad_(True)
            rest = {k: v for k, v in inputs.items() if k != "input_ids"}
            out = logits(model(inputs_embeds=emb, **rest))
            out.flatten(1).max(1).values.sum().backward()
            return (emb.grad * emb).sum(-1)
        x = inputs["x"].clone().requires_grad_(True)
        logits(model(x)).flatten(1).max(1).values.sum().backward()
        return x.grad * x
    return run


def _memory_in_child(name: str, args_device: str, dtype: str) -> dict[str, float]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="16384", MALLOC_TRIM_THRESHOLD_="0")
    cmd = [sys.executable, __file__, "--_memory", name, "--device", args_device, "--dtype", dtype]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def memory(name: str, device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    model, inputs, task = build(name)
    model = model.to(device=device, dtype=dtype)
    inputs = {k: v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device) for k, v in inputs.items()}
    for p in model.parameters():
        p.requires_grad_(False)
    exp = dl_backtrace.Explainer(model, inputs, device=device)
    lean = lambda: exp.attribute(**inputs, task=task, nodes=False)  # noqa: E731
    full = lambda: exp.attribute(**inputs, task=task)  # noqa: E731
    grad = _grad_x_input(model, inputs)
    for fn in (lean, full, grad):  # warm-up: caches (|W|) are built here, not counted below
        fn()
    mib = 2.0 ** 20
    return {"mem_lean_mb": peak_extra_bytes(lean, device) / mib, "mem_full_mb": peak_extra_bytes(full, device) / mib,
            "mem_grad_mb": peak_extra_bytes(grad, device) / mib}


def bench(name: str, runs: int, device: torch.device, dtype: torch.dtype, with_memory: bool,
          precision: str = "fp32") -> dict[str, float]:
    model, inputs, task = build(name)
    model = model.to(device=device, dtype=dtype)
    inputs = {k: v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device) for k, v in inputs.items()}
    for p in model.parameters():
        p.requires_grad_(False)
    dlb = DLBacktrace(model, inputs, device=device)

    def forward() -> object:
        with torch.no_grad():
            return model(**inputs)

    def explain() -> object:
        dlb.predict(**inputs)
        return dlb.evaluation(task=task, device=None, precision=precision)

    fns = {"forward": forward, "grad": _grad_x_input(model, inputs), "explain": explain}
    for fn in fns.values():  # warm-up (also builds the |W| caches)
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            times[k].append(_timed(fn, device))
    out = {f"{k}_ms": statistics.median(v) * 1e3 for k, v in times.items()}
    out["ratio_forward"] = out["explain_ms"] / out["forward_ms"]
    out["ratio_grad"] = out["explain_ms"] / out["grad_ms"]
    if with_memory:
        out.update(_memory_in_child(name, args_device=str(device), dtype=str(dtype).split(".")[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "resnet50"], choices=sorted(MODELS))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--memory", action="store_true", help="also measure peak extra memory")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fast"], help="relevance products (GPU: TF32)")
    ap.add_argument("--_memory", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # a benchmark setting, never done by the library
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args._memory:
        print(json.dumps(memory(args._memory, device, dtype)))
        return
    print(f"torch {torch.__version__}, device {device}, dtype {args.dtype}, precision {args.precision}, "
          f"threads {torch.get_num_threads()}, "
          f"median of {args.runs} interleaved runs after a warm-up\n")
    head = "| model | forward ms | grad x input ms | predict+evaluation ms | / forward | / grad x input |"
    print(head + (" lean explain MiB | full explain MiB | autograd MiB |" if args.memory else ""))
    print("|---|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if args.memory else ""))
    for name in args.models:
        r = bench(name, args.runs, device, dtype, args.memory, args.precision)
        mem = (f" {r['mem_lean_mb']:.0f} | {r['mem_full_mb']:.0f} | {r['mem_grad_mb']:.0f} |"
               if args.memory else "")
        print(f"| {name} | {r['forward_ms']:.1f} | {r['grad_ms']:.1f} | {r['explain_ms']:.1f} | "
              f"{r['ratio_forward']:.2f}x | {r['ratio_grad']:.2f}x |" + mem, flush=True)


if __name__ == "__main__":
    main()
