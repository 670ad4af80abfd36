"""scripts/dfq_table.py: the run plan, derived configs, table rendering on fake records, README update."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest


def _exp(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir(parents=True)
    (exp / "config48.yaml").write_text(
        "a_qconfig: {quantizer: LSQFakeQuantize, observer: MSEObserver, bit: 8, symmetric: False, ch_axis: -1}\n"
        "w_qconfig: {quantizer: AdaRoundFakeQuantize, observer: MSEObserver, bit: 4, symmetric: False, ch_axis: 0}\n"
        "calibrate: {visual: 128, text: 512}\nrecon: {iters: 20000, warm_up: 0.2}\n")
    (exp / "config44.yaml").write_text("root: config48.yaml\na_qconfig: {bit: 4}\n")
    return exp


def _args(tmp_path, **over):
    values = dict(models=["tiny-vit", "tiny-rn"], bits=["W4A8", "W4A4"], schedules=["reference", "batched"],
                  rows=["fp", "real", "gaussian", "baseline", "d4c0", "d4c1", "d4c2", "d4c3"], gen_iter=200,
                  recon_iters=300, num_images=None, seed=0, extra=[], exp_dir=str(_exp(tmp_path)), dry_run=True)
    values.update(over)
    return argparse.Namespace(**values)


def test_plan_covers_every_row_once(dfq_table, tmp_path):
    runs = dfq_table.plan_runs(_args(tmp_path), tmp_path / "work")
    # per model: FP + per bit width (real, gaussian, 5 generated rows x 2 schedules)
    assert len(runs) == 2 * (1 + 2 * (2 + 5 * 2)) and len({r.name for r in runs}) == len(runs)
    for run in runs:
        argv = run.argv
        assert argv[argv.index("--model") + 1] == run.model and argv[argv.index("--output") + 1] == run.output
        assert "--skip_existing" in argv and argv[argv.index("--dataset") + 1] == "digits"
        if run.row == "fp":
            assert "--fp_model" in argv and "--recon" not in argv
        else:
            assert "--recon" in argv and "--q_config" in argv
        assert ("--gen_schedule" in argv) == (run.row in dfq_table.GENERATED)
        assert ("--gen_img" in argv) == (run.row in dfq_table.GENERATED)
        assert ("--dfq" in argv) == (run.row not in ("fp", "real"))
    rn_d4c = [r for r in runs if r.model == "tiny-rn" and r.row == "d4c2" and r.bits == "W4A4" and r.schedule == "batched"]
    assert len(rn_d4c) == 1 and rn_d4c[0].argv[rn_d4c[0].argv.index("--d4c_config") + 1] == "2"
    first_w4a4 = min(i for i, r in enumerate(runs) if r.model == "tiny-vit" and r.bits == "W4A4")
    assert all(r.bits == "W4A8" for r in runs[1:first_w4a4])  # W4A4 then reuses the cached images


def test_reconstruction_length_is_the_flag_and_the_shipped_config_is_used(dfq_table, tmp_path):
    run = next(r for r in dfq_table.plan_runs(_args(tmp_path), tmp_path / "work") if r.bits == "W4A4")
    assert run.argv[run.argv.index("--recon_iters") + 1] == "300"
    assert run.argv[run.argv.index("--q_config") + 1].endswith("config44.yaml")


def test_num_images_sets_calibrate_visual_in_a_derived_config(dfq_table, tmp_path):
    from d4c.quantization.qconfig import load_qconfig

    exp = Path(__file__).resolve().parents[2] / "exp"  # the shipped configs: the loader validates every key
    runs = dfq_table.plan_runs(_args(tmp_path, num_images=32, exp_dir=str(exp)), tmp_path / "work")
    run = next(r for r in runs if r.bits == "W4A4" and r.row == "d4c3")
    derived = run.argv[run.argv.index("--q_config") + 1]
    assert derived.startswith(str(tmp_path / "work"))
    config = load_qconfig(derived, recon_iters=int(run.argv[run.argv.index("--recon_iters") + 1]))
    assert (config.calibrate.visual, config.calibrate.text) == (32, 512) and config.a_qconfig.bit == 4
    assert config.a_qconfig.observer == "MSEObserver" and config.w_qconfig.quantizer == "AdaRoundFakeQuantize"
    assert config.recon.iters == 300 and config.recon.warm_up == 0.2


def _fake_result(path, acc1, method):
    path.write_text(json.dumps({"metrics": {"acc1": acc1, "acc5": 1.0, "mean_per_class_recall": acc1},
                                "method": method, "timings_s": {"generation": 1.5, "total": 9.0}}))


def test_table_renders_fake_records_in_their_cells(dfq_table, tmp_path):
    runs = dfq_table.plan_runs(_args(tmp_path), tmp_path / "work")
    (tmp_path / "work").mkdir(exist_ok=True)
    wanted = {("tiny-vit", "fp", None, None): 0.9685, ("tiny-rn", "d4c3", "W4A4", "batched"): 0.8123,
              ("tiny-rn", "d4c3", "W4A4", "reference"): 0.8012, ("tiny-vit", "gaussian", "W4A8", None): 0.4567}
    for run in runs:
        key = (run.model, run.row, run.bits, run.schedule)
        if key in wanted:
            _fake_result(tmp_path / "work" / f"{run.name}.json", wanted[key], run.row)
    entries = dfq_table.collect(runs)
    table = dfq_table.render_table(entries, note="note line")
    lines = table.splitlines()
    assert lines[0] == "| row | schedule | tiny-vit W4A8 | tiny-vit W4A4 | tiny-rn W4A8 | tiny-rn W4A4 |"
    fp = next(l for l in lines if l.startswith("| FP"))
    assert fp.split(" | ")[2:4] == ["96.85", "96.85"] and fp.endswith("| – | – |")
    gaussian = next(l for l in lines if l.startswith("| Gaussian"))
    assert gaussian == "| Gaussian noise | – | 45.67 | – | – | – |"
    d4c3 = [l for l in lines if l.startswith("| D4C config 3")]
    assert d4c3 == ["| D4C config 3 (PGSI + SCG + PAE) | reference | – | – | – | 80.12 |",
                    "| D4C config 3 (PGSI + SCG + PAE) | batched | – | – | – | 81.23 |"]
    assert len(lines) == 2 + 3 + 5 * 2 + 1 + 2 and lines[-1] == "note line"  # + the EnhancingDFQ row
    assert sum(e.get("acc1") is not None for e in entries) == 4


def test_missing_configs_stop_with_a_clear_message(dfq_table, tmp_path):
    with pytest.raises(SystemExit, match="config48.yaml is missing"):
        dfq_table.plan_runs(_args(tmp_path, exp_dir=str(tmp_path / "nowhere")), tmp_path / "work")


def test_the_enhancing_dfq_row_has_its_own_steps_and_no_schedule(dfq_table, tmp_path):
    args = _args(tmp_path, rows=["enhancing_dfq"], edfq_gen_iter=400, edfq=["width=32"])
    runs = dfq_table.plan_runs(args, tmp_path / "w")
    assert len(runs) == 2 * 2 and {r.schedule for r in runs} == {None}
    for run in runs:
        argv = run.argv
        assert argv[argv.index("--gen_method") + 1] == "enhancing_dfq" and "--gen_schedule" not in argv
        last = len(argv) - 1 - argv[::-1].index("--gen_iter")
        assert argv[last + 1] == "400" and argv[argv.index("--edfq") + 1] == "width=32"  # the last --gen_iter wins
    default = dfq_table.plan_runs(_args(tmp_path / "b", rows=["enhancing_dfq"]), tmp_path / "w")[0].argv
    assert default.count("--gen_iter") == 2 and default[len(default) - default[::-1].index("--gen_iter")] == "600"
    assert default[default.index("--edfq") + 1] == "width=16"
