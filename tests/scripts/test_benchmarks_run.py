"""benchmarks/run.py: figures from the benchmark JSON files compared with the targets."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"


@pytest.fixture()
def bench_run(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("benchmarks_run", RUN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path)
    return module


def _write(path: Path, name: str, doc: dict) -> None:
    (path / f"{name}.json").write_text(json.dumps(doc))


def test_targets_are_met_or_missed_from_the_measured_figures(bench_run, tmp_path):
    _write(tmp_path, "calibration", {"environment": {"device": "cpu"}, "records": [
        {"model": "random:small-vit", "observer": "MSEObserver", "activation_s": 45.0},
        {"model": "random:small-vit", "observer": "MinMaxObserver", "activation_s": 0.1},
        {"model": "random:small-rn", "observer": "MSEObserver", "activation_s": 100.0}]})
    _write(tmp_path, "generation", {"rows": [
        {"model": "random:small-vit", "method": "baseline", "resolved": "pse", "schedule": "reference",
         "seconds_per_iteration": 0.85},
        {"model": "random:small-vit", "method": "baseline", "resolved": "pse", "schedule": "batched",
         "seconds_per_iteration": 0.01},
        {"model": "random:small-rn", "method": "d4c0", "resolved": "d4c", "schedule": "reference",
         "seconds_per_iteration": 0.86}]})
    _write(tmp_path, "reconstruction", {"records": [
        {"model": "random:small-vit", "kind": "linear", "s_per_iter": 0.004},
        {"model": "random:small-vit", "kind": "linear", "s_per_iter": 0.006}]})
    rows = {r["what"]: r for r in bench_run.compare()}
    vit_cal = rows["random:small-vit activation observers (MSEObserver)"]
    assert vit_cal["speedup"] == pytest.approx(4500 / 45, abs=0.01) and vit_cal["met"] is True
    rn_cal = rows["random:small-rn activation observers (MSEObserver)"]
    assert rn_cal["speedup"] == pytest.approx(36.0) and rn_cal["met"] is False
    pse = rows["random:small-vit pse, reference schedule"]
    assert pse["measured"] == 0.85 and pse["met"] is True  # 2.8x >= 2.5x; the batched row is not used
    assert rows["random:small-rn d4c0, reference schedule"]["met"] is False  # 1.0x < 1.2x
    assert rows["random:small-rn bns, reference schedule"]["measured"] is None  # not measured: no verdict
    recon = next(r for what, r in rows.items() if what.startswith("random:small-vit linear"))
    assert recon["measured"] == pytest.approx(0.005) and recon["met"] is True  # mean 0.005: 1.78x >= 1.5x
    table = bench_run.render(list(rows.values()), {"device": "cpu"})
    assert "| calibration | random:small-rn activation observers (MSEObserver) | 100 s | 3600 s | 36.00× | ≥ 50× | **no** |" \
        in table
