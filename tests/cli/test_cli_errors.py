"""User errors on the command line: one line on stderr, exit code 2, no traceback, no half-written output
folder (issue 11, item 8). Run in process: an exception escaping main() fails the test."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dl_backtrace.cli import main


def _fails_cleanly(argv: list[str], capsys: pytest.CaptureFixture[str], match: str) -> None:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("dlbacktrace: error:") and "\n" not in err and "Traceback" not in err, err
    assert match.lower() in err.lower(), err


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    from PIL import Image

    out: dict[str, Path] = {}
    out["img"] = tmp_path / "digit.png"
    Image.fromarray((np.random.rand(8, 8) * 255).astype("uint8")).save(out["img"])
    out["nan"] = tmp_path / "nan.npy"
    arr = np.random.rand(1, 1, 8, 8).astype("float32")
    arr[0, 0, 3, 3] = np.nan
    np.save(out["nan"], arr)
    out["evil"] = tmp_path / "evil.pt"
    out["evil"].write_bytes(pickle.dumps(_Evil()))
    out["garbage"] = tmp_path / "garbage.safetensors"
    out["garbage"].write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    out["wrong"] = tmp_path / "wrong.safetensors"
    from safetensors.torch import save_file

    save_file({"nope.weight": torch.zeros(2)}, str(out["wrong"]))
    out["nested"] = tmp_path / "nested.json"
    out["nested"].write_text("[" * 100000 + "]" * 100000)
    out["bomb"] = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(out["bomb"])  # ~50 KB on disk, 400 megapixels decoded
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "broken.py").write_text("raise ZeroDivisionError('module fails on import')\n")
    (pkg / "factories.py").write_text("def raises():\n    raise KeyError('factory failed')\n\n\n"
                                      "def not_a_module():\n    return 42\n")
    out["pkg"] = tmp_path
    return out


def test_bad_values_and_files_exit_2(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = str(tmp_path / "out")
    demo = ["explain", "--model", "demo", "--input", str(files["img"]), "--out", out]
    cases = [
        (demo + ["--target", "99"], "0..9"),
        (demo + ["--target", "-1"], "0..9"),
        (["explain", "--model", "torchvision:resnet18", "--size", "-5", "--input", str(files["img"])], "positive"),
        (demo + ["--task", "token-classification"], "[B, T, C]"),
        (["explain", "--model", "torchvision:resnet18", "--weights", str(files["evil"]), "--input",
          str(files["img"]), "--out", out], "cannot read weights"),
        (["explain", "--model", "torchvision:resnet18", "--weights", str(files["garbage"]), "--input",
          str(files["img"]), "--out", out], "cannot read weights"),
        (["explain", "--model", "torchvision:resnet18", "--weights", str(files["wrong"]), "--input",
          str(files["img"]), "--out", out], "does not fit"),
        (["explain", "--model", "demo", "--input", str(files["nan"]), "--out", out], "NaN"),
        (["explain", "--model", "demo", "--input", str(files["nested"]), "--out", out], "nested too deeply"),
        (["explain", "--model", "demo", "--input", str(files["bomb"]), "--out", out], "too large"),
        (["serve", "--model", "demo", "--port", "99999"], "1..65535"),
    ]
    for argv, match in cases:
        _fails_cleanly(argv, capsys, match)
        assert not Path(out).exists(), f"{argv} left {out} behind"
    monkeypatch.chdir(files["pkg"])
    for spec, match in (("userpkg.broken:make", "ZeroDivisionError"), ("userpkg.factories:raises", "KeyError"),
                        ("userpkg.factories:not_a_module", "not a torch.nn.Module"),
                        ("userpkg.factories:missing", "no callable")):
        _fails_cleanly(["coverage", "--model", spec], capsys, match)


def test_nested_json_is_refused_and_flat_json_works(files: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    flat = tmp_path / "x.json"
    flat.write_text(json.dumps(np.random.rand(1, 1, 8, 8).tolist()))
    assert main(["explain", "--model", "demo", "--input", str(flat), "--out", str(tmp_path / "ok")]) == 0
    assert (tmp_path / "ok" / "report.html").stat().st_size > 0
