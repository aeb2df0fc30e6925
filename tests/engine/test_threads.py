"""Shared objects under threads: every result equals the sequential one (issue 11, item 10)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

import dl_backtrace
from dl_backtrace.pytorch_backtrace import DLBacktrace

THREADS, CALLS = 8, 50


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 4)).eval()


def test_shared_dlbacktrace_never_returns_another_threads_explanation() -> None:
    model = _model()
    xs = [torch.randn(1, 5, generator=torch.Generator().manual_seed(i)) for i in range(THREADS)]
    dlb = DLBacktrace(model, (xs[0],))
    expected = []
    for x in xs:
        dlb.predict(x)
        expected.append(dlb.evaluation(task="classification", target=1)["input"].clone())

    def worker(i: int) -> int:
        wrong = 0
        for _ in range(CALLS):
            out = dlb.predict(xs[i])
            rel = dlb.evaluation(task="classification", target=1)
            wrong += not torch.equal(rel["input"], expected[i])
            wrong += not torch.equal(out["input"][1], xs[i])
        return wrong

    with ThreadPoolExecutor(THREADS) as pool:
        assert sum(pool.map(worker, range(THREADS))) == 0


def test_shared_explainer_retraces_once_per_shape_under_threads() -> None:
    """Each thread explains a batch size of its own (a retrace per new shape) at the same time."""
    model = _model()
    exp = dl_backtrace.Explainer(model, torch.randn(1, 5), max_programs=3)
    inputs = [torch.randn(b + 1, 5, generator=torch.Generator().manual_seed(b)) for b in range(THREADS)]
    solo = dl_backtrace.Explainer(model, torch.randn(1, 5))
    expected = [solo.attribute(x, mode="contrast").input_relevance for x in inputs]

    def worker(i: int) -> int:
        wrong = 0
        for _ in range(CALLS // 5):
            got = exp.attribute(inputs[i], mode="contrast").input_relevance
            wrong += not (torch.equal(got.positive, expected[i].positive)
                          and torch.equal(got.negative, expected[i].negative))
        return wrong

    with ThreadPoolExecutor(THREADS) as pool:
        assert sum(pool.map(worker, range(THREADS))) == 0
    assert len(exp.engine._programs) <= 3  # the per-shape cache is bounded (least recently used dropped)


def test_explainer_takes_a_dict_like_its_constructor() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(4, 2)

        def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
            return self.a(left) + self.b(right)

    inputs = {"left": torch.randn(1, 3), "right": torch.randn(1, 4)}
    exp = dl_backtrace.Explainer(Two().eval(), inputs)
    by_dict = exp.attribute(inputs, target=0)
    by_name = exp.attribute(**inputs, target=0)
    assert set(by_dict.input_names) == {"left", "right"}
    torch.testing.assert_close(by_dict["left"], by_name["left"], rtol=0, atol=0)

