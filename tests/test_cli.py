"""The paper's command line: every flag exists with its default, and parsing builds a RunConfig."""

from __future__ import annotations

import pytest

from d4c.cli import build_parser, describe_error, main, row_argv
from d4c.config import RunConfig
from d4c.errors import D4CError
from d4c.generation import GenerationSettings, available_methods, generation_rows

# The paper's flags and their defaults, as in the reference implementation (docs/method.md, "The command line").
PAPER_DEFAULTS = {
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
    for flag, default in PAPER_DEFAULTS.items():
        assert flag in args, f"--{flag} missing"
        assert args[flag] == default, f"--{flag} default {args[flag]!r} != {default!r}"


def test_every_flag_has_help_text():
    for action in build_parser()._actions:
        assert action.help, f"{action.option_strings} has no help text"


def _config(argv: list[str]) -> RunConfig:
    return RunConfig.from_flags(vars(build_parser().parse_args(argv)))


def test_parser_defaults_are_the_configs():
    """The parser is built from RunConfig (and the generation settings and method options): same defaults."""
    parsed = _config([])
    assert parsed == RunConfig() and parsed.as_flags() == RunConfig().as_flags()
    assert set(vars(build_parser().parse_args([]))) == set(RunConfig().as_flags())


def test_paper_command_parses_unchanged():
    argv = ["--dataset", "cifar10", "--dataset_root", "./your/dataset/root", "--model", "ViT-B/32",
            "--q_config", "./exp/config66.yaml", "--recon", "--dfq", "--gen_img"]
    config = _config(argv)
    assert (config.recon, config.dfq, config.gen_img) == (True, True, True)
    assert config.row == "d4c3" and config.generation.options["d4c_config"] == 3


@pytest.mark.parametrize("argv, row", [
    (["--fp_model"], "fp"),
    ([], "real"),
    (["--dfq"], "gaussian"),
    (["--dfq", "--gen_img", "--gen_method", "baseline"], "baseline"),
    (["--dfq", "--gen_img", "--gen_method", "pse"], "pse"),
    (["--dfq", "--gen_img", "--d4c_config", "1"], "d4c1"),
])
def test_paper_rows_map_to_flags_and_back(argv, row):
    assert _config(argv).row == row
    assert row_argv(row) == argv
    assert RunConfig.for_row(row).row == row and RunConfig.for_row(row) == _config(argv)


def test_every_row_round_trips():
    for row in ["fp", "real", *generation_rows()]:
        assert _config(row_argv(row)).row == row, row


@pytest.mark.parametrize("argv, flag", [
    (["--gen_iter", "0"], "--gen_iter"),
    (["--gen_batch_size", "-1"], "--gen_batch_size"),
    (["--gen_lr", "0"], "--gen_lr"),
    (["--gen_ckpt_every", "-1"], "--gen_ckpt_every"),
    (["--batch_size", "0"], "--batch_size"),
    (["--num_workers", "-2"], "--num_workers"),
    (["--gen_img"], "--gen_img"),
])
def test_invalid_values_name_the_flag(argv, flag, capsys):
    assert main([*argv, "--fp_model", "--dataset", "digits"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"d4c-quant: error: {flag} ") and len(err.splitlines()) == 1


@pytest.mark.parametrize("argv, flag, words", [
    (["--dfq", "--gen_img", "--gen_method", "pse", "--d4c_config", "1"], "--d4c_config",
     "applies to --gen_method d4c only, but this run generates with --gen_method pse."),
    (["--dfq", "--d4c_config", "0"], "--d4c_config", "generates no pseudo images (that needs --dfq --gen_img)."),
    (["--d4c_config", "2"], "--d4c_config", "generates no pseudo images"),
    (["--dfq", "--gen_img", "--edfq", "width=16"], "--edfq",
     "applies to --gen_method enhancing_dfq only, but this run generates with --gen_method d4c."),
    (["--dfq", "--gen_img", "--gen_method", "baseline", "--edfq_config", "x.yaml"], "--edfq_config",
     "generates with --gen_method baseline."),
])
def test_an_option_of_another_method_is_refused_not_ignored(argv, flag, words, capsys):
    assert main([*argv, "--dataset", "digits"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"d4c-quant: error: {flag} ") and words in err and len(err.splitlines()) == 1


def test_an_option_at_its_default_or_on_its_own_method_is_accepted():
    for argv in (["--dfq", "--gen_img", "--gen_method", "pse", "--d4c_config", "3"],  # the default: changes nothing
                 ["--dfq", "--gen_img", "--d4c_config", "1"],
                 ["--fp_model", "--d4c_config", "1"]):  # evaluation only: every generation flag is unused
        RunConfig.from_flags(vars(build_parser().parse_args(argv)))


def test_library_errors_name_parameters_and_the_cli_shows_flags():
    with pytest.raises(D4CError) as info:
        GenerationSettings(gen_iter=0)
    assert info.value.parameter == "gen_iter" and str(info.value) == "gen_iter must be positive, got 0."
    assert describe_error(info.value, build_parser()) == "--gen_iter must be positive, got 0."
    prompts = D4CError("holds no generation prompts.", "prompts")
    method = D4CError("bns (BNS) needs BatchNorm layers.", "method")
    assert describe_error(prompts, build_parser()).startswith("--custom_file holds")
    assert describe_error(method, build_parser()).startswith("--gen_method bns")


def test_unknown_choices_are_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--d4c_config", "4"])
    assert "--d4c_config" in capsys.readouterr().err


def test_gen_method_choices_are_the_registered_methods_and_baseline():
    action = next(a for a in build_parser()._actions if a.dest == "gen_method")
    assert action.choices == [*available_methods(), "baseline"] and {"d4c", "bns", "pse"} <= set(action.choices)


@pytest.fixture
def extra_method():
    """A method registered for one test, the way a new method module registers itself."""
    from d4c.generation.methods import GenerationMethod, Option, register
    from d4c.generation.methods.base import _REGISTRY

    @register
    class Extra(GenerationMethod):
        name = "extra_test_method"
        options = (Option("extra_width", 8, "the width", choices=(8, 16)),
                   Option("extra_set", [], "KEY=VALUE settings, repeatable", metavar="KEY=VALUE"))
        seen: list = []

        @classmethod
        def check_options(cls, settings):
            cls.seen.append(cls.option_values(settings))

    yield Extra
    del _REGISTRY[Extra.name]


def test_a_registered_method_brings_its_flags_choice_and_row(extra_method):
    argv = ["--dfq", "--gen_img", "--gen_method", "extra_test_method", "--extra_width", "16",
            "--extra_set", "a=1", "--extra_set", "b=2"]
    config = _config(argv)
    assert config.row == "extra_test_method" and row_argv("extra_test_method") == ["--dfq", "--gen_img",
                                                                                  "--gen_method", "extra_test_method"]
    assert extra_method.seen[-1] == {"extra_width": 16, "extra_set": ["a=1", "b=2"]}  # checked before any model
    assert _config([]).generation.options["extra_set"] == [] and "extra_test_method" in generation_rows()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--extra_width", "9"])
    with pytest.raises(ValueError, match="reuses"):
        from d4c.generation.methods import GenerationMethod, Option, register

        register(type("Clash", (GenerationMethod,), {"name": "clash", "options": (Option("extra_width", 1, "x"),)}))
