"""synthesize: method resolution by family, Gaussian noise, prompts, cache, PNG export, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from d4c.data.prompts import DIGITS_PROMPTS, load_prompt_file
from d4c.data.transforms import CLIP_MEAN, CLIP_STD
from d4c.errors import D4CError
from d4c.generation import GenerationSettings, resolve_method, settings_for_row, synthesize
from d4c.generation.cache import PseudoImageCache
from d4c.generation.export import save_png_images

BASE = GenerationSettings(num_images=4, gen_iter=2, gen_batch_size=2)


@pytest.mark.parametrize("method, vit, rn", [
    ("gaussian", "gaussian", "gaussian"), ("d4c", "d4c", "d4c"), ("baseline", "pse", "bns"), ("bns", "bns", "bns"),
])
def test_methods_resolve_by_family(tiny_vit, tiny_rn, method, vit, rn):
    assert resolve_method(method, tiny_vit.model) == vit and resolve_method(method, tiny_rn.model) == rn


@pytest.mark.parametrize("method, model", [("bns", "tiny_vit"), ("pse", "tiny_rn")])
def test_a_baseline_on_the_wrong_family_is_one_sentence(request, method, model):
    with pytest.raises(D4CError) as info:
        synthesize(settings_for_row(method, BASE), request.getfixturevalue(model), "cpu")
    message = str(info.value)
    assert info.value.parameter == "method" and message.startswith(f"method {method} ({method.upper()}) needs")
    assert message.count(". ") == 0 and message.endswith(".")


def test_gaussian_rows_are_seeded_noise_and_never_cached(tmp_path, tiny_vit):
    outcome = synthesize(GenerationSettings(method="gaussian", num_images=6, seed=3),
                         tiny_vit, "cpu", cache=PseudoImageCache(tmp_path / "cache"))
    noise = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))  # the documented draw
    assert torch.equal(outcome.images, noise) and outcome.generation_seconds == 0
    assert not (tmp_path / "cache").exists()


def test_d4c_run_uses_the_prompts_caches_and_exports_pngs(tmp_path, tiny_rn, caplog):
    png = tmp_path / "png"
    generation_prompts = load_prompt_file(str(DIGITS_PROMPTS)).prompts()
    cache = PseudoImageCache(tmp_path / "cache")

    def run():
        return synthesize(settings_for_row("d4c3", BASE), tiny_rn, "cpu", generation_prompts, cache=cache,
                          img_path=png, progress=False).images

    with caplog.at_level("INFO", logger="d4c"):
        images = run()
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.float32 and not images.requires_grad
    out = caplog.text
    assert "d4c3, 4 images x 2 iterations" in out and "s/iteration" in out and "Wrote 4 PNG" in out
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
    caplog.clear()
    with caplog.at_level("INFO", logger="d4c"):
        again = run()  # cache hit: PNGs written all the same
    assert torch.equal(again, images) and len(list(png.glob("*.png"))) == 4
    assert "reusing" in caplog.text


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
