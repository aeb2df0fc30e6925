"""Scaled dot-product attention (RELEVANCE.md 3.6), O = A V with A = softmax(Q K^T * scale + mask):

1. O = A V contracts over keys s: c_tsd = A_ts V_sd, section 2 per (t, d) with no bias and no gating; each
   contribution's relevance goes half to V_sd, half to A_ts. A >= 0, so the pool is one product A |V|.
2. The softmax passes relevance through (R_S = R_A); an additive mask is a constant it passes through.
3. S = Q K^T * scale contracts over the head dim e: c_tse = Q_te K_se scale, section 2 per (t, s), no bias, no
   gating; half to Q_te, half to K_se. The pool is |Q| |K|^T |scale|.

A is recomputed from Q, K, the mask and the scale inside the rule. GQA/MQA (``enable_gqa``) key/value heads
receive the sum over the query heads that share them. In contrast mode each stream is split with this rule
(clarification 7.2). The eager matmul-softmax-matmul form reaches the same numbers through the generic rules.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .contribution import _safe_div, rel_float
from .registry import Flow, RuleContext, register

aten = torch.ops.aten


def _repeat_heads(t: Tensor, heads: int) -> Tensor:
    rep = heads // t.shape[-3]
    return t if rep == 1 else t.repeat_interleave(rep, dim=-3)


def _fold_heads(t: Tensor, heads: int) -> Tensor:
    """Adjoint of :func:`_repeat_heads`: sum the query heads that share a key/value head."""
    if t.shape[-3] == heads:
        return t
    rep = t.shape[-3] // heads
    return t.reshape(*t.shape[:-3], heads, rep, *t.shape[-2:]).sum(-3)


def attention_weights(q: Tensor, k: Tensor, mask: Tensor | None, is_causal: bool, scale: float) -> Tensor:
    """A = softmax(Q K^T * scale + mask) as sdpa computes it (fully masked rows give 0, not NaN)."""
    s = (q @ k.mT) * scale  # (B, H, T, S)
    if is_causal:
        causal = torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).tril()
        s = s.masked_fill(~causal, float("-inf"))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + rel_float(mask)
    return torch.softmax(s, dim=-1).nan_to_num(0.0)


def _split(r: Tensor, a: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Step 1: (R_A, R_V, sink) for O = A V."""
    absv = v.abs()
    den = a @ absv  # (B, H, T, Ev)
    g = _safe_div(r, den)
    return 0.5 * a * (g @ absv.mT), 0.5 * absv * (a.mT @ g), r - g * den


def _scores(r_a: Tensor, q: Tensor, k: Tensor, scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """Step 3: (R_Q, R_K, sink) for S = Q K^T * scale, given R_S = R_A."""
    aq, ak = q.abs(), k.abs()
    den = (aq @ ak.mT) * abs(scale)
    g = _safe_div(r_a, den) * abs(scale)
    return 0.5 * aq * (g @ ak), 0.5 * ak * (g.mT @ aq), r_a - g * (aq @ ak.mT)


@register(aten.scaled_dot_product_attention.default, family="attention", routes=lambda n: (0, 1, 2))
def sdpa_rule(ctx: RuleContext, r: Any) -> Flow:
    kw = ctx.bound()
    if float(kw.get("dropout_p", 0.0) or 0.0) != 0.0:
        raise NotImplementedError(f"sdpa with dropout_p={kw['dropout_p']} at {ctx.node.name}: explain in eval()")
    q, k, v = (rel_float(t) for t in ctx.args[:3])
    scale = kw.get("scale") or 1.0 / math.sqrt(q.shape[-1])
    heads_k = k.shape[-3]
    kk, vv = _repeat_heads(k, q.shape[-3]), _repeat_heads(v, q.shape[-3])
    a = attention_weights(q, kk, kw.get("attn_mask"), bool(kw.get("is_causal", False)), scale)
    r_a, r_v, sink_o = _split(r, a, vv)
    r_q, r_k, sink_s = _scores(r_a, q, kk, scale)
    sink = sink_o.sum(-1) + sink_s.sum(-1)  # (B, H, T): what reached units with no contributions
    return Flow(ctx.route({0: r_q, 1: _fold_heads(r_k, heads_k), 2: _fold_heads(r_v, heads_k)}), sink)
