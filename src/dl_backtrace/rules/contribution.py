"""The proportional contribution rule (RELEVANCE.md sections 2, 2.2 and 4), written once for every family.

A contribution node computes, per output j, y_j = sum_i c_ij + b_j. A family (linear, conv, pooling, add, ...)
describes its contributions through :class:`Terms`: the pools A = P + N = sum_i |c_ij| (one product with |W||x|),
the exact pools P and N when they are needed, and ``back(s, d)``, which returns each input's relevance

    R_in = x+ (.) (W+^T a + W-^T b) + x- (.) (W-^T a + W+^T b) = |x| (.) |W|^T s + x (.) W^T d,

with per-output factors a (for positive contributions), b (for negative ones), s = (a + b)/2, d = (a - b)/2.
Default mode: a = R/D where P survives gating, b = R/D where N survives, D = P + N + |b| (gated pools).
Ungated units have a = b = R/D, so s = R/D and d = 0: one transposed product; W^T d only where gating fired.
Contrast mode computes a pair of (a, b) factors per stream and needs the exact pools (to tell one-sided units
from mixed ones); it goes back with ``back_split(a, b)`` to avoid cancelling two large halves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .gates import Activation, gate_masks
from .registry import Flow, Pair

__all__ = ["Terms", "contribute", "per_stream", "merge_streams", "default_factors", "contrast_factors", "rel_float"]


def rel_float(t: Tensor) -> Tensor:
    """Relevance arithmetic is float32 (float64 stays float64)."""
    if t.dtype == torch.float64 or t.dtype == torch.float32:
        return t
    return t.float()


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """num / den for a non-negative pool ``den``: 0 where den == 0, and den floored (see :func:`_floor`) so a
    subnormal pool cannot make the factor infinite (1 / 1e-39 overflows float32). Callers that floor put the
    remainder R - factor * den in the sink, so relevance stays conserved."""
    zero = den == 0
    return (num / den.clamp_min(_floor(den))).masked_fill(zero, 0.0)


def _floor(t: Tensor) -> float:
    """A denominator floor: num / floor stays finite, and the relevance of a unit whose pools are all zero
    (D = 0) multiplies only zero contributions, so it ends in the sink R - g A = R."""
    return torch.finfo(t.dtype).tiny ** 0.5


class Terms(ABC):
    """The contributions of one node. ``y`` is the pre-activation (the node's output, bias included)."""

    y: Tensor
    bias: Tensor | None

    @abstractmethod
    def abs_sum(self) -> Tensor:
        """A_j = sum_i |c_ij| (= P_j + N_j), shaped like y."""

    def signed_sum(self) -> Tensor:
        """z_j = sum_i c_ij (= P_j - N_j)."""
        return self.y if self.bias is None else self.y - self.bias

    @abstractmethod
    def pos_neg(self) -> tuple[Tensor, Tensor]:
        """The exact pools (P, N), each a sum of non-negative terms (so P == 0 iff no positive contribution)."""

    @abstractmethod
    def back(self, s: Tensor, d: Tensor | None) -> tuple[Any, ...]:
        """Relevance of each tensor input for s = (a + b)/2 and d = (a - b)/2 (d None means zero):
        |x| (.) |W|^T s + x (.) W^T d."""

    @abstractmethod
    def back_split(self, a: Tensor, b: Tensor) -> tuple[Any, ...]:
        """The same from a and b directly, x+ (W+^T a + W-^T b) + x- (W-^T a + W+^T b): no cancellation between
        the two halves, for contrast mode, where a and b can differ by orders of magnitude (R/P vs R/N)."""


def default_factors(r: Tensor, terms: Terms, gate: Activation | None) -> tuple[Tensor, Tensor | None, Tensor]:
    """(s, d, sink) for default mode. Sink_j = R_j (1 - a+_j - a-_j) = R_j - g_j (P_j + N_j) (gated pools)."""
    a = terms.abs_sum()
    if gate is None or not gate.gates:
        den = a.clamp_min(_floor(a)) if terms.bias is None else (a + terms.bias.abs()).clamp_min_(_floor(a))
        g = r / den
        return g, None, torch.addcmul(r, g, a, value=-1.0)
    z = terms.signed_sum()
    p = torch.mul(a, 0.5).add_(z, alpha=0.5).clamp_(min=0)  # halve first: masks near -finfo.max must not
    n = torch.mul(a, 0.5).sub_(z, alpha=0.5).clamp_(min=0)  # overflow (a - z would reach 2 * 3.4e38 = inf)
    kill_p, kill_n = gate_masks(gate, terms.y, p, n, terms.bias)
    kept = p.masked_fill_(kill_p, 0.0).add_(n.masked_fill_(kill_n, 0.0))
    den = (kept if terms.bias is None else kept + terms.bias.abs()).clamp_min(_floor(kept))
    g = r / den
    sink = torch.addcmul(r, g, kept, value=-1.0)
    # a = g where P survives, b = g where N survives. A pool that is empty multiplies only zero contributions,
    # so a and b differ only where gating removed a pool: d = (a - b)/2 = g ([kill N] - [kill P]) / 2.
    fired = kill_p | kill_n
    if g.device.type == "cpu" and not bool(fired.any()):
        return g, None, sink
    d = g * (kill_n.to(g.dtype) - kill_p.to(g.dtype)) * 0.5
    return g * (1.0 - fired.to(g.dtype) * 0.5), d, sink


def contrast_factors(rp: Tensor, rn: Tensor, terms: Terms) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor],
                                                                    Pair]:
    """Per stream (a, b) factors and the sinks of RELEVANCE.md section 4 (no gating in contrast mode)."""
    p, n = terms.pos_neg()
    has_p, has_n = p > 0, n > 0
    only_p, only_n, mixed = has_p & ~has_n, has_n & ~has_p, has_p & has_n
    t = p - n if terms.bias is None else p - n + terms.bias  # t_j = P_j + b_j - N_j
    straight = mixed & (((t > 0) & (rp > rn)) | ((t < 0) & (rp < rn)))
    crossed = mixed & (((t > 0) & (rp <= rn)) | ((t < 0) & (rp >= rn)))
    inv_p, inv_n = _safe_div(torch.ones_like(p), p), _safe_div(torch.ones_like(n), n)
    a_pos = (rp * inv_p) * (only_p | straight)  # + stream, positive contributions
    b_pos = (rp * inv_n) * (only_n | crossed)  # + stream, negative contributions
    a_neg = (rn * inv_p) * (only_p | crossed)  # - stream, positive contributions
    b_neg = (rn * inv_n) * (only_n | straight)  # - stream, negative contributions
    flows = only_p | only_n | straight | crossed
    sink_p, sink_n = rp.masked_fill(flows, 0.0), rn.masked_fill(flows, 0.0)
    floor = _floor(p)
    floored = flows & ((has_p & (p < floor)) | (has_n & (n < floor)))  # subnormal pools: factors were floored
    if p.device.type != "cpu" or bool(floored.any()):  # no host sync on accelerators
        sink_p = torch.where(floored, rp - a_pos * p - b_pos * n, sink_p)
        sink_n = torch.where(floored, rn - a_neg * p - b_neg * n, sink_n)
    return (a_pos, b_pos), (a_neg, b_neg), Pair(sink_p, sink_n)


