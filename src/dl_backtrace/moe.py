"""Mixture-of-Experts: per-layer, per-expert relevance, read off one ordinary explanation (the same engine).

Supported layouts (rows sorted by expert, the first product's input gathered from the tokens,
``hidden[token_of_row]``, the last product's output, times the routing weight, summed back per token):

- grouped products (``aten._grouped_mm`` or ``transformers::grouped_mm_fallback``) with ``offs`` the cumulative
  row counts: transformers 5.x OLMoE, Qwen2-MoE, Qwen3-MoE, Mixtral, GPT-OSS, DeepSeek and most MoE families;
- one linear per expert on the blocks of a ``split_with_sizes`` (weights ``W[e]`` of one parameter), joined by
  ``cat``: JetMoE.

The relevance of expert e in a layer is the relevance of the rows its weighted output contributes to the layer's
sum (the node that multiplies the last product by the routing weight, or the last product itself), summed over
the hidden units. Under RELEVANCE.md 3.5 half of that reaches the expert's computation and half the routing
weight (the router). Per layer it is given per token, so summing over tokens and experts gives the relevance
that flowed through the layer's experts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.fx import Node

from .analysis import node_location
from .engine import Run
from .results import Relevance
from .rules.moe import GROUPED_FALLBACK
from .rules.registry import Pair, aten_op

__all__ = ["ExpertRelevance", "ExpertLayer", "expert_layers", "expert_relevance"]

log = logging.getLogger(__name__)
aten = torch.ops.aten


@dataclass
class ExpertLayer:
    """Where one MoE layer's experts sit in the traced graph."""

    path: str  # module path of the experts, e.g. "model.layers.0.mlp.experts"
    first: Node  # first grouped product or split (its input rows are gathered from the tokens)
    rows: Node  # node whose relevance rows are the experts' weighted outputs
    offs: Node | None  # cumulative rows per expert (grouped products), or None: block sizes of ``first``
    num_experts: int


@dataclass
class ExpertRelevance:
    """Relevance through each expert of one layer. ``per_token[b, t, e]``: relevance of token t of example b
    through expert e (contrast mode: the net, positive minus negative); ``routed[b, t, e]``: whether t was
    routed to e."""

    layer: str
    per_token: Tensor
    routed: Tensor

    @property
    def per_expert(self) -> Tensor:
        """[B, E]: relevance through each expert, per example."""
        return self.per_token.sum(1)

    @property
    def tokens_per_expert(self) -> Tensor:
        """[B, E]: how many tokens each expert received, per example."""
        return self.routed.sum(1)


def _is_grouped(n: Node) -> bool:
    if n.op != "call_function":
        return False
    name = getattr(getattr(n.target, "_schema", None), "name", "")
    return n.target is aten_op("_grouped_mm") or name == GROUPED_FALLBACK


def _module_path(n: Node) -> str:
    return node_location(n)[0]


def _weighted_rows(last: Node) -> Node:
    """The product of the last grouped output with the routing weight, when it is its only consumer."""
    users = list(last.users)
    if len(users) == 1 and users[0].target in (aten.mul.Tensor,):
        return users[0]
    return last


def expert_layers(graph: torch.fx.Graph) -> list[ExpertLayer]:
    """Every MoE layer of the graph: grouped products grouped by the module that owns them, then split experts."""
    by_path: dict[str, list[Node]] = {}
    for n in graph.nodes:
        if _is_grouped(n):
            by_path.setdefault(_module_path(n), []).append(n)
    layers = []
    for path, nodes in by_path.items():
        weight = nodes[0].args[1].meta.get("val")
        layers.append(ExpertLayer(path, nodes[0], _weighted_rows(nodes[-1]), nodes[-1].args[2],
                                  int(weight.shape[0])))
    return layers + _split_layers(graph)


def _expert_linear(n: Node) -> bool:
    """linear(x, W[e]) with W[e] = select(parameter, 0, e)."""
    w = n.args[1] if n.target is aten.linear.default and len(n.args) > 1 else None
    return isinstance(w, Node) and w.target is aten.select.int and w.args[1] == 0 and w.args[0].op == "placeholder"


def _expert_cat(n: Node) -> bool:
    return n.target is aten.cat.default and len(n.args[0]) >= 2 and all(
        isinstance(a, Node) and _expert_linear(a) for a in n.args[0])


