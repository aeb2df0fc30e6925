"""Slow reference implementations written straight from RELEVANCE.md (loops, float64, no vectorisation).

Each family builds its explicit contribution matrix c[j, i] (output unit j, input element i) and bias b[j];
the rule itself is the loop form of sections 2 and 4. The package's fast rules are compared against these.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# -- the activation table of RELEVANCE.md section 2 (and clarification 7.5), written here independently --------


@dataclass(frozen=True)
class RefGate:
    """An activation's gating data: range (lower, upper; None = unbounded), monotone, and f for the
    non-monotone equality tests."""

    name: str
    lower: float | None = None
    upper: float | None = None
    monotone: bool = True
    f: Callable[[Tensor], Tensor] | None = None


def _swish_f(beta: float) -> Callable[[Tensor], Tensor]:
    return lambda x: x * torch.sigmoid(beta * x)


REF_GATES: dict[str, RefGate | None] = {
    # the paper's table (section 2)
    "relu": None,  # never gated (section 2, last paragraph)
    "identity": None,
    "tanh": RefGate("tanh", -2.0, 2.0),
    "sigmoid": RefGate("sigmoid", -4.0, 4.0),
    "softmax": RefGate("softmax", -1.0, 2.0),
    "log_softmax": RefGate("softmax", -1.0, 2.0),  # 7.5: gates like softmax
    "silu": RefGate("swish", -6.0, None, False, _swish_f(1.0)),  # 7.5: aten.silu with its own f
    "swish0.75": RefGate("swish", -6.0, None, False, _swish_f(0.75)),  # the paper's swish
    "gelu": RefGate("gelu", -6.0, None, False, lambda x: torch.nn.functional.gelu(x)),
    "gelu_tanh": RefGate("gelu", -6.0, None, False, lambda x: torch.nn.functional.gelu(x, approximate="tanh")),
    # the project's stated choices for the others (docs/rules.md)
    "hardsigmoid": RefGate("hardsigmoid", -3.0, 3.0),
    "hardswish": RefGate("hardswish", -3.0, None, False, torch.nn.functional.hardswish),
    "mish": RefGate("mish", -6.0, None, False, torch.nn.functional.mish),
    "relu6": RefGate("hardtanh", None, 6.0),  # the lower bound 0 is not applied, like ReLU
    "leaky_relu": None, "elu": None, "softplus": None, "log_sigmoid": None, "selu": None, "celu": None,
}


def ref_gate_of_module(m: torch.nn.Module) -> RefGate | None:
    """The gate the contract gives the activation module ``m`` (what the library must choose)."""
    nn = torch.nn
    if isinstance(m, nn.Hardtanh) and not isinstance(m, nn.ReLU6):
        lo = None if m.min_val == 0 else float(m.min_val)
        return RefGate("hardtanh", lo, float(m.max_val))
    if isinstance(m, nn.GELU):
        return REF_GATES["gelu_tanh" if m.approximate == "tanh" else "gelu"]
    names = {nn.ReLU: "relu", nn.Identity: "identity", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.Softmax: "softmax",
             nn.LogSoftmax: "log_softmax", nn.SiLU: "silu", nn.Hardsigmoid: "hardsigmoid",
             nn.Hardswish: "hardswish", nn.Mish: "mish", nn.ReLU6: "relu6", nn.LeakyReLU: "leaky_relu",
             nn.ELU: "elu", nn.Softplus: "softplus", nn.LogSigmoid: "log_sigmoid", nn.SELU: "selu", nn.CELU: "celu"}
    return REF_GATES[names[type(m)]]


def same_gate(lib: object, ref: RefGate | None) -> bool:
    """Does the library's gate (an object with lower/upper/monotone/f, or None) equal the reference's? f is
    compared on a grid spanning the ranges where the equality tests happen."""
    lib_gates = lib is not None and bool(getattr(lib, "gates", True))
    if ref is None or not lib_gates:
        return ref is None and not lib_gates
    if (lib.lower, lib.upper, lib.monotone) != (ref.lower, ref.upper, ref.monotone):  # type: ignore[attr-defined]
        return False
    if ref.monotone:
        return True
    grid = torch.linspace(-8, 8, 161)
    return bool(torch.allclose(lib.f(grid), ref.f(grid), rtol=0, atol=1e-6))  # type: ignore[attr-defined,misc]

# -- section 2: default mode ----------------------------------------------------------------------------------


def gate_ref(act: RefGate | None, p: float, n: float, b: float, t: float | None = None,
             f_vals: tuple[float, float, float] | None = None) -> tuple[float, float]:
    """Apply section 2 gating to one unit's pools; returns the gated (P, N). ``t`` is the pre-activation
    T = P - N + b (computed here unless given, e.g. as the layer's float32 output); ``f_vals`` are
    (f(T), f(P + b+), f(-(N + b-))) when the caller evaluated f itself (torch's vector and scalar kernels can
    differ in the last bit, and the non-monotone test is an exact equality)."""
    if act is None:
        return p, n
    t = p - n + b if t is None else t
    if act.lower is not None and t < act.lower:
        p = 0.0
    if act.upper is not None and t > act.upper:
        n = 0.0
    if not act.monotone and p > 0 and n > 0:
        f = lambda v: float(act.f(torch.tensor(v, dtype=torch.float32)))  # type: ignore[misc] # noqa: E731
        ft, fp, fn = f_vals if f_vals is not None else (f(t), f(p + max(b, 0.0)), f(-(n + max(-b, 0.0))))
        if ft == fp:
            n = 0.0
        elif ft == fn:
            p = 0.0
    return p, n


def default_ref(c: Tensor, b: Tensor, r: Tensor, act: RefGate | None = None,
                pools: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """R_in_i = sum_j R_j ([c>0] c/P a+ + [c<0] |c|/N a-), sink_j = R_j (1 - a+ - a-)."""
    c, b, r = c.double(), b.double(), r.double()
    n_out, n_in = c.shape
    r_in = torch.zeros(n_in, dtype=torch.float64)
    sink = torch.zeros(n_out, dtype=torch.float64)
    for j in range(n_out):
        p = sum(float(v) for v in c[j] if v > 0)
        n = sum(-float(v) for v in c[j] if v < 0)
        p, n = gate_ref(act, p, n, float(b[j]))
        d = p + n + abs(float(b[j]))
        ap = p / d if p > 0 else 0.0
        an = n / d if n > 0 else 0.0
        for i in range(n_in):
            if c[j, i] > 0 and p > 0:
                r_in[i] += r[j] * c[j, i] / p * ap
            elif c[j, i] < 0 and n > 0:
                r_in[i] += r[j] * -c[j, i] / n * an
        sink[j] = r[j] * (1 - ap - an)
    return r_in, sink


def contrast_ref(c: Tensor, b: Tensor, rp: Tensor, rn: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Section 4 pairing; returns (R+_in, R-_in, total sink per output unit summed over both streams)."""
    c, b = c.double(), b.double()
    n_out, n_in = c.shape
    out_p = torch.zeros(n_in, dtype=torch.float64)
    out_n = torch.zeros(n_in, dtype=torch.float64)
    sink = torch.zeros(n_out, dtype=torch.float64)
    for j in range(n_out):
        p = sum(float(v) for v in c[j] if v > 0)
        n = sum(-float(v) for v in c[j] if v < 0)
        rpj, rnj = float(rp[j]), float(rn[j])
        t = p + float(b[j]) - n
        for i in range(n_in):
            v = float(c[j, i])
            if p > 0 and n == 0 and v > 0:
                out_p[i] += rpj * v / p
                out_n[i] += rnj * v / p
            elif n > 0 and p == 0 and v < 0:
                out_p[i] += rpj * -v / n
                out_n[i] += rnj * -v / n
            elif p > 0 and n > 0 and t != 0:
                straight = (t > 0 and rpj > rnj) or (t < 0 and rpj < rnj)
                if v > 0:
                    (out_p if straight else out_n)[i] += (rpj if straight else rnj) * v / p
                elif v < 0:
                    (out_n if straight else out_p)[i] += (rnj if straight else rpj) * -v / n
        if (p == 0 and n == 0) or (p > 0 and n > 0 and t == 0):
            sink[j] = rpj + rnj
    return out_p, out_n, sink


def bilinear_ref(c3: Tensor, r: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Product of two activations: c3[j, k] = contribution k of output j (ungated, no bias), each contribution's
    relevance |c|/D R_j; returns (per-contribution relevance [j, k], sink [j])."""
    c3, r = c3.double(), r.double()
    out = torch.zeros_like(c3)
    sink = torch.zeros(c3.shape[0], dtype=torch.float64)
    for j in range(c3.shape[0]):
        d = sum(abs(float(v)) for v in c3[j]) + (abs(float(bias[j])) if bias is not None else 0.0)
        for k in range(c3.shape[1]):
            out[j, k] = r[j] * abs(float(c3[j, k])) / d if d > 0 else 0.0
        sink[j] = r[j] - out[j].sum()
    return out, sink


# -- contribution matrices of each family (one example, no batch axis) ----------------------------------------


def linear_c(x: Tensor, w: Tensor) -> Tensor:
    c = torch.zeros(w.shape[0], x.numel(), dtype=torch.float64)
    for j in range(w.shape[0]):
        for i in range(w.shape[1]):
            c[j, i] = float(w[j, i]) * float(x[i])
    return c


def conv_c(x: Tensor, w: Tensor, stride: tuple[int, ...], padding: tuple[int, ...], dilation: tuple[int, ...],
           groups: int, out_spatial: tuple[int, ...]) -> Tensor:
    """x: (C_in, *S), w: (C_out, C_in/groups, *K). Output units (o, *pos) flattened, inputs (ci, *s)."""
    c_in, c_out = x.shape[0], w.shape[0]
    cpg_in, cpg_out = c_in // groups, c_out // groups
    n_out = c_out * math.prod(out_spatial)
    c = torch.zeros(n_out, x.numel(), dtype=torch.float64)
    in_sp = x.shape[1:]
    for o in range(c_out):
        g = o // cpg_out
        for pos in itertools.product(*[range(s) for s in out_spatial]):
            j = o * math.prod(out_spatial) + _flat(pos, out_spatial)
            for ci_l in range(cpg_in):
                ci = g * cpg_in + ci_l
                for k in itertools.product(*[range(s) for s in w.shape[2:]]):
                    src = [pos[d] * stride[d] - padding[d] + k[d] * dilation[d] for d in range(len(k))]
                    if all(0 <= s < in_sp[d] for d, s in enumerate(src)):
                        i = ci * math.prod(in_sp) + _flat(src, in_sp)
                        c[j, i] += float(w[(o, ci_l) + k]) * float(x[(ci,) + tuple(src)])
    return c


def conv_transpose_c(x: Tensor, w: Tensor, stride: tuple[int, ...], padding: tuple[int, ...],
                     out_spatial: tuple[int, ...]) -> Tensor:
    """Transposed conv (groups 1, dilation 1): x (C_in, *S), w (C_in, C_out, *K)."""
    c_in, c_out = w.shape[0], w.shape[1]
    n_out = c_out * math.prod(out_spatial)
    c = torch.zeros(n_out, x.numel(), dtype=torch.float64)
    in_sp = x.shape[1:]
    for ci in range(c_in):
        for s in itertools.product(*[range(v) for v in in_sp]):
            i = ci * math.prod(in_sp) + _flat(s, in_sp)
            for o in range(c_out):
                for k in itertools.product(*[range(v) for v in w.shape[2:]]):
                    pos = [s[d] * stride[d] - padding[d] + k[d] for d in range(len(k))]
                    if all(0 <= p < out_spatial[d] for d, p in enumerate(pos)):
                        j = o * math.prod(out_spatial) + _flat(pos, out_spatial)
                        c[j, i] += float(w[(ci, o) + k]) * float(x[(ci,) + s])
    return c


def avg_pool_c(x: Tensor, k: int, stride: int, out_spatial: tuple[int, ...]) -> Tensor:
    """avg_pool (no padding) over the last len(out_spatial) dims of x (C, *S)."""
    ch, in_sp = x.shape[0], x.shape[1:]
    n_out = ch * math.prod(out_spatial)
    c = torch.zeros(n_out, x.numel(), dtype=torch.float64)
    kk = k ** len(in_sp)
    for ch_i in range(ch):
        for pos in itertools.product(*[range(s) for s in out_spatial]):
            j = ch_i * math.prod(out_spatial) + _flat(pos, out_spatial)
            for off in itertools.product(*[range(k) for _ in in_sp]):
                src = [pos[d] * stride + off[d] for d in range(len(in_sp))]
                i = ch_i * math.prod(in_sp) + _flat(src, in_sp)
                c[j, i] += float(x[(ch_i,) + tuple(src)]) / kk
    return c


def max_pool_ref(x: Tensor, r: Tensor, k: int, stride: int, padding: int = 0, dilation: int = 1) -> Tensor:
    """2-d max pooling: the winners of each window (its cells inside the input; padding never wins) share its
    relevance equally."""
    out = torch.zeros_like(x, dtype=torch.float64)
    ch, h, w = x.shape
    for c_i in range(ch):
        for oh in range(r.shape[1]):
            for ow in range(r.shape[2]):
                cells = [(oh * stride - padding + a * dilation, ow * stride - padding + b * dilation)
                         for a in range(k) for b in range(k)]
                cells = [(p, q) for p, q in cells if 0 <= p < h and 0 <= q < w]
                m = max(float(x[c_i, p, q]) for p, q in cells)
                win = [(p, q) for p, q in cells if float(x[c_i, p, q]) == m]
                for p, q in win:
                    out[c_i, p, q] += float(r[c_i, oh, ow]) / len(win)
    return out


def _flat(idx: tuple[int, ...] | list[int], shape: tuple[int, ...] | torch.Size) -> int:
    out = 0
    for i, s in zip(idx, shape):
        out = out * s + i
    return out
