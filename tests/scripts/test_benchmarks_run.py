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
    _write(tmp_path, "reconstruction", {"environment": {"device": "cpu"}, "records": [
        {"model": "random:small-vit", "kind": "qkv", "eager_s": 0.004, "compiled_s": 0.002, "compile_s": 10.0,
         "eager_machine_fraction": 0.5, "compiled_machine_fraction": 0.9, "reference_s": 0.0089},
        {"model": "random:small-vit", "kind": "qkv", "eager_s": 0.006, "compiled_s": 0.004, "compile_s": 0.0,
         "eager_machine_fraction": 0.3, "compiled_machine_fraction": 0.5, "reference_s": 0.0089},
        {"model": "random:small-vit", "kind": "mlp", "eager_s": 0.03, "eager_machine_fraction": 0.6},
        {"model": "random:small-vit", "kind": "linear", "s_per_iter": 0.1}]})  # an older file's record: skipped
    _write(tmp_path, "whole_run", {"records": [
        {"model": "random:small-vit", "gen_iter": 2, "recon_iters": 5, "peak_memory_mb": {"generation": {"rss": 900.0}},
         "stages_s": {"generation": 10.0, "calibration": 5.0, "reconstruction": 20.0, "evaluation": 3.0,
                      "total": 40.0},
         "paper_s": {"generation": 5000.0, "reconstruction": 40000.0, "total": 45020.0}}]})
    rows = {r["what"]: r for r in bench_run.compare()}
    vit_cal = rows["random:small-vit activation observers (MSEObserver)"]
    assert vit_cal["speedup"] == pytest.approx(4500 / 45, abs=0.01) and vit_cal["met"] is True
    rn_cal = rows["random:small-rn activation observers (MSEObserver)"]
    assert rn_cal["speedup"] == pytest.approx(36.0) and rn_cal["met"] is False
    pse = rows["random:small-vit pse, reference schedule"]
    assert pse["measured"] == 0.85 and pse["met"] is True  # 2.8x >= 2.5x; the batched row is not used
    assert rows["random:small-rn d4c0, reference schedule"]["met"] is False  # 1.0x < 1.2x
    assert rows["random:small-rn bns, reference schedule"]["measured"] is None  # not measured: no verdict
    eager = rows["random:small-vit q/k/v units, eager"]
    assert eager["measured"] == pytest.approx(0.005) and eager["met"] is True  # mean 0.005: 1.78x >= 1.5x
    assert eager["machine_fraction"] == pytest.approx(0.4)
    compiled = next(r for what, r in rows.items() if what.startswith("random:small-vit q/k/v units, compiled"))
    # mean step 0.003 plus 10 s of compilation over 2 units x 20,000 steps
    assert compiled["measured"] == pytest.approx(0.003 + 10.0 / 20000 / 2) and compiled["met"] is True
    mlp = rows["random:small-vit MLP units (c_fc, c_proj), eager"]
    assert mlp["reference"] is None and mlp["met"] is None and mlp["machine_fraction"] == pytest.approx(0.6)
    assert not any("linear" in what for what in rows)
    whole = [r for r in rows.values() if r["stage"] == "whole run"]
    assert [r["measured"] for r in whole] == [40.0, 45020.0]
    table = bench_run.render(list(rows.values()), {"device": "cpu", "load_average": [1.0, 1.5, 2.0]}, 190.0)
    assert "| calibration | random:small-rn activation observers (MSEObserver) | 100 s | 3600 s | 36.00× | ≥ 50× | **no** | – |" \
        in table
    assert "| 40 % |" in table and "load average 1.0 / 1.5 / 2.0" in table and "190 GFLOP/s" in table
