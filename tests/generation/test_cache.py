"""The recipe cache: keys, hits and misses, forced regeneration, resume through the cache, damaged entries."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from d4c.generation.cache import PseudoImageCache, build_recipe, model_identity, recipe_key
from d4c.generation.engine import generate
from d4c.generation.settings import GenerationSettings
from d4c.generation.synthesis import synthesize

PROMPTS = ["a photo of a loop.", "a photo of a hook."]
BASE = GenerationSettings(method="d4c", num_images=4, gen_batch_size=2, gen_iter=2).with_options(d4c_config=1)


def _key(settings=BASE, prompts=PROMPTS, name="tiny-vit", source="random initialisation", resolution=32):
    return recipe_key(build_recipe(settings, name, source, resolution, prompts))


@pytest.mark.parametrize("change", [
    {"gen_iter": 3}, {"gen_lr": 0.02}, {"seed": 1}, {"gen_schedule": "batched"}, {"gen_batch_size": 4},
    {"num_images": 8}, {"options": {"d4c_config": 3}}, {"method": "pse"},
])
def test_every_recipe_field_changes_the_key(change):
    assert _key(dataclasses.replace(BASE, **change)) != _key()


def test_prompts_model_and_resolution_change_the_key_but_not_the_checkpoint_interval():
    assert _key(prompts=PROMPTS[::-1]) != _key()
    assert _key(name="tiny-rn") != _key()
    assert _key(resolution=64) != _key()
    assert _key(dataclasses.replace(BASE, gen_ckpt_every=7)) == _key()
    # prompts and D4C config do not matter to the baselines
    pse = dataclasses.replace(BASE, method="pse")
    assert _key(pse, prompts=None) == _key(pse.with_options(d4c_config=0), prompts=PROMPTS)


def test_model_files_are_identified_by_content_not_path(tmp_path):
    a, b, c = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "c.pt"
    a.write_bytes(b"weights-1")
    b.write_bytes(b"weights-1")
    c.write_bytes(b"weights-2")
    assert model_identity(str(a), str(a)) == model_identity(str(b), str(b)) != model_identity(str(c), str(c))
    assert model_identity("ViT-B/32", "openai:ViT-B/32") == {"name": "ViT-B/32"}


def test_cache_misses_then_hits_and_force_regenerates(tiny_vit, tmp_path, caplog):
    caplog.set_level("INFO", logger="d4c")
    cache = PseudoImageCache(tmp_path / "cache")
    first = synthesize(BASE, tiny_vit, "cpu", PROMPTS, cache=cache, progress=False)
    assert not first.from_cache and first.cache_path.is_file()
    recipe_file = first.cache_path.with_suffix(".json")
    stored = json.loads(recipe_file.read_text())
    assert stored["key"] == first.key and stored["recipe"]["gen_iter"] == 2 and stored["recipe"]["d4c_config"] == 1
    assert stored["final_loss"] == pytest.approx(first.final_loss)
    assert not list(cache.root.glob("*.ckpt.pt"))  # checkpoint removed once the images are stored
    assert "s/iteration" in caplog.text
    caplog.clear()

    second = synthesize(BASE, tiny_vit, "cpu", PROMPTS, cache=cache, progress=False)
    assert second.from_cache and second.generation_seconds == 0
    assert torch.equal(second.images, first.images) and torch.equal(second.targets, first.targets)
    assert "reusing" in caplog.text

    other = synthesize(dataclasses.replace(BASE, seed=5), tiny_vit, "cpu", PROMPTS, cache=cache, progress=False)
    assert not other.from_cache and not torch.equal(other.images, first.images)

    mtime = first.cache_path.stat().st_mtime_ns
    forced = synthesize(BASE, tiny_vit, "cpu", PROMPTS, cache=cache, force=True, progress=False)
    assert not forced.from_cache and torch.equal(forced.images, first.images)  # deterministic
    assert first.cache_path.stat().st_mtime_ns >= mtime
    assert len(list(cache.root.glob("*.pt"))) == 2


def test_a_damaged_cache_entry_is_regenerated(tiny_vit, tmp_path):
    cache = PseudoImageCache(tmp_path)
    first = synthesize(BASE, tiny_vit, "cpu", PROMPTS, cache=cache, progress=False)
    first.cache_path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="not a readable file of cached pseudo images"):
        again = synthesize(BASE, tiny_vit, "cpu", PROMPTS, cache=cache, progress=False)
    assert not again.from_cache and torch.equal(again.images, first.images)


def test_synthesize_resumes_from_the_recipe_checkpoint(tiny_vit, tmp_path):
    settings = dataclasses.replace(BASE, gen_iter=4, gen_ckpt_every=2).with_options(d4c_config=3)
    reference = synthesize(settings, tiny_vit, "cpu", PROMPTS, cache=None, progress=False)
    cache = PseudoImageCache(tmp_path)
    key = recipe_key(build_recipe(settings, tiny_vit.name, tiny_vit.source, tiny_vit.resolution, PROMPTS))
    store = cache.checkpoint(cache.stem(key, tiny_vit.name, settings), key)

    def killed(done):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(tiny_vit.model, settings, "cpu", PROMPTS, checkpoint=store, progress=False, on_iteration=killed)
    resumed = synthesize(settings, tiny_vit, "cpu", PROMPTS, cache=cache, progress=False)
    assert resumed.resumed_from == 2 and torch.equal(resumed.images, reference.images)
    assert not store.path.exists()


def test_force_discards_a_leftover_checkpoint(tiny_vit, tmp_path):
    settings = dataclasses.replace(BASE, gen_iter=3, gen_ckpt_every=1)
    cache = PseudoImageCache(tmp_path)
    key = recipe_key(build_recipe(settings, tiny_vit.name, tiny_vit.source, tiny_vit.resolution, PROMPTS))
    store = cache.checkpoint(cache.stem(key, tiny_vit.name, settings), key)
    with pytest.raises(KeyboardInterrupt):
        generate(tiny_vit.model, settings, "cpu", PROMPTS, checkpoint=store, progress=False,
                 on_iteration=lambda k: (_ for _ in ()).throw(KeyboardInterrupt) if k == 2 else None)
    forced = synthesize(settings, tiny_vit, "cpu", PROMPTS, cache=cache, force=True, progress=False)
    assert forced.resumed_from == 0


def test_cache_flag_none_turns_caching_off(tmp_path):
    assert PseudoImageCache.from_flag("none") is None
    assert PseudoImageCache.from_flag(str(tmp_path)).root == tmp_path


def test_cache_files_survive_a_copy_of_the_folder(tiny_vit, tmp_path):
    cache = PseudoImageCache(tmp_path / "a")
    first = synthesize(BASE, tiny_vit, "cpu", PROMPTS, cache=cache, progress=False)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    hit = synthesize(BASE, tiny_vit, "cpu", PROMPTS, cache=PseudoImageCache(tmp_path / "b"), progress=False)
    assert hit.from_cache and torch.equal(hit.images, first.images)


def test_the_loss_history_is_kept_and_old_entries_without_it_still_load(tiny_vit, tmp_path):
    cache = PseudoImageCache(tmp_path)
    first = synthesize(BASE, tiny_vit, "cpu", PROMPTS, cache=cache, progress=False)
    assert len(first.loss_history) == BASE.gen_iter and torch.isfinite(first.loss_history).all()
    hit = synthesize(BASE, tiny_vit, "cpu", PROMPTS, cache=cache, progress=False)
    assert hit.from_cache and torch.equal(hit.loss_history, first.loss_history)
    assert hit.final_loss == pytest.approx(json.loads(first.cache_path.with_suffix(".json").read_text())["final_loss"])

    stored = torch.load(first.cache_path, weights_only=True)
    del stored["loss_history"]  # an entry written before the history was kept
    torch.save(stored, first.cache_path)
    old = synthesize(BASE, tiny_vit, "cpu", PROMPTS, cache=cache, progress=False)
    assert old.from_cache and torch.equal(old.images, first.images) and len(old.loss_history) == 0
