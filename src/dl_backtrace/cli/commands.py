"""``dlbacktrace explain | coverage | generate | serve``."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import torch

from ..explainer import coverage
from ..loading import UsageError, load_input, load_model
from ..pytorch_backtrace import DLBacktrace
from ..reporting import summary_line, write_report
from ..seeds import TASKS

_MODEL_HELP = "demo, torchvision:NAME, hf-config:PATH (folder with config.json) or MODULE:FACTORY"


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=_MODEL_HELP)
    p.add_argument("--size", type=_positive, default=224, help="image size for torchvision models")
    p.add_argument("--weights", help="state dict for the model (.safetensors or .pt, loaded without pickle)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="explain one input and write a report + relevance file")
    _model_args(p)
    p.add_argument("--input", help="image, .pt, .npy, .json or .txt file")
    p.add_argument("--text", help="text input (models with a tokenizer)")
    p.add_argument("--task", default=None, choices=sorted(TASKS), help="default: from the output shape")
    p.add_argument("--mode", default="default", choices=["default", "contrast"])
    p.add_argument("--target", type=int, help="class / unit / token to explain (default: argmax)")
    p.add_argument("--out", default="dlbacktrace-report", help="output folder")
    p.set_defaults(func=run_explain)
    p = sub.add_parser("coverage", help="list ops on the relevance path without a rule (runs nothing)")
    _model_args(p)
    p.add_argument("--input", help="example input (default: the model's own example)")
    p.set_defaults(func=run_coverage)
    p = sub.add_parser("generate", help="generate text with per-token relevance (causal LMs)")
    _model_args(p)
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="write a tokens x steps map (.html or .png)")
    p.set_defaults(func=run_generate)
    p = sub.add_parser("serve", help="serve explanations over HTTP with a web viewer")
    _model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="default: loopback only")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--workers", type=_positive, default=1, help="explanations running at once (default 1)")
    p.add_argument("--queue", type=_positive, default=8, help="explanations admitted at once; more get 503")
    p.set_defaults(func=run_serve)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1..65535, got {text}")
    return value


def _as_dict(x: object, names: list[str]) -> dict[str, torch.Tensor]:
    if isinstance(x, dict):
        return {k: v for k, v in x.items() if isinstance(v, torch.Tensor)}
    return {names[0]: x}


def run_explain(args: argparse.Namespace) -> int:
    loaded = load_model(args.model, args.size, args.weights)
    x = load_input(args.input, loaded, args.text)
    example = x if isinstance(x, dict) else (x,)
    dlb = DLBacktrace(loaded.model, example)
    inputs = _as_dict(x, dlb.traced.input_names)
    dlb.predict(**inputs)
    rel = dlb.evaluation(mode=args.mode, task=args.task or loaded.task, target=args.target)
    tokens = None
    if loaded.tokenizer is not None and "input_ids" in inputs:
        tokens = [loaded.tokenizer.convert_ids_to_tokens(r.tolist()) for r in inputs["input_ids"]]
    out = Path(args.out)
    existed = out.exists()
    try:
        path = write_report(dlb, rel, inputs, out, f"dl_backtrace: {loaded.name}", loaded.labels, tokens)
    except BaseException:
        if not existed:  # a failed explain leaves no half-written folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    print(summary_line(rel))
    print(f"report written to {path.resolve()}")
    print(f"relevance file: {(out / 'relevance.safetensors').resolve()}")
    return 0


def run_coverage(args: argparse.Namespace) -> int:
    loaded = load_model(args.model, args.size, args.weights)
    example = load_input(args.input, loaded) if args.input else loaded.example
    if example is None:
        raise UsageError("this model has no example input: give --input")
    ops = coverage(loaded.model, example if isinstance(example, (tuple, dict)) else (example,))
    if not ops:
        print(f"{loaded.name}: every op on the relevance path has a rule")
        return 0
    print(f"{loaded.name}: {len(ops)} op(s) without a rule:")
    for op in ops:
        print(f"  {op}")
    return 1


def run_generate(args: argparse.Namespace) -> int:
    loaded = load_model(args.model, args.size, args.weights, head="causal-lm")
    if loaded.tokenizer is None:
        raise UsageError("generate needs a causal LM with a tokenizer: --model hf-config:PATH (a folder with "
                         "config.json and tokenizer files)")
    if not hasattr(loaded.model, "generate") or not hasattr(loaded.model, "get_output_embeddings") or \
            loaded.model.get_output_embeddings() is None:
        raise UsageError(f"generate needs a causal LM with a language-model head; {loaded.name} has none (set "
                         "\"architectures\": [\"...ForCausalLM\"] in config.json)")
    enc = loaded.tokenizer([args.prompt], return_tensors="pt")
    dlb = DLBacktrace(loaded.model, dict(enc))
    res = dlb.run_task(task="generation", inputs=dict(enc), tokenizer=loaded.tokenizer,
                       max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, temperature=args.temperature,
                       top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    from ..viz.tokens import tokens_ansi

    print(res["generated_text"][0])
    for entry in res["relevance_trace"]:
        colours = tokens_ansi(entry["tokens"][0], entry["relevance"][0])
        print(f"step {entry['step']} -> {entry['token'][0]!r}: {colours}")
    if args.out:
        print(f"token map written to {dlb.visualize_tokenwise_relevance_map(res['relevance_trace'], args.out)}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError as e:
        raise UsageError("the server needs: pip install 'dl_backtrace[server]'") from e
    from ..server import LOOPBACK_HOSTS, Limits, create_app

    loaded = load_model(args.model, args.size, args.weights)
    loopback = args.host in ("127.0.0.1", "localhost", "::1") or args.host.startswith("127.")
    hosts = (*LOOPBACK_HOSTS, args.host) if loopback else None  # bound elsewhere: the operator's proxy decides
    print(f"serving {loaded.name} on http://{args.host}:{args.port}/")
    limits = Limits(max_concurrent=args.workers, max_queue=max(args.queue, args.workers))
    # this is the server's own process: leave one core to the event loop so /health answers while explaining
    cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, min(torch.get_num_threads(), cores - 1)))
    uvicorn.run(create_app(loaded, limits=limits, allowed_hosts=hosts), host=args.host, port=args.port,
                log_level="warning")
    return 0
