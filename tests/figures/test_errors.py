"""Bad input: one sentence on stderr, exit status 2, no traceback, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys


from d4c.data.prompts import DIGITS_PROMPTS
from d4c.figures.cli import main
from tests.figures.helpers import make_state, write_result


def _fails(capsys, argv, out, *fragments):
    assert main([*argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert not list(out.parent.glob(".*.tmp"))
    return err


def test_an_empty_cache_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _fails(capsys, ["images", "--cache", str(tmp_path / "empty"), "--model", "tiny-vit"], tmp_path / "i.png",
           "--cache", "holds no cached pseudo images")
    _fails(capsys, ["features", "--cache", str(tmp_path / "none"), "--model", "tiny-vit", "--dataset", "digits"],
           tmp_path / "f.png", "is not a folder of cached pseudo images")


def test_a_cache_of_another_model_or_prompt_file(figure_cache, tmp_path, capsys):
    folder, _ = figure_cache
    _fails(capsys, ["images", "--cache", str(folder), "--model", "tiny-rn"], tmp_path / "i.png",
           "no cached pseudo images of model tiny-rn", "tiny-vit seed 0 reference")
    _fails(capsys, ["images", "--cache", str(folder), "--model", "tiny-vit"], tmp_path / "i.png",
           "--custom_file", "is not the prompt file")


def test_result_files_of_different_models_in_one_tables_call(tmp_path, capsys):
    write_result(tmp_path, "a", model="tiny-vit")
    write_result(tmp_path, "b", model="tiny-rn")
    _fails(capsys, ["tables", "--results", str(tmp_path / "a.json"), str(tmp_path / "b.json")], tmp_path / "t.png",
           "--results mixes result files of different models", "tiny-rn", "tiny-vit")
    _fails(capsys, ["curves", "--results", str(tmp_path)], tmp_path / "c.png", "hold no result of a run with --recon")


def test_a_quantized_state_of_another_model(vit, tmp_path, capsys):
    state = make_state(vit, tmp_path, "48", "gaussian", model_name="tiny-rn")
    _fails(capsys, ["layers", "--model", "tiny-vit", "--states", str(state), "--dataset", "digits"],
           tmp_path / "l.png", f"{state} holds a quantized tiny-rn, not --model tiny-vit")
    _fails(capsys, ["layers", "--model", "tiny-vit", "--states", str(tmp_path / "missing.quant.pt"), "--dataset",
                    "digits"], tmp_path / "l.png", "missing.quant.pt does not exist")


def test_an_output_that_is_not_a_png_or_cannot_be_written(tmp_path, capsys):
    write_result(tmp_path, "a")
    (tmp_path / "file").write_text("x")
    _fails(capsys, ["tables", "--results", str(tmp_path)], tmp_path / "t.svg", "--output", "must name a .png")
    _fails(capsys, ["tables", "--results", str(tmp_path)], tmp_path / "file" / "t.png", "cannot be written")


def test_counts_must_be_positive(figure_cache, tmp_path, capsys):
    folder, _ = figure_cache
    _fails(capsys, ["images", "--cache", str(folder), "--model", "tiny-vit", "--custom_file", str(DIGITS_PROMPTS),
                    "--per_method", "0"], tmp_path / "i.png", "--per_method must be positive")


def test_python_dash_m_is_the_same_program_and_prints_no_traceback(tmp_path):
    write_result(tmp_path, "a", model="tiny-vit")
    write_result(tmp_path, "b", model="tiny-rn")
    done = subprocess.run([sys.executable, "-m", "d4c.figures", "tables", "--results", str(tmp_path),
                           "-o", str(tmp_path / "t.png")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MPLBACKEND": "TkAgg"})  # a display backend must not be needed
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("d4c-figures tables: error: --results mixes result files of different models")
    assert not (tmp_path / "t.png").exists()
    write_result(tmp_path, "b", model="tiny-vit", method="pse")
    done = subprocess.run([sys.executable, "-m", "d4c.figures", "tables", "--results", str(tmp_path),
                           "-o", str(tmp_path / "t.png")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MPLBACKEND": "TkAgg"})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "t.png").is_file() and (tmp_path / "t.json").is_file()
