"""--model_type open_clip end to end: the zoo through open_clip gives the OpenAI path's accuracies, the result file
records model_type and pretrained, saved models know their family, and bad tags stop in one sentence."""

from __future__ import annotations

import json

import pytest

from d4c.cli import main

COMMON = ["--dataset", "digits", "--num_workers", "0"]
OPEN_CLIP = ["--model_type", "open_clip"]


def _run(tmp_path, name, *flags):
    out = tmp_path / f"{name}.json"
    assert main([*COMMON, "--output", str(out), *flags]) == 0
    return json.loads(out.read_text())


def test_fp_accuracy_and_the_result_file(tmp_path):
    openai = _run(tmp_path, "openai", "--model", "tiny-rn", "--fp_model")
    template = tmp_path / "{dataset}_{model}_{pretrained}_{model_type}.json"
    assert main([*COMMON, "--model", "tiny-rn", "--fp_model", *OPEN_CLIP, "--output", str(template)]) == 0
    ours = json.loads((tmp_path / "digits_tiny-rn_none_open_clip.json").read_text())
    assert ours["metrics"] == pytest.approx(openai["metrics"], abs=1.5 / 539)  # at most one borderline image
    assert (ours["model"], ours["model_type"], ours["pretrained"]) == ("tiny-rn", "open_clip", None)
    assert (openai["model_type"], openai["pretrained"]) == ("openai", None)
    assert ours["args"]["model_type"] == "open_clip" and "pretrained" in ours["args"]


@pytest.mark.slow
def test_fp_accuracy_of_tiny_vit_through_open_clip(tmp_path):
    openai = _run(tmp_path, "openai", "--model", "tiny-vit", "--fp_model")
    ours = _run(tmp_path, "ours", "--model", "tiny-vit", "--fp_model", *OPEN_CLIP)
    assert ours["metrics"] == pytest.approx(openai["metrics"], abs=1.5 / 539)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_w4a8_d4c3_with_reconstruction_matches_the_openai_path(name, tmp_path, fast_qconfig):
    """The paper's D4C row (cut for a CPU) through both families: within 0.5 points of each other."""
    config = fast_qconfig("config48", calibrate={"visual": 16, "text": 32},
                          recon={"visual_batch_size": 8, "text_batch_size": 8})
    flags = ["--model", name, "--q_config", config, "--recon", "--recon_iters", "10", "--dfq", "--gen_img",
             "--d4c_config", "3", "--gen_iter", "5", "--gen_cache_dir", "none",
             "--custom_file", "d4c/template/digits_classnames_templates.json"]
    openai = _run(tmp_path, "openai", *flags)
    ours = _run(tmp_path, "ours", *flags, *OPEN_CLIP)
    assert ours["method"] == openai["method"] == "d4c3" and ours["recon"] and ours["model_type"] == "open_clip"
    assert [u["name"] for u in ours["reconstruction_units"]] == [u["name"] for u in openai["reconstruction_units"]]
    assert abs(ours["metrics"]["acc1"] - openai["metrics"]["acc1"]) <= 0.005


def test_a_saved_open_clip_model_knows_its_family(tmp_path, fast_qconfig, capsys):
    config = fast_qconfig("config48", calibrate={"visual": 8, "text": 16})
    saved = _run(tmp_path, "q", "--model", "tiny-rn", "--q_config", config, "--dfq", *OPEN_CLIP)
    assert main([*COMMON, "--model", "tiny-rn", "--load_quant", saved["quant_state"],
                 "--output", str(tmp_path / "wrong.json")]) == 2
    assert ("holds a quantized --model tiny-rn --model_type open_clip, not --model tiny-rn; pass the flags it was "
            "made with (the same weights).") in capsys.readouterr().err
    again = _run(tmp_path, "again", "--model", "tiny-rn", "--load_quant", saved["quant_state"], *OPEN_CLIP)
    assert again["metrics"] == saved["metrics"]


def test_tags_and_families_are_checked_with_one_sentence(tmp_path, capsys):
    argv = [*COMMON, "--fp_model", "--output", str(tmp_path / "r.json")]
    assert main([*argv, "--model", "ViT-B-32", *OPEN_CLIP, "--pretrained", "laion2b_s34b_b79k",
                 "--model_cache_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("d4c-quant: error: --pretrained laion2b_s34b_b79k of ViT-B-32 is not cached and "
                          "D4C_OFFLINE is set: place open_clip_model.safetensors or open_clip_pytorch_model.bin")
    assert len(err.splitlines()) == 1
    assert main([*argv, "--model", "tiny-vit", "--pretrained", "openai"]) == 2
    assert "--pretrained openai applies to --model_type open_clip only" in capsys.readouterr().err
    assert main([*argv, "--model", "ViT-B-16-SigLIP", *OPEN_CLIP, "--pretrained", "webli"]) == 2
    assert "--model ViT-B-16-SigLIP is a SigLIP model" in capsys.readouterr().err


def test_preflight_checks_open_clip_models_before_loading_any(tmp_path, capsys, monkeypatch):
    import d4c.pipeline

    monkeypatch.setattr(d4c.pipeline, "load_clip", lambda *a, **k: pytest.fail("the model was loaded"))
    argv = [*COMMON, "--output", str(tmp_path / "r.json"), *OPEN_CLIP]
    for model in ("tiny-vit", "random:ViT-B-32"):
        assert main([*argv, "--model", model, "--dfq", "--gen_img", "--gen_method", "bns"]) == 2
        assert f"needs a ResNet image encoder (BatchNorm statistics), such as RN50, but {model} is a ViT" in \
            capsys.readouterr().err
    # RN50 is also an OpenAI name: open_clip's tag is looked up, not OpenAI's cache file
    assert main([*argv, "--model", "RN50", "--pretrained", "yfcc15m", "--model_cache_dir", str(tmp_path)]) == 2
    assert "--pretrained yfcc15m of RN50 is not cached and D4C_OFFLINE is set" in capsys.readouterr().err


def test_skip_existing_tells_the_families_apart(tmp_path, capsys):
    out = str(tmp_path / "r.json")
    _run(tmp_path, "r", "--model", "tiny-rn", "--fp_model", *OPEN_CLIP)
    assert main([*COMMON, "--model", "tiny-rn", "--fp_model", *OPEN_CLIP, "--skip_existing", "--output", out]) == 0
    assert main([*COMMON, "--model", "tiny-rn", "--fp_model", "--skip_existing", "--output", out]) == 2
    assert "holds a result of tiny-rn (open_clip, sha256 " in capsys.readouterr().err
