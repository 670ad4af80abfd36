"""scripts/ptq_table.py: the run plan (reusing finished runs), the rendered table, the README update."""

from __future__ import annotations

import argparse
import json

import pytest


def _args(tmp_path, **over):
    values = dict(models=["tiny-vit", "tiny-rn"], configs=["config44", "config48", "config66", "config88"],
                  recon_iters=100, extra_recon_iters=[500], extra_recon_configs=["config48"], seed=0,
                  observer=None, results_dir=str(tmp_path / "ptq"))
    values.update(over)
    return argparse.Namespace(**values)


def _record(acc1: float) -> dict:
    return {"metrics": {"acc1": acc1}, "timings_s": {"calibration": 2.0, "reconstruction": 30.0},
            "q_config": "x.yaml"}


def test_missing_cells_run_in_order_and_finished_ones_are_reused(ptq_table, tmp_path, monkeypatch):
    calls = []

    def fake_cli(argv):
        out = argv[argv.index("--output") + 1]
        calls.append(argv)
        with open(out, "w") as handle:
            json.dump(_record(0.5 + 0.001 * len(calls)), handle)
        return 0

    monkeypatch.setattr(ptq_table, "cli_main", fake_cli)
    args = _args(tmp_path)
    (tmp_path / "ptq").mkdir()
    (tmp_path / "ptq" / "tiny-rn_config48_real_recon500.json").write_text(json.dumps(_record(0.99)))
    table = ptq_table.run_all(args)
    # 2 FP + 2 models x 2 data x (4 no-recon + 4 recon + 1 extra) - 1 already there
    assert len(calls) == 2 + 2 * 2 * 9 - 1
    assert table["tiny-rn"][("config48", "real", 500)]["metrics"]["acc1"] == 0.99
    for argv in calls:
        assert "--skip_existing" in argv and argv[argv.index("--dataset") + 1] == "digits"
        out = argv[argv.index("--output") + 1]
        if "recon500" in out:
            assert argv[argv.index("--recon_iters") + 1] == "500" and "config48" in out
        elif "recon100" in out:
            assert argv[argv.index("--recon_iters") + 1] == "100"
        else:
            assert "--recon" not in argv
        assert ("--dfq" in argv) == ("gaussian" in out)
    first_recon = next(i for i, a in enumerate(calls) if "--recon" in a)
    assert "config48" in calls[first_recon][calls[first_recon].index("--output") + 1]  # W4A8 reconstructed first
    assert all("--recon" in a for a in calls[first_recon:])
    assert all("recon500" in a[a.index("--output") + 1] for a in calls[-3:])  # the long runs come last

    calls.clear()
    again = ptq_table.run_all(args)  # everything exists now: nothing runs, the same records come back
    assert calls == [] and again == table


def test_table_rows_cells_and_dashes(ptq_table, tmp_path):
    args = _args(tmp_path, models=["tiny-vit"])
    cells = {"fp": _record(0.9685)}
    for i, config in enumerate(args.configs):
        for data in ("real", "gaussian"):
            cells[(config, data, 0)] = _record(0.90 + 0.01 * i)
            cells[(config, data, 100)] = _record(0.80 + 0.01 * i)
    cells[("config48", "real", 500)] = _record(0.9610)
    cells[("config48", "gaussian", 500)] = _record(0.9462)
    block = ptq_table.markdown({"tiny-vit": cells}, args)
    rows = [line for line in block.splitlines() if line.startswith("| `tiny-vit` | 96.85")]
    assert len(rows) == 2 * 3
    assert rows[0].split(" | ")[3:] == ["no", "90.00", "91.00", "92.00", "93.00 |"]
    assert rows[1].split(" | ")[3:] == ["100 steps", "80.00", "81.00", "82.00", "83.00 |"]
    assert rows[2].split(" | ")[3:] == ["500 steps", "—", "96.10", "—", "— |"]
    assert "Gaussian noise" in rows[5] and "94.62" in rows[5]
    assert "--extra_recon_iters 500" in block and "2.0 / 30" in block


def test_readme_update_replaces_only_the_block(ptq_table, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{ptq_table.START}\nold\n{ptq_table.END}\noutro\n")
    ptq_table.update_readme("new table", readme)
    assert readme.read_text() == f"intro\n{ptq_table.START}\nnew table\n{ptq_table.END}\noutro\n"
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]  # no temporary file left behind
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="markers"):
        ptq_table.update_readme("x", readme)
    assert readme.read_text() == "no markers here\n"
