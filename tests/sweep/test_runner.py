"""Running sweeps: done cells skipped, stale results refused, a failing cell never stops the others, a
failed generation skips its cells, Ctrl-C keeps finished cells, and --executor slurm through submitit's
local executor (the real library) gives the same results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from d4c.sweep import jobs as J
from d4c.sweep.cli import main as sweep_main
from d4c.sweep.executors import run_slots
from d4c.sweep.manifest import load_manifest
from d4c.sweep.plan import Planner

REPO = Path(__file__).resolve().parents[2]


def _manifest(tmp_path: Path, models: list[str]) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text("name: t\ntable: main\noutput: '{model}_{method}_s{seed}.json'\n"
                    "fixed: {dataset: digits, num_workers: 0, batch_size: 256}\n"
                    f"grid: {{model: [{', '.join(models)}], row: [fp]}}\n")
    return path


def _headers(log: Path) -> int:
    return sum(line.startswith("=== ") for line in log.read_text().splitlines())


def test_done_cells_are_skipped_and_stale_results_refused(tmp_path, capsys):
    path, out = _manifest(tmp_path, ["tiny-rn", "tiny-vit"]), tmp_path / "out"
    plan = Planner(load_manifest(path), out).plan()
    for cell in plan.cells:  # as d4c-quant would leave them
        cell.output.parent.mkdir(parents=True, exist_ok=True)
        cell.output.write_text(json.dumps({"task": "zeroshot_classification", "model": cell.config.model,
                                           "args": cell.config.as_flags()}))
    assert sweep_main([str(path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 cells, 2 done, 0 to run" in text and "Nothing to run" in text and not (out / "logs").exists()
    record = json.loads(plan.cells[0].output.read_text())
    record["args"]["seed"] = 5
    plan.cells[0].output.write_text(json.dumps(record))
    assert sweep_main([str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "1 result files" in err and "--seed 5 there, 0 here" in err and "--overwrite_stale" in err
    assert sweep_main([str(path), "--out", str(out), "--dry_run"]) == 0
    assert "1 done, 1 to run (1 stale)" in capsys.readouterr().out


def test_sweeps_sharing_a_folder_keep_each_others_cells_in_the_plan(tmp_path, capsys):
    path, out = _manifest(tmp_path, ["tiny-rn", "tiny-vit"]), tmp_path / "out"
    other = tmp_path / "other.yaml"  # another manifest writing into the same folder
    other.write_text(path.read_text().replace("{model}_{method}", "x/{model}_{method}"))
    for manifest in (path, other):
        for cell in Planner(load_manifest(manifest), out).plan().cells:  # done already: nothing runs
            cell.output.parent.mkdir(parents=True, exist_ok=True)
            cell.output.write_text(json.dumps({"task": "zeroshot_classification", "model": cell.config.model,
                                               "args": cell.config.as_flags()}))
    assert sweep_main([str(path), "--out", str(out), "--only", "model=tiny-rn"]) == 0
    assert sweep_main([str(path), "--out", str(out), "--only", "model=tiny-vit"]) == 0
    assert sweep_main([str(other), "--out", str(out), "--only", "model=tiny-vit"]) == 0
    assert capsys.readouterr().out.count("Nothing to run") == 3
    cells = json.loads((out / "plan.json").read_text())["cells"]
    assert sorted(c["name"] for c in cells) == ["tiny-rn_fp_s0", "tiny-vit_fp_s0", "x/tiny-vit_fp_s0"]
    assert not (out / "plan.json.lock").exists()


@pytest.mark.slow
def test_failing_cell_never_stops_the_others_and_rerun_runs_only_what_is_missing(tmp_path, capsys):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    path, out = _manifest(tmp_path, ["tiny-rn", str(bad)]), tmp_path / "out"
    broken = next(c.name for c in Planner(load_manifest(path), out).plan().cells if c.name.startswith("broken"))
    assert sweep_main([str(path), "--out", str(out)]) == 1
    text = capsys.readouterr().out
    good, failed, log = out / "tiny-rn_fp_s0.json", out / f"{broken}.json", out / "logs" / f"{broken}.log"
    assert json.loads(good.read_text())["metrics"]["acc1"] > 0.9 and not failed.exists()
    assert "1 failed, 1 ok" in text and f"{broken}: exit 2, log {log}" in text
    assert "d4c-quant: error:" in log.read_text()
    assert sweep_main([str(path), "--out", str(out)]) == 1  # only the missing cell runs again
    assert "2 cells, 1 done, 1 to run" in capsys.readouterr().out
    assert _headers(out / "logs" / "tiny-rn_fp_s0.log") == 1 and _headers(log) == 2
    assert json.loads((out / "plan.json").read_text())["cells"][0]["command"].startswith("d4c-quant --fp_model")


@pytest.mark.slow
def test_a_failed_generation_skips_its_cells_and_independent_jobs_go_on(tmp_path):
    logs = tmp_path / "logs"
    gen = J.Job("gen", J.GENERATION, ["--model", "tiny-rn", "--dfq", "--gen_img", "--gen_iter", "0", "--gen_only"],
                tmp_path / "gen.json", logs / "gen.log")
    cell = J.Job("cell", J.CELL, ["--model", "tiny-rn", "--dfq", "--gen_img"], tmp_path / "c.json", logs / "c.log",
                 depends="gen")
    other = J.Job("other", J.CELL, ["--model", "tiny-rn", "--fp_model", "--dataset", "digits", "--num_workers", "0",
                                    "--output", str(tmp_path / "o.json")], tmp_path / "o.json", logs / "o.log")
    seen = []
    outcomes = run_slots([gen, cell, other], [{}], seen.append)
    status = {o.name: o.status for o in outcomes}
    assert status == {"gen": "failed", "cell": "skipped", "other": "ok"} and [o.name for o in seen][0] == "gen"
    assert "gen_iter must be positive" in (logs / "gen.log").read_text() and not (logs / "c.log").exists()


@pytest.mark.slow
def test_interrupted_sweep_keeps_finished_cells_and_rerun_completes_the_rest(tmp_path):
    path, out = _manifest(tmp_path, ["tiny-rn", "tiny-vit"]), tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "D4C_OFFLINE": "1"}
    sweep = subprocess.Popen([sys.executable, "-m", "d4c.sweep", str(path), "--out", str(out)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = out / "tiny-rn_fp_s0.json"
    deadline = time.time() + 400
    while not first.exists() and time.time() < deadline and sweep.poll() is None:
        time.sleep(0.2)
    sweep.send_signal(signal.SIGINT)
    _, err = sweep.communicate(timeout=200)
    finished = json.loads(first.read_text())
    assert sweep.returncode in (130, 0) and ("interrupted" in err or sweep.returncode == 0)
    assert not list(out.rglob("*.tmp"))  # nothing half-written
    assert sweep_main([str(path), "--out", str(out)]) == 0
    assert json.loads(first.read_text()) == finished  # the finished cell was not run again
    assert (out / "tiny-vit_fp_s0.json").is_file()


@pytest.mark.slow
def test_slurm_executor_through_submitits_local_executor_gives_the_same_results(tmp_path, capsys):
    pytest.importorskip("submitit", reason="submitit is in requirements.txt")
    path = _manifest(tmp_path, ["tiny-rn", "tiny-vit"])
    assert sweep_main([str(path), "--out", str(tmp_path / "local")]) == 0
    assert sweep_main([str(path), "--out", str(tmp_path / "slurm"), "--executor", "slurm", "--slurm_cluster", "local",
                       "--slurm_array_parallelism", "2", "--slurm_timeout_min", "20"]) == 0
    assert "2 ok" in capsys.readouterr().out
    for name in ("tiny-rn_fp_s0.json", "tiny-vit_fp_s0.json"):
        a, b = (json.loads((tmp_path / d / name).read_text()) for d in ("local", "slurm"))
        assert a["metrics"] == b["metrics"]
    assert list((tmp_path / "slurm" / "slurm").rglob("*_submitted.pkl"))  # submitit's own job files


def test_slurm_without_submitit_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    path = _manifest(tmp_path, ["tiny-rn"])
    assert sweep_main([str(path), "--out", str(tmp_path / "out"), "--executor", "slurm"]) == 2
    err = capsys.readouterr().err
    assert "submitit, which is not installed: pip install submitit" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_preempted_slurm_job_is_resubmitted_as_the_same_command(tmp_path):
    submitit = pytest.importorskip("submitit", reason="submitit is in requirements.txt")
    import pickle

    from d4c.sweep.executors import CommandJob

    job = J.Job("c", J.CELL, ["--model", "tiny-rn", "--fp_model"], tmp_path / "c.json", tmp_path / "c.log")
    again = CommandJob(job).checkpoint()  # what submitit calls on preemption or timeout
    assert isinstance(again, submitit.helpers.DelayedSubmission) and isinstance(again.function, CommandJob)
    assert again.function.job == job and pickle.loads(pickle.dumps(again.function)).job == job
    job.output.write_text("{}")  # a requeued attempt after the result was written does nothing
    assert again.function().status == "ok" and not job.log.exists()
