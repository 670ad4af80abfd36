"""Offline errors through the real entry point: one sentence on stderr, exit 2, no traceback."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli


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


@pytest.mark.parametrize("extra", [[], ["--dfq"], ["--dfq", "--gen_img"], ["--recon"]])
def test_stages_of_later_versions_say_not_available(tmp_path, extra):
    r = run_cli("--model", "tiny-vit", "--dataset", "digits", *extra, "--output", str(tmp_path / "r.json"))
    _assert_one_sentence_error(r, "not available yet")
    assert not (tmp_path / "r.json").exists()
