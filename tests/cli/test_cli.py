"""The command line: demo writes its report, explain/coverage work on bundled and torchvision models, bad
arguments exit 2 with one line and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dl_backtrace.cli import main
from dl_backtrace.relevance_io import load_relevance


def test_demo_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    report = (tmp_path / "demo" / "report.html").read_text()
    assert "conservation error" in report and "data:image/png;base64" in report and "<svg" in report
    assert "report written to" in capsys.readouterr().out
    assert load_relevance(tmp_path / "demo" / "relevance.safetensors").mode == "default"


def test_explain_image_and_npy(tmp_path: Path) -> None:
    from PIL import Image

    img = tmp_path / "digit.png"
    Image.fromarray((np.random.rand(16, 16) * 255).astype("uint8")).save(img)
    assert main(["explain", "--model", "demo", "--input", str(img), "--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "report.html").exists()
    arr = tmp_path / "x.npy"
    np.save(arr, np.random.rand(1, 1, 8, 8).astype("float32"))
    assert main(["explain", "--model", "demo", "--input", str(arr), "--mode", "contrast", "--target", "2",
                 "--out", str(tmp_path / "b")]) == 0
    assert load_relevance(tmp_path / "b" / "relevance.safetensors").mode == "contrast"


def test_coverage_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["coverage", "--model", "demo"]) == 0
    assert "every op" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["explain", "--model", "nope"], ["explain", "--model", "demo"],
                                  ["explain", "--model", "demo", "--input", "/no/such.png"],
                                  ["demo", "--mode", "sideways"], ["explain"], ["frobnicate"]])
def test_bad_arguments_exit_2_with_one_line(argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "dl_backtrace", *argv], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert err.startswith("dlbacktrace: error:") and "\n" not in err and "Traceback" not in proc.stderr
