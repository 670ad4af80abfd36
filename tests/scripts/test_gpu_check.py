"""benchmarks/gpu_check.sh --cpu: every part of the prepared GPU check runs, at tiny sizes, and reports."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu(tmp_path):
    out = tmp_path / "check"
    done = subprocess.run([str(SCRIPT), "--cpu", str(out)], capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "D4C_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    record = json.loads((out / "gpu_check.json").read_text())
    assert record["mode"] == "cpu"
    assert [p["part"] for p in record["parts"]] == ["tests", "benchmarks", "whole_run", "precision"]
    assert all(p["status"] == "ok" for p in record["parts"])
    results = record["results"]
    assert {"evaluation", "calibration", "generation", "reconstruction", "whole_run", "precision",
            "summary"} <= set(results)
    whole = results["whole_run"]["records"][0]
    assert whole["model"] == "tiny-vit" and set(whole["paper_s"]) >= {"generation", "reconstruction", "total"}
    assert all(stage in whole["peak_memory_mb"] for stage in ("generation", "calibration", "reconstruction"))
    precision = {r["variant"]: r for r in results["precision"]["records"]}
    assert set(precision) == {"fp32", "bf16"} and 0.0 <= precision["bf16"]["acc1"] <= 1.0
    assert results["reconstruction"]["records"][0]["gflop"] > 0
    log = (out / "gpu_check.log").read_text()
    assert "===== whole_run: ok" in log and "needs a CUDA device" in log  # the CUDA-only tests were collected
