"""Max and selection (3.2): relevance to the winners, ties share equally."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests import reference as ref
from tests.helpers import assert_close, random_seed, run_seed


def test_max_pool_routes_to_winners_and_shares_ties() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (2, 2, 6, 6), generator=gen).float()  # many ties
    res = run_seed(nn.MaxPool2d(2), (x,), random_seed(gen))
    for b in range(2):
        assert_close(res.input()[b], ref.max_pool_ref(x[b], res.seed[b], 2, 2), what="maxpool")
    assert abs(float(res.input().sum()) - float(res.seed.sum())) < 1e-4


def test_max_pool_padding_stride_dilation_ceil_conserve() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 9, 9, generator=gen)
    for pool in [nn.MaxPool2d(3, 2, padding=1), nn.MaxPool2d(2, 2, ceil_mode=True),
                 nn.MaxPool2d(3, 1, dilation=2), nn.MaxPool1d(3, 2, padding=1)]:
        xi = x[:, :, 0] if isinstance(pool, nn.MaxPool1d) else x
        res = run_seed(pool, (xi,), random_seed(gen))
        y = res.run.output
        # every output's relevance lands on input elements equal to that output
        assert abs(float(res.input().sum()) - float(res.seed.sum())) < 1e-4 * float(res.seed.sum())
        assert set(torch.unique(y).tolist()) >= set(torch.unique(xi[res.input() > 0]).tolist())


@pytest.mark.parametrize("k,stride,padding,dilation,ceil", [(3, 2, 1, 1, False), (2, 2, 0, 1, True),
                                                          (3, 1, 0, 2, False), (3, 2, 1, 2, True)])
def test_max_pool_general_windows_match_the_loop_reference(k: int, stride: int, padding: int, dilation: int,
                                                           ceil: bool) -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(-1, 2, (2, 2, 9, 9), generator=gen).float()  # many ties, some windows partly padding
    res = run_seed(nn.MaxPool2d(k, stride, padding, dilation, ceil_mode=ceil), (x,), random_seed(gen))
    for b in range(2):
        want = ref.max_pool_ref(x[b], res.seed[b], k, stride, padding, dilation)
        assert_close(res.input()[b], want, what=f"maxpool k{k} s{stride} p{padding} d{dilation} ceil {ceil}")


class Amax(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=-1)


def test_amax_ties_share() -> None:
    x = torch.tensor([[1.0, 3.0, 3.0, 2.0], [5.0, 0.0, 1.0, 5.0]])
    res = run_seed(Amax(), (x,), lambda y: torch.ones_like(y) * 10)
    assert torch.allclose(res.input(), torch.tensor([[0, 5.0, 5.0, 0], [5.0, 0, 0, 5.0]]))
