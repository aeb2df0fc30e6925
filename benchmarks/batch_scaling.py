"""Batch scaling: the time to explain a batch of B examples divided by the time for one example (target: <= B),
and the time of a second input of the same shape against the first call (which traces): no re-tracing per input.

    python benchmarks/batch_scaling.py [--models resnet18 bert_base] [--batch 8] [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dl_backtrace.pytorch_backtrace import DLBacktrace  # noqa: E402
from models import MODELS, build, median_time  # noqa: E402


def bench(name: str, batch: int, runs: int, device: str = "cpu") -> dict[str, float]:
    model, inputs, task = build(name)
    model = model.to(device)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    big = {k: v.repeat(batch, *[1] * (v.dim() - 1)) for k, v in inputs.items()}
    t0 = time.perf_counter()
    dlb = DLBacktrace(model, inputs, device=device)
    trace_s = time.perf_counter() - t0

    def explain(x: dict[str, torch.Tensor]) -> object:
        dlb.predict(**x)
        out = dlb.evaluation(task=task, device=None)
        if device != "cpu":
            torch.cuda.synchronize()
        return out

    def one() -> object:
        return explain(inputs)

    def many() -> object:
        return explain(big)

    one()
    many()  # traces the batch shape once
    t1, tb = median_time(one, runs), median_time(many, runs)
    return {"trace_s": trace_s, "one_ms": t1 * 1e3, "batch_ms": tb * 1e3, "ratio": tb / t1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "bert_base"], choices=sorted(MODELS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # a benchmark setting, never done by the library
    print(f"torch {torch.__version__}, device {args.device}, CPU threads {torch.get_num_threads()}, "
          f"median of {args.runs}\n")
    print(f"| model | trace s (once) | explain 1 ms | explain {args.batch} ms | ratio (target <= {args.batch}) |")
    print("|---|---:|---:|---:|---:|")
    for name in args.models:
        r = bench(name, args.batch, args.runs, args.device)
        print(f"| {name} | {r['trace_s']:.1f} | {r['one_ms']:.1f} | {r['batch_ms']:.1f} | {r['ratio']:.2f}x |",
              flush=True)


if __name__ == "__main__":
    main()
