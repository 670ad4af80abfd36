"""Reconstruction tests run thousands of steps on micro models: one intra-op thread is fastest there."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    # Tensors this small gain nothing from intra-op threads, and on a shared CPU the thread
    # synchronisation of every tiny op costs more than the op itself.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
