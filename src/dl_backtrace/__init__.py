"""dl_backtrace: explain any PyTorch model by relevance propagation (the DLBacktrace method).

Seed-compatible: ``from dl_backtrace.pytorch_backtrace import DLBacktrace``.
Modern: ``dl_backtrace.Explainer(model, example_inputs).attribute(x, target=3)``.
"""

import logging

from .backtrace import DLBacktrace, MoEBacktrace
from .errors import UnsupportedOp, UnsupportedOpError
from .explainer import Explainer, coverage, explain
from .pipelines.sampler import DLBAutoSampler
from .relevance_io import load_relevance, save_relevance
from .results import Relevance
from .rules.registry import Pair

__version__ = "0.1.0"
__all__ = ["DLBacktrace", "MoEBacktrace", "DLBAutoSampler", "Explainer", "explain", "coverage", "Relevance", "Pair",
           "save_relevance", "load_relevance", "UnsupportedOp",
           "UnsupportedOpError", "__version__"]

logging.getLogger(__name__).addHandler(logging.NullHandler())
