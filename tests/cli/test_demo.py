"""The README's demo command runs end to end on the bundled trained model."""

from __future__ import annotations

import pytest

from dl_backtrace.cli import main
from dl_backtrace.demo_model import load_demo


def test_bundled_model_is_trained() -> None:
    model, images, labels = load_demo()
    assert (model(images).argmax(1) == labels).float().mean() >= 0.9


def test_demo_prints_prediction_top_pixels_and_conservation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--digit", "7", "--top", "5"]) == 0
    out = capsys.readouterr().out
    assert "predicted 7" in out and "conservation error" in out
    assert out.count("): +") + out.count("): -") == 5


def test_bad_arguments_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["demo", "--digit", "12"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dlbacktrace: error:") and "\n" not in err
