"""Seeding the output's relevance per task (RELEVANCE.md sections 1 and 4, clarifications 7.1, 7.3, 7.10).

``value = multiplier * (scaler or 1)``. A ``target`` may be an int (every example), a per-example list or 1-D
tensor of ints, an index tuple into one example's output (no batch axis; every example), or a per-example list
of index tuples. It overrides argmax seeding for every task.

Contrast mode (section 4): with y_t the output at the seeded entry and c = value / |y_t|, the positive stream is
``value`` there and the negative stream is c * y_k at every other unit k of the same position (single-unit
outputs: c * (1 - y) if y < 1, else 0). Segmentation: R+ = c' y on the selected pixels, R- = c' y elsewhere and
c' (1 - y) on the selected ones, c' = value / sum of the selected y.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor

from .rules.registry import Pair

__all__ = ["TASKS", "canonical_task", "make_seed"]

TASKS: dict[str, str] = {
    "binary-classification": "classification", "binary classification": "classification",
    "multi-class classification": "classification", "multiclass-classification": "classification",
    "multi-class-classification": "classification", "multiclass classification": "classification",
    "classification": "classification", "text-classification": "classification",
    "image-classification": "classification", "regression": "regression",
    "binary-segmentation": "segmentation", "multi-class segmentation": "segmentation",
    "multiclass-segmentation": "segmentation", "segmentation": "segmentation",
    "token-classification": "token-classification", "token classification": "token-classification",
    "generation": "generation", "text-generation": "generation",
}


def canonical_task(task: str) -> str:
    key = str(task).strip().lower()
    if key not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[key]


def _index(t: Any) -> int:
    """An integer index (Python, numpy or 0-d integer tensor); bools, floats and strings are refused."""
    if isinstance(t, Tensor) and t.dim() == 0 and not t.is_floating_point() and t.dtype != torch.bool:
        return int(t)
    if isinstance(t, bool) or not isinstance(t, numbers.Integral):
        raise ValueError(f"target must be an integer index (or a per-example list / index tuple of them), got "
                         f"{t!r} ({type(t).__name__})")
    return int(t)


def _per_example(target: Any, batch: int) -> list[Any]:
    """One target per example: None, an int class/unit, or an index tuple."""
    if target is None:
        return [None] * batch
    if isinstance(target, tuple):
        return [tuple(_index(i) for i in target)] * batch
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.dtype == torch.bool:
            raise ValueError(f"a target tensor must hold integer indices, got dtype {target.dtype}")
        target = target.reshape(-1).tolist() if target.dim() <= 1 else [tuple(t) for t in target.tolist()]
    if not isinstance(target, (list, range)):
        return [_index(target)] * batch
    if len(target) != batch:
        raise ValueError(f"target has {len(target)} entries for a batch of {batch}; give one per example, "
                         "one int for all, or an index tuple")
    return [tuple(_index(i) for i in t) if isinstance(t, (tuple, list)) else _index(t) for t in target]


def _check_range(targets: list[Any], y: Tensor, kind: str) -> None:
    """Every target inside the output: a class in [0, C) on the class axis, an index tuple inside one
    example's output. Negative indices are refused (they would silently explain the last class)."""
    if kind == "segmentation":
        classes = y.shape[1] if y.dim() >= 4 else 1
    else:
        classes = y.shape[-1]
    for t in targets:
        if t is None:
            continue
        if isinstance(t, tuple):
            dims = tuple(y.shape[1:])
            if len(t) != len(dims) or any(not 0 <= i < d for i, d in zip(t, dims)):
                raise ValueError(f"target index {t} is outside one example's output of shape {dims} "
                                 "(indices start at 0; negative ones are not accepted)")
        elif not 0 <= t < classes:
            raise ValueError(f"target {t} is out of range: this output has {classes} classes/units, so the "
                             f"target must be in 0..{classes - 1}")


def _contrast_row(row: Tensor, k: int, value: float) -> tuple[Tensor, Tensor]:
    """Section 4 seed over one position's units ``row`` with the target unit k."""
    pos = torch.zeros_like(row)
    pos[k] = value
    y_t = float(row[k])
    if row.numel() == 1:
        neg = value * ((1.0 - y_t) / abs(y_t)) if 0 != y_t < 1 else 0.0
        return pos, torch.full_like(row, min(neg, torch.finfo(row.dtype).max))
    # value * (y_k / |y_t|), not (value / |y_t|) * y_k: a subnormal y_t must not overflow c to inf
    neg = value * (row / abs(y_t)) if y_t != 0 else torch.zeros_like(row)
    neg[k] = 0.0
    return pos, neg


def _single_entry(y: Tensor, targets: list[Any], value: float, contrast: bool, default_pos: Any) -> Any:
    """One seeded entry per example: classification, regression, generation, index tuples."""
    pos, neg = torch.zeros_like(y), torch.zeros_like(y)
    for b, t in enumerate(targets):
        if isinstance(t, tuple):
            idx = t
        else:
            lead = default_pos(y[b])
            k = int(y[b][lead].argmax()) if t is None else int(t)
            idx = lead + (k,)
        if len(idx) != y.dim() - 1:
            raise ValueError(f"target index {idx} does not index one example's output of shape "
                             f"{tuple(y.shape[1:])}")
        if contrast:
            p, n = _contrast_row(y[b][idx[:-1]], idx[-1], value)
            pos[b][idx[:-1]], neg[b][idx[:-1]] = p, n
        else:
            pos[b][idx] = value
    return Pair(pos, neg) if contrast else pos


