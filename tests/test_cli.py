"""The paper's command line: every flag exists with its default, and parsing builds a RunConfig."""

from __future__ import annotations

import pytest

from d4c.cli import build_parser
from d4c.config import RunConfig
from d4c.errors import D4CError

# SPEC section 1: flag -> default, as in the reference implementation.
SPEC_DEFAULTS = {
    "dataset": "cifar10",
    "dataset_root": None,
    "split": "test",
    "train_split": "train",
    "model": "ViT-B/32",
    "model_cache_dir": None,
    "fp_model": False,
    "q_config": "./exp/config66.yaml",
    "recon": False,
    "custom_file": "./d4c/template/custom_classnames_templates.json",
    "dfq": False,
    "gen_img": False,
    "gen_method": "d4c",
    "d4c_config": 3,
    "gen_batch_size": 16,
    "gen_lr": 0.01,
    "gen_iter": 3000,
    "img_path": None,
    "seed": 0,
    "batch_size": 64,
    "num_workers": 4,
    "output": "result.json",
    "no_amp": False,
}


def test_every_spec_flag_parses_with_its_default():
    args = vars(build_parser().parse_args([]))
    for flag, default in SPEC_DEFAULTS.items():
        assert flag in args, f"--{flag} missing"
        assert args[flag] == default, f"--{flag} default {args[flag]!r} != {default!r}"


def test_every_flag_has_help_text():
    for action in build_parser()._actions:
        assert action.help, f"{action.option_strings} has no help text"


def test_paper_command_parses_unchanged():
    argv = ["--dataset", "cifar10", "--dataset_root", "./your/dataset/root", "--model", "ViT-B/32",
            "--q_config", "./exp/config66.yaml", "--recon", "--dfq", "--gen_img"]
    config = RunConfig.from_namespace(build_parser().parse_args(argv))
    assert (config.recon, config.dfq, config.gen_img) == (True, True, True)
    assert config.method == "d4c3"


@pytest.mark.parametrize("argv, method", [
    (["--fp_model"], "fp"),
    ([], "real"),
    (["--dfq"], "gaussian"),
    (["--dfq", "--gen_img", "--gen_method", "baseline"], "baseline"),
    (["--dfq", "--gen_img", "--d4c_config", "1"], "d4c1"),
])
def test_paper_rows_map_to_methods(argv, method):
    assert RunConfig.from_namespace(build_parser().parse_args(argv)).method == method


@pytest.mark.parametrize("argv, flag", [
    (["--gen_iter", "0"], "--gen_iter"),
    (["--gen_batch_size", "-1"], "--gen_batch_size"),
    (["--gen_lr", "0"], "--gen_lr"),
    (["--batch_size", "0"], "--batch_size"),
    (["--num_workers", "-2"], "--num_workers"),
    (["--gen_img"], "--gen_img"),
])
def test_invalid_values_name_the_flag(argv, flag):
    with pytest.raises(D4CError, match=flag):
        RunConfig.from_namespace(build_parser().parse_args(argv))


def test_unknown_choices_are_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--d4c_config", "4"])
    assert "--d4c_config" in capsys.readouterr().err
