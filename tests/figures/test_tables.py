"""``tables``: mean and standard deviation over seeds against numpy, one panel per dataset, CSV input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from d4c.figures import tables
from d4c.figures.cli import main
from d4c.figures.sources import TABLE_COLUMNS
from tests.figures.helpers import write_result

ACC = {("d4c3", (4, 4), True): [0.71, 0.75, 0.80], ("d4c3", (4, 8), True): [0.95, 0.94, 0.96],
       ("pse", (4, 4), True): [0.60, 0.62, 0.70], ("pse", (4, 4), False): [0.50, 0.55, 0.52]}


def _results(folder, dataset="digits", model="tiny-vit"):
    for (method, bits, recon), values in ACC.items():
        for seed, acc in enumerate(values):
            write_result(folder, f"{dataset}_{method}_{bits[0]}{bits[1]}_{recon}_{seed}", model, dataset, method, acc,
                         seed, bits, recon)
    write_result(folder, f"{dataset}_fp", model, dataset, "fp", 0.97, 0, None, False)


def test_the_cli_aggregates_like_numpy_with_one_panel_per_dataset(tmp_path):
    _results(tmp_path / "r")
    _results(tmp_path / "r", dataset="cifar10")
    out = tmp_path / "tables.png"
    assert main(["tables", "--results", str(tmp_path / "r"), "-o", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    assert sorted(data["datasets"]) == ["cifar10", "digits"]
    digits = data["datasets"]["digits"]
    assert digits["bits"] == ["W4A4", "W4A8"] and digits["fp"]["mean"] == pytest.approx(97.0)
    for (method, bits, recon), values in ACC.items():
        point = digits["series"][f"{method}|{'recon' if recon else 'norecon'}"]["points"][f"W{bits[0]}A{bits[1]}"]
        assert point["mean"] == pytest.approx(100 * np.mean(values))
        assert point["std"] == pytest.approx(100 * np.std(values, ddof=1))
        assert point["seeds"] == [0, 1, 2]

    figure, _ = tables.tables_figure([r for r in _flat(tmp_path / "r")], "tiny-vit")
    assert len(figure.axes) == 2
    assert all(ax.get_xlabel() == "bit width (weights, activations)" and ax.get_ylabel() == "zero-shot top-1 (%)"
               for ax in figure.axes)
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["W4A4", "W4A8"]
    assert len(figure.axes[0].containers) == 3  # one error-bar series per (method, recon)


def _flat(folder):
    from d4c.figures.sources import flat_row, load_results
    return [flat_row(r) for r in load_results([folder])]


def test_recon_selects_the_runs(tmp_path):
    _results(tmp_path)
    assert set(tables.aggregate(_flat(tmp_path), "off")["digits"]["series"]) == {"pse|norecon"}
    assert set(tables.aggregate(_flat(tmp_path), "on")["digits"]["series"]) == {"d4c3|recon", "pse|recon"}


def test_a_results_csv_is_the_alternative_input_and_selects_the_model(tmp_path):
    _results(tmp_path / "vit")
    rows = _flat(tmp_path / "vit") + [dict(r, model="tiny-rn", acc1=0.5) for r in _flat(tmp_path / "vit")]
    path = tmp_path / "all.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*TABLE_COLUMNS, "extra"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**{k: ("" if r[k] is None else r[k]) for k in TABLE_COLUMNS}, "extra": "x"})
    from_json = tmp_path / "a.png"
    from_csv = tmp_path / "b.png"
    assert main(["tables", "--results", str(tmp_path / "vit"), "-o", str(from_json)]) == 0
    assert main(["tables", "--csv", str(path), "--model", "tiny-vit", "-o", str(from_csv)]) == 0
    assert json.loads(from_json.with_suffix(".json").read_text())["datasets"] == \
        json.loads(from_csv.with_suffix(".json").read_text())["datasets"]


def _sweep_folder(folder):
    """A sweep's dfq folder: two schedules of D4C-3 at W4A4, Gaussian noise (no schedule), a --gen_only record."""
    args = {"reference": {"gen_schedule": "reference", "recon_iters": 100},
            "batched": {"gen_schedule": "batched", "recon_iters": 100}}
    for seed, acc in enumerate([0.70, 0.74]):
        write_result(folder, f"d4c3_reference_s{seed}", method="d4c3", acc1=acc, seed=seed, bits=(4, 4),
                     args=args["reference"])
        write_result(folder, f"gaussian_s{seed}", method="gaussian", acc1=acc - 0.3, seed=seed, bits=(4, 4),
                     args=args["reference"])
    write_result(folder, "d4c3_batched_s0", method="d4c3", acc1=0.10, seed=0, bits=(4, 4), args=args["batched"])
    write_result(folder, "d4c3_steps500_s0", method="d4c3", acc1=0.20, seed=0, bits=(4, 4),
                 args={"gen_schedule": "reference", "recon_iters": 500})
    generation = {"dataset": "cifar10", "model": "tiny-vit", "task": "generation", "metrics": {}, "method": "d4c3",
                  "recon": False, "seed": 0, "q_config": None, "args": args["reference"]}
    (folder / "generations").mkdir(parents=True)
    (folder / "generations" / "d4c3_gen.json").write_text(json.dumps(generation))


