"""Fixtures of the generation tests: the offline zoo models, loaded once per session."""

from __future__ import annotations

import pytest
import torch

from d4c.models.loading import load_clip


@pytest.fixture(scope="session")
def tiny_vit():
    return load_clip("tiny-vit", "cpu")


@pytest.fixture(scope="session")
def tiny_rn():
    return load_clip("tiny-rn", "cpu")


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(1234)


@pytest.fixture(autouse=True)
def _one_thread():
    """Generation tests run many small ops; on a loaded 2-core machine two OpenMP threads can be ~100x
    slower than one (each parallel region waits for a descheduled thread). One thread, restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
