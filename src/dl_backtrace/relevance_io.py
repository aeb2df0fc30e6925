"""Relevance files: safetensors (no pickle: loading never executes code) with JSON metadata.

``save_relevance(result, path, precision)`` stores every tensor of a :class:`~dl_backtrace.results.Relevance`
(contrast pairs as two tensors, bias sinks, the seed) in float32 (lossless), float16 (with a per-tensor
scale), bfloat16, float8 (e4m3 with a per-tensor scale) or int4 (symmetric, per-tensor scale, two values per
byte). Lossy precisions report the largest error they introduced, relative to each tensor's largest
magnitude. ``load_relevance(path)`` gives the Relevance back (dequantised to float32).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .results import Relevance
from .rules.registry import Pair

__all__ = ["save_relevance", "load_relevance", "PRECISIONS", "FORMAT"]

FORMAT = "dl_backtrace.relevance/1"
PRECISIONS = ("fp32", "fp16", "bf16", "fp8", "int4")


def _safetensors() -> Any:
    try:
        import safetensors.torch as st
    except ImportError as e:
        raise ImportError("relevance files need safetensors: pip install 'dl_backtrace[viz]'") from e
    return st


def _flatten(res: Relevance) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for prefix, mapping in (("node", dict(res)), ("sink", res.bias_sinks), ("seed", {"": res.seed})):
        for name, v in mapping.items():
            key = f"{prefix}/{name}" if name else prefix
            if isinstance(v, Pair):
                out[key + "#positive"], out[key + "#negative"] = v.positive, v.negative
            elif isinstance(v, Tensor):
                out[key] = v
    # identity rules share tensors, views are non-contiguous and expanded ones have zero strides: every stored
    # tensor is its own contiguous copy (safetensors refuses anything else)
    return {k: v.detach().to("cpu", torch.float32).clone(memory_format=torch.contiguous_format)
            for k, v in out.items()}


def _encode(t: Tensor, precision: str) -> tuple[dict[str, Tensor], Tensor]:
    """Stored tensors for one relevance tensor, and its decoded value (to measure the error)."""
    if precision == "fp32":
        return {"": t}, t
    if precision == "bf16":  # float32's exponent range: no scale needed
        q = t.to(torch.bfloat16)
        return {"": q}, q.float()
    scale = t.abs().max().clamp(min=1e-30)
    if precision == "fp16":  # fp16 spans 6e-8..65504: scale each tensor into [-1, 1] so nothing under/overflows
        q = (t / scale).to(torch.float16)
        return {"": q, "#scale": scale.reshape(1)}, q.float() * scale
    if precision == "fp8":
        q = (t / scale * 448.0).to(torch.float8_e4m3fn)  # 448: the largest e4m3 value
        return {"": q, "#scale": scale.reshape(1)}, q.float() * scale / 448.0
    levels = torch.clamp(torch.round(t / scale * 7.0), -7, 7).to(torch.int8).flatten()  # int4: -7..7
    if levels.numel() % 2:
        levels = torch.cat([levels, levels.new_zeros(1)])
    nibbles = (levels + 8).to(torch.uint8)
    packed = nibbles[0::2] | (nibbles[1::2] << 4)
    decoded = levels[: t.numel()].float().reshape(t.shape) * scale / 7.0
    return {"": packed, "#scale": scale.reshape(1), "#shape": torch.tensor(list(t.shape), dtype=torch.int64)}, decoded


def _decode(parts: dict[str, Tensor], precision: str) -> Tensor:
    base = parts[""]
    if precision in ("fp32", "fp16", "bf16"):
        return base.float() * parts["#scale"][0] if "#scale" in parts else base.float()
    scale = parts["#scale"][0]
    if precision == "fp8":
        return base.float() * scale / 448.0
    low, high = (base & 0x0F).to(torch.int16) - 8, (base >> 4).to(torch.int16) - 8
    levels = torch.stack([low, high], dim=1).flatten()
    shape = [int(s) for s in parts["#shape"].tolist()]
    n = 1
    for s in shape:
        n *= s
    return levels[:n].float().reshape(shape) * scale / 7.0


def save_relevance(result: Relevance, path: str | Path, precision: str = "fp32",
                   metadata: dict[str, Any] | None = None) -> dict[str, float]:
    """Write ``result`` to ``path`` (safetensors). Returns the largest absolute and relative error the chosen
    precision introduced (0 for fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    from . import __version__

    tensors: dict[str, Tensor] = {}
    max_abs, max_rel = 0.0, 0.0
    for key, t in _flatten(result).items():
        parts, decoded = _encode(t, precision)
        tensors.update({key + suffix: v for suffix, v in parts.items()})
        if t.numel():  # error relative to this tensor's largest magnitude (an all-zero tensor has none)
            err, top = float((decoded - t).abs().max()), float(t.abs().max())
            max_abs = max(max_abs, err)
            max_rel = max(max_rel, err / top if top > 0 else 0.0)
    meta = {"format": FORMAT, "precision": precision, "dl_backtrace_version": __version__, "mode": result.mode,
            "task": str(result.task), "target": json.dumps(_jsonable(result.target)),
            "input_names": json.dumps(result.input_names), "tokens": json.dumps(result.tokens),
            "conservation_error": repr(result.conservation_error), "max_abs_error": repr(max_abs),
            "max_rel_error": repr(max_rel)}
    meta.update({k: v if isinstance(v, str) else json.dumps(_jsonable(v)) for k, v in (metadata or {}).items()})
    _safetensors().save_file(tensors, str(path), metadata=meta)
    return {"max_abs_error": max_abs, "max_rel_error": max_rel}


def _jsonable(v: Any) -> Any:
    if isinstance(v, Tensor):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v if v is None or isinstance(v, (int, float, str, bool, dict)) else str(v)


def _read(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    st = _safetensors()
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = st.load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({type(e).__name__}): refusing to load it") from e
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a dl_backtrace relevance file (format {meta.get('format')!r})")
    return tensors, meta


_STORED = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp8": torch.float8_e4m3fn,
           "int4": torch.uint8}


def _json_field(meta: dict[str, str], key: str, kind: type | tuple[type, ...]) -> Any:
    try:
        value = json.loads(meta[key])
    except KeyError:
        raise ValueError(f"relevance file metadata lacks {key!r}") from None
    except (json.JSONDecodeError, RecursionError, TypeError) as e:
        raise ValueError(f"relevance file metadata {key!r} is not valid JSON ({type(e).__name__})") from None
    if not isinstance(value, kind):
        raise ValueError(f"relevance file metadata {key!r} has the wrong type ({type(value).__name__})")
    return value


def _check_parts(key: str, parts: dict[str, Tensor], precision: str) -> None:
    """Each stored relevance tensor: the dtype of its precision, and the scale/shape entries it needs."""
    base = parts.get("")
    if base is None or base.dtype != _STORED[precision]:
        got = "missing" if base is None else str(base.dtype)
        raise ValueError(f"relevance file entry {key!r}: expected {_STORED[precision]} for {precision}, got {got}")
    needs = {"fp16": {"#scale"} if "#scale" in parts else set(), "fp8": {"#scale"}, "int4": {"#scale", "#shape"}}
    for extra in needs.get(precision, set()) | set(parts) - {""}:
        if extra not in parts or extra not in needs.get(precision, set()):
            raise ValueError(f"relevance file entry {key!r}: unexpected or missing {extra!r} for {precision}")
    scale = parts.get("#scale")
    if scale is not None and (scale.dtype != torch.float32 or scale.numel() != 1 or not bool(scale.isfinite().all())):
        raise ValueError(f"relevance file entry {key!r}: its scale must be one finite float32")
    if precision == "int4":
        shape = parts["#shape"]
        if shape.dtype != torch.int64 or shape.dim() != 1 or bool((shape < 0).any()):
            raise ValueError(f"relevance file entry {key!r}: its shape entry is not a list of sizes")
        n = 1
        for d in shape.tolist():
            n *= d
        if base.dim() != 1 or base.numel() != (n + 1) // 2:
            raise ValueError(f"relevance file entry {key!r}: {base.numel()} packed bytes cannot hold shape "
                             f"{shape.tolist()}")


def _groups(tensors: dict[str, Tensor], precision: str) -> dict[str, dict[str, Tensor]]:
    groups: dict[str, dict[str, Tensor]] = {}
    for key, t in tensors.items():
        part = next((suf for suf in ("#scale", "#shape") if key.endswith(suf)), "")
        name = key[: len(key) - len(part)]
        if not (name == "seed" or name.startswith(("node/", "sink/", "seed#"))):
            raise ValueError(f"relevance file has an unknown entry {key!r}")
        groups.setdefault(name, {})[part] = t
    for name, parts in groups.items():
        _check_parts(name, parts, precision)
    return groups


def load_relevance(path: str | Path) -> Relevance:
    """Read a file written by :func:`save_relevance` (float32 tensors; contrast pairs restored). The whole
    file is validated first (metadata, entries, dtypes, shapes, pairs, the seed and every input); anything
    wrong raises one ValueError naming it. Nothing in the file is ever executed."""
    tensors, meta = _read(Path(path))
    precision, mode = meta.get("precision"), meta.get("mode")
    if precision not in PRECISIONS or mode not in ("default", "contrast"):
        raise ValueError(f"relevance file metadata: precision {precision!r} / mode {mode!r} not recognised")
    input_names = _json_field(meta, "input_names", list)
    if not all(isinstance(n, str) for n in input_names):
        raise ValueError("relevance file metadata 'input_names' must be a list of names")
    values = {k: _decode(parts, precision) for k, parts in _groups(tensors, precision).items()}
    merged: dict[str, Any] = {}
    for key, t in values.items():
        name, _, stream = key.partition("#")
        if stream:
            if stream not in ("positive", "negative"):
                raise ValueError(f"relevance file entry {key!r}: unknown stream {stream!r}")
            pair = merged.setdefault(name, [None, None])
            pair[0 if stream == "positive" else 1] = t
        else:
            merged[name] = t
    merged = {k: _pair(k, v, mode) if isinstance(v, list) or mode == "contrast" else v for k, v in merged.items()}
    nodes = {k[5:]: v for k, v in merged.items() if k.startswith("node/")}
    sinks = {k[5:]: v for k, v in merged.items() if k.startswith("sink/")}
    missing = [n for n in input_names if n not in nodes] + ([] if "seed" in merged else ["the seed"])
    if missing:
        raise ValueError(f"relevance file lacks {', '.join(map(repr, missing))}")
    res = Relevance(nodes, input_names, sinks, merged["seed"], mode, str(meta.get("task", "")),
                    _json_field(meta, "target", (int, list, type(None))),
                    _json_field(meta, "tokens", (list, type(None))))
    res.metadata = meta
    return res


def _pair(key: str, v: Any, mode: str) -> Pair:
    """A contrast entry: both streams present, same shape (default-mode files hold no pairs)."""
    if mode != "contrast" or not isinstance(v, list):
        raise ValueError(f"relevance file entry {key!r} does not fit a {mode}-mode file")
    if v[0] is None or v[1] is None or v[0].shape != v[1].shape:
        raise ValueError(f"relevance file entry {key!r} needs a positive and a negative stream of one shape")
    return Pair(v[0], v[1])
