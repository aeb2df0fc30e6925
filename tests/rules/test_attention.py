"""The sdpa rule against a slow reference written from RELEVANCE.md 3.6 (loops over t, s, d and e)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.helpers import assert_close, random_seed, run_seed


def attention_ref(q, k, v, mask, scale, r):
    """Per (b, h): returns R_Q, R_K, R_V by the section 3.6 steps, in float64 loops."""
    q, k, v, r = q.double(), k.double(), v.double(), r.double()
    B, H, T, E = q.shape
    S, Ev = k.shape[2], v.shape[3]
    rq, rk, rv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    for b in range(B):
        for h in range(H):
            scores = (q[b, h] @ k[b, h].T) * scale
            if mask is not None:
                scores = scores.masked_fill(~mask[b, 0], float("-inf"))
            a = torch.softmax(scores, -1)
            ra = torch.zeros(T, S, dtype=torch.float64)
            for t in range(T):  # step 1: c_tsd = A_ts V_sd, half to V, half to A
                for d in range(Ev):
                    den = sum(abs(float(a[t, s] * v[b, h, s, d])) for s in range(S))
                    for s in range(S):
                        share = r[b, h, t, d] * abs(float(a[t, s] * v[b, h, s, d])) / den if den > 0 else 0.0
                        rv[b, h, s, d] += share / 2
                        ra[t, s] += share / 2
            for t in range(T):  # step 3: c_tse = Q_te K_se scale, half to each
                for s in range(S):
                    den = sum(abs(float(q[b, h, t, e] * k[b, h, s, e] * scale)) for e in range(E))
                    for e in range(E):
                        share = ra[t, s] * abs(float(q[b, h, t, e] * k[b, h, s, e] * scale)) / den if den > 0 else 0.0
                        rq[b, h, t, e] += share / 2
                        rk[b, h, s, e] += share / 2
    return rq, rk, rv


class Sdpa(nn.Module):
    def __init__(self, causal: bool, scale: float | None) -> None:
        super().__init__()
        self.causal, self.scale = causal, scale

    def forward(self, q, k, v, mask=None):
        return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal,
                                                          scale=self.scale)


@pytest.mark.parametrize("causal,use_mask,scale", [(False, False, None), (True, False, 0.7), (False, True, None)])
def test_sdpa_matches_reference(causal: bool, use_mask: bool, scale: float | None) -> None:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 4, 3, generator=gen) for _ in range(3))
    inputs = (q, k, v)
    mask = None
    if use_mask:
        mask = torch.ones(2, 1, 4, 4, dtype=torch.bool)
        mask[1, :, :, :2] = False
        inputs = (q, k, v, mask)
    res = run_seed(Sdpa(causal, scale), inputs, random_seed(gen))
    full_mask = mask
    if causal:
        full_mask = torch.ones(2, 1, 4, 4, dtype=torch.bool).tril()
    rq, rk, rv = attention_ref(q, k, v, full_mask, scale or 1 / math.sqrt(3), res.seed)
    assert_close(res.input(0), rq, what="R_Q")
    assert_close(res.input(1), rk, what="R_K")
    assert_close(res.input(2), rv, what="R_V")


class Gqa(nn.Module):
    def forward(self, q, k, v):
        return nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)


def test_gqa_heads_fold_back() -> None:
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(1, 4, 3, 2, generator=gen)
    k, v = torch.randn(1, 2, 3, 2, generator=gen), torch.randn(1, 2, 3, 2, generator=gen)
    res = run_seed(Gqa(), (q, k, v), random_seed(gen))
    rq, rk, rv = attention_ref(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), None, 1 / math.sqrt(2),
                               res.seed)
    assert_close(res.input(1), rk.reshape(1, 2, 2, 3, 2).sum(2), what="R_K")
    assert_close(res.input(2), rv.reshape(1, 2, 2, 3, 2).sum(2), what="R_V")
    total = float(res.input(0).sum() + res.input(1).sum() + res.input(2).sum())
    assert abs(total - float(res.seed.sum())) < 1e-4 * float(res.seed.sum())
