"""d4c-results: every result as a CSV row with the documented columns, the paper's layout with mean ± std over
seeds and D4C's gain checked against numpy, missing cells as —, and the README's zoo blocks written between
their markers (nothing else in the file touched; a file without the markers left alone)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from d4c.io import write_json
from d4c.quantization.qconfig import load_qconfig
from d4c.results import StageTimer, build_record
from d4c.sweep.manifest import load_manifest
from d4c.sweep.plan import Cell, Plan, Planner
from d4c.tables.cli import main as results_main
from d4c.tables.collect import COLUMNS
from d4c.tables.render import MISSING

REPO = Path(__file__).resolve().parents[2]
OLD = "2026-01-01T00:00:00+00:00"
NEW = "2026-01-02T00:00:00+00:00"


def _write_record(cell: Cell, acc1: float, created: str = NEW, path: Path | None = None) -> None:
    """A result file as the pipeline writes it, with the given accuracy."""
    config = cell.config
    quant, extra = None, {}
    if not config.fp_model:
        qconfig = load_qconfig(config.q_config, config.recon_iters)
        quant = {"path": config.q_config, **qconfig.as_dict()}
        extra["calibration_data"] = {"images": qconfig.calibrate.visual, "texts": qconfig.calibrate.text}
        settings = config.pseudo_image_settings(qconfig.calibrate.visual)
        if config.gen_img and settings is not None:
            row = {"tiny-rn": "bns", "tiny-vit": "pse"}[config.model] if config.row == "baseline" else config.row
            extra["pseudo_images"] = {"row": row, "num_images": settings.num_images, "gen_groups": 1,
                                      "from_cache": True, "key": "k", "generation_seconds": 1.0}
    record = build_record(config, {"acc1": acc1, "acc5": 1.0, "mean_per_class_recall": acc1}, StageTimer(),
                          torch.device("cpu"), quant_config=quant, extra=extra)
    record["timings_s"] = {"load_model": 0.1, "generation": None, "calibration": 2.0, "reconstruction": 30.0,
                           "evaluation": 1.0, "total": 33.1}
    record["created"] = created
    write_json(path or cell.output, record)


def _plan(manifest: Path, out: Path) -> Plan:
    plan = Planner(load_manifest(manifest), out).plan()
    plan.write_configs()
    write_json(out / "plan.json", plan.as_dict())
    return plan


def _cells_of(markdown: str, label: str) -> list[str]:
    """The value cells of the first table line whose label cells start with ``label``."""
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")][len(label.split(" | ")):]


def _parse(cell: str) -> tuple[float, float | None]:
    mean, _, std = cell.partition(" ± ")
    return float(mean), float(std) if std else None


def test_main_layout_mean_std_and_gain_against_numpy(tmp_path, capsys):
    manifest = tmp_path / "m.yaml"
    manifest.write_text("name: t\ntable: main\nseeds: [0, 1, 2]\noutput: '{model}/{method}_s{seed}.json'\n"
                        "fixed: {dataset: digits, q_config: exp/config48.yaml, recon: true}\n"
                        "grid: {model: [tiny-vit, tiny-rn], row: [fp, real, gaussian, baseline, d4c3]}\n"
                        "collapse: [{where: {row: fp}, flags: [q_config, recon]}]\n")
    out = tmp_path / "out"
    plan = _plan(manifest, out)
    rng = np.random.default_rng(0)
    acc: dict[tuple[str, str], list[float]] = {}
    for cell in plan.cells:
        if (cell.config.model, cell.config.row) == ("tiny-rn", "gaussian"):
            continue  # a missing cell
        value = float(rng.uniform(0.5, 1.0))
        acc.setdefault((cell.config.model, cell.config.row), []).append(value)
        _write_record(cell, value)
    # an older run of the same seed elsewhere in the folder: the newest run of a seed counts
    stale_cell = next(c for c in plan.cells if (c.config.model, c.config.row, c.config.seed) == ("tiny-vit", "d4c3", 1))
    _write_record(stale_cell, 0.01, created=OLD, path=out / "old" / "again.json")

    assert results_main(["build", str(out), "--md", str(tmp_path / "main.md")]) == 0  # layout from plan.json
    table = (tmp_path / "main.md").read_text()
    assert capsys.readouterr().out == table
    assert table.startswith("**W4A8** — zero-shot top-1 (%), mean ± std over seeds 0, 1, 2")
    assert "| method | tiny-vit digits | tiny-rn digits |" in table
    for label, row in (("Real-data PTQ", "real"), ("BNS / PSE", "baseline"), ("D4C", "d4c3"), ("FP", "fp")):
        for model, got in zip(("tiny-vit", "tiny-rn"), _cells_of(table, label)):
            values = 100 * np.array(acc[(model, row)])
            mean, std = _parse(got)
            assert abs(mean - values.mean()) <= 0.005 + 1e-9 and abs(std - values.std(ddof=1)) <= 0.005 + 1e-9
    assert _cells_of(table, "Gaussian noise")[1] == MISSING
    for model, got in zip(("tiny-vit", "tiny-rn"), _cells_of(table, "D4C − BNS / PSE")):
        gain = 100 * (np.mean(acc[(model, "d4c3")]) - np.mean(acc[(model, "baseline")]))
        assert got.startswith(("+", "-")) and abs(float(got) - gain) <= 0.005 + 1e-9
    assert "(no recon)" not in table  # rows without runs are left out

    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    header = list(rows[0])
    assert header[:len(COLUMNS)] == list(COLUMNS) and header[len(COLUMNS):] == sorted(header[len(COLUMNS):])
    assert all(h.startswith("arg_") for h in header[len(COLUMNS):]) and "arg_gen_iter" in header
    assert len(rows) == len(plan.cells) - 3 + 1
    by_file = {r["file"]: r for r in rows}
    d4c = by_file[str(stale_cell.output)]
    assert (d4c["sweep"], d4c["block"], d4c["cell"]) == ("t", "t", stale_cell.name)
    assert (d4c["bits"], d4c["w_bit"], d4c["a_bit"], d4c["recon"], d4c["generation_method"]) == \
        ("W4A8", "4", "8", "True", "d4c3")
    assert float(d4c["acc1"]) == acc[("tiny-vit", "d4c3")][1] and d4c["calibration_images"] == "128"
    assert by_file[str(out / "old" / "again.json")]["sweep"] == ""  # not a cell of the plan
    fp = next(r for r in rows if r["method"] == "fp")
    assert (fp["bits"], fp["q_config"], fp["recon"], fp["gen_iter"]) == ("FP", "", "False", "")


ZOO_README = ("intro\n<!-- ptq-table:start -->\nold ptq\n<!-- ptq-table:end -->\nbetween\n"
              "<!-- dfq-table:start -->\nold dfq\n<!-- dfq-table:end -->\noutro\n")


@pytest.fixture(scope="module")
def zoo_sweep(tmp_path_factory):
    """The zoo manifest's every cell with a made-up accuracy (cells named by their result file)."""
    out = tmp_path_factory.mktemp("zoo") / "out"
    plan = _plan(REPO / "exp" / "sweeps" / "zoo.yaml", out)
    rng = np.random.default_rng(1)
    acc = {}
    for cell in plan.cells:
        acc[cell.name] = float(rng.integers(300, 539)) / 539
        _write_record(cell, acc[cell.name])
    return plan, acc


