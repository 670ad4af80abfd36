"""scripts/generate.py: a standalone generation with the main CLI's flag names, and its errors."""

from __future__ import annotations

import json

from d4c.data.prompts import DIGITS_PROMPTS


def test_standalone_generation_writes_pngs_cache_and_summary(generate_script, tmp_path, capsys):
    argv = ["--model", "tiny-rn", "--gen_method", "d4c", "--d4c_config", "1", "--gen_iter", "2", "--num_images", "4",
            "--gen_batch_size", "2", "--custom_file", str(DIGITS_PROMPTS), "--img_path", str(tmp_path / "png"),
            "--gen_cache_dir", str(tmp_path / "cache"), "--summary", str(tmp_path / "s.json"), "--no_progress"]
    assert generate_script.main(argv) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["settings"]["method"] == "d4c" and summary["settings"]["d4c_config"] == 1
    assert len(summary["loss_history"]) == 2 and summary["generation_seconds"] > 0 and not summary["from_cache"]
    assert 0 <= summary["diagnostics"]["target_top1_agreement"] <= 1
    assert len(list((tmp_path / "png").glob("*.png"))) == 4
    assert "s/iteration" in capsys.readouterr().out
    assert generate_script.main(argv) == 0
    assert json.loads((tmp_path / "s.json").read_text())["from_cache"]


def test_gaussian_and_baseline_choices(generate_script, tmp_path):
    assert generate_script.main(["--model", "tiny-vit", "--gen_method", "gaussian", "--num_images", "3",
                                 "--gen_cache_dir", "none", "--summary", str(tmp_path / "g.json")]) == 0
    assert json.loads((tmp_path / "g.json").read_text())["settings"]["method"] == "gaussian"
    assert generate_script.main(["--model", "tiny-vit", "--gen_method", "baseline", "--num_images", "2",
                                 "--gen_iter", "1", "--gen_cache_dir", "none", "--no_progress",
                                 "--summary", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["settings"]["method"] == "pse"


def test_wrong_family_is_one_sentence_and_exit_2(generate_script, capsys):
    assert generate_script.main(["--model", "tiny-vit", "--gen_method", "bns", "--gen_cache_dir", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(".")
    assert err[0].startswith("generate.py: error: --gen_method bns (BNS) needs")


def test_output_locations_are_checked_before_the_model(generate_script, tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert generate_script.main(["--model", "tiny-vit", "--gen_iter", "1", "--img_path", str(a_file)]) == 2
    assert f"--img_path {a_file} is a file" in capsys.readouterr().err
    assert generate_script.main(["--model", "tiny-vit", "--gen_method", "bns", "--gen_iter", "1"]) == 2
    assert "needs a ResNet" in capsys.readouterr().err
