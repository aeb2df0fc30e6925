"""Gating (section 2): the vectorised masks against the scalar reference, for every activation."""

from __future__ import annotations

import pytest
import torch

from dl_backtrace.rules.gates import ACTIVATIONS, Activation, gate_masks, gelu, hardtanh, swish
from tests.reference import gate_ref

ALL = [*ACTIVATIONS.values(), swish(1.0), swish(0.75), gelu("none"), gelu("tanh"), hardtanh(-1.0, 1.0),
       hardtanh(0.0, 6.0)]


@pytest.mark.parametrize("act", ALL, ids=lambda a: f"{a.name}{a.param or ''}")
def test_masks_match_scalar_reference(act: Activation) -> None:
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(400, generator=gen) * 8
    n = torch.rand(400, generator=gen) * 8
    b = torch.randn(400, generator=gen) * 2
    p[:50] = 0.0  # one-sided units
    n[50:100] = 0.0
    n[100:120] = 1e-9  # the non-monotone equality tests fire on negligible pools
    t = p - n + b
    kill_p, kill_n = gate_masks(act, t, p, n, b)
    vals = None
    if not act.monotone:
        vals = (act.f(t), act.f(p + b.clamp(min=0)), act.f(-(n + (-b).clamp(min=0))))
    for j in range(400):
        fj = tuple(float(v[j]) for v in vals) if vals is not None else None
        pj, nj = gate_ref(act, float(p[j]), float(n[j]), float(b[j]), float(t[j]), fj)
        assert (pj == 0.0) == (bool(kill_p[j]) or float(p[j]) == 0.0), (j, act.name)
        assert (nj == 0.0) == (bool(kill_n[j]) or float(n[j]) == 0.0), (j, act.name)


def test_relu_is_never_gated_and_relu6_only_above() -> None:
    assert not ACTIVATIONS["relu"].gates
    r6 = hardtanh(0.0, 6.0)
    assert r6.lower is None and r6.upper == 6.0
    assert hardtanh(-1.0, 1.0).lower == -1.0


def test_non_monotone_equality_fires() -> None:
    act = swish(1.0)
    p, n, b = torch.tensor([50.0]), torch.tensor([1e-7]), torch.tensor([0.0])
    kill_p, kill_n = gate_masks(act, p - n + b, p, n, b)
    assert bool(kill_n[0]) and not bool(kill_p[0])
