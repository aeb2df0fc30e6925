"""Per-trace cache of tensors derived from parameters (|W|, float32 copies), computed once, not per call."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["DerivedCache"]


class DerivedCache:
    """Caches ``fn(value)`` for values that are graph parameters/buffers (``cacheable`` nodes). Anything else is
    recomputed, since it may depend on the inputs."""

    def __init__(self, cacheable: set[torch.fx.Node] | None = None) -> None:
        self.cacheable = cacheable or set()
        self._store: dict[tuple[str, str, str, torch.dtype], Tensor] = {}

    def get(self, node: torch.fx.Node | None, tag: str, value: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        if node is None or node not in self.cacheable:
            return fn(value)
        key = (node.name, tag, str(value.device), value.dtype)
        hit = self._store.get(key)
        if hit is None:
            hit = fn(value)
            self._store[key] = hit
        return hit

    def clear(self) -> None:
        self._store.clear()
