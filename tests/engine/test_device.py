"""Devices and numerics: the move of a traced program, device names, strict fp32 inside an explanation only.

The CPU tests run in CI; the CUDA ones run where a GPU is present (scripts/device_check.sh runs this file)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dl_backtrace
from dl_backtrace import engine as engine_mod
from dl_backtrace import precision
from dl_backtrace.pytorch_backtrace import DLBacktrace

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3),
                         nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()


def _tf32_state() -> tuple[object, ...]:
    return precision._read()


def test_move_path_runs_on_cpu_and_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The program move (used when the model lives on another device than the explanation) on a CPU program."""
    model, x = _cnn(), torch.randn(2, 3, 12, 12)
    plain = dl_backtrace.Explainer(model, x).attribute(x, mode="contrast")
    moved: list[torch.device] = []
    real = engine_mod.move_program

    def spy(program: torch.export.ExportedProgram, device: torch.device) -> torch.export.ExportedProgram:
        moved.append(device)
        return real(program, device)

    monkeypatch.setattr(engine_mod, "same_device", lambda a, b: False)
    monkeypatch.setattr(engine_mod, "move_program", spy)
    res = dl_backtrace.Explainer(model, x, device="cpu").attribute(x, mode="contrast")
    assert moved == [torch.device("cpu")]
    torch.testing.assert_close(res.input_relevance.positive, plain.input_relevance.positive, rtol=0, atol=0)
    torch.testing.assert_close(res.input_relevance.negative, plain.input_relevance.negative, rtol=0, atol=0)


def test_device_names_are_compared_after_normalising() -> None:
    assert engine_mod.same_device("cpu", torch.device("cpu"))
    assert not engine_mod.same_device("cpu", "meta")
    if torch.cuda.is_available():
        assert engine_mod.same_device("cuda", f"cuda:{torch.cuda.current_device()}")


def test_explanation_runs_in_strict_fp32_and_restores_user_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[object, ...]] = []
    real = engine_mod.propagate

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(_tf32_state())
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_mod, "propagate", spy)
    before = _tf32_state()
    strict = precision._wanted("fp32")
    model, x = _cnn(), torch.randn(1, 3, 8, 8)
    exp = dl_backtrace.Explainer(model, x)
    exp.attribute(x)
    assert seen[-1] == strict
    exp.attribute(x, precision="fast")
    assert seen[-1] == precision._wanted("fast")
    assert _tf32_state() == before
    with pytest.raises(ValueError, match="precision"):
        exp.attribute(x, precision="fp8")
    assert _tf32_state() == before


def test_user_tf32_switches_are_restored_after_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    saved = precision._read()
    try:
        precision._write(precision._wanted("fast"))  # the user's own global choice: TF32 on
        user = precision._read()

        def boom(*args: object, **kwargs: object) -> object:
            assert precision._read() == precision._wanted("fp32")
            raise RuntimeError("rule failed")

        monkeypatch.setattr(engine_mod, "propagate", boom)
        model, x = _cnn(), torch.randn(1, 3, 8, 8)
        exp = dl_backtrace.Explainer(model, x)
        with pytest.raises(RuntimeError, match="rule failed"):
            exp.attribute(x)
        assert precision._read() == user
    finally:
        precision._write(saved)


def test_strict_fp32_wins_while_a_fast_and_an_exact_explanation_overlap() -> None:
    before = precision._read()
    with precision.numerics("fast"):
        assert precision._read() == precision._wanted("fast")
        with precision.numerics("fp32"):
            assert precision._read() == precision._wanted("fp32")
        assert precision._read() == precision._wanted("fast")
    assert precision._read() == before


@cuda
def test_model_already_on_the_gpu_is_not_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("the program was moved although the model is on the explanation's device")

    monkeypatch.setattr(engine_mod, "move_program", refuse)
    model, x = _cnn().cuda(), torch.randn(1, 3, 8, 8, device="cuda")
    dlb = DLBacktrace(model, x, device="cuda")
    dlb.predict(x)
    assert dlb.evaluation(task="classification").conservation_error < 1e-5


@cuda
@pytest.mark.parametrize("mode", ["default", "contrast"])
def test_cpu_and_cuda_agree_with_the_users_tf32_switched_on(mode: str) -> None:
    saved = precision._read()
    try:
        precision._write(precision._wanted("fast"))
        model, x = _cnn(), torch.randn(2, 3, 16, 16)
        cpu = dl_backtrace.Explainer(model, x).attribute(x, mode=mode)
        gpu = dl_backtrace.Explainer(model, x, device="cuda").attribute(x, mode=mode)
        assert precision._read() == precision._wanted("fast")
    finally:
        precision._write(saved)
    for a, b in zip(cpu.input_relevance, gpu.input_relevance) if mode == "contrast" else [
            (cpu.input_relevance, gpu.input_relevance)]:
        assert float((a - b.cpu()).abs().max() / a.abs().max()) <= 1e-4


def test_torch_flag_getters_never_raise_inside_an_explanation() -> None:
    """torch >= 2.9 raises from its legacy TF32 getters when the legacy and per-backend flags disagree; torch.export
    reads them, so a trace in one thread while another explains must still work."""
    saved = precision._read()
    try:
        torch.backends.cuda.matmul.allow_tf32 = True  # a user's legacy global choice
        for p in ("fp32", "fast"):
            with precision.numerics(p):
                assert torch.backends.cuda.matmul.allow_tf32 is (p == "fast")
                assert torch.backends.cudnn.allow_tf32 is (p == "fast")
                assert precision.effective() == ("tf32" if p == "fast" else "fp32")
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        precision._write(saved)