def contribute(r: Tensor | Pair, terms: Terms, gate: Activation | None) -> Flow:
    """Apply the contribution rule in the mode given by the type of ``r`` (a Pair means contrast mode)."""
    if not isinstance(r, Pair):
        s, d, sink = default_factors(r, terms, gate)
        return Flow(terms.back(s, d), sink)
    (ap, bp), (an, bn), sink = contrast_factors(r.positive, r.negative, terms)
    return Flow(merge_streams(terms.back_split(ap, bp), terms.back_split(an, bn)), sink)


def per_stream(r: Tensor | Pair, fn: Callable[[Tensor], Flow]) -> Flow:
    """Apply a default-mode rule to each stream of a Pair (or to the one tensor in default mode)."""
    if not isinstance(r, Pair):
        return fn(r)
    fp, fq = fn(r.positive), fn(r.negative)
    sink = None if fp.sink is None and fq.sink is None else Pair(*_fill(fp.sink, fq.sink))
    return Flow(merge_streams(fp.inputs, fq.inputs), sink)


def merge_streams(pos: Sequence[Any], neg: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(None if (x is None and y is None) else Pair(*_fill(x, y)) for x, y in zip(pos, neg))


def _fill(x: Tensor | None, y: Tensor | None) -> tuple[Tensor, Tensor]:
    return (x if x is not None else torch.zeros_like(y)), (y if y is not None else torch.zeros_like(x))
