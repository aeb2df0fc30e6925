"""Pipelines on top of the engine: run_task, generation with per-token relevance, the auto sampler."""

from .processors import GenerationSettings
from .tasks import detect_task, run_task

__all__ = ["run_task", "detect_task", "GenerationSettings"]