def _split_layers(graph: torch.fx.Graph) -> list[ExpertLayer]:
    """Split experts, one per module; a module with several token gathers into experts (JetMoE's attention
    experts, MoA) is explained like any graph but not reported per expert."""
    found: dict[str, list[ExpertLayer]] = {}
    nodes = list(graph.nodes)
    for i, n in enumerate(nodes):
        if n.target is not aten.split_with_sizes.default or _token_index(n) is None:
            continue
        users = [u for g in n.users for u in g.users]
        if len(n.users) < 2 or not all(_expert_linear(u) for u in users):
            continue
        parent = _module_path(n).rsplit(".", 1)[0]
        cats = [c for c in nodes[i:] if _expert_cat(c) and _module_path(c).startswith(parent + ".")]
        if cats:
            found.setdefault(parent, []).append(ExpertLayer(parent, n, _weighted_rows(cats[-1]), None, len(n.users)))
    for path, layers in found.items():
        if len(layers) > 1:
            log.info("%s gathers tokens into experts %d times (attention experts); not reported per expert",
                     path, len(layers))
    return [layers[0] for layers in found.values() if len(layers) == 1]


def _token_index(first: Node) -> tuple[Node, Node] | None:
    """(token index of each row, the token matrix it gathers from) if the rows are ``hidden[index]``."""
    src = first.args[0]
    if isinstance(src, Node) and src.target is aten.index.Tensor and len(src.args[1]) == 1:
        return src.args[1][0], src.args[0]
    return None


def _batch_time(tokens: Node, n_tokens: int, batch: int) -> tuple[int, int]:
    """[B, T] of the flattened token matrix, from the 3-D tensor it was viewed from (else B = batch)."""
    src = tokens.args[0] if tokens.args and isinstance(tokens.args[0], Node) else None
    val = src.meta.get("val") if src is not None else None
    if isinstance(val, Tensor) and val.dim() == 3 and int(val.shape[0]) * int(val.shape[1]) == n_tokens:
        return int(val.shape[0]), int(val.shape[1])
    return (batch, n_tokens // batch) if batch > 0 and n_tokens % batch == 0 else (1, n_tokens)


def _experts_of_rows(layer: ExpertLayer, values: Any, n_rows: int, device: torch.device) -> Tensor:
    """Expert index of each row (rows past the last expert's block: ``num_experts``, dropped later)."""
    if layer.offs is not None:
        offs = values.value(layer.offs).to(device=device, dtype=torch.int64)
        return torch.searchsorted(offs, torch.arange(n_rows, device=device), right=True)
    sizes = torch.tensor([int(b.shape[0]) for b in values.value(layer.first)], device=device)
    return torch.repeat_interleave(torch.arange(len(sizes), device=device), sizes)


def _one_layer(layer: ExpertLayer, run: Run, rel: Relevance, batch: int) -> ExpertRelevance | None:
    found = _token_index(layer.first)
    if found is None:
        log.warning("MoE layer %s: rows are not gathered from tokens by one index; no expert relevance", layer.path)
        return None
    if layer.rows.name not in rel:
        raise KeyError(f"MoE layer {layer.path}: this relevance has no value for node {layer.rows.name!r}; expert "
                       "relevance needs every node's relevance (DLBacktrace.evaluation, or attribute(nodes=True))")
    values = run.execution
    r = rel[layer.rows.name]
    r = r.net if isinstance(r, Pair) else r
    row_r = r.reshape(r.shape[0], -1).sum(-1)
    token_of_row = values.value(found[0]).to(torch.int64)
    n_tokens = int(values.value(found[1]).shape[0])
    expert_of_row = _experts_of_rows(layer, values, row_r.shape[0], row_r.device)
    e = layer.num_experts
    flat = token_of_row.to(row_r.device) * (e + 1) + expert_of_row
    per = torch.zeros(n_tokens * (e + 1), dtype=row_r.dtype, device=row_r.device).index_add_(0, flat, row_r)
    hits = torch.zeros(n_tokens * (e + 1), dtype=torch.int64, device=row_r.device).index_add_(
        0, flat, torch.ones_like(flat))
    b, t = _batch_time(found[1], n_tokens, batch)
    per = per.reshape(n_tokens, e + 1)[:, :e].reshape(b, t, e)
    return ExpertRelevance(layer.path, per, hits.reshape(n_tokens, e + 1)[:, :e].reshape(b, t, e) > 0)


def expert_relevance(run: Run, relevance: Relevance) -> dict[str, ExpertRelevance]:
    """Per-layer, per-expert relevance of an explanation (``relevance`` must keep every node's relevance)."""
    graph = run.program.traced.graph
    batch = next((int(v.shape[0]) for v in run.inputs.values() if isinstance(v, Tensor) and v.dim() > 0), 1)
    out = {}
    for layer in expert_layers(graph):
        res = _one_layer(layer, run, relevance, batch)
        if res is not None:
            out[layer.path] = res
    return out
