"""The server's endpoints. Inputs are validated up front; a bad request is answered with 4xx and a message."""

from __future__ import annotations

import io
import json
from typing import Any

import torch
from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse
from starlette.datastructures import UploadFile

from .. import __version__
from ..errors import DLBacktraceError
from ..loading import image_tensor

MAX_UPLOAD = 10 * 1024 * 1024
MAX_TOKENS = 512
MAX_NEW_TOKENS = 64


def _http(status: int, detail: str) -> Exception:
    return HTTPException(status_code=status, detail=detail)


def _check_size(request: Any) -> None:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_UPLOAD:
        raise _http(413, f"request of {int(length)} bytes is over the {MAX_UPLOAD // 2**20} MB limit")


def _mode(value: Any) -> str:
    mode = str(value or "default")
    if mode not in ("default", "contrast", "contrastive"):
        raise _http(422, f"mode must be 'default' or 'contrast', got {mode!r}")
    return mode


def _target(value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _http(422, f"target must be an integer, got {value!r}") from None


async def _image_inputs(request: Any, service: Any) -> tuple[dict[str, torch.Tensor], Any]:
    from PIL import Image, UnidentifiedImageError

    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise _http(422, "multipart field 'file' (an image) is missing")
    data = await upload.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise _http(413, f"upload is over the {MAX_UPLOAD // 2**20} MB limit")
    if service.loaded.image_shape is None:
        raise _http(422, "this model does not take images; send JSON {'text': ...} or {'input': [...]}")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            x = image_tensor(img, service.loaded)
    except (UnidentifiedImageError, OSError, ValueError):
        raise _http(415, "the uploaded file is not an image this server can read (png, jpeg, bmp, gif, webp)") from None
    return {service.dlb.traced.input_names[0]: x}, form


def _text_inputs(body: dict[str, Any], service: Any) -> dict[str, torch.Tensor]:
    text = body["text"]
    if not isinstance(text, str) or not text.strip():
        raise _http(422, "'text' must be a non-empty string")
    if service.loaded.tokenizer is None:
        raise _http(422, "this model does not take text; upload an image as multipart field 'file'")
    enc = service.loaded.tokenizer([text], return_tensors="pt")
    if enc["input_ids"].shape[1] > MAX_TOKENS:
        raise _http(413, f"text is {enc['input_ids'].shape[1]} tokens; the limit is {MAX_TOKENS}")
    return {k: v for k, v in dict(enc).items() if k in service.dlb.traced.input_names}


def _tensor_inputs(body: dict[str, Any], service: Any) -> dict[str, torch.Tensor]:
    name, shape, dtype = service.dlb.traced.example_shapes[0]
    try:
        x = torch.tensor(body["input"], dtype=dtype)
    except (TypeError, ValueError, RuntimeError):
        raise _http(422, "'input' must be a nested list of numbers") from None
    if x.dim() == len(shape) - 1:
        x = x[None]
    if tuple(x.shape[1:]) != tuple(shape[1:]):
        dims = ", ".join(map(str, shape[1:]))
        raise _http(422, f"'input' has shape {list(x.shape)}; this model takes [batch, {dims}]")
    return {name: x[:1]}


async def _json(request: Any) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_UPLOAD:
        raise _http(413, f"request is over the {MAX_UPLOAD // 2**20} MB limit")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _http(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _http(422, "send a JSON object")
    return body


def add_routes(app: Any, service: Any, viewer: str) -> None:
    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return viewer

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/model")
    def model() -> dict[str, Any]:
        return service.describe()

    @app.post("/explain")
    async def explain(request: Request) -> dict[str, Any]:
        _check_size(request)
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            inputs, params = await _image_inputs(request, service)
        elif ctype.startswith("application/json"):
            params = await _json(request)
            if "text" in params:
                inputs = _text_inputs(params, service)
            elif "input" in params:
                inputs = _tensor_inputs(params, service)
            else:
                raise _http(422, "JSON must hold 'text' or 'input'")
        else:
            raise _http(415, "send multipart/form-data with an image in field 'file', or JSON {'text': ...}")
        try:
            return service.explain(inputs, _mode(params.get("mode")), _target(params.get("target")))
        except (DLBacktraceError, ValueError, IndexError) as e:
            raise _http(422, str(e).splitlines()[0]) from None

    @app.post("/generate")
    async def generate(request: Request) -> dict[str, Any]:
        _check_size(request)
        body = await _json(request)
        if not service.causal or service.loaded.tokenizer is None:
            raise _http(422, "this model is not a causal language model with a tokenizer")
        n = body.get("max_new_tokens", 8)
        if not isinstance(n, int) or not 1 <= n <= MAX_NEW_TOKENS:
            raise _http(422, f"max_new_tokens must be an integer in 1..{MAX_NEW_TOKENS}")
        inputs = _text_inputs({"text": body.get("prompt")}, service)
        with service.lock:
            res = service.dlb.run_task(task="generation", inputs=inputs, tokenizer=service.loaded.tokenizer,
                                       max_new_tokens=n)
        steps = [{"step": e["step"], "token": e["token"][0], "tokens": e["tokens"][0],
                  "relevance": [float(v) for v in e["relevance"][0]]} for e in res["relevance_trace"]]
        return {"text": res["generated_text"][0], "generated_tokens": res["generated_tokens"][0], "steps": steps}
