"""Grouped expert products, scatter writes and clamp against loop references written from RELEVANCE.md."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from dl_backtrace.rules.moe import grouped_mm
from tests import reference as ref
from tests.helpers import assert_close, random_seed, run_seed

aten = torch.ops.aten


def _fallback_op():
    pytest.importorskip("transformers.integrations.moe")
    return torch.ops.transformers.grouped_mm_fallback.default


class Grouped(nn.Module):
    """y[s] = x[s] @ W[e(s)] with rows sorted by expert; rows past offs[-1] belong to no expert."""

    def __init__(self, op, w: Tensor, offs: Tensor) -> None:
        super().__init__()
        self.op = op
        self.w = nn.Parameter(w)
        self.register_buffer("offs", offs)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x, self.w, self.offs)


def _expert_of_rows(offs: Tensor, rows: int) -> list[int]:
    out, e = [], 0
    for s in range(rows):
        while e < len(offs) and s >= int(offs[e]):
            e += 1
        out.append(e)
    return out


@pytest.mark.parametrize("which", ["fallback", "aten"])
@pytest.mark.parametrize("mode", ["default", "contrast"])
def test_grouped_product_is_a_linear_layer_per_row(which: str, mode: str) -> None:
    """aten._grouped_mm is traced in bfloat16 only (its meta function refuses float32), as on a GPU."""
    if which == "aten" and not hasattr(aten, "_grouped_mm"):
        pytest.skip(f"torch {torch.__version__} has no aten._grouped_mm")
    op = _fallback_op() if which == "fallback" else aten._grouped_mm.default
    dtype = torch.float32 if which == "fallback" else torch.bfloat16
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(3, 8, 8, generator=gen).to(dtype)
    offs = torch.tensor([2, 2, 5], dtype=torch.int32)  # expert 1 gets no rows; row 5 belongs to none
    x = torch.randn(6, 8, generator=gen).to(dtype)
    res = run_seed(Grouped(op, w, offs), (x,), random_seed(gen, contrast=mode == "contrast"), mode)
    routed = int(offs[-1])  # aten leaves rows past offs[-1] uninitialised; relevance there ends in the sink
    assert_close(res.run.output.float()[:routed], grouped_mm(x.float(), w.float(), offs)[:routed], rel=1e-2,
                 what="forward")
    x, w = x.float(), w.float()
    got, seed = res.input(), res.seed
    for s, e in enumerate(_expert_of_rows(offs, 6)):
        if e >= 3:
            assert float((got[0][s] if mode == "contrast" else got[s]).abs().max()) == 0.0
            continue
        c = ref.linear_c(x[s], w[e].T)
        if mode == "default":
            want, _ = ref.default_ref(c, torch.zeros(8), seed[s])
            assert_close(got[s], want, what=f"row {s}")
        else:
            want_p, want_n, _ = ref.contrast_ref(c, torch.zeros(8), seed.positive[s], seed.negative[s])
            assert_close(got.positive[s], want_p, what=f"row {s} +")
            assert_close(got.negative[s], want_n, what=f"row {s} -")


class IndexAdd(nn.Module):
    def __init__(self, index: Tensor) -> None:
        super().__init__()
        self.register_buffer("index", index)

    def forward(self, base: Tensor, src: Tensor) -> Tensor:
        return base.index_add(0, self.index, src)


def test_accumulating_scatter_is_the_contribution_rule() -> None:
    """y_j = base_j + sum_{i -> j} src_i: each output element is a sum of contributions (2.1)."""
    gen = torch.Generator().manual_seed(1)
    index = torch.tensor([1, 1, 3, 0])
    base, src = torch.randn(5, 2, generator=gen), torch.randn(4, 2, generator=gen)
    res = run_seed(IndexAdd(index), (base, src), random_seed(gen))
    r = res.seed
    want_base, want_src = torch.zeros(5, 2, dtype=torch.float64), torch.zeros(4, 2, dtype=torch.float64)
    for j in range(5):
        for k in range(2):
            feeders = [i for i in range(4) if int(index[i]) == j]
            c = torch.tensor([[float(base[j, k])] + [float(src[i, k]) for i in feeders]])
            got, _ = ref.default_ref(c, torch.zeros(1), r[j, k:k + 1])
            want_base[j, k] = got[0]
            for pos, i in enumerate(feeders):
                want_src[i, k] = got[1 + pos]
    assert_close(res.input(0), want_base, what="base")
    assert_close(res.input(1), want_src, what="src")


class Overwrite(nn.Module):
    def forward(self, base: Tensor, src: Tensor) -> Tensor:
        return base.index_put((torch.tensor([0, 3]),), src)


def test_overwriting_index_put_is_data_movement() -> None:
    gen = torch.Generator().manual_seed(2)
    base, src = torch.randn(5, 3, generator=gen), torch.randn(2, 3, generator=gen)
    res = run_seed(Overwrite(), (base, src), random_seed(gen))
    r = res.seed
    want_base = r.clone()
    want_base[[0, 3]] = 0.0
    assert_close(res.input(0), want_base, what="base keeps what was not overwritten")
    assert_close(res.input(1), r[[0, 3]], what="src gets the rows it wrote")


class ZerosCombine(nn.Module):
    """The MoE combine: expert rows added into zeros (a constant) at their tokens."""

    def forward(self, rows: Tensor) -> Tensor:
        out = torch.zeros(3, rows.shape[1])
        return out.index_put((torch.tensor([0, 2, 2, 1]),), rows, accumulate=True)


def test_scatter_into_constant_zeros_conserves() -> None:
    gen = torch.Generator().manual_seed(3)
    rows = torch.randn(4, 5, generator=gen)
    res = run_seed(ZerosCombine(), (rows,), random_seed(gen))
    total = float(res.input().sum()) + res.sink_total()
    assert abs(total - float(res.seed.sum())) <= 1e-5 * float(res.seed.abs().sum())
    assert res.sink_total() == pytest.approx(0.0, abs=1e-6)  # the zeros contribute nothing


class LinearThen(nn.Module):
    def __init__(self, lin: nn.Linear, fn) -> None:
        super().__init__()
        self.lin, self.fn = lin, fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self.lin(x))


def test_clamp_gates_like_hardtanh_with_the_same_bounds() -> None:
    gen = torch.Generator().manual_seed(4)
    lin = nn.Linear(6, 5)
    with torch.no_grad():
        lin.weight.mul_(4.0)
    x = torch.randn(3, 6, generator=gen) * 2
    seed = torch.rand(3, 5, generator=gen) + 0.1
    clamp = run_seed(LinearThen(lin, lambda t: t.clamp(-1.0, 1.5)), (x,), lambda y: seed)
    hard = run_seed(LinearThen(lin, nn.Hardtanh(-1.0, 1.5)), (x,), lambda y: seed)
    assert int(((lin(x) < -1.0) | (lin(x) > 1.5)).sum()) > 0  # gating fires
    assert_close(clamp.input(), hard.input(), rel=1e-6, what="clamp vs hardtanh")


class StableSoftmax(nn.Module):
    """logits + mask (finfo.min where masked) - max: the max subtraction of eager attention with sinks."""

    def forward(self, s: Tensor) -> Tensor:
        mask = torch.zeros(s.shape[-1])
        mask[-2:] = torch.finfo(s.dtype).min
        s = s + mask
        return torch.softmax(s - s.amax(-1, keepdim=True), dim=-1)


def test_gated_subtraction_next_to_finfo_min_mask_stays_finite() -> None:
    gen = torch.Generator().manual_seed(5)
    res = run_seed(StableSoftmax(), (torch.randn(2, 6, generator=gen),), random_seed(gen))
    rel = res.input()
    assert torch.isfinite(rel).all()
    assert all(torch.isfinite(v).all() for v in res.prop.sinks.values())
    total = float(rel.sum()) + res.sink_total()
    assert abs(total - float(res.seed.sum())) <= 1e-5 * float(res.seed.abs().sum())