def _acc(plan: Plan, acc: dict[str, float], block: str, **flags) -> np.ndarray:
    """The accuracies (%) of the block's cells with these config values, by seed."""
    def value(cell: Cell, name: str):
        return getattr(cell.config, name) if hasattr(cell.config, name) else cell.config.as_flags()[name]

    cells = [c for c in plan.cells if block in c.blocks and all(value(c, k) == v for k, v in flags.items())]
    return 100 * np.array([acc[c.name] for c in sorted(cells, key=lambda c: c.config.seed)])


def test_zoo_tables_fill_the_readme_blocks(zoo_sweep, tmp_path):
    plan, acc = zoo_sweep
    readme = tmp_path / "README.md"
    readme.write_text(ZOO_README)
    assert results_main(["build", str(plan.out), "--table", "zoo", "--md", str(readme),
                         "--csv", str(tmp_path / "zoo.csv")]) == 0
    text = readme.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "zoo.csv"]  # written atomically
    assert text.startswith("intro\n<!-- ptq-table:start -->\n") and "\nbetween\n<!-- dfq-table:start -->\n" in text
    assert text.endswith("<!-- dfq-table:end -->\noutro\n") and "old ptq" not in text and "old dfq" not in text
    ptq = text.split("<!-- ptq-table:start -->")[1].split("<!-- ptq-table:end -->")[0]
    dfq = text.split("<!-- dfq-table:start -->")[1].split("<!-- dfq-table:end -->")[0]

    config = {b: f"exp/config{b}.yaml" for b in ("44", "48", "66", "88")}
    assert "| model | FP | calibration data | recon | W4A4 | W4A8 | W6A6 | W8A8 |" in ptq
    assert "W4A4: mean ± std over seeds 0, 1, 2; W4A8: seed 0; W6A6: seed 0; W8A8: seed 0" in ptq
    fp_vit = _acc(plan, acc, "ptq", model="tiny-vit", fp_model=True)
    assert len(fp_vit) == 1
    rows = [line for line in ptq.splitlines() if line.startswith(f"| `tiny-vit` | {fp_vit[0]:.2f} |")]
    assert len(rows) == 2 * 3  # real and Gaussian, each without reconstruction, 100 and 500 steps
    cells = _cells_of(ptq, f"`tiny-vit` | {fp_vit[0]:.2f} | real (train split) | 500 steps")
    w4a8 = _acc(plan, acc, "ptq", model="tiny-vit", row="real", q_config=config["48"], recon=True, recon_iters=500)
    assert cells == [MISSING, f"{w4a8[0]:.2f}", MISSING, MISSING]  # 500 steps: W4A8 only
    cells = _cells_of(ptq, f"`tiny-vit` | {fp_vit[0]:.2f} | Gaussian noise | no")
    w4a4 = _acc(plan, acc, "ptq", model="tiny-vit", row="gaussian", q_config=config["44"], recon=False)
    mean, std = _parse(cells[0])
    assert len(w4a4) == 3 and abs(mean - w4a4.mean()) <= 0.005 + 1e-9 and abs(std - w4a4.std(ddof=1)) <= 0.005 + 1e-9
    assert [float(c) for c in cells[1:]] == pytest.approx(
        [_acc(plan, acc, "ptq", model="tiny-vit", row="gaussian", q_config=config[b], recon=False)[0]
         for b in ("48", "66", "88")], abs=0.005)
    assert "Stage times (s" in ptq

    assert "| row | schedule | tiny-vit W4A8 | tiny-vit W4A4 | tiny-rn W4A8 | tiny-rn W4A4 |" in dfq
    fp_rn = _acc(plan, acc, "ptq", model="tiny-rn", fp_model=True)
    assert _cells_of(dfq, "FP (no quantization) | –") == [f"{fp_vit[0]:.2f}"] * 2 + [f"{fp_rn[0]:.2f}"] * 2
    img32 = {b: str(plan.out / "configs" / f"config{b}_img32.yaml") for b in ("44", "48")}
    for label, row in (("D4C config 3 (PGSI + SCG + PAE) | batched", "d4c3"),
                       ("BNS (tiny-rn) / PSE (tiny-vit) | batched", "baseline")):
        cells = _cells_of(dfq, label)
        values = _acc(plan, acc, "dfq", model="tiny-rn", row=row, q_config=img32["44"], gen_schedule="batched")
        mean, std = _parse(cells[3])
        assert abs(mean - values.mean()) <= 0.005 + 1e-9 and abs(std - values.std(ddof=1)) <= 0.005 + 1e-9
    gain = _cells_of(dfq, "D4C config 3 − baseline | reference")
    for i, (model, bits) in enumerate([(m, b) for m in ("tiny-vit", "tiny-rn") for b in ("48", "44")]):
        d4c, base = (_acc(plan, acc, "dfq", model=model, row=r, q_config=img32[bits], gen_schedule="reference")
                     for r in ("d4c3", "baseline"))
        assert abs(float(gain[i]) - (d4c.mean() - base.mean())) <= 0.005 + 1e-9
    assert "W4A8: seed 0; W4A4: mean ± std over seeds 0, 1, 2" in dfq and "32 calibration images" in dfq
    assert "generated: 100 iterations" in dfq and "d4c-sweep exp/sweeps/zoo.yaml" in dfq


def test_an_existing_file_without_the_markers_is_left_alone(zoo_sweep, tmp_path, capsys):
    plan, _ = zoo_sweep
    readme = tmp_path / "README.md"
    readme.write_text(ZOO_README.replace("<!-- dfq-table:end -->", ""))
    assert results_main(["build", str(plan.out), "--table", "zoo", "--md", str(readme),
                         "--csv", str(tmp_path / "zoo.csv")]) == 2
    assert "has no <!-- dfq-table:start --> ... <!-- dfq-table:end --> markers" in capsys.readouterr().err
    assert readme.read_text() == ZOO_README.replace("<!-- dfq-table:end -->", "")
    fresh = tmp_path / "tables.md"  # a new file gets the whole tables
    assert results_main(["build", str(plan.out), "--table", "zoo", "--md", str(fresh),
                         "--csv", str(tmp_path / "zoo.csv")]) == 0
    assert "| row | schedule |" in fresh.read_text() and "| model | FP |" in fresh.read_text()


def test_bad_input(tmp_path, capsys):
    assert results_main(["build", str(tmp_path / "nowhere")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err
    assert results_main(["build", str(tmp_path)]) == 2
    assert "no result files under" in capsys.readouterr().err
