"""Relevance rules, one module per op family, all registered in :data:`RULES` keyed by ATen op overload."""

from . import activation, affine, attention, elementwise, embedding, moe, norm, reduce, scatter, shape  # noqa: F401  (registration)
from .contribution import Terms, contribute
from .gates import Activation
from .registry import RULES, Flow, Pair, Rule, RuleContext, register, rule_for

__all__ = ["RULES", "Rule", "RuleContext", "Flow", "Pair", "Terms", "Activation", "register", "rule_for",
           "contribute"]
