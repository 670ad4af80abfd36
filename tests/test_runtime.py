"""Seeding and device selection."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from d4c.errors import D4CError
from d4c.io import atomic_path, write_json
from d4c.runtime import resolve_device, seed_everything
from tests.numerics import assert_relative_close


def _draw():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_seed_everything_seeds_python_numpy_and_torch():
    seed_everything(123)
    first = _draw()
    seed_everything(123)
    assert _draw() == first
    seed_everything(124)
    assert all(a != b for a, b in zip(_draw(), first))


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(D4CError, match="^device must be one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(D4CError, match="no CUDA device"):
            resolve_device("cuda")


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "result.json"
    write_json(path, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("crash mid-write")
    assert path.read_text().strip().startswith("{") and '"a": 1' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_atomic_writes_respect_the_umask(tmp_path):
    import os
    import stat

    path = tmp_path / "out.json"
    write_json(path, {})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_adam_helper_matches_the_default_update():
    """Whichever implementation this torch picks (fused where it has one), the update is Adam's."""
    from d4c.runtime import adam

    torch.manual_seed(0)
    start = torch.randn(4, 3, 8, 8)
    grads = [torch.randn_like(start) for _ in range(5)]
    fast, plain = start.clone().requires_grad_(True), start.clone().requires_grad_(True)
    optimizers = [adam([fast], 0.1), torch.optim.Adam([plain], lr=0.1)]
    for grad in grads:
        for tensor, optimizer in zip((fast, plain), optimizers):
            tensor.grad = grad.clone()
            optimizer.step()
    assert not torch.equal(fast, start)
    assert_relative_close(fast, plain, 1e-6, "parameters after five steps")
