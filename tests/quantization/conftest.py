"""Quantization tests run many small ops (range searches, tiny layers): one torch thread (tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """As in tests/generation."""
