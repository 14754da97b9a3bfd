"""Shared pytest fixtures and the CUDA skip rule."""
from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked `cuda` when no GPU is present, saying why."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (no GPU here); run on the device with `pytest -m cuda`")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
