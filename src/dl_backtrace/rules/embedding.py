"""Embedding (RELEVANCE.md 3.7): the output's relevance [B, T, D] stays on the embedding node; the ids get the
per-token relevance R.sum(-1) of shape [B, T] (this is ``relevance["input_ids"]``); the weight gets none."""

from __future__ import annotations

from typing import Any

import torch

from .registry import RuleContext, register

aten = torch.ops.aten


@register(aten.embedding.default, family="embedding", routes=lambda n: (1,))
def embedding_rule(ctx: RuleContext, r: Any) -> tuple[Any, ...]:
    return ctx.route({1: r.sum(-1)})
