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


@pytest.fixture(scope="module")
def open_clip_vit():
    """``tiny-vit``'s weights as an open_clip model."""
    return load_clip("tiny-vit", "cpu", model_type="open_clip")


@pytest.fixture(scope="module")
def open_clip_rn():
    """``tiny-rn``'s weights as an open_clip model."""
    return load_clip("tiny-rn", "cpu", model_type="open_clip")


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(1234)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Generation tests run many small ops: one torch thread (tests/conftest.py)."""