def _token_classification(y: Tensor, targets: list[Any], value: float, contrast: bool) -> Any:
    """[B, T, C]: each position's class (argmax or target), sharing ``value`` in proportion to the chosen
    outputs' values (equal shares if they sum to 0)."""
    if any(isinstance(t, tuple) for t in targets):
        return _single_entry(y, targets, value, contrast, lambda yb: ())
    cls = y.argmax(-1)
    fixed = torch.tensor([-1 if t is None else t for t in targets], device=y.device)[:, None]
    cls = torch.where(fixed >= 0, fixed.expand_as(cls), cls)  # (B, T)
    chosen = y.gather(-1, cls[..., None])[..., 0]
    total = chosen.sum(-1, keepdim=True)
    even = torch.full_like(chosen, 1.0 / chosen.shape[-1])
    share = torch.where(total != 0, chosen / torch.where(total == 0, torch.ones_like(total), total), even)
    v = value * share  # (B, T)
    pos = torch.zeros_like(y).scatter_(-1, cls[..., None], v[..., None])
    if not contrast:
        return pos
    inv = torch.where(chosen != 0, 1.0 / chosen.abs().clamp(min=torch.finfo(y.dtype).tiny), torch.zeros_like(v))
    if y.shape[-1] == 1:  # v (1 - y) / |y_t|, ratio first so a tiny y_t does not overflow
        neg1 = v[..., None] * ((1.0 - y) * inv[..., None]).clamp(max=torch.finfo(y.dtype).max / max(value, 1.0))
        return Pair(pos, torch.where(y < 1, neg1, torch.zeros_like(y)))
    neg = (v[..., None] * (y * inv[..., None])).scatter_(-1, cls[..., None], 0.0)
    return Pair(pos, neg)


def _segmentation(y: Tensor, targets: list[Any], value: float, thr: float, contrast: bool) -> Any:
    """[B, C, H, W] (or [B, 1, H, W]): pixels whose score exceeds ``thr`` share ``value`` by score."""
    if any(isinstance(t, tuple) for t in targets):
        return _single_entry(y, targets, value, contrast, lambda yb: ())
    cls = y.argmax(1, keepdim=True)
    fixed = torch.tensor([-1 if t is None else t for t in targets], device=y.device).reshape(-1, *[1] * (y.dim() - 1))
    cls = torch.where(fixed >= 0, fixed.expand_as(cls), cls)
    score = y.gather(1, cls)  # (B, 1, ...)
    sel = score > thr
    total = torch.where(sel, score, torch.zeros_like(score)).flatten(1).sum(1)
    c = torch.where(total != 0, value / torch.where(total == 0, torch.ones_like(total), total),
                    torch.zeros_like(total)).reshape(-1, *[1] * (y.dim() - 1))
    pos = torch.zeros_like(y).scatter_(1, cls, torch.where(sel, c * score, torch.zeros_like(score)))
    if not contrast:
        return pos
    return Pair(pos, torch.zeros_like(y).scatter_(1, cls, torch.where(sel, c * (1.0 - score), c * score)))


def _last_position(positions: Tensor | None) -> Any:
    """Generation: the explained position of example b (the last one, or the last non-padding one)."""
    state = {"b": -1}

    def pos(yb: Tensor) -> tuple[int, ...]:
        state["b"] += 1
        if yb.dim() != 2:
            return ()
        return (int(positions[state["b"]]),) if positions is not None else (yb.shape[0] - 1,)

    return pos


def make_seed(y: Tensor, task: str, target: Any = None, multiplier: float = 100.0, scaler: float | None = None,
              thresholding: float = 0.5, contrast: bool = False, positions: Tensor | None = None) -> Tensor | Pair:
    """The relevance of the model output ``y`` (float, batch first) for ``task``. For generation,
    ``positions`` (one per example) replaces the last position, e.g. the last non-padding token."""
    kind = canonical_task(task)
    value = float(multiplier) * (float(scaler) if scaler else 1.0)
    if not math.isfinite(value):
        raise ValueError(f"multiplier * scaler must be a finite number, got {multiplier!r} * {scaler!r}")
    y = y.detach()
    shape = y.shape
    y = y[:, None] if y.dim() == 1 else y
    targets = _per_example(target, y.shape[0])
    _check_range(targets, y, kind)
    if kind in ("classification", "regression"):
        if y.dim() > 2 and not all(isinstance(t, tuple) for t in targets):
            raise ValueError(f"task {task!r} expects a [B, C] output, got {tuple(shape)}; use task="
                             "'segmentation', 'token-classification' or 'generation', or an index-tuple target")
        seed = _single_entry(y, targets, value, contrast, lambda yb: ())
    elif kind == "generation":
        seed = _single_entry(y, targets, value, contrast, _last_position(positions))
    elif kind == "token-classification":
        if y.dim() != 3:
            raise ValueError(f"task {task!r} expects a [B, T, C] output (a class per position), got "
                             f"{tuple(shape)}; use task='classification' for one class per example")
        seed = _token_classification(y, targets, value, contrast)
    else:
        seed = _segmentation(y if y.dim() >= 4 else y[:, None], targets, value, thresholding, contrast)
    if isinstance(seed, Pair):
        return Pair(seed.positive.reshape(shape), seed.negative.reshape(shape))
    return seed.reshape(shape)
