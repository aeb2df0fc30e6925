"""Normalisation (RELEVANCE.md 3.4, 7.9): identity on x; statistics and affine parameters are constants.
Fused ops with several outputs (native_layer_norm, batch norm) receive the relevance of output 0."""

from __future__ import annotations

from typing import Any

import torch

from .registry import RuleContext, aten_op, register

aten = torch.ops.aten

_NORMS = [
    aten_op("layer_norm"), aten_op("native_layer_norm"), aten_op("batch_norm"),
    aten_op("_native_batch_norm_legit_no_training"), aten_op("native_batch_norm"),
    aten_op("_native_batch_norm_legit", "no_stats"), aten_op("group_norm"), aten_op("native_group_norm"),
    aten_op("instance_norm"), aten_op("rms_norm"), aten_op("_fused_rms_norm"),
]


@register(*_NORMS, family="norm", routes=lambda n: (0,))
def norm_rule(ctx: RuleContext, r: Any) -> tuple[Any, ...]:
    return ctx.route({0: r[0] if isinstance(r, list) else r})
