"""Reconstruction tests run thousands of steps on micro models: one intra-op thread is fastest there."""

import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Thousands of steps on micro models: one torch thread (tests/conftest.py)."""
