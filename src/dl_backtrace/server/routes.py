"""The server's endpoints. Every limit is checked before the work it bounds (see :mod:`.limits`); explanations
and image decoding run in a bounded worker pool so the event loop (and ``/health``) always answers, and at most
``max_queue`` explanations are admitted at once: the next one gets 503 with ``Retry-After``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from fastapi import Request
from fastapi.responses import HTMLResponse
from starlette.datastructures import UploadFile

from .. import __version__
from ..errors import DLBacktraceError
from ..loading import image_tensor
from .limits import Limits, check_target, http_error, nesting, open_image, parse_json, read_body


class Admission:
    """Counts admitted explanations on the event loop; runs their work in a pool of ``max_concurrent`` threads."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.admitted = 0
        self.pool = ThreadPoolExecutor(max_workers=limits.max_concurrent, thread_name_prefix="dlb-explain")

    async def run(self, fn: Callable[[], Any]) -> Any:
        if self.admitted >= self.limits.max_queue:
            raise http_error(503, f"busy: {self.admitted} explanations are running or queued; retry shortly",
                             headers={"Retry-After": "2"})
        self.admitted += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn)
        finally:
            self.admitted -= 1


def _mode(value: Any) -> str:
    mode = str(value or "default")
    if mode not in ("default", "contrast", "contrastive"):
        raise http_error(422, f"mode must be 'default' or 'contrast', got {mode!r}")
    return mode


async def _image_inputs(request: Any, service: Any, limits: Limits, gate: Admission) -> tuple[dict, Any]:
    form = await request.form(max_files=1, max_fields=8)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise http_error(422, "multipart field 'file' (an image) is missing")
    if service.loaded.image_shape is None:
        raise http_error(422, "this model does not take images; send JSON {'text': ...} or {'input': [...]}")
    data = await upload.read(limits.max_body + 1)
    img = open_image(data, limits.max_pixels)  # header only: refused before any pixel is decoded

    def decode() -> torch.Tensor:
        with img:
            try:
                img.load()
            except (OSError, ValueError):
                raise http_error(415, "the image could not be decoded") from None
            return image_tensor(img, service.loaded)

    x = await gate.run(decode)
    return {service.dlb.traced.input_names[0]: x}, form


def _text_inputs(body: dict[str, Any], service: Any, limits: Limits) -> dict[str, torch.Tensor]:
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise http_error(422, "'text' must be a non-empty string")
    if len(text) > limits.max_chars:
        raise http_error(413, f"text is {len(text)} characters; the limit is {limits.max_chars}")
    if service.loaded.tokenizer is None:
        raise http_error(422, "this model does not take text; upload an image as multipart field 'file'")
    enc = service.loaded.tokenizer([text], return_tensors="pt")
    if enc["input_ids"].shape[1] > limits.max_tokens:
        raise http_error(413, f"text is {enc['input_ids'].shape[1]} tokens; the limit is {limits.max_tokens}")
    return {k: v for k, v in dict(enc).items() if k in service.dlb.traced.input_names}


def _tensor_inputs(body: dict[str, Any], service: Any) -> dict[str, torch.Tensor]:
    name, shape, dtype = service.dlb.traced.example_shapes[0]
    dims = ", ".join(map(str, shape[1:]))
    if nesting(body["input"]) not in (len(shape) - 1, len(shape)):
        raise http_error(422, f"'input' must be a nested list shaped [1, {dims}] (or [{dims}])")
    try:
        x = torch.tensor(body["input"], dtype=dtype)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise http_error(422, "'input' must be a nested list of numbers") from None
    if x.dim() == len(shape) - 1:
        x = x[None]
    if tuple(x.shape[1:]) != tuple(shape[1:]) or x.shape[0] != 1:
        raise http_error(422, f"'input' has shape {list(x.shape)}; this server explains one example shaped "
                              f"[1, {dims}]")
    return {name: x}


async def _json(request: Any, limits: Limits) -> dict[str, Any]:
    return parse_json(await read_body(request, limits.max_body))


def add_routes(app: Any, service: Any, viewer: str, limits: Limits) -> None:
    gate = Admission(limits)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return viewer

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "admitted": gate.admitted}

    @app.get("/model")
    def model() -> dict[str, Any]:
        return service.describe()

    @app.post("/explain")
    async def explain(request: Request) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            await read_body(request, limits.max_body)
            inputs, params = await _image_inputs(request, service, limits, gate)
        elif ctype.startswith("application/json"):
            params = await _json(request, limits)
            if "text" in params:
                inputs = _text_inputs(params, service, limits)
            elif "input" in params:
                inputs = _tensor_inputs(params, service)
            else:
                raise http_error(422, "JSON must hold 'text' or 'input'")
        else:
            raise http_error(415, "send multipart/form-data with an image in field 'file', or JSON {'text': ...}")
        mode, target = _mode(params.get("mode")), check_target(params.get("target"))
        try:
            return await gate.run(lambda: service.explain(inputs, mode, target))
        except (DLBacktraceError, ValueError, IndexError) as e:
            raise http_error(422, str(e).splitlines()[0]) from None

    @app.post("/generate")
    async def generate(request: Request) -> dict[str, Any]:
        body = await _json(request, limits)
        if not service.causal or service.loaded.tokenizer is None:
            raise http_error(422, "this model is not a causal language model with a tokenizer")
        n = body.get("max_new_tokens", 8)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= limits.max_new_tokens:
            raise http_error(422, f"max_new_tokens must be an integer in 1..{limits.max_new_tokens}")
        inputs = _text_inputs({"text": body.get("prompt")}, service, limits)
        return await gate.run(lambda: service.generate(inputs, n))
