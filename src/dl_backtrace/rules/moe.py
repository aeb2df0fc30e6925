"""Mixture-of-Experts products: the grouped matrix products that apply each expert's weight to the rows routed
to it (``aten._grouped_mm`` and transformers' opaque ``transformers::grouped_mm_fallback``).

``y[s] = x[s] @ W[e(s)]`` where rows are sorted by expert and ``offs`` holds the cumulative row counts. Each row is a
linear layer with its expert's weight, so the rule is the contribution rule of RELEVANCE.md 2.1 with that weight
(the weight is a parameter; the offsets are integers and get no relevance). Routing itself needs no rule of its own:
top-k, the sort by expert and the gathers are data movement or selection (3.1, 3.2), the routing weight times the
expert output is a product of two activations (3.5: half to each), the normalising division sends all to the
numerator (3.5).

Products are computed one expert block at a time (a loop over experts, never over rows or units); the block sizes
are read from ``offs`` once per rule call.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._adjoint import vjp_of
from .affine import product_rule
from .registry import Flow, RuleContext, aten_op, register

__all__ = ["grouped_mm", "GROUPED_FALLBACK"]

GROUPED_FALLBACK = "transformers::grouped_mm_fallback"  # registered by name: the op exists once transformers loads


def _block_sizes(offs: Tensor, rows: int) -> list[int]:
    """Rows per expert, plus a trailing block of rows past ``offs[-1]`` (no expert: output 0)."""
    ends = offs.to(torch.int64)
    sizes = torch.diff(ends, prepend=ends.new_zeros(1)).tolist()
    return sizes + [rows - int(sum(sizes))]


def grouped_mm(x: Tensor, w: Tensor, offs: Tensor | list[int]) -> Tensor:
    """``out[s] = x[s] @ w[e]`` for the rows ``s`` of expert ``e``; ``x`` (S, I), ``w`` (E, I, O). ``offs``: the
    cumulative row counts, or the block sizes from :func:`_block_sizes` (read once, reused)."""
    blocks = x.split(offs if isinstance(offs, list) else _block_sizes(offs, x.shape[0]))
    outs = [xs @ w[e] for e, xs in enumerate(blocks[:-1])]
    outs.append(blocks[-1].new_zeros(blocks[-1].shape[0], w.shape[-1]))
    return torch.cat(outs)


def _supported(node: torch.fx.Node) -> bool:
    """The 2-D input x 3-D weight form with offsets, no bias or output dtype (the MoE form)."""
    args = node.args
    extra = list(args[3:]) + list(node.kwargs.values())
    if len(args) < 3 or args[2] is None or any(v is not None for v in extra):
        return False
    vals = [getattr(a, "meta", {}).get("val") for a in args[:2]]
    return all(isinstance(v, torch.Tensor) for v in vals) and vals[0].dim() == 2 and vals[1].dim() == 3


@register(aten_op("_grouped_mm"), GROUPED_FALLBACK, family="contribution", paired=True,
          routes=lambda n: (0, 1), supports=_supported)
def grouped_mm_rule(ctx: RuleContext, r: Any) -> Flow:
    w = ctx.args[1]
    offs = _block_sizes(ctx.args[2], ctx.args[0].shape[0])  # one host read per rule call, not one per product
    op = lambda a, b: grouped_mm(a, b, offs)  # noqa: E731
    adj_x = lambda g, c: grouped_mm(g, c.mT, offs)  # noqa: E731
    adj_w = lambda g, a: vjp_of(lambda t: grouped_mm(a, t, offs), (torch.zeros_like(w, dtype=g.dtype),), g)[0]  # noqa: E731
    return product_rule(ctx, r, (0, 1), op, (adj_x, adj_w), None)
