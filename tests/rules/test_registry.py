"""One test over the whole rule registry: every registered op has a sample call here, and on it the rule returns
relevance shaped like each live input and conserves it (sum in + sinks = sum out) in both modes.

Each case is an op and its arguments; ``L(t)`` marks an input that carries relevance (a user input of the
one-node graph), ``C(t)`` a constant one (like a parameter). Tuple outputs are explained through getitem 0.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from dl_backtrace.analysis import analyse
from dl_backtrace.execute import execute
from dl_backtrace.propagate import propagate
from dl_backtrace.rules import RULES
from dl_backtrace.rules.registry import Pair

aten = torch.ops.aten


@dataclass
class L:
    t: torch.Tensor


@dataclass
class C:
    t: torch.Tensor


_GEN = torch.Generator().manual_seed(1234)


def r(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_GEN)


def idx(*shape: int, high: int = 3) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=_GEN)


X4 = (2, 3, 6, 6)
CASES: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "getitem": ((), {}),  # exercised by every tuple-output case below
    "aten.linear.default": ((L(r(2, 5)), C(r(4, 5)), C(r(4))), {}),
    "aten.addmm.default": ((C(r(4)), L(r(2, 5)), C(r(5, 4))), {}),
    "aten.mm.default": ((L(r(2, 5)), L(r(5, 3))), {}),
    "aten.bmm.default": ((L(r(2, 3, 5)), C(r(2, 5, 4))), {}),
    "aten.matmul.default": ((L(r(2, 3, 5)), L(r(5, 4))), {}),
    "aten.einsum.default": (("bij,bjk->bik", [L(r(2, 3, 4)), L(r(2, 4, 5))]), {}),
    "aten.convolution.default": ((L(r(*X4)), C(r(4, 3, 3, 3)), C(r(4)), [1, 1], [1, 1], [1, 1], False, [0, 0], 1), {}),
    "aten.conv1d.default": ((L(r(2, 3, 8)), C(r(4, 3, 3)), C(r(4))), {}),
    "aten.conv2d.default": ((L(r(*X4)), C(r(6, 1, 3, 3)), None, [2, 2], [1, 1], [1, 1], 3), {}),
    "aten.conv3d.default": ((L(r(1, 2, 4, 4, 4)), C(r(3, 2, 2, 2, 2))), {}),
    "aten.conv1d.padding": ((L(r(2, 3, 8)), C(r(4, 3, 4)), C(r(4)), [1], "same"), {}),
    "aten.conv2d.padding": ((L(r(*X4)), C(r(4, 3, 3, 3)), None, [1, 1], "valid"), {}),
    "aten.conv3d.padding": ((L(r(1, 2, 4, 4, 4)), C(r(3, 2, 3, 3, 3)), None, [1, 1, 1], "same"), {}),
    "aten.conv_transpose1d.default": ((L(r(2, 3, 5)), C(r(3, 2, 3)), C(r(2)), [2]), {}),
    "aten.conv_transpose2d.input": ((L(r(*X4)), C(r(3, 2, 2, 2)), C(r(2)), [2, 2]), {}),
    "aten.conv_transpose3d.input": ((L(r(1, 2, 3, 3, 3)), C(r(2, 2, 2, 2, 2))), {}),
    "aten.avg_pool1d.default": ((L(r(2, 3, 8)), [2]), {}),
    "aten.avg_pool2d.default": ((L(r(*X4)), [3, 3], [2, 2], [1, 1]), {}),
    "aten.avg_pool3d.default": ((L(r(1, 2, 4, 4, 4)), [2, 2, 2]), {}),
    "aten.adaptive_avg_pool1d.default": ((L(r(2, 3, 7)), [3]), {}),
    "aten.adaptive_avg_pool2d.default": ((L(r(*X4)), [4, 4]), {}),
    "aten.adaptive_avg_pool3d.default": ((L(r(1, 2, 4, 4, 4)), [2, 2, 2]), {}),
    "aten._adaptive_avg_pool2d.default": ((L(r(*X4)), [1, 1]), {}),
    "aten._adaptive_avg_pool3d.default": ((L(r(1, 2, 4, 4, 4)), [1, 2, 2]), {}),
    "aten.mean.dim": ((L(r(2, 3, 4)), [1]), {}),
    "aten.mean.default": ((L(r(2, 3)),), {}),
    "aten.sum.dim_IntList": ((L(r(2, 3, 4)), [-1], True), {}),
    "aten.sum.default": ((L(r(2, 3)),), {}),
    "aten.add.Tensor": ((L(r(2, 3)), L(r(3))), {}),
    "aten.add.Scalar": ((L(r(2, 3)), 0.5), {}),
    "aten.sub.Tensor": ((L(r(2, 3)), C(r(2, 3))), {}),
    "aten.sub.Scalar": ((L(r(2, 3)), 1.5), {}),
    "aten.rsub.Tensor": ((L(r(2, 3)), L(r(2, 3))), {}),
    "aten.rsub.Scalar": ((L(r(2, 3)), 1.0), {}),
    "aten.mul.Tensor": ((L(r(2, 3)), L(r(2, 3))), {}),
    "aten.mul.Scalar": ((L(r(2, 3)), 3.0), {}),
    "aten.div.Tensor": ((L(r(2, 3)), L(r(2, 3).abs() + 1)), {}),
    "aten.div.Scalar": ((L(r(2, 3)), 3.0), {}),
    "aten.neg.default": ((L(r(2, 3)),), {}),
    "aten.embedding.default": ((C(r(10, 4)), L(idx(2, 5, high=10))), {}),
    "aten.scaled_dot_product_attention.default": ((L(r(2, 4, 5, 3)), L(r(2, 2, 6, 3)), L(r(2, 2, 6, 4)),
                                                   C(r(2, 1, 5, 6) > -0.5)), {"enable_gqa": True}),
    "aten.amax.default": ((L(r(2, 3, 4)), [1]), {}),
    "aten.amin.default": ((L(r(2, 3, 4)), [-1], True), {}),
    "aten.max.dim": ((L(r(2, 3, 4)), 1), {}),
    "aten.min.dim": ((L(r(2, 3, 4)), 2, True), {}),
    "aten.max.default": ((L(r(2, 3)),), {}),
    "aten.min.default": ((L(r(2, 3)),), {}),
    "aten.topk.default": ((L(r(2, 6)), 3), {}),
    "aten.sort.default": ((L(r(2, 6)),), {}),
    "aten.sort.stable": ((L(r(2, 6)),), {"stable": True}),
    "aten.max_pool1d.default": ((L(r(2, 3, 8)), [2]), {}),
    "aten.max_pool2d.default": ((L(r(*X4)), [3, 3], [2, 2], [1, 1]), {}),
    "aten.max_pool3d.default": ((L(r(1, 2, 4, 4, 4)), [2, 2, 2]), {}),
    "aten.max_pool1d_with_indices.default": ((L(r(2, 3, 8)), [2]), {}),
    "aten.max_pool2d_with_indices.default": ((L(r(*X4)), [2, 2]), {}),
    "aten.max_pool3d_with_indices.default": ((L(r(1, 2, 4, 4, 4)), [2, 2, 2]), {}),
    "aten.adaptive_max_pool1d.default": ((L(r(2, 3, 8)), [3]), {}),
    "aten.adaptive_max_pool2d.default": ((L(r(*X4)), [2, 2]), {}),
    "aten.adaptive_max_pool3d.default": ((L(r(1, 2, 4, 4, 4)), [2, 2, 2]), {}),
    "aten.layer_norm.default": ((L(r(2, 3, 4)), [4], C(r(4)), C(r(4))), {}),
    "aten.native_layer_norm.default": ((L(r(2, 3, 4)), [4], C(r(4)), C(r(4)), 1e-5), {}),
    "aten.batch_norm.default": ((L(r(*X4)), C(r(3)), C(r(3)), C(r(3)), C(r(3).abs() + 1), False, 0.1, 1e-5, False),
                                {}),
    "aten._native_batch_norm_legit_no_training.default": (
        (L(r(*X4)), C(r(3)), C(r(3)), C(r(3)), C(r(3).abs() + 1), 0.1, 1e-5), {}),
    "aten.native_batch_norm.default": (
        (L(r(*X4)), C(r(3)), C(r(3)), C(r(3)), C(r(3).abs() + 1), False, 0.1, 1e-5), {}),
    "aten._native_batch_norm_legit.no_stats": ((L(r(*X4)), C(r(3)), C(r(3)), True, 0.1, 1e-5), {}),
    "aten.group_norm.default": ((L(r(*X4)), 3, C(r(3)), C(r(3))), {}),
    "aten.native_group_norm.default": ((L(r(*X4)), C(r(3)), C(r(3)), 2, 3, 36, 3, 1e-5), {}),
    "aten.instance_norm.default": ((L(r(*X4)), None, None, None, None, True, 0.1, 1e-5, False), {}),
    "aten.rms_norm.default": ((L(r(2, 3, 4)), [4], C(r(4))), {}),
    "aten._fused_rms_norm.default": ((L(r(2, 3, 4)), [4], C(r(4)), 1e-6), {}),
    "aten.upsample_nearest1d.vec": ((L(r(2, 3, 4)), None, [2.0]), {}),
    "aten.upsample_nearest2d.vec": ((L(r(*X4)), None, [2.0, 2.0]), {}),
    "aten.upsample_nearest3d.vec": ((L(r(1, 2, 2, 2, 2)), None, [2.0, 2.0, 2.0]), {}),
    "aten.upsample_nearest1d.default": ((L(r(2, 3, 4)), [8]), {}),
    "aten.upsample_nearest2d.default": ((L(r(*X4)), [9, 9]), {}),
    "aten.upsample_nearest3d.default": ((L(r(1, 2, 2, 2, 2)), [3, 3, 3]), {}),
    "aten._upsample_nearest_exact1d.vec": ((L(r(2, 3, 4)), None, [2.0]), {}),
    "aten._upsample_nearest_exact2d.vec": ((L(r(*X4)), None, [2.0, 2.0]), {}),
    "aten._upsample_nearest_exact3d.vec": ((L(r(1, 2, 2, 2, 2)), None, [2.0, 2.0, 2.0]), {}),
    "aten.upsample_linear1d.vec": ((L(r(2, 3, 4)), None, False, [2.0]), {}),
    "aten.upsample_bilinear2d.vec": ((L(r(*X4)), None, True, [2.0, 2.0]), {}),
    "aten.upsample_trilinear3d.vec": ((L(r(1, 2, 2, 2, 2)), None, False, [2.0, 2.0, 2.0]), {}),
    "aten.upsample_linear1d.default": ((L(r(2, 3, 4)), [7], False), {}),
    "aten.upsample_bilinear2d.default": ((L(r(*X4)), [9, 9], False), {}),
    "aten.upsample_trilinear3d.default": ((L(r(1, 2, 2, 2, 2)), [3, 3, 3], True), {}),
}
ACTS = ["relu", "tanh", "sigmoid", "gelu", "silu", "hardsigmoid", "hardswish", "mish", "leaky_relu", "elu",
        "softplus", "relu6", "neg"]
CASES.update({f"aten.{a}.default": ((L(r(2, 5)),), {}) for a in ACTS})
CASES.update({
    "aten.hardtanh.default": ((L(r(2, 5)), -1.0, 2.0), {}),
    "aten.clamp.default": ((L(r(2, 5)), -0.5, 0.5), {}),
    "aten.celu.default": ((L(r(2, 5)),), {}),
    "aten.selu.default": ((L(r(2, 5)),), {}),
    "aten.log_sigmoid.default": ((L(r(2, 5)),), {}),
    "aten.clamp_min.default": ((L(r(2, 5)), 0.1), {}),
    "aten.clamp_max.default": ((L(r(2, 5)), 0.2), {}),
    "aten._grouped_mm.default": ((L(r(6, 4)), C(r(3, 4, 8)), C(torch.tensor([2, 2, 5], dtype=torch.int32))), {}),
    "transformers::grouped_mm_fallback": ((L(r(6, 4)), C(r(3, 4, 5)), C(torch.tensor([2, 2, 5], dtype=torch.int32))),
                                          {}),
    "aten.index_put.default": ((L(r(5, 3)), [C(torch.tensor([0, 2, 2, 4]))], L(r(4, 3)), True), {}),
    "aten.index_add.default": ((L(r(5, 3)), 0, C(torch.tensor([1, 1, 3, 0])), L(r(4, 3))), {}),
    "aten.scatter_add.default": ((L(r(3, 5)), 1, C(idx(3, 4, high=5)), L(r(3, 4))), {}),
    "aten.scatter_reduce.two": ((L(r(3, 5)), 1, C(idx(3, 4, high=5)), L(r(3, 4)), "sum"), {}),
    "aten.scatter.src": ((L(r(3, 5)), 1, C(torch.tensor([[0, 3], [1, 2], [4, 0]])), L(r(3, 2))), {}),
    "aten.index_copy.default": ((L(r(5, 3)), 0, C(torch.tensor([0, 3])), L(r(2, 3))), {}),
    "aten.masked_scatter.default": ((L(r(3, 4)), C(r(3, 4) > 0), L(r(12))), {}),
    "aten._softmax.default": ((L(r(2, 5)), -1, False), {}),
    "aten.softmax.int": ((L(r(2, 5)), -1), {}),
    "aten._log_softmax.default": ((L(r(2, 5)), -1, False), {}),
    "aten.log_softmax.int": ((L(r(2, 5)), 1), {}),
    "aten._safe_softmax.default": ((L(r(2, 5)), -1), {}),
})
A = (2, 3, 4)
SHAPES = {
    "view.default": [[6, 4]], "_unsafe_view.default": [[4, 6]], "reshape.default": [[-1]],
    "view_copy.default": [[24]], "_reshape_alias.default": [[6, 4], [4, 1]], "permute.default": [[2, 0, 1]],
    "permute_copy.default": [[1, 2, 0]], "transpose.int": [0, 2], "transpose_copy.int": [1, 2],
    "squeeze.dim": [1], "squeeze.dims": [[1]], "squeeze.default": [], "squeeze_copy.dim": [1],
    "squeeze_copy.dims": [[1]], "unsqueeze.default": [1], "unsqueeze_copy.default": [0],
    "expand.default": [[2, 2, 3, 4]], "expand_copy.default": [[3, 2, 3, 4]], "repeat.default": [[1, 2, 1]],
    "chunk.default": [2, 2], "unbind.int": [1], "split.Tensor": [2, 1], "split_with_sizes.default": [[1, 2], 1],
    "split_copy.Tensor": [1], "slice.Tensor": [2, 1, 3], "slice_copy.Tensor": [1, 0, 2], "select.int": [1, 2],
    "select_copy.int": [2, 0], "narrow.default": [2, 1, 2], "constant_pad_nd.default": [[1, 2], 0.5],
    "pad.default": [[1, 1], "reflect"], "clone.default": [], "_to_copy.default": [], "to.dtype": [torch.float64],
    "to.dtype_layout": [], "to.device": [torch.device("cpu"), torch.float32], "alias.default": [],
    "alias_copy.default": [], "dropout.default": [0.1, False], "detach.default": [],
    "lift_fresh_copy.default": [], "flatten.using_ints": [1], "unflatten.int": [2, [2, 2]],
    "roll.default": [[1], [2]], "flip.default": [[0, 2]], "movedim.int": [0, 2], "contiguous.default": [],
    "repeat_interleave.self_int": [2, 1], "unfold.default": [2, 2, 1], "diagonal.default": [0, 1, 2],
    "as_strided.default": [[2, 3, 2], [12, 4, 1]], "native_dropout.default": [0.0, False],
    "t.default": None, "t_copy.default": None, "reflection_pad1d.default": None,
    "replication_pad1d.default": None, "reflection_pad2d.default": None, "replication_pad2d.default": None,
    "pixel_shuffle.default": None, "pixel_unshuffle.default": None, "channel_shuffle.default": None,
}
for name, extra in SHAPES.items():
    if extra is not None:
        CASES[f"aten.{name}"] = ((L(r(*A)), *extra), {})
CASES.update({
    "aten.t.default": ((L(r(3, 4)),), {}), "aten.t_copy.default": ((L(r(3, 4)),), {}),
    "aten.reflection_pad1d.default": ((L(r(2, 3, 5)), [1, 2]), {}),
    "aten.replication_pad1d.default": ((L(r(2, 3, 5)), [2, 1]), {}),
    "aten.reflection_pad2d.default": ((L(r(*X4)), [1, 1, 2, 0]), {}),
    "aten.replication_pad2d.default": ((L(r(*X4)), [1, 0, 1, 2]), {}),
    "aten.pixel_shuffle.default": ((L(r(1, 8, 3, 3)), 2), {}),
    "aten.pixel_unshuffle.default": ((L(r(1, 2, 4, 4)), 2), {}),
    "aten.channel_shuffle.default": ((L(r(1, 6, 2, 2)), 3), {}),
    "aten.cat.default": (([L(r(2, 3)), C(r(2, 2)), L(r(2, 1))], 1), {}),
    "aten.stack.default": (([L(r(2, 3)), L(r(2, 3))], 1), {}),
    "aten.index.Tensor": ((L(r(4, 5)), [C(idx(6, high=4))]), {}),
    "aten._unsafe_index.Tensor": ((L(r(4, 5)), [None, C(idx(3, high=5))]), {}),
    "aten.gather.default": ((L(r(3, 4)), 1, C(idx(3, 6, high=4))), {}),
    "aten.index_select.default": ((L(r(3, 4)), 0, C(idx(5, high=3))), {}),
    "aten.where.self": ((C(r(2, 3) > 0), L(r(2, 3)), C(r(2, 3))), {}),
    "aten.where.ScalarOther": ((C(r(2, 3) > 0), L(r(2, 3)), 2.0), {}),
    "aten.where.ScalarSelf": ((C(r(2, 3) > 0), 2.0, L(r(2, 3))), {}),
    "aten.masked_fill.Scalar": ((L(r(2, 3)), C(r(2, 3) > 0), -1.0), {}),
    "aten.masked_fill.Tensor": ((L(r(2, 3)), C(r(2, 3) > 0), C(torch.tensor(3.0))), {}),
    "aten.slice_scatter.default": ((L(r(4, 3)), L(r(2, 3)), 0, 1, 3), {}),
    "aten.select_scatter.default": ((L(r(4, 3)), L(r(3)), 0, 2), {}),
})


def _build(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[torch.fx.GraphModule, Any]:
    g = torch.fx.Graph()
    feed: dict[str, torch.Tensor] = {}
    live: set[str] = set()

    def place(v: Any) -> Any:
        if isinstance(v, (L, C)):
            ph = g.placeholder(f"in{len(feed)}")
            ph.meta["val"] = v.t
            feed[ph.name] = v.t
            if isinstance(v, L):
                live.add(ph.name)
            return ph
        if isinstance(v, list):
            return [place(x) for x in v]
        return v

    gargs = tuple(place(a) for a in args)
    node = g.call_function(op, gargs, kwargs)
    node.meta["val"] = op(*[_value(a) for a in args], **kwargs)
    out = node
    if isinstance(node.meta["val"], (tuple, list)):
        out = g.call_function(operator.getitem, (node, 0))
        out.meta["val"] = node.meta["val"][0]
    g.output(out)
    return torch.fx.GraphModule(torch.nn.Module(), g), (feed, live, out)


def _value(a: Any) -> Any:
    if isinstance(a, (L, C)):
        return a.t
    if isinstance(a, list):
        return [_value(x) for x in a]
    return a


def test_every_registered_op_has_a_case() -> None:
    missing = sorted(str(op) for op in RULES if _key(op) not in CASES)
    assert not missing, f"add a sample call for: {missing}"


def _key(op: Any) -> str:
    return "getitem" if op is operator.getitem else str(op)


def _resolve(op: Any) -> Any:
    """Ops registered by qualified name (another library's ops) resolve once that library is imported."""
    if not isinstance(op, str):
        return op
    pytest.importorskip("transformers.integrations.moe")
    namespace, name = op.split("::")
    return getattr(getattr(torch.ops, namespace), name).default


def _total(x: Any, k: int) -> float:
    if x is None:
        return 0.0
    if isinstance(x, list):
        return sum(_total(v, k) for v in x)
    return float((x[k] if isinstance(x, Pair) else x).double().sum())


@pytest.mark.parametrize("mode", ["default", "contrast"])
@pytest.mark.parametrize("name", sorted(k for k in CASES if k != "getitem"))
def test_rule_shapes_and_conservation(name: str, mode: str) -> None:
    op = next((o for o in RULES if str(o) == name), None)
    if op is None:
        pytest.skip(f"{name} does not exist in torch {torch.__version__}")
    op = _resolve(op)
    args, kwargs = CASES[name]
    gm, (feed, live, out) = _build(op, args, kwargs)
    a = analyse(gm.graph, live, out)
    assert not a.unsupported
    run = execute(gm, [n for n in gm.graph.nodes if n.op == "placeholder"], feed)
    y = run.values[out].float()
    gen = torch.Generator().manual_seed(0)
    seed = torch.rand(y.shape, generator=gen) + 0.1
    if mode == "contrast":
        seed = Pair(seed, torch.randn(y.shape, generator=gen))
    prop = propagate(a, run, seed, mode)
    streams = (0, 1) if mode == "contrast" else (0,)
    got_any = False
    for ph in (n for n in gm.graph.nodes if n.op == "placeholder" and n.name in live):
        rel = prop.relevance.get(ph)
        if rel is None:
            continue
        got_any = True
        shape = feed[ph.name].shape if feed[ph.name].is_floating_point() else feed[ph.name].shape
        for k in streams:
            t = rel[k] if isinstance(rel, Pair) else rel
            assert t.shape == shape, f"{name}: relevance shape {tuple(t.shape)} vs input {tuple(shape)}"
            assert torch.isfinite(t).all()
    assert got_any
    for k in streams:
        s_out = _total(seed, k)
        s_in = sum(_total(prop.relevance.get(ph), k) for ph in gm.graph.nodes if ph.name in live)
        s_sink = sum(_total(v, k) for v in prop.sinks.values())
        scale = float((seed[k] if isinstance(seed, Pair) else seed).double().abs().sum())
        assert abs(s_out - s_in - s_sink) <= 1e-5 * scale, f"{name} stream {k}: {s_out} != {s_in} + {s_sink}"


# -- value oracle: every op that is affine in its live inputs, against RELEVANCE.md's formulas --------------------

AFFINE = [
    "aten.linear.default", "aten.addmm.default", "aten.bmm.default", "aten.convolution.default",
    "aten.conv1d.default", "aten.conv2d.default", "aten.conv3d.default", "aten.conv1d.padding",
    "aten.conv2d.padding", "aten.conv3d.padding", "aten.conv_transpose1d.default", "aten.conv_transpose2d.input",
    "aten.conv_transpose3d.input", "aten.avg_pool1d.default", "aten.avg_pool2d.default", "aten.avg_pool3d.default",
    "aten.adaptive_avg_pool1d.default", "aten.adaptive_avg_pool2d.default", "aten.adaptive_avg_pool3d.default",
    "aten._adaptive_avg_pool2d.default", "aten._adaptive_avg_pool3d.default", "aten.mean.dim", "aten.mean.default",
    "aten.sum.dim_IntList", "aten.sum.default", "aten.add.Tensor", "aten.add.Scalar", "aten.sub.Tensor",
    "aten.sub.Scalar", "aten.rsub.Tensor", "aten.rsub.Scalar", "aten.mul.Scalar",
]


def _substitute(args: Any, values: list[torch.Tensor]) -> Any:
    """The op's arguments in float64 with the live inputs (in placeholder order) taken from ``values``."""
    if isinstance(args, L):
        return values.pop(0)
    if isinstance(args, C):
        return args.t.double() if args.t.is_floating_point() else args.t
    if isinstance(args, (list, tuple)):
        out = [_substitute(a, values) for a in args]
        return out if isinstance(args, list) else tuple(out)
    return args


def _contributions(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                   lives: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """c[j, i] = dy_j/dx_i * x_i over all live inputs (one flat axis), b_j = y_j - sum_i c[j, i]: the exact
    section 2.1 decomposition of an op that is affine in its live inputs, from autograd alone."""
    sizes = [t.numel() for t in lives]
    flat = torch.cat([t.double().flatten() for t in lives])

    def f(v: torch.Tensor) -> torch.Tensor:
        parts = [p.reshape(t.shape) for p, t in zip(v.split(sizes), lives)]
        return op(*_substitute(args, parts), **kwargs).flatten()

    jac = torch.autograd.functional.jacobian(f, flat)  # (n_out, n_in)
    c = jac * flat[None, :]
    return c, f(flat) - c.sum(1)


@pytest.mark.parametrize("mode", ["default", "contrast"])
@pytest.mark.parametrize("name", AFFINE)
def test_affine_rules_match_the_contribution_oracle(name: str, mode: str) -> None:
    """Values, not totals: each input element's relevance equals the loop formula of RELEVANCE.md 2 (ungated) /
    4 applied to the contribution matrix that autograd gives for the op alone (<= 1e-5 of the largest)."""
    from tests.reference import contrast_ref, default_ref

    op = next(o for o in RULES if str(o) == name)
    args, kwargs = CASES[name]
    gm, (feed, live, out) = _build(op, args, kwargs)
    a = analyse(gm.graph, live, out)
    run = execute(gm, [n for n in gm.graph.nodes if n.op == "placeholder"], feed)
    y = run.values[out].float()
    gen = torch.Generator().manual_seed(7)
    seed = torch.rand(y.shape, generator=gen) + 0.1
    if mode == "contrast":
        seed = Pair(seed, torch.randn(y.shape, generator=gen))
    prop = propagate(a, run, seed, mode)
    phs = [n for n in gm.graph.nodes if n.op == "placeholder" and n.name in live]
    c, b = _contributions(op, args, kwargs, [feed[p.name] for p in phs])
    streams = (0, 1) if mode == "contrast" else (0,)
    got = [torch.cat([(prop.relevance[p][k] if mode == "contrast" else prop.relevance[p]).double().flatten()
                      for p in phs]) for k in streams]
    if mode == "default":
        want = [default_ref(c, b, seed.flatten())[0]]
    else:
        want = list(contrast_ref(c, b, seed.positive.flatten(), seed.negative.flatten())[:2])
    for k, (g, w) in enumerate(zip(got, want)):
        tol = 1e-5 * max(float(w.abs().max()), 1e-12)
        assert torch.allclose(g, w, rtol=0, atol=tol), f"{name} stream {k}: max diff {float((g - w).abs().max())}"
