"""Ops without a rule on the relevance path are reported before anything runs (3.9); ops off the path are not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dl_backtrace
from dl_backtrace.errors import NodeExecutionError, UnsupportedOpError
from dl_backtrace.execute import execute
from dl_backtrace.pytorch_backtrace import DLBacktrace


class Block(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=-1)


class WithUnsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.block = Block()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(x).exp())


def test_unsupported_ops_raise_with_module_and_source() -> None:
    x = torch.randn(2, 4)
    with pytest.raises(UnsupportedOpError) as err:
        DLBacktrace(WithUnsupported(), (x,))
    msg = str(err.value)
    assert "aten.cumsum.default" in msg and "aten.exp.default" in msg
    assert "block" in msg  # module path
    assert "test_coverage.py" in msg  # user source line
    names = {o.op for o in err.value.ops}
    assert names == {"aten.cumsum.default", "aten.exp.default"}


def test_coverage_lists_without_raising() -> None:
    ops = dl_backtrace.coverage(WithUnsupported(), (torch.randn(2, 4),))
    assert sorted(o.op for o in ops) == ["aten.cumsum.default", "aten.exp.default"]
    assert any(o.module == "block" for o in ops)
    assert dl_backtrace.coverage(nn.Sequential(nn.Linear(3, 2), nn.ReLU()), (torch.randn(1, 3),)) == []


class OffPath(nn.Module):
    """exp/cumsum only on the normaliser and on a mask: no relevance reaches them, so no rule is needed."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pos = torch.cumsum(mask, dim=-1).float()
        h = self.fc(x) + pos
        return h / h.exp().sum(-1, keepdim=True)


def test_ops_off_the_relevance_path_need_no_rule() -> None:
    x, mask = torch.randn(2, 4), torch.ones(2, 4, dtype=torch.long)
    dlb = DLBacktrace(OffPath(), (x, mask))
    dlb.predict(x, mask)
    rel = dlb.evaluation(task="classification")
    assert rel.conservation_error < 1e-5
    assert torch.all(rel["mask"] == 0)


def test_passthrough_only_when_asked() -> None:
    x = torch.randn(2, 4)
    dlb = DLBacktrace(WithUnsupported(), (x,), passthrough_unsupported=True)
    dlb.predict(x)
    assert dlb.evaluation(task="classification").conservation_error < 1e-5


def test_failing_node_names_itself() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    dlb = DLBacktrace(model, (torch.randn(1, 4),))
    prog = dlb.engine.program
    feed = dict(prog.feed)
    weight = next(k for k in feed if "weight" in k)
    feed[weight] = torch.randn(3, 5)  # wrong shape: the linear node must fail and say so
    feed.update({n.name: torch.randn(1, 4) for n in prog.traced.user_nodes})
    placeholders = [n for n in prog.traced.graph.nodes if n.op == "placeholder"]
    with pytest.raises(NodeExecutionError, match="node 'linear' failed"):
        execute(prog.traced.program.graph_module, placeholders, feed)


class ThreeWay(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bi,ij,bj->b", x, self.w, x)[:, None]


def test_a_call_the_rule_cannot_handle_is_reported_before_running() -> None:
    ops = dl_backtrace.coverage(ThreeWay(), (torch.randn(2, 4),))
    assert [o.op for o in ops] == ["aten.einsum.default"]
