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


@pytest.fixture(autouse=True)
def nondeterministic_algorithms_after_each_test():
    """A CPU stage run turns on torch's deterministic algorithms for its process (`seed_everything`); tests share one
    process, so each test ends with them off again, as a CUDA run has them (CUDA graphs capture their kernels)."""
    yield
    torch.use_deterministic_algorithms(False)
