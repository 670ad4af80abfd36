"""Shared fixtures: tiny models, no network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import d4c  # noqa: F401  (silences clip's pkg_resources notice before clip is imported)
from d4c.models.architectures import ClipArchitecture

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_QUANT = REPO_ROOT / "d4c" / "solver" / "test_quant.py"

# Smallest shapes clip.model.build_model can rebuild from a state dict (heads = width // 64).
MICRO_VIT = ClipArchitecture(32, 32, 1, 64, 16, 64, 1)
MICRO_RN = ClipArchitecture(32, 32, (1, 1, 1, 1), 4, None, 64, 1)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped, with the reason, on machines without a CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test may reach the network: every download attempt is refused up front."""
    monkeypatch.setenv("D4C_OFFLINE", "1")


TEST_THREADS_ENV = "D4C_TEST_THREADS"


@pytest.fixture
def one_thread():
    """One torch intra-op thread, restored afterwards (test folders of many tiny ops use it autouse).

    Tensors that small gain nothing from intra-op threads, and on a loaded 2-core machine every
    parallel region can wait for a descheduled thread (up to ~100x slower). ``D4C_TEST_THREADS=N``
    runs these tests with N threads instead (the portability check of several thread counts)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get(TEST_THREADS_ENV, "1")))
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def micro_vit() -> torch.nn.Module:
    return MICRO_VIT.build(seed=0)


@pytest.fixture
def micro_rn() -> torch.nn.Module:
    return MICRO_RN.build(seed=0)


def run_cli(*args: str, cwd: Path = REPO_ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the paper's entry point in a subprocess, offline."""
    full_env = {**os.environ, "D4C_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, str(TEST_QUANT), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def fast_qconfig(tmp_path):
    """Write a config inheriting ``exp/<base>.yaml`` with min-max observers (fast calibration); return its path.

    Keyword arguments override single keys: ``fast_qconfig("config48", recon={"iters": 50})``.
    """

    def make(base: str = "config48", **sections) -> str:
        from d4c.quantization.qconfig import write_derived_qconfig

        overrides = {"a_qconfig": {"observer": "MinMaxObserver"}, "w_qconfig": {"observer": "MinMaxObserver"}}
        for section, keys in sections.items():
            overrides.setdefault(section, {}).update(keys)
        path = tmp_path / f"{base}_minmax_{len(list(tmp_path.glob('*.yaml')))}.yaml"
        return str(write_derived_qconfig(path, REPO_ROOT / "exp" / f"{base}.yaml", overrides))

    return make
