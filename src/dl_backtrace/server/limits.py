"""Request limits of the server, checked before any expensive work: body size while it streams in, image
pixels from the header before decoding, text length before tokenising, JSON without NaN/Infinity or overflowing
numbers.
Every violation is an HTTPException with a 4xx status and a message."""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException

__all__ = ["Limits", "http_error", "read_body", "parse_json", "open_image", "check_target", "nesting"]


@dataclass(frozen=True)
class Limits:
    max_body: int = 10 * 1024 * 1024  # bytes of one request body
    max_pixels: int = 4096 * 4096  # an image's width x height, read from its header before decoding
    max_tokens: int = 512
    max_chars: int = 20_000  # a text's length, checked before it is tokenised
    max_new_tokens: int = 64
    max_concurrent: int = 1  # explanations running at once (worker threads; each also uses torch's threads)
    max_queue: int = 8  # explanations admitted (running + waiting); more are answered 503


def http_error(status: int, detail: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=detail, headers=headers)


async def read_body(request: Any, limit: int) -> bytes:
    """The body, read chunk by chunk and refused (413) as soon as it passes ``limit`` bytes: a chunked or
    lying upload is never held in memory beyond the limit."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise http_error(413, f"request of {int(length)} bytes is over the {limit // 2**20} MB limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise http_error(413, f"request is over the {limit // 2**20} MB limit")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # starlette reads a cached body back for form parsing
    return body


def nesting(value: Any) -> int:
    """How deep a parsed JSON list nests along its first elements (a tensor's number of dimensions)."""
    depth = 0
    while isinstance(value, list):
        depth += 1
        value = value[0] if value else None
    return depth


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} does not fit a 64-bit float")
    return value


def parse_json(raw: bytes) -> dict[str, Any]:
    """A JSON object with no NaN/Infinity, no overflowing numbers and bounded nesting (422 otherwise)."""
    try:
        body = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise http_error(400, "the body is not valid JSON") from None
    except RecursionError:
        raise http_error(422, "JSON is nested too deeply") from None
    except ValueError as e:
        raise http_error(422, f"JSON refused: {e}") from None
    if not isinstance(body, dict):
        raise http_error(422, "send a JSON object")
    return body


def open_image(data: bytes, max_pixels: int) -> Any:
    """A PIL image whose header says it fits ``max_pixels``; decoding happens only after that check."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise http_error(413, f"the image is over the {max_pixels} pixel limit") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise http_error(415, "the uploaded file is not an image this server can read (png, jpeg, bmp, gif, "
                              "webp)") from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise http_error(413, f"the image is {w}x{h} pixels; the limit is {max_pixels} pixels")
    return img


def check_target(value: Any) -> int | None:
    """An integer target (range-checked by the engine), or None; bools, floats and strings are refused."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or isinstance(value, float):
        raise http_error(422, f"target must be an integer, got {value!r}")
    if isinstance(value, str):
        if not value.strip().lstrip("-").isdigit():
            raise http_error(422, f"target must be an integer, got {value!r}")
        return int(value)
    if not isinstance(value, int):
        raise http_error(422, f"target must be an integer, got {value!r}")
    return value
