"""Quantization config files: the shipped configs, root inheritance, overrides and every validation error."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from d4c.io import REPO_ROOT
from d4c.errors import D4CError
from d4c.quantization.qconfig import load_qconfig, qconfig_from_dict

BASE = {
    "a_qconfig": {"quantizer": "LSQFakeQuantize", "observer": "MSEObserver", "bit": 8, "symmetric": False,
                  "ch_axis": -1},
    "w_qconfig": {"quantizer": "AdaRoundFakeQuantize", "observer": "MSEObserver", "bit": 4, "symmetric": False,
                  "ch_axis": 0},
    "calibrate": {"visual": 128, "text": 512},
    "recon": {"visual_batch_size": 32, "text_batch_size": 32, "visual_scale_lr": 4.0e-5, "text_scale_lr": 4.0e-6,
              "warm_up": 0.2, "weight": 0.01, "iters": 20000, "b_range": [20, 2], "keep_gpu": True,
              "round_mode": "learned_hard_sigmoid", "drop_prob": 1.0},
}


def _write(path, doc):
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.mark.parametrize("name, w_bit, a_bit", [("config44", 4, 4), ("config48", 4, 8), ("config66", 6, 6),
                                                 ("config88", 8, 8)])
def test_shipped_configs(name, w_bit, a_bit):
    q = load_qconfig(f"./exp/{name}.yaml")
    assert (q.w_qconfig.bit, q.a_qconfig.bit) == (w_bit, a_bit)
    assert q.w_qconfig.quantizer == "AdaRoundFakeQuantize" and q.a_qconfig.quantizer == "LSQFakeQuantize"
    assert q.w_qconfig.ch_axis == 0 and q.a_qconfig.ch_axis == -1
    assert (q.calibrate.visual, q.calibrate.text) == (128, 512)
    assert q.recon.iters == 20000 and q.recon.b_range == (20.0, 2.0) and q.recon.text_scale_lr == pytest.approx(4e-6)
    assert q.recon.token_loss == "all"  # optional key, defaulted to the reference's loss
    # optional keys defaulted to the reference implementation's units and loss reduction
    assert q.recon.attention_unit == "linear" and q.recon.loss_sum == "dim1"
    assert (REPO_ROOT / "exp" / f"{name}.yaml").is_file()


def test_root_inheritance_and_override(tmp_path):
    parent = _write(tmp_path / "parent.yaml", BASE)
    (tmp_path / "sub").mkdir()
    child = tmp_path / "sub" / "child.yaml"
    child.write_text(textwrap.dedent("""\
        root: ../parent.yaml
        w_qconfig: {bit: 3}
        recon: {iters: 7}
    """))
    q = load_qconfig(str(child))
    assert q.w_qconfig.bit == 3 and q.w_qconfig.observer == "MSEObserver" and q.recon.iters == 7
    assert q.recon.warm_up == pytest.approx(0.2) and parent
    assert load_qconfig(str(child), recon_iters=11).recon.iters == 11
    assert qconfig_from_dict(q.as_dict()) == q.__class__(**{**q.__dict__, "path": ""})


def _mutated(section, key, value):
    doc = {k: dict(v) for k, v in BASE.items()}
    if value is _DELETE:
        del doc[section][key]
    else:
        doc[section][key] = value
    return doc


_DELETE = object()
BAD = [
    ("w_qconfig", "bit", 1, "w_qconfig.bit must be an integer in 2..16, got 1"),
    ("a_qconfig", "bit", 17, "a_qconfig.bit must be an integer in 2..16, got 17"),
    ("a_qconfig", "bit", 8.5, "a_qconfig.bit must be an integer in 2..16"),
    ("w_qconfig", "quantizer", "RoundFakeQuantize", "w_qconfig.quantizer must be one of"),
    ("a_qconfig", "quantizer", "AdaRoundFakeQuantize", "a_qconfig.quantizer must be an activation quantizer"),
    ("a_qconfig", "observer", "EMAObserver", "a_qconfig.observer must be one of"),
    ("w_qconfig", "symmetric", "no", "w_qconfig.symmetric must be true or false"),
    ("w_qconfig", "ch_axis", 1, "w_qconfig.ch_axis must be -1 (per-tensor) or 0"),
    ("a_qconfig", "ch_axis", 0, "a_qconfig.ch_axis must be -1"),
    ("calibrate", "visual", 0, "calibrate.visual must be a positive integer, got 0"),
    ("calibrate", "text", -5, "calibrate.text must be a positive integer"),
    ("recon", "iters", 0, "recon.iters must be a positive integer"),
    ("recon", "visual_batch_size", 0, "recon.visual_batch_size must be a positive integer"),
    ("recon", "text_scale_lr", 0, "recon.text_scale_lr must be a positive number, got 0"),
    ("recon", "visual_scale_lr", -1e-5, "recon.visual_scale_lr must be a positive number"),
    ("recon", "visual_scale_lr", "fast", "recon.visual_scale_lr must be a positive number"),
    ("recon", "warm_up", 1.5, "recon.warm_up must be a number in [0, 1]"),
    ("recon", "weight", -0.1, "recon.weight must be a non-negative number"),
    ("recon", "b_range", [20], "recon.b_range must be a list of two positive numbers"),
    ("recon", "keep_gpu", "yes please", "recon.keep_gpu must be true or false"),
    ("recon", "round_mode", "nearest", "recon.round_mode must be one of learned_hard_sigmoid"),
    ("recon", "drop_prob", 0, "recon.drop_prob must be a number in (0, 1]"),
    ("recon", "drop_prob", 1.5, "recon.drop_prob must be a number in (0, 1]"),
    ("recon", "token_loss", "cls", "recon.token_loss must be one of relevant, all"),
    ("recon", "attention_unit", "block", "recon.attention_unit must be one of linear, core"),
    ("recon", "loss_sum", "tokens", "recon.loss_sum must be one of dim1, channels"),
    ("recon", "iters", _DELETE, "recon.iters is missing"),
    ("w_qconfig", "observer", _DELETE, "w_qconfig.observer is missing"),
]


@pytest.mark.parametrize("section, key, value, message", BAD, ids=[f"{b[0]}.{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_invalid_values_name_file_and_key(tmp_path, section, key, value, message):
    path = _write(tmp_path / "bad.yaml", _mutated(section, key, value))
    with pytest.raises(D4CError) as info:
        load_qconfig(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text and text.endswith(".")
    assert "\n" not in text


def test_lr_written_without_a_dot_is_accepted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE).replace("4.0e-05", "4e-5"))
    assert load_qconfig(str(path)).recon.visual_scale_lr == pytest.approx(4e-5)


def test_inherited_bad_value_names_the_parent(tmp_path):
    _write(tmp_path / "parent.yaml", _mutated("recon", "iters", -3))
    child = tmp_path / "child.yaml"
    child.write_text("root: parent.yaml\nw_qconfig: {bit: 3}\n")
    with pytest.raises(D4CError, match=r"parent\.yaml: recon\.iters must be a positive integer, got -3"):
        load_qconfig(str(child))


@pytest.mark.parametrize("text, message", [
    ("a_qconfig: {bit: 8\n", "is not valid YAML"),
    ("- just\n- a list\n", "must hold a YAML mapping"),
    ("extra_config: {}\n", "unknown section 'extra_config'"),
    ("a_qconfig: {bits: 8}\n", "unknown key a_qconfig.bits"),
    ("a_qconfig: 8\n", "a_qconfig must be a mapping"),
    ("root: nowhere.yaml\n", "root nowhere.yaml does not exist"),
    ("root: self.yaml\n", "root forms a cycle"),
    ("a_qconfig: {bit: 8}\n", "a_qconfig.quantizer is missing"),
    ("a_qconfig: {quantizer: LSQFakeQuantize, observer: MinMaxObserver, bit: 8, symmetric: false, ch_axis: -1}\n",
     "section w_qconfig is missing"),
])
def test_malformed_files(tmp_path, text, message):
    path = tmp_path / "self.yaml"
    path.write_text(text)
    with pytest.raises(D4CError) as info:
        load_qconfig(str(path))
    assert message in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file():
    with pytest.raises(D4CError, match="^q_config ./exp/nope.yaml does not exist"):
        load_qconfig("./exp/nope.yaml")
