"""The run-level entry point: method resolution by family, prompts, PNG export, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from d4c.cli import build_parser
from d4c.config import RunConfig
from d4c.data.prompts import DIGITS_PROMPTS
from d4c.data.transforms import CLIP_MEAN, CLIP_STD
from d4c.errors import D4CError
from d4c.generation.engine import initial_images
from d4c.generation.export import save_png_images
from d4c.generation.synthesis import resolve_method, synthesize_for_run


def _config(tmp_path, *flags):
    argv = ["--gen_iter", "2", "--gen_batch_size", "2", "--gen_cache_dir", str(tmp_path / "cache"), *flags]
    return RunConfig.from_namespace(build_parser().parse_args(argv))


@pytest.mark.parametrize("flags, vit, rn", [
    (["--dfq"], "gaussian", "gaussian"),
    (["--dfq", "--gen_img"], "d4c", "d4c"),
    (["--dfq", "--gen_img", "--gen_method", "baseline"], "pse", "bns"),
    (["--dfq", "--gen_img", "--gen_method", "bns"], "bns", "bns"),
])
def test_methods_resolve_by_family(tmp_path, tiny_vit, tiny_rn, flags, vit, rn):
    config = _config(tmp_path, *flags)
    assert resolve_method(config, tiny_vit) == vit and resolve_method(config, tiny_rn) == rn


@pytest.mark.parametrize("method, model", [("bns", "tiny_vit"), ("pse", "tiny_rn")])
def test_a_baseline_on_the_wrong_family_is_one_sentence(tmp_path, request, method, model):
    config = _config(tmp_path, "--dfq", "--gen_img", "--gen_method", method)
    with pytest.raises(D4CError) as info:
        synthesize_for_run(config, request.getfixturevalue(model), 4, torch.device("cpu"))
    message = str(info.value)
    assert message.count(". ") == 0 and message.endswith(".") and method.upper() in message


def test_gaussian_rows_are_seeded_noise_and_never_cached(tmp_path, tiny_vit):
    config = _config(tmp_path, "--dfq", "--seed", "3")
    images = synthesize_for_run(config, tiny_vit, 6, torch.device("cpu"))
    assert torch.equal(images, initial_images(6, 32, 3)[0])
    assert not (tmp_path / "cache").exists()


def test_d4c_run_uses_the_prompt_file_caches_and_exports_pngs(tmp_path, tiny_rn, capsys):
    png = tmp_path / "png"
    config = _config(tmp_path, "--dfq", "--gen_img", "--d4c_config", "3", "--custom_file", str(DIGITS_PROMPTS),
                     "--img_path", str(png))
    images = synthesize_for_run(config, tiny_rn, 4, torch.device("cpu"))
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.float32 and not images.requires_grad
    out = capsys.readouterr().out
    assert "d4c config 3, 4 images x 2 iterations" in out and "s/iteration" in out and "Wrote 4 PNG" in out
    files = sorted(png.glob("*.png"))
    assert [f.name for f in files] == ["00000.png", "00001.png", "00002.png", "00003.png"]
    captions = json.loads((png / "captions.json").read_text())
    prompts = json.loads(DIGITS_PROMPTS.read_text())
    assert set(captions) == {f.name for f in files}
    assert all(any(c == t.format(c=name) for t in prompts["templates"] for name in prompts["classnames"])
               for c in captions.values())
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1

    for f in files:
        f.unlink()
    again = synthesize_for_run(config, tiny_rn, 4, torch.device("cpu"))  # cache hit: PNGs written all the same
    assert torch.equal(again, images) and len(list(png.glob("*.png"))) == 4
    assert "reusing" in capsys.readouterr().out


def test_png_pixels_are_denormalised_and_clipped(tmp_path):
    images = torch.randn(3, 3, 5, 6, generator=torch.Generator().manual_seed(0)) * 2
    paths = save_png_images(images, tmp_path)
    mean, std = np.array(CLIP_MEAN)[:, None, None], np.array(CLIP_STD)[:, None, None]
    for path, x in zip(paths, images.double().numpy()):
        expected = np.clip(np.round((x * std + mean) * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)
        with Image.open(path) as png:
            assert png.mode == "RGB"
            assert np.array_equal(np.asarray(png), expected)
    assert not list(tmp_path.glob("*.tmp"))


def test_a_bad_prompt_file_is_reported_before_generating(tmp_path, tiny_vit):
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"classnames": ["loop"], "templates": ["a photo"]}))
    config = _config(tmp_path, "--dfq", "--gen_img", "--custom_file", str(bad))
    with pytest.raises(D4CError, match="no {c} placeholder"):
        synthesize_for_run(config, tiny_vit, 2, torch.device("cpu"))


def test_new_generation_flags_are_validated():
    parser = build_parser()
    with pytest.raises(D4CError, match="--gen_ckpt_every"):
        RunConfig.from_namespace(parser.parse_args(["--gen_ckpt_every", "-1"]))
    config = RunConfig.from_namespace(parser.parse_args(["--gen_schedule", "batched", "--gen_force"]))
    assert config.gen_schedule == "batched" and config.gen_force and config.gen_cache_dir == "./cache/pseudo_images"
    assert RunConfig.from_namespace(parser.parse_args(["--dfq", "--gen_img", "--gen_method", "pse"])).method == "baseline"
