"""Rebuild the golden fixtures' models from their ``spec`` (tests/fixtures/GOLDEN_README.md section 2) and map
their node names to our graph nodes (section 7). Nothing of the reference implementation is imported."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import torch
from torch import nn

FIXTURES = Path(__file__).parent / "fixtures"
SEED_TAGS = {"seed_is_output_value", "contrast_negative_seed_raw"}


class Swish075(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(0.75 * x)


class Chain(nn.Module):
    """Applies its children in registration order (how the fixtures' chain models run)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self._modules.values():
            x = m(x)
        return x


def _ctor(call: ast.Call) -> nn.Module:
    name = call.func.id  # type: ignore[attr-defined]
    args = [ast.literal_eval(a) for a in call.args]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    cls = Swish075 if name == "Swish075" else getattr(nn, name)
    return cls(*args, **kwargs)


def build(spec: str) -> nn.Module:
    assert spec.startswith("chain(") and spec.endswith(")"), spec
    model = Chain()
    for entry in spec[len("chain("):-1].split(";"):
        name, ctor = entry.strip().split("=", 1)
        model.add_module(name.strip(), _ctor(ast.parse(ctor.strip(), mode="eval").body))  # type: ignore[arg-type]
    return model.eval()


def load(name: str) -> dict[str, Any]:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=False)


def fixture_names(mode: str) -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob(f"*__{mode}.pt"))


def model_of(fx: dict[str, Any]) -> nn.Module:
    model = build(fx["spec"])
    model.load_state_dict(fx["state_dict"], strict=True)
    return model


def compared_nodes(fx: dict[str, Any]) -> list[str]:
    """README section 7: every node, or the nodes above the first one with a non-seed tag. The output node's
    relevance is the seed, which no tag changes (the tags are about how a node's rule spreads relevance to
    its inputs), so it is always compared: stricter than the README for the segmentation fixtures, whose
    output node carries a tag."""
    if fx["name"] == "mlp_linear_reg__s0__contrast":
        return []
    tagged = {n for tag, nodes in fx["quirks"].items() if tag not in SEED_TAGS for n in nodes}
    out = fx["layer_order"][:1]
    if out[0] in tagged:
        return out
    for n in fx["layer_order"][1:]:
        if n in tagged:
            break
        out.append(n)
    return out


def module_of_node(graph: torch.fx.Graph) -> dict[str, torch.fx.Node]:
    """Innermost module path -> the last graph node computed inside it (its output)."""
    out: dict[str, torch.fx.Node] = {}
    for n in graph.nodes:
        stack = n.meta.get("nn_module_stack") or {}
        if stack and n.op == "call_function":
            out[list(stack.values())[-1][0]] = n
    return out


def our_node(fixture_node: str, chain: list[str], modules: dict[str, torch.fx.Node], input_name: str) -> str:
    """Our node name for a fixture node (a fused 'layer/act' node is the activation's output)."""
    if fixture_node == "identity":
        return input_name
    child = fixture_node.split("/")[-1]
    i = chain.index(child)
    while i > 0 and chain[i] not in modules:  # a module that left no node (dropout in eval): its input
        i -= 1
    return modules[chain[i]].name if i > 0 else input_name
