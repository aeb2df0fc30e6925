"""A large-LLM probe on one GPU: an 8B-shaped Llama (Llama-3-8B shapes, random weights, built on the device), bf16.

Prints, in one process: trace time, forward ms, grad x input ms (gradient at the input embeddings), lean
explanation ms (``Explainer.attribute(nodes=False)``) for each precision, the ratios, conservation, and the peak
extra GPU memory of the explanation and of autograd above the resident model. Medians of ``--runs`` interleaved
runs after a warm-up. Needs CUDA (exits 3 without it).

    python benchmarks/llm_probe.py [--layers 32] [--tokens 512] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

import dl_backtrace


def build(layers: int, device: str) -> torch.nn.Module:
    import transformers

    cfg = transformers.LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
                                   num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                   max_position_embeddings=8192, rope_theta=500000.0)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # a benchmark setting: initialise the weights on the GPU in bf16
    try:
        with torch.device(device):
            model = transformers.LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(before)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def timed(fn: Callable[[], object]) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def peak_extra(fn: Callable[[], object]) -> float:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**30


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing measured")
        return 3
    torch.manual_seed(0)
    model = build(args.layers, "cuda")
    ids = torch.randint(3, 128000, (1, args.tokens), device="cuda")
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    t0 = time.perf_counter()
    exp = dl_backtrace.Explainer(model, inputs, device="cuda")
    trace_s = time.perf_counter() - t0

    def forward() -> object:
        with torch.no_grad():
            return model(**inputs).logits

    def grad() -> object:
        emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        out = model(inputs_embeds=emb, attention_mask=inputs["attention_mask"]).logits
        out[:, -1].max().backward()
        return (emb.grad * emb).sum(-1)

    fns: dict[str, Callable[[], object]] = {"forward": forward, "grad": grad}
    for p in ("fp32", "fast"):
        fns[p] = lambda p=p: exp.attribute(**inputs, task="generation", nodes=False, precision=p)
    errors = {p: fns[p]().conservation_error for p in ("fp32", "fast")}  # type: ignore[attr-defined]
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.runs):
        for k, fn in fns.items():
            times[k].append(timed(fn))
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    mem = {k: peak_extra(fns[k]) for k in ("grad", "fp32", "fast")}
    print(f"llama-8B-shaped, {args.layers} layers, bf16, {args.tokens} tokens, torch {torch.__version__}: "
          f"traced in {trace_s:.1f} s")
    print("| precision | explain ms | / forward | / grad x input | conservation | peak extra GiB | autograd GiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for p in ("fp32", "fast"):
        print(f"| {p} | {ms[p]:.1f} | {ms[p] / ms['forward']:.2f}x | {ms[p] / ms['grad']:.2f}x | {errors[p]:.1e} | "
              f"{mem[p]:.2f} | {mem['grad']:.2f} |")
    print(f"forward {ms['forward']:.1f} ms, grad x input {ms['grad']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
