"""Relevance files: exact fp32 round trip, bounded error for lossy precisions, malicious files rejected."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

import dl_backtrace
from dl_backtrace.relevance_io import PRECISIONS, load_relevance, save_relevance

# largest relative error (to the tensor's max |value|) of one rounding in each precision
BOUND = {"fp32": 0.0, "fp16": 2**-11, "bf16": 2**-8, "fp8": 2**-3, "int4": 1 / 14}


@pytest.fixture(scope="module", params=["default", "contrast"])
def result(request):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).eval()
    x = torch.randn(2, 6)
    return dl_backtrace.Explainer(model, x).attribute(x, mode=request.param, target=1)


def _streams(v):
    return [v.positive, v.negative] if isinstance(v, tuple) else [v]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_round_trip(result, tmp_path: Path, precision: str) -> None:
    path = tmp_path / "r.safetensors"
    err = save_relevance(result, path, precision)
    back = load_relevance(path)
    assert back.mode == result.mode and back.input_names == result.input_names and back.target == 1
    assert set(back) == set(result) and set(back.bias_sinks) == set(result.bias_sinks)
    worst = 0.0
    for key in result:
        for a, b in zip(_streams(result[key]), _streams(back[key])):
            scale = float(a.abs().max()) or 1.0
            rel = float((a - b).abs().max()) / scale
            worst = max(worst, rel)
            assert rel <= BOUND[precision] * 1.0001, (key, precision, rel)
    if precision == "fp32":
        assert worst == 0.0 and err["max_abs_error"] == 0.0
    assert abs(err["max_rel_error"] - worst) <= BOUND[precision] + 1e-12


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/dl_backtrace_pwned",))


def test_pickles_and_foreign_files_are_rejected(tmp_path: Path) -> None:
    marker = Path("/tmp/dl_backtrace_pwned")
    marker.unlink(missing_ok=True)
    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(ValueError, match="refusing"):
        load_relevance(bad)
    assert not marker.exists()
    from safetensors.torch import save_file

    other = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not a dl_backtrace relevance file"):
        load_relevance(other)
    with pytest.raises(ValueError, match="precision"):
        save_relevance(dl_backtrace.Explainer(nn.Linear(2, 2).eval(), torch.ones(1, 2)).attribute(torch.ones(1, 2)),
                       tmp_path / "x.safetensors", "int2")


def test_non_contiguous_and_tiny_relevance_is_saved(tmp_path: Path) -> None:
    """Permuted inputs, views and expanded tensors (contrast pairs too) are stored; fp16 keeps tensors whose
    values lie below fp16's range (1e-9) with its own relative bound instead of flushing them to 0."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    x = torch.randn(1, 8, 8, 3).permute(0, 3, 1, 2)
    assert not x.is_contiguous()
    for mode in ("default", "contrast"):
        res = dl_backtrace.Explainer(model, x).attribute(x, mode=mode, multiplier=1e-7)
        for precision in PRECISIONS:
            err = res.save(str(tmp_path / f"{mode}-{precision}.safetensors"), precision=precision)
            assert err["max_rel_error"] <= BOUND[precision] * 1.0001, (mode, precision, err)
            back = load_relevance(tmp_path / f"{mode}-{precision}.safetensors")
            for a, b in zip(_streams(res.input_relevance), _streams(back.input_relevance)):
                assert float((a - b).abs().max()) <= BOUND[precision] * 1.0001 * float(a.abs().max())


def _malformed(good: Path, tmp: Path) -> list[tuple[str, Path]]:
    """Files that are safetensors but not valid relevance files, each a way a reader used to crash."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(good), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    cases: list[tuple[str, dict[str, torch.Tensor], dict[str, str]]] = []
    drop_seed = {k: v for k, v in tensors.items() if not k.startswith("seed")}
    cases.append(("no seed", drop_seed, meta))
    inp = next(k for k in tensors if k.startswith("node/input"))
    cases.append(("no input", {k: v for k, v in tensors.items() if k != inp}, meta))
    cases.append(("int64 relevance", {**tensors, inp: tensors[inp].long()}, meta))
    cases.append(("bool relevance", {**tensors, inp: tensors[inp] > 0}, meta))
    cases.append(("unknown entry", {**tensors, "weights/w": torch.zeros(1)}, meta))
    cases.append(("unknown stream", {**tensors, "node/q#sideways": torch.zeros(1)}, meta))
    for key, value in (("input_names", "{bad json"), ("input_names", '"x"'), ("input_names", "[" * 5000 + "]" * 5000),
                       ("precision", "fp7"), ("mode", "sideways"), ("target", "{"), ("tokens", "3")):
        cases.append((f"metadata {key}={value[:10]}", tensors, {**meta, key: value}))
    cases.append(("missing input_names", tensors, {k: v for k, v in meta.items() if k != "input_names"}))
    cases.append(("fp8 without scale", {k: v.to(torch.float8_e4m3fn) for k, v in tensors.items()},
                  {**meta, "precision": "fp8"}))
    cases.append(("int4 bad shape", {**{k: torch.zeros(1, dtype=torch.uint8) for k in tensors},
                                     **{k + "#scale": torch.ones(1) for k in tensors},
                                     **{k + "#shape": torch.tensor([100, 100]) for k in tensors}},
                  {**meta, "precision": "int4"}))
    out = []
    for i, (name, t, m) in enumerate(cases):
        path = tmp / f"bad{i}.safetensors"
        save_file({k: v.contiguous() for k, v in t.items()}, str(path), metadata=m)
        out.append((name, path))
    return out


def test_malformed_files_raise_one_value_error(result, tmp_path: Path) -> None:
    good = tmp_path / "good.safetensors"
    save_relevance(result, good)
    back = load_relevance(good)
    assert "conservation_error" in repr(back) and back.conservation_error <= 1e-5
    cases = _malformed(good, tmp_path)
    assert len(cases) == 16
    for name, path in cases:
        with pytest.raises(ValueError):
            load_relevance(path)
            pytest.fail(f"{name}: loaded without an error")
