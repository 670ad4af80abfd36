"""Every benchmark script starts: its imports resolve and its parser (defaults included) builds.

The benchmarks run on a quiet machine, rarely and for long, so a name error in a parser default
would only show there; ``--help`` runs each script's module code and parser in this process.
"""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if "__main__" in p.read_text())


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_script_parses_its_flags(script, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as info:
            runpy.run_path(str(BENCHMARKS / script), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
    assert info.value.code in (0, None)
    assert "usage:" in capsys.readouterr().out


def test_every_benchmark_script_is_checked():
    assert len(SCRIPTS) >= 12 and "bench_mse_search.py" in SCRIPTS


def test_busy_processes_run_during_the_block_and_are_gone_after(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    busy_processes = runpy.run_path(str(BENCHMARKS / "bench_calibration_full.py"))["busy_processes"]
    seen = []
    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        seen.append(proc)
        return proc

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    with busy_processes(2):
        assert len(seen) == 2 and all(proc.poll() is None for proc in seen)  # both still running
    assert all(proc.poll() is not None for proc in seen)  # killed and reaped
    with busy_processes(0):
        assert len(seen) == 2  # none started
