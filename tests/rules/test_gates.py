"""Gating (section 2): the vectorised masks against the scalar reference, for every activation."""

from __future__ import annotations

import pytest
import torch

from dl_backtrace.rules.gates import ACTIVATIONS, Activation, gate_masks, gelu, hardtanh, swish
from tests.reference import REF_GATES, RefGate, gate_ref, same_gate

# (the library's activation, the contract's gate from the reference's own table)
PAIRS = [(ACTIVATIONS[name], REF_GATES[name]) for name in ("tanh", "sigmoid", "softmax", "hardsigmoid",
                                                           "hardswish", "mish")]
PAIRS += [(swish(1.0), REF_GATES["silu"]), (swish(0.75), REF_GATES["swish0.75"]), (gelu("none"), REF_GATES["gelu"]),
          (gelu("tanh"), REF_GATES["gelu_tanh"]), (hardtanh(-1.0, 1.0), RefGate("hardtanh", -1.0, 1.0)),
          (hardtanh(0.0, 6.0), REF_GATES["relu6"])]


@pytest.mark.parametrize("lib", [a for a, _ in PAIRS] + [ACTIVATIONS[n] for n in ("relu", "identity", "leaky_relu",
                                                                                "elu", "softplus", "log_sigmoid")],
                         ids=lambda a: f"{a.name}{a.param or ''}")
def test_activation_table_matches_the_contract(lib: Activation) -> None:
    ref = dict((id(a), r) for a, r in PAIRS).get(id(lib), REF_GATES.get(lib.name))
    assert same_gate(lib, ref), lib.name


@pytest.mark.parametrize("act,refgate", PAIRS, ids=lambda a: f"{a.name}{getattr(a, 'param', '') or ''}")
def test_masks_match_scalar_reference(act: Activation, refgate: RefGate) -> None:
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
    if not refgate.monotone:  # the reference's own f, evaluated as a vector like the library does
        vals = (refgate.f(t), refgate.f(p + b.clamp(min=0)), refgate.f(-(n + (-b).clamp(min=0))))
    for j in range(400):
        fj = tuple(float(v[j]) for v in vals) if vals is not None else None
        pj, nj = gate_ref(refgate, float(p[j]), float(n[j]), float(b[j]), float(t[j]), fj)
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
