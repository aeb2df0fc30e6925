"""Test configuration: every test starts from the same global RNG state (module initialisation uses it)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    torch.manual_seed(0)
