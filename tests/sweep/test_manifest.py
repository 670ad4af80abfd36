"""Manifests: expansion, exclusions, collapsing, blocks, derived configs, shared generations, the shipped
manifests' plans, and every kind of bad input stopping before anything runs (naming file and key)."""

from __future__ import annotations

import itertools
import shlex
from pathlib import Path

import pytest

from d4c.cli import build_parser
from d4c.config import RunConfig
from d4c.errors import D4CError
from d4c.quantization.qconfig import load_qconfig
from d4c.sweep.cli import main as sweep_main
from d4c.sweep.manifest import load_manifest
from d4c.sweep.plan import Planner, command_line

REPO = Path(__file__).resolve().parents[2]
SWEEPS = REPO / "exp" / "sweeps"


def _manifest(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _plan(path: Path, out: Path, **kwargs):
    return Planner(load_manifest(path), out, **kwargs).plan()


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_grid_is_the_cartesian_product_with_exclusions_and_fp_collapsed(tmp_path):
    path = _manifest(tmp_path, """
name: t
output: "{model}/{q_config}_{method}_{recon}_s{seed}.json"
seeds: [0, 1]
fixed: {dataset: digits, recon: true, recon_iters: 3}
grid:
  model: [tiny-vit, tiny-rn]
  q_config: [exp/config48.yaml, exp/config44.yaml]
  row: [fp, real, d4c0]
exclude:
  - {model: tiny-rn, row: d4c0, q_config: exp/config44.yaml}
collapse:
  - where: {row: fp}
    flags: [q_config, "recon*"]
""")
    plan = _plan(path, tmp_path / "out")
    expected = set()
    for model, config, row, seed in itertools.product(["tiny-vit", "tiny-rn"], ["config48", "config44"],
                                                      ["fp", "real", "d4c0"], [0, 1]):
        if (model, row, config) == ("tiny-rn", "d4c0", "config44"):
            continue
        expected.add((model, "fp" if row == "fp" else config, row, seed))
    got = {(c.config.model, "fp" if c.config.fp_model else Path(c.config.q_config).stem, c.config.row, c.config.seed)
           for c in plan.cells}
    assert got == expected and len(plan.cells) == len(expected)  # FP once per model and seed, not per config
    for cell in plan.cells:
        assert cell.output == tmp_path / "out" / f"{cell.name}.json" and _flag(cell.argv, "--output") == str(cell.output)
        assert cell.config == RunConfig.from_flags(vars(build_parser().parse_args(cell.argv)))  # the cell's command
        assert ("--recon" in cell.argv) == (cell.config.row != "fp")
    # pseudo images: one generation per (model, method, settings, seed), shared by both bit widths
    vit = [g for g in plan.generations if "tiny-vit" in g.name]
    assert len(vit) == 2 and all(len(g.cells) == 2 for g in vit)
    assert [len(g.cells) for g in plan.generations if "tiny-rn" in g.name] == [1, 1]
    for gen in plan.generations:
        assert "--gen_only" in gen.argv and "--dataset" not in gen.argv and "--recon" not in gen.argv
        cells = [c for c in plan.cells if c.name in gen.cells]
        assert {c.generation for c in cells} == {gen.name} and len({c.config.seed for c in cells}) == 1


def test_blocks_mapping_values_seed_grid_and_derived_configs(tmp_path):
    path = _manifest(tmp_path, """
fixed: {dataset: digits}
configs:
  w4a8_img8: {root: exp/config48.yaml, calibrate: {visual: 8}}
blocks:
  - name: a
    output: "a/{q_config}_{method}_{recon}{recon_iters}_s{seed}.json"
    grid:
      model: [tiny-rn]
      row: [gaussian]
      q_config: [w4a8_img8]
      reconstruction: [{recon: false}, {recon: true, recon_iters: 5}]
      seed: [0, 1]
    exclude: [{seed: 1, recon: false}]
""")
    plan = _plan(path, tmp_path / "out")
    assert sorted(c.name for c in plan.cells) == ["a/w4a8_img8_gaussian_norecon_s0", "a/w4a8_img8_gaussian_recon5_s0",
                                                  "a/w4a8_img8_gaussian_recon5_s1"]
    derived = tmp_path / "out" / "configs" / "w4a8_img8.yaml"
    assert all(_flag(c.argv, "--q_config") == str(derived) for c in plan.cells) and not derived.exists()
    plan.write_configs()
    config = load_qconfig(str(derived))
    assert config.calibrate.visual == 8 and config.a_qconfig.bit == 8 and config.w_qconfig.observer == "MSEObserver"
    # --seeds replaces the grid's seeds; --only selects; --set overrides every cell
    plan = _plan(path, tmp_path / "out", seeds=[4], only={"recon": [True]}, overrides={"recon_iters": 2})
    assert [c.name for c in plan.cells] == ["a/w4a8_img8_gaussian_recon2_s4"]


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    path = _manifest(tmp_path, "fixed: {dataset: digits}\ngrid: {model: [tiny-rn], row: [fp, d4c3]}\n")
    out = tmp_path / "out"
    assert sweep_main([str(path), "--dry_run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 cells, 0 done, 2 to run" in text and "1 generations shared by 1 cells" in text
    assert text.count("d4c-quant ") == 3 and not out.exists()


@pytest.mark.parametrize("text, key", [
    ("grid: {modle: [tiny-rn]}", "grid.modle is not a flag of d4c-quant (did you mean model?)"),
    ("grid: {model: [RN5O]}", "grid.model: 'RN5O' is neither a known model"),
    ("grid: {model: [tiny-rn], dataset: [cifar11]}", "grid.dataset: 'cifar11' is not a dataset"),
    ("fixed: {q_config: exp/nope.yaml}\ngrid: {model: [tiny-rn]}", "fixed.q_config:"),
    ("grid: {model: [tiny-rn], row: [d4c9]}", "grid.row: 'd4c9' is not a paper row"),
    ("grid: {model: [tiny-rn], gen_iter: [0]}", "grid.gen_iter: gen_iter must be positive"),
    ("grid: {model: [tiny-rn], gen_schedule: [fast]}", "grid.gen_schedule: invalid choice: 'fast'"),
    ("grid: {model: [tiny-rn]}\nexclude: [{model: tiny-rn}]", "grid produces no cells (after exclude"),
    ("grid: {model: tiny-rn}", "grid.model must be a non-empty list"),
    ("grid: {model: [tiny-rn]\n", "is not valid YAML (line"),
    ("grdi: {model: [tiny-rn]}", "grdi is not a manifest key (did you mean grid?)"),
    ("output: '{nope}.json'\ngrid: {model: [tiny-rn]}", "output uses unknown placeholder {nope}"),
    ("grid: {model: [tiny-rn], row: [d4c1], d4c_config: [2]}", "grid.d4c_config is set by row d4c1 already"),
    ("grid: {model: [tiny-rn, tiny-vit]}\noutput: 'x.json'", "both write"),
])
def test_bad_manifests_stop_before_anything_runs_naming_file_and_key(tmp_path, capsys, text, key):
    path = _manifest(tmp_path, "fixed: {dataset: digits}\n" + text if text.startswith("grid") else text)
    out = tmp_path / "out"
    assert sweep_main([str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"d4c-sweep: error: {path}: ") and key in err
    assert not out.exists()


def test_unknown_set_and_only_flags(tmp_path):
    path = _manifest(tmp_path, "grid: {model: [tiny-rn]}\n")
    with pytest.raises(D4CError, match=r"m.yaml: --set.gen_itr is not a flag of d4c-quant \(did you mean gen_iter\?\)"):
        _plan(path, tmp_path, overrides={"gen_itr": 2})
    with pytest.raises(D4CError, match="--only.colour is not a flag"):
        _plan(path, tmp_path, only={"colour": ["red"]})


def test_main_manifest_lists_every_cell_of_the_papers_table(tmp_path):
    plan = _plan(SWEEPS / "main.yaml", tmp_path / "main")
    models, datasets = ("RN50", "RN101", "ViT-B/32", "ViT-B/16"), ("cifar10", "cifar100", "imagenet1k")
    configs, rows = ("config48", "config66", "config88"), ("real", "gaussian", "baseline", "d4c3")
    want = {(m, d, "fp", None) for m in models for d in datasets}
    want |= {(m, d, r, c) for m in models for d in datasets for r in rows for c in configs}
    got = {(c.config.model, c.config.dataset, c.config.row,
            None if c.config.fp_model else Path(c.config.q_config).stem) for c in plan.cells}
    assert got == want and len(plan.cells) == 156
    for cell in plan.cells:
        assert ("--recon" in cell.argv) == (not cell.config.fp_model)
        argv = shlex.split(command_line(cell.argv))[1:]
        assert argv == cell.argv
        if cell.config.row == "d4c3":  # the paper's D4C row: --dfq --gen_img, D4C config 3 (the defaults)
            assert argv[:2] == ["--dfq", "--gen_img"] and cell.config.generation.options["d4c_config"] == 3
    # 4 models x 2 generated rows, each shared by 3 datasets x 3 bit widths
    assert len(plan.generations) == 8 and all(len(g.cells) == 9 for g in plan.generations)


def test_main_dry_run_prints_every_cell_and_its_command(tmp_path, capsys):
    out = tmp_path / "main"
    assert sweep_main([str(SWEEPS / "main.yaml"), "--dry_run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    plan = _plan(SWEEPS / "main.yaml", out)
    assert text.startswith(f"{SWEEPS / 'main.yaml'} (main, table main): 156 cells, 0 done, 156 to run")
    assert "8 generations shared by 72 cells (9.0 cells per generation), 8 to run" in text
    lines = text.splitlines()
    for i, cell in enumerate(plan.cells, 1):
        at = lines.index(next(line for line in lines if line.startswith(f"[{i:>3}/156] to run: {cell.name}")))
        assert lines[at + 1].strip() == command_line(cell.argv)
    for i, gen in enumerate(plan.generations, 1):
        assert f"[gen {i}/8] to run: {gen.name} (9 cells)\n    {command_line(gen.argv)}" in text
    assert not out.exists()


@pytest.mark.parametrize("name, cells, generations", [("ablation", 24, 8), ("gen_time", 8, 0), ("zoo", 150, 60)])
def test_shipped_manifests_plan(tmp_path, name, cells, generations):
    plan = _plan(SWEEPS / f"{name}.yaml", tmp_path / name)
    assert len(plan.cells) == cells and len(plan.generations) == generations
    if name == "gen_time":
        assert all(c.config.gen_only and c.config.gen_force for c in plan.cells)
        pse16 = [c for c in plan.cells if c.config.model == "ViT-B/16" and c.config.generation.method == "baseline"]
        assert [c.config.generation.gen_batch_size for c in pse16] == [8]
    if name == "zoo":
        w4a4 = [c for c in plan.cells if "config44" in c.config.q_config]
        assert {c.config.seed for c in w4a4} == {0, 1, 2}
        assert {c.config.seed for c in plan.cells if "config44" not in c.config.q_config or c.config.fp_model} == {0}
        generated = ("baseline", "d4c0", "d4c1", "d4c2", "d4c3")
        for cell in plan.cells:  # the README tables' settings
            argv, config = cell.argv, cell.config
            assert _flag(argv, "--dataset") == "digits" and ("--dfq" in argv) == (config.row not in ("fp", "real"))
            assert ("--gen_img" in argv) == ("--gen_schedule" in argv) == (config.row in generated)
            if config.fp_model:
                assert cell.blocks == ["ptq"] and "--recon" not in argv and "--q_config" not in argv
                continue
            if cell.blocks == ["dfq"]:
                assert "--recon" in argv and _flag(argv, "--recon_iters") == "100" and "img32" in config.q_config
                assert config.custom_file == "d4c/template/digits_classnames_templates.json"
                assert config.generation.gen_iter == 100 or config.row in ("real", "gaussian")
            else:
                assert cell.blocks == ["ptq"] and config.q_config.startswith("exp/config")
                assert _flag(argv, "--recon_iters") in (None, "100", "500") and ("--recon" in argv) == (
                    _flag(argv, "--recon_iters") is not None)
        plan.write_configs()
        assert {load_qconfig(str(p)).calibrate.visual for p, _ in plan.configs.values()} == {32}
        ptq = [c for c in plan.cells if c.blocks == ["ptq"] and not c.config.fp_model]
        assert {load_qconfig(c.config.q_config).calibrate.visual for c in ptq} == {128}


def test_shell_scripts_pass_arguments_through(tmp_path):
    import subprocess

    result = subprocess.run(["bash", str(REPO / "scripts" / "sweeps" / "gen_time.sh"), "--dry_run",
                             "--model_cache_dir", str(tmp_path / "clip")], capture_output=True, text=True,
                            env={"PYTHON": __import__("sys").executable, "OUT": str(tmp_path / "g"),
                                 "PATH": "/usr/bin:/bin", "D4C_OFFLINE": "1"}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "8 cells" in result.stdout and f"--model_cache_dir {tmp_path / 'clip'}" in result.stdout
    assert str(tmp_path / "g") in result.stdout
