"""Numerics of an explanation: strict fp32 relevance products by default, TF32 only when asked for.

On Ampere and later GPUs torch may run fp32 matrix products and convolutions in TF32 (10-bit mantissa) when
the user (or a library) switched it on globally. Relevance products in TF32 differ from the CPU by up to 5e-2
(resnet18, contrast mode), far outside the 1e-4 the contract asks for. :func:`numerics` sets the precision
for the duration of one explanation and restores the user's settings afterwards, also when an exception
is raised. It uses torch's newer per-backend ``fp32_precision`` switches where they exist (torch >= 2.9; mixing
them with the legacy ``allow_tf32`` flags is an error there) and the legacy flags elsewhere.

Global switches are process-wide: two threads explaining at once with different precisions would see each
other's setting, so they are changed under one lock and counted (the last one out restores).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["PRECISIONS", "canonical_precision", "numerics"]

PRECISIONS = ("fp32", "fast")

_lock = threading.Lock()
_counts = {"fp32": 0, "fast": 0}  # explanations running now, by precision
_saved: list[tuple[Any, ...]] = []  # the user's settings while any explanation runs


def canonical_precision(precision: str | None) -> str:
    p = "fp32" if precision is None else str(precision).lower()
    if p in ("fp32", "float32", "exact", "highest"):
        return "fp32"
    if p in ("fast", "tf32"):
        return "fast"
    raise ValueError(f"unknown precision {precision!r}; use 'fp32' (exact, the default) or 'fast' (TF32 on GPUs)")


def _new_api() -> bool:
    return hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(
        getattr(torch.backends.cudnn, "conv", None), "fp32_precision")


def _read() -> tuple[Any, ...]:
    if _new_api():
        return ("new", torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    return ("legacy", torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)


def _write(saved: tuple[Any, ...]) -> None:
    if saved[0] == "new":
        torch.backends.cuda.matmul.fp32_precision = saved[1]
        torch.backends.cudnn.conv.fp32_precision = saved[2]
    else:
        torch.set_float32_matmul_precision(saved[1])
        torch.backends.cudnn.allow_tf32 = saved[2]


def _wanted(precision: str) -> tuple[Any, ...]:
    tf32 = precision == "fast"
    if _new_api():
        p = "tf32" if tf32 else "ieee"
        return ("new", p, p)
    return ("legacy", "high" if tf32 else "highest", tf32)


def _apply() -> None:
    """Strict fp32 while any running explanation asked for it, TF32 while only "fast" ones run, else the
    user's own settings (called under the lock)."""
    if not _counts["fp32"] and not _counts["fast"]:
        _write(_saved.pop())
    else:
        _write(_wanted("fp32" if _counts["fp32"] else "fast"))


@contextlib.contextmanager
def numerics(precision: str = "fp32") -> Iterator[None]:
    """Run the body with fp32 products in strict IEEE fp32 (``"fp32"``) or TF32 (``"fast"``)."""
    precision = canonical_precision(precision)
    with _lock:
        if not _saved:
            _saved.append(_read())
        _counts[precision] += 1
        _apply()
    try:
        yield
    finally:
        with _lock:
            _counts[precision] -= 1
            _apply()
