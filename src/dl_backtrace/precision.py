"""Numerics of an explanation: strict fp32 relevance products by default, TF32 only when asked for.

On Ampere and later GPUs torch may run fp32 matrix products and convolutions in TF32 (10-bit mantissa) when
the user (or a library) switched it on globally. Relevance products in TF32 differ from the CPU by up to 5e-2
(resnet18, contrast mode), far outside the 1e-4 the contract asks for. :func:`numerics` sets the precision
for the duration of one explanation and restores the user's settings afterwards, also when an exception
is raised. It sets them through the long-standing setters (``torch.set_float32_matmul_precision``,
``torch.backends.cudnn.allow_tf32``), which on torch >= 2.9 also set the newer per-backend ``fp32_precision``
switches consistently (setting only those leaves torch's legacy getters raising).

Global switches are process-wide: two threads explaining at once with different precisions would see each
other's setting, so they are changed under one lock and counted (the last one out restores).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["PRECISIONS", "canonical_precision", "numerics", "effective"]

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
    cudnn = torch.backends.cudnn
    return hasattr(torch.backends.cuda.matmul, "fp32_precision") and all(
        hasattr(getattr(cudnn, part, None), "fp32_precision") for part in ("conv", "rnn"))


def _read() -> tuple[Any, ...]:
    """The user's settings. The legacy getters raise when the user mixed the two APIs; then the per-backend
    values are saved instead (and restored the same way, exactly as they were)."""
    try:
        return ("legacy", torch.get_float32_matmul_precision(), bool(torch.backends.cudnn.allow_tf32))
    except RuntimeError:
        b = torch.backends
        # parents too: the legacy setters used inside an explanation change cuDNN's and the global default,
        # which children set to "none" inherit
        return ("new", b.fp32_precision, b.cudnn.fp32_precision, b.cuda.matmul.fp32_precision,
                b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision)


def _write(saved: tuple[Any, ...]) -> None:
    if saved[0] == "legacy":
        # the legacy setters keep torch's legacy and per-backend flags consistent (setting only the new ones
        # leaves the legacy getters, read by torch.export and by user code, raising)
        torch.set_float32_matmul_precision(saved[1])
        torch.backends.cudnn.allow_tf32 = saved[2]
    else:  # the legacy flags first (torch keeps them as separate state), then parents, then children
        b = torch.backends
        torch.set_float32_matmul_precision("high" if saved[3] == "tf32" else "highest")
        b.cudnn.allow_tf32 = saved[4] != "ieee"
        b.fp32_precision, b.cudnn.fp32_precision = saved[1], saved[2]
        b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision = saved[3:6]


def _wanted(precision: str) -> tuple[Any, ...]:
    tf32 = precision == "fast"
    return ("legacy", "high" if tf32 else "highest", tf32)


def effective() -> str:
    """"fp32" when fp32 products run in IEEE fp32 on a GPU now, "tf32" when any of them may use TF32."""
    if _new_api():
        b = torch.backends
        modes = {b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision}
        return "tf32" if "tf32" in modes else "fp32"
    return "tf32" if torch.get_float32_matmul_precision() != "highest" or torch.backends.cudnn.allow_tf32 else "fp32"


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
