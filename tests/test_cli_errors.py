"""Offline errors through the real entry point: one sentence on stderr, exit 2, no traceback."""

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


def test_unknown_model(tmp_path):
    r = run_cli("--fp_model", "--model", "ViT-Z/1", "--dataset", "digits", "--output", str(tmp_path / "r.json"))
    _assert_one_sentence_error(r, "ViT-Z/1", "tiny-vit")


def test_uncached_named_model(tmp_path):
    r = run_cli("--fp_model", "--model", "RN50", "--model_cache_dir", str(tmp_path), "--dataset", "digits",
                "--output", str(tmp_path / "r.json"))
    _assert_one_sentence_error(r, "RN50.pt", str(tmp_path))


def test_missing_dataset_root(tmp_path):
    r = run_cli("--fp_model", "--model", "tiny-vit", "--dataset", "cifar10", "--dataset_root",
                str(tmp_path / "nowhere"), "--output", str(tmp_path / "r.json"))
    _assert_one_sentence_error(r, "cifar-10-batches-py")


def test_incomplete_dataset_root(tmp_path):
    (tmp_path / "cifar-100-python").mkdir()
    (tmp_path / "cifar-100-python" / "meta").write_bytes(b"x")
    r = run_cli("--fp_model", "--model", "tiny-vit", "--dataset", "cifar100", "--dataset_root", str(tmp_path),
                "--output", str(tmp_path / "r.json"))
    _assert_one_sentence_error(r, "incomplete", "train, test")


def test_unknown_dataset(tmp_path):
    r = run_cli("--fp_model", "--model", "tiny-vit", "--dataset", "imagenet22k", "--output", str(tmp_path / "r.json"))
    _assert_one_sentence_error(r, "imagenet22k", "cifar100")


def test_baseline_of_the_wrong_family_is_one_sentence(tmp_path, fast_qconfig):
    r = run_cli("--model", "tiny-vit", "--dataset", "digits", "--q_config", fast_qconfig(), "--dfq", "--gen_img",
                "--gen_method", "bns", "--gen_iter", "1", "--num_workers", "0", "--output", str(tmp_path / "r.json"))
    _assert_one_sentence_error(r, "BNS")
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("yaml_text, fragment", [
    ("root: config48.yaml\nw_qconfig: {bit: 1}\n", "w_qconfig.bit must be an integer in 2..16, got 1"),
    ("a_qconfig: [unclosed\n", "is not valid YAML"),
])
def test_bad_quantization_config_stops_before_the_model_is_loaded(tmp_path, yaml_text, fragment):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text.replace("config48.yaml", str(REPO_ROOT / "exp" / "config48.yaml")))
    # an unknown model would be the error if the model were loaded first
    r = run_cli("--model", "ViT-Z/1", "--dataset", "digits", "--q_config", str(config),
                "--output", str(tmp_path / "r.json"))
    _assert_one_sentence_error(r, str(config), fragment)


def test_bad_prompt_file_stops_before_the_model_is_loaded(tmp_path):
    prompts = tmp_path / "p.json"
    prompts.write_text('{"classnames": ["dog"], "templates": ["no placeholder"]}')
    r = run_cli("--model", "ViT-Z/1", "--dataset", "digits", "--custom_file", str(prompts),
                "--output", str(tmp_path / "r.json"))
    _assert_one_sentence_error(r, str(prompts), "placeholder")


def _main_error(capsys, *argv):
    """Run the CLI in-process (cheaper than a subprocess) and return its one stderr line."""
    assert main(list(argv)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("d4c-quant: error: ") and lines[0].endswith(".")
    return lines[0]


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
