"""Seed-compatible import path: ``from dl_backtrace.pytorch_backtrace import DLBacktrace``."""

from ..backtrace import DLBacktrace, MoEBacktrace
from ..errors import UnsupportedOpError
from ..pipelines.sampler import DLBAutoSampler

__all__ = ["DLBacktrace", "MoEBacktrace", "DLBAutoSampler", "UnsupportedOpError"]
