"""Tiny inputs of the figure tests, made the way the pipeline makes them (once per session).

* a pseudo-image cache of ``tiny-vit`` with PSE, D4C config 0 and D4C config 3 (4 images, 3 iterations);
* two saved quantized ``tiny-vit`` models (W4A8 and W8A8, min-max observers, calibrated on noise);
* result files written as the pipeline writes them, with numbers chosen by the tests.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from d4c.data.prompts import DIGITS_PROMPTS, load_prompt_file
from d4c.generation.cache import PseudoImageCache
from d4c.generation.rows import settings_for_row
from d4c.generation.settings import GenerationSettings
from d4c.generation.synthesis import synthesize
from d4c.models.loading import load_clip
from tests.figures.helpers import make_state

ROWS = ("pse", "d4c0", "d4c3")
SETTINGS = GenerationSettings(num_images=4, gen_batch_size=2, gen_iter=3)


@contextlib.contextmanager
def _threads(count: int):
    """Session fixtures are made before the per-test one-thread fixture: pin the threads here too."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one torch thread (tests/conftest.py)."""


@pytest.fixture(scope="session")
def vit():
    return load_clip("tiny-vit", "cpu")


@pytest.fixture(scope="session")
def prompts():
    return load_prompt_file(str(DIGITS_PROMPTS)).prompts()


@pytest.fixture(scope="session")
def figure_cache(tmp_path_factory, vit, prompts):
    """A cache folder holding PSE, D4C-0 and D4C-3 images of tiny-vit; returns (folder, {row: outcome})."""
    folder = tmp_path_factory.mktemp("cache")
    cache = PseudoImageCache(folder)
    with _threads(1):
        outcomes = {row: synthesize(settings_for_row(row, SETTINGS), vit, "cpu", prompts, cache=cache,
                                    progress=False) for row in ROWS}
    return folder, outcomes


@pytest.fixture(scope="session")
def saved_states(tmp_path_factory, vit):
    """Two saved quantized tiny-vit models: (W4A8 Gaussian, W8A8 D4C-3) paths."""
    folder = tmp_path_factory.mktemp("states")
    with _threads(1):
        return make_state(vit, folder, "48", "gaussian"), make_state(vit, folder, "88", "d4c3")