def test_a_sweep_folder_skips_generation_records_chooses_schedule_and_steps_and_refuses_duplicates(tmp_path, capsys):
    _sweep_folder(tmp_path / "dfq")
    out = tmp_path / "t.png"
    assert main(["tables", "--results", str(tmp_path / "dfq"), "-o", str(out)]) == 2  # 100 and 500 steps
    err = capsys.readouterr().err
    assert "d4c3_reference_s0.json" in err and "d4c3_steps500_s0.json" in err and "--recon_iters" in err
    assert not out.exists()
    assert main(["tables", "--results", str(tmp_path / "dfq"), "--recon_iters", "100", "-o", str(out)]) == 0
    series = json.loads(out.with_suffix(".json").read_text())["datasets"]["digits"]["series"]
    assert sorted(series) == ["d4c3|recon", "gaussian|recon"]  # no cifar10 panel: the generation record is skipped
    assert series["d4c3|recon"]["points"]["W4A4"]["values"] == pytest.approx([70.0, 74.0])
    assert main(["tables", "--results", str(tmp_path / "dfq"), "--recon_iters", "100", "--gen_schedule", "batched",
                 "-o", str(out)]) == 0
    series = json.loads(out.with_suffix(".json").read_text())["datasets"]["digits"]["series"]
    assert series["d4c3|recon"]["points"]["W4A4"]["values"] == pytest.approx([10.0])
    assert series["gaussian|recon"]["points"]["W4A4"]["values"] == pytest.approx([40.0, 44.0])  # no schedule
    generation = tmp_path / "dfq" / "generations" / "d4c3_gen.json"
    assert main(["tables", "--results", str(generation), "-o", str(out)]) == 2
    assert "is a generation record (--gen_only)" in capsys.readouterr().err


def test_the_aggregators_csv_columns(tmp_path):
    """A CSV as d4c-results writes it: its columns (bits, file, task, gen_schedule, recon_iters, arg_*) in its order."""
    columns = ["file", "sweep", "block", "cell", "task", "model", "dataset", "method", "generation_method", "recon",
               "recon_iters", "gen_iter", "gen_schedule", "gen_groups", "seed", "q_config", "bits", "w_bit", "a_bit",
               "acc1", "acc5", "arg_seed"]
    rows = [dict(file="g.json", task="generation", model="tiny-vit", dataset="", method="d4c3", recon="False",
                 gen_schedule="reference", seed="0", bits="", acc1=""),
            dict(file="fp.json", task="zeroshot_classification", model="tiny-vit", dataset="digits", method="fp",
                 recon="False", seed="0", bits="FP", acc1="0.97"),
            dict(file="a.json", task="zeroshot_classification", model="tiny-vit", dataset="digits", method="d4c3",
                 recon="True", recon_iters="100", gen_schedule="reference", seed="0", bits="W4A4", w_bit="4",
                 a_bit="4", acc1="0.8"),
            dict(file="b.json", task="zeroshot_classification", model="tiny-vit", dataset="digits", method="d4c3",
                 recon="True", recon_iters="100", gen_schedule="batched", seed="0", bits="W4A4", w_bit="4",
                 a_bit="4", acc1="0.1")]
    path = tmp_path / "results.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "t.png"
    assert main(["tables", "--csv", str(path), "-o", str(out)]) == 0
    digits = json.loads(out.with_suffix(".json").read_text())["datasets"]
    assert list(digits) == ["digits"] and digits["digits"]["fp"]["mean"] == pytest.approx(97.0)
    assert digits["digits"]["series"]["d4c3|recon"]["points"]["W4A4"]["values"] == pytest.approx([80.0])
