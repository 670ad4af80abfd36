"""Offline errors: one sentence on stderr naming the flag, exit 2, no traceback, before any long work.

Two cases run the paper's entry point in a subprocess (the real process: no traceback may escape);
the rest call the same ``main`` in-process, which is cheaper.
"""

from __future__ import annotations

import pytest

from d4c.cli import main
from tests.conftest import REPO_ROOT, run_cli


def _assert_one_sentence_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("d4c-quant: error: ") and line.endswith(".")
    for fragment in fragments:
        assert fragment in line, line


def _main_error(capsys, *argv):
    """Run the CLI in-process and return its one stderr line."""
    assert main(list(argv)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("d4c-quant: error: ") and lines[0].endswith("."), lines
    return lines[0]


@pytest.mark.slow
def test_unknown_model_through_the_entry_point(tmp_path):
    r = run_cli("--fp_model", "--model", "ViT-Z/1", "--dataset", "digits", "--output", str(tmp_path / "r.json"))
    _assert_one_sentence_error(r, "--model ViT-Z/1", "tiny-vit")


@pytest.mark.slow
def test_baseline_of_the_wrong_family_through_the_entry_point(tmp_path, fast_qconfig):
    r = run_cli("--model", "tiny-vit", "--dataset", "digits", "--q_config", fast_qconfig(), "--dfq", "--gen_img",
                "--gen_method", "bns", "--gen_iter", "1", "--num_workers", "0", "--output", str(tmp_path / "r.json"))
    _assert_one_sentence_error(r, "--gen_method bns (BNS) needs")
    assert not (tmp_path / "r.json").exists()


def test_uncached_named_model(tmp_path, capsys):
    line = _main_error(capsys, "--fp_model", "--model", "RN50", "--model_cache_dir", str(tmp_path), "--dataset",
                       "digits", "--output", str(tmp_path / "r.json"))
    assert line.startswith(f"d4c-quant: error: --model_cache_dir {tmp_path} holds no RN50.pt"), line


def test_missing_dataset_root(tmp_path, capsys):
    line = _main_error(capsys, "--fp_model", "--model", "tiny-vit", "--dataset", "cifar10", "--dataset_root",
                       str(tmp_path / "nowhere"), "--output", str(tmp_path / "r.json"))
    assert "--dataset_root" in line and "cifar-10-batches-py" in line


def test_incomplete_dataset_root(tmp_path, capsys):
    (tmp_path / "cifar-100-python").mkdir()
    (tmp_path / "cifar-100-python" / "meta").write_bytes(b"x")
    line = _main_error(capsys, "--fp_model", "--model", "tiny-vit", "--dataset", "cifar100", "--dataset_root",
                       str(tmp_path), "--output", str(tmp_path / "r.json"))
    assert "--dataset_root" in line and "incomplete" in line and "train, test" in line


def test_unknown_dataset(tmp_path, capsys):
    line = _main_error(capsys, "--fp_model", "--model", "tiny-vit", "--dataset", "imagenet22k", "--output",
                       str(tmp_path / "r.json"))
    assert "--dataset imagenet22k" in line and "cifar100" in line


@pytest.mark.parametrize("yaml_text, fragment", [
    ("root: config48.yaml\nw_qconfig: {bit: 1}\n", "w_qconfig.bit must be an integer in 2..16, got 1"),
    ("a_qconfig: [unclosed\n", "is not valid YAML"),
])
def test_bad_quantization_config_stops_before_the_model_is_loaded(tmp_path, capsys, yaml_text, fragment):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text.replace("config48.yaml", str(REPO_ROOT / "exp" / "config48.yaml")))
    # an unknown model would be the error if the model were loaded first
    line = _main_error(capsys, "--model", "ViT-Z/1", "--dataset", "digits", "--q_config", str(config),
                       "--output", str(tmp_path / "r.json"))
    assert str(config) in line and fragment in line


def test_bad_prompt_file_stops_before_the_model_is_loaded(tmp_path, capsys):
    prompts = tmp_path / "p.json"
    prompts.write_text('{"classnames": ["dog"], "templates": ["no placeholder"]}')
    line = _main_error(capsys, "--model", "ViT-Z/1", "--dataset", "digits", "--custom_file", str(prompts),
                       "--output", str(tmp_path / "r.json"))
    assert f"--custom_file {prompts}" in line and "placeholder" in line


def test_in_process_quantization_errors(tmp_path, capsys, fast_qconfig):
    out = str(tmp_path / "r.json")
    assert "--recon_iters" in _main_error(capsys, "--model", "tiny-vit", "--dataset", "digits", "--recon",
                                          "--recon_iters", "0", "--output", out)
    line = _main_error(capsys, "--model", "tiny-vit", "--dataset", "digits", "--load_quant",
                       str(tmp_path / "none.quant.pt"), "--output", out)
    assert "--load_quant" in line and "does not exist" in line
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"root: {REPO_ROOT / 'exp' / 'config48.yaml'}\nrecon: {{drop_prob: 2}}\n")
    line = _main_error(capsys, "--model", "tiny-vit", "--dataset", "digits", "--q_config", str(bad), "--output", out)
    assert "recon.drop_prob must be a number in (0, 1]" in line
    assert "--fp_model" in _main_error(capsys, "--model", "tiny-vit", "--dataset", "digits", "--fp_model",
                                       "--load_quant", "x.quant.pt", "--output", out)
    assert not (tmp_path / "r.json").exists()


def test_gen_only_checks_its_outputs_and_inputs_before_the_model_is_loaded(tmp_path, capsys, monkeypatch):
    import d4c.pipeline

    monkeypatch.setattr(d4c.pipeline, "load_clip", lambda *a, **k: pytest.fail("the model was loaded"))
    common = ["--model", "tiny-rn", "--dfq", "--gen_img", "--gen_only", "--dataset", "cifar10"]  # no dataset needed
    (tmp_path / "record.json").mkdir()
    line = _main_error(capsys, *common, "--output", str(tmp_path / "record.json"))
    assert "--output" in line and "is a folder, but the run writes its generation record there" in line
    (tmp_path / "cache").write_text("a file")
    line = _main_error(capsys, *common, "--output", str(tmp_path / "r.json"), "--gen_cache_dir", str(tmp_path / "cache"))
    assert "--gen_cache_dir" in line
    line = _main_error(capsys, *common, "--output", str(tmp_path / "r.json"), "--custom_file", str(tmp_path))
    assert "--custom_file" in line
