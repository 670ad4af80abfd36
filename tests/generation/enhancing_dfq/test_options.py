"""EnhancingDFQ's settings: defaults, the YAML file and KEY=VALUE flags, one-sentence errors."""

from __future__ import annotations

import pytest

from d4c.cli import build_parser, main
from d4c.config import RunConfig
from d4c.errors import D4CError
from d4c.generation.methods.enhancing_dfq import options_of
from d4c.generation.methods.enhancing_dfq.options import FINETUNE_KEYS, EnhancingDFQOptions, parse_options


def _config(*flags: str) -> RunConfig:
    return RunConfig.from_flags(vars(build_parser().parse_args(list(flags))))


def test_defaults_have_every_part_on_and_gdfq_optimiser():
    options = parse_options()
    assert (options.label_embeddings, options.mixer, options.flow_attention, options.losses) == (True,) * 4
    assert (options.lr_generator, options.beta1, options.beta2) == (1e-3, 0.5, 0.999)
    assert options.finetune is False and options.ablation() == ""


def test_file_then_assignments_in_order(tmp_path):
    path = tmp_path / "edfq.yaml"
    path.write_text("mixer: false\nlayers: 3\nlr_generator: 2.0e-4\n")
    options = parse_options(str(path), ["layers=2", "lr_generator=1e-3,losses=false"])
    assert (options.mixer, options.layers, options.lr_generator, options.losses) == (False, 2, 1e-3, False)
    assert options.ablation() == "no mixer, no losses"


def test_image_fields_leave_out_the_quantization_side():
    fields = parse_options(None, ["finetune=true"]).image_fields()
    assert not set(FINETUNE_KEYS) & set(fields) and fields["mixer"] is True


@pytest.mark.parametrize("assignment, words", [
    ("mixr=false", "'mixr' is not an EnhancingDFQ option"),
    ("mixer=maybe", "option mixer must be true or false"),
    ("layers=2.5", "option layers must be an integer"),
    ("layers=0", "option layers must be a positive integer"),
    ("lr_generator=fast", "option lr_generator must be a number"),
    ("warmup=1", "option warmup must be in [0, 1)"),
    ("mix_prob=1.5", "option mix_prob must be in [0, 1]"),
    ("heads=3", "latent_dim (128) must be a multiple of heads (3)"),
    ("mixer", "must have the form KEY=VALUE"),
])
def test_bad_assignments_are_one_sentence_led_by_the_option(assignment, words):
    with pytest.raises(D4CError) as info:
        parse_options(None, [assignment])
    message = str(info.value)
    assert info.value.parameter == "edfq" and words in message and message.endswith(".") and "\n" not in message


@pytest.mark.parametrize("text, words", [("- a\n- b\n", "must hold a mapping"), ("a: [1\n", "not valid YAML"),
                                         ("layers: x\n", "layers must be an integer")])
def test_bad_files_name_the_file(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(D4CError, match=words) as info:
        parse_options(str(path))
    assert str(path) in str(info.value) and info.value.parameter == "edfq_config"
    with pytest.raises(D4CError, match="does not exist"):
        parse_options(str(tmp_path / "missing.yaml"))


def test_run_config_checks_the_options_before_any_work(capsys):
    with pytest.raises(D4CError, match="not an EnhancingDFQ option"):
        _config("--dfq", "--gen_img", "--gen_method", "enhancing_dfq", "--edfq", "nope=1")
    assert main(["--dfq", "--gen_img", "--gen_method", "enhancing_dfq", "--edfq", "layers=0"]) == 2
    assert "--edfq option layers must be a positive integer, got 0." in capsys.readouterr().err
    assert main(["--dfq", "--gen_img", "--gen_method", "enhancing_dfq", "--gen_groups", "2"]) == 2
    assert "--gen_groups must be 1 for enhancing_dfq" in capsys.readouterr().err


def test_the_row_and_settings_carry_the_options():
    config = _config("--dfq", "--gen_img", "--gen_method", "enhancing_dfq", "--edfq", "mixer=false",
                     "--edfq", "layers=2")
    assert config.row == "enhancing_dfq"
    assert options_of(config.generation) == EnhancingDFQOptions(mixer=False, layers=2)
    assert options_of(_config("--dfq", "--gen_img").generation) == EnhancingDFQOptions()
