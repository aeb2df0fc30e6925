"""Generation overhead of per-token relevance, measured in one process.

For each model: tokens/s of plain generation (greedy, KV cache, ``explain_tokens="none"``), tokens/s with every
token explained, and the cost of one explained token as a multiple of one forward over the full final sequence
(the explanation of a token is one propagation over the sequence so far). Tracing happens in a warm-up run.

    python benchmarks/generation.py [--models llama_tiny llama_0.5b] [--new-tokens 8] [--prompt 128]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dl_backtrace.pytorch_backtrace import DLBacktrace  # noqa: E402
from models import MODELS, build, median_time  # noqa: E402


def bench(name: str, new_tokens: int, prompt: int, runs: int) -> dict[str, float]:
    model, inputs, _ = build(name)
    ids = torch.randint(3, 1000, (1, prompt), generator=torch.Generator().manual_seed(0))
    feed = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    dlb = DLBacktrace(model, feed)

    def plain() -> object:
        return dlb.run_task(task="generation", inputs=feed, max_new_tokens=new_tokens, explain_tokens="none",
                            min_new_tokens=new_tokens)

    def explained() -> object:
        return dlb.run_task(task="generation", inputs=feed, max_new_tokens=new_tokens, explain_tokens="all",
                            min_new_tokens=new_tokens, progress=False)

    full = plain()["generated_ids"]
    explained()  # warm-up: traces the model once for every sequence length

    def forward() -> object:
        with torch.no_grad():
            return model(input_ids=full, attention_mask=torch.ones_like(full), use_cache=False)

    t_plain, t_exp, t_fwd = median_time(plain, runs), median_time(explained, runs), median_time(forward, max(runs, 3))
    per_token = (t_exp - t_plain) / new_tokens
    return {"plain_tps": new_tokens / t_plain, "explained_tps": new_tokens / t_exp, "forward_ms": t_fwd * 1e3,
            "per_token_ms": per_token * 1e3, "per_token_x_forward": per_token / t_fwd}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["llama_tiny", "llama_0.5b"], choices=sorted(MODELS))
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # a benchmark setting, never done by the library
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, prompt {args.prompt} tokens, "
          f"{args.new_tokens} new tokens, greedy, median of {args.runs}\n")
    print("| model | plain tokens/s | explained tokens/s | full-sequence forward ms | ms per explained token "
          "| per token / forward |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.models:
        r = bench(name, args.new_tokens, args.prompt, args.runs)
        print(f"| {name} | {r['plain_tps']:.2f} | {r['explained_tps']:.2f} | {r['forward_ms']:.1f} | "
              f"{r['per_token_ms']:.1f} | {r['per_token_x_forward']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
