"""Load the repository's scripts as modules (they are files, not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def generate_script():
    return load_script("generate")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """As in tests/generation: one torch thread (tests/conftest.py)."""
