"""The generation loop: schedules, Adam over the whole tensor, resume, NaN stop, RNG hygiene."""

from __future__ import annotations

import pytest
import torch

from d4c.data.prompts import DIGITS_PROMPTS, load_prompt_file
from d4c.errors import D4CError
from d4c.generation.checkpoint import CheckpointStore
from d4c.generation.engine import frozen, generate, initial_images
from d4c.generation.methods.bns import BNS
from d4c.generation.schedules import schedule_steps
from d4c.generation.rows import settings_for_row
from d4c.generation.settings import GenerationSettings
from tests.numerics import assert_relative_close


class Interrupt(Exception):
    pass


def test_schedule_steps():
    assert schedule_steps(128, 16, "reference") == [[(slice(s, s + 16), 1)] for s in range(0, 128, 16)]
    assert schedule_steps(128, 16, "batched") == [[(slice(0, 128), 8)]]
    assert schedule_steps(10, 4, "reference") == [[(slice(0, 4), 1)], [(slice(4, 8), 1)], [(slice(8, 10), 1)]]
    assert schedule_steps(10, 4, "batched") == [[(slice(0, 8), 2), (slice(8, 10), 1)]]
    assert schedule_steps(3, 4, "batched") == [[(slice(0, 3), 1)]]
    assert GenerationSettings(num_images=128).steps_per_iteration == 8
    assert GenerationSettings(num_images=128, gen_schedule="batched").steps_per_iteration == 1


def test_initial_images_are_seeded_standard_normal_and_leave_the_global_rng_alone():
    state = torch.get_rng_state()
    a, _ = initial_images(64, 32, seed=3)
    b, _ = initial_images(64, 32, seed=3)
    c, _ = initial_images(64, 32, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (64, 3, 32, 32) and abs(a.mean()) < 0.01 and abs(a.std() - 1) < 0.01


def _manual_bns(model, settings, device="cpu"):
    """The schedules written out by hand with torch.optim.Adam, for comparison with the engine."""
    x, _ = initial_images(settings.num_images, 32, settings.seed)
    x.requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=settings.gen_lr)
    method = BNS(model, settings, None, torch.device(device))
    method.attach()
    bs = settings.gen_batch_size
    with frozen(model):
        for _ in range(settings.gen_iter):
            if settings.gen_schedule == "reference":
                for s in range(0, settings.num_images, bs):
                    optimizer.zero_grad()
                    method.loss(x[s:s + bs], slice(s, s + bs), 1, torch.Generator()).backward()
                    optimizer.step()
            else:
                optimizer.zero_grad()
                sum(method.loss(x[s:s + bs], slice(s, s + bs), 1, torch.Generator())
                    for s in range(0, settings.num_images, bs)).backward()
                optimizer.step()
    method.detach()
    return x.detach()


@pytest.mark.parametrize("schedule", ["reference", "batched"])
def test_engine_follows_the_schedule(micro_rn, schedule):
    settings = GenerationSettings(method="bns", num_images=6, gen_batch_size=2, gen_iter=3, gen_schedule=schedule)
    result = generate(micro_rn, settings, "cpu", progress=False)
    expected = _manual_bns(micro_rn, settings)
    # Adam's first steps are nearly sign(gradient): a pixel whose tiny gradient rounds to the other sign on
    # another CPU moves 2 * lr the other way, so the images are compared by relative error, not elementwise.
    assert_relative_close(result.images, expected, 1e-3, "images")
    assert len(result.loss_history) == 3 and torch.isfinite(result.loss_history).all()


def test_reference_schedule_moves_images_outside_the_minibatch_on_momentum(micro_rn):
    """With one Adam over the whole tensor, mini-batch 0 keeps moving while mini-batch 1 is optimised."""
    one_step = generate(micro_rn, GenerationSettings(method="bns", num_images=4, gen_batch_size=2, gen_iter=1),
                        "cpu", progress=False).images
    start, _ = initial_images(4, 32, 0)
    x = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=0.01)
    method = BNS(micro_rn, GenerationSettings(method="bns"), None, torch.device("cpu"))
    method.attach()
    optimizer.zero_grad()
    method.loss(x[:2], slice(0, 2), 1, torch.Generator()).backward()
    optimizer.step()
    method.detach()
    after_first_step = x.detach()[:2].clone()
    assert not torch.equal(one_step[:2], after_first_step)  # the second step moved mini-batch 0 again
    assert (one_step[:2] - after_first_step).abs().max() > 1e-3


def test_parameters_are_frozen_and_eval_mode_during_generation_then_restored(micro_vit):
    micro_vit.visual.proj.requires_grad_(False)
    flags = [p.requires_grad for p in micro_vit.parameters()]
    micro_vit.train()
    seen = []
    generate(micro_vit, GenerationSettings(method="pse", num_images=2, gen_batch_size=2, gen_iter=1), "cpu",
             progress=False, on_iteration=lambda k: seen.append((any(p.requires_grad for p in micro_vit.parameters()),
                                                                 micro_vit.training)))
    assert seen == [(False, False)]
    assert [p.requires_grad for p in micro_vit.parameters()] == flags and micro_vit.training


@pytest.mark.parametrize("schedule", ["reference", "batched"])
def test_resume_gives_the_same_final_images_as_an_uninterrupted_run(tiny_vit, tmp_path, schedule):
    prompts = load_prompt_file(str(DIGITS_PROMPTS)).prompts()
    settings = settings_for_row("d4c3", GenerationSettings(num_images=6, gen_batch_size=4, gen_iter=5,
                                                           gen_schedule=schedule, gen_ckpt_every=2, seed=11))
    uninterrupted = generate(tiny_vit.model, settings, "cpu", prompts, progress=False)

    store = CheckpointStore(tmp_path / "run.ckpt.pt", key="recipe")

    def kill_after_three(done):
        if done == 3:
            raise Interrupt

    global_state = torch.get_rng_state()
    with pytest.raises(Interrupt):
        generate(tiny_vit.model, settings, "cpu", prompts, checkpoint=store, progress=False, on_iteration=kill_after_three)
    assert store.path.is_file() and torch.load(store.path, weights_only=True)["iteration"] == 2
    torch.randn(100)  # whatever else happens in the process in between must not matter
    resumed = generate(tiny_vit.model, settings, "cpu", prompts, checkpoint=store, progress=False)
    assert resumed.resumed_from == 2 and resumed.iterations_run == 3
    assert torch.equal(resumed.images, uninterrupted.images)
    assert torch.equal(resumed.loss_history, uninterrupted.loss_history)
    assert torch.equal(resumed.targets, uninterrupted.targets)
    assert not torch.equal(torch.get_rng_state(), global_state)  # (the randn above), generation used its own


SHORT_PROMPTS = ["a photo of a loop."]
SHORT = settings_for_row("d4c0", GenerationSettings(num_images=2, gen_batch_size=2, gen_iter=3, gen_ckpt_every=1))


def _interrupted(model, path) -> CheckpointStore:
    """The checkpoint store (key "A") of a SHORT generation killed after its second iteration."""
    store = CheckpointStore(path, key="A")
    with pytest.raises(Interrupt):
        generate(model, SHORT, "cpu", SHORT_PROMPTS, checkpoint=store, progress=False,
                 on_iteration=lambda k: (_ for _ in ()).throw(Interrupt) if k == 2 else None)
    return store


def test_a_checkpoint_of_another_recipe_is_ignored(tiny_vit, tmp_path):
    prompts, settings = SHORT_PROMPTS, SHORT
    store = _interrupted(tiny_vit.model, tmp_path / "c.pt")
    with pytest.warns(UserWarning, match="another recipe"):
        result = generate(tiny_vit.model, settings, "cpu", prompts, checkpoint=CheckpointStore(store.path, "B"),
                          progress=False)
    assert result.resumed_from == 0


def test_nan_stops_the_run_naming_the_iteration(micro_rn):
    settings = GenerationSettings(method="bns", num_images=2, gen_batch_size=2, gen_iter=30, gen_lr=float("inf"))
    with pytest.raises(D4CError, match=r"^gen_lr inf: .*NaN or Inf in the loss or the images at iteration 1 of 30"):
        generate(micro_rn, settings, "cpu", progress=False)
    assert all(not m._forward_pre_hooks for m in micro_rn.visual.modules())  # hooks removed on the way out


def test_gaussian_method_returns_the_initial_images(micro_vit):
    result = generate(micro_vit, GenerationSettings(method="gaussian", num_images=5, seed=2), "cpu", progress=False)
    assert torch.equal(result.images, initial_images(5, 32, 2)[0])
    assert result.seconds == 0 and len(result.loss_history) == 0


def test_a_checkpoint_made_on_another_device_type_is_ignored(tiny_vit, tmp_path):
    """Per-step random streams differ between CPU and CUDA: resuming there would not reproduce the run."""
    prompts, settings = SHORT_PROMPTS, SHORT
    store = _interrupted(tiny_vit.model, tmp_path / "c.pt")
    state = torch.load(store.path, weights_only=True)
    assert state["device_type"] == "cpu" and store.load(torch.device("cpu"))["iteration"] == 2
    store.save({k: v for k, v in state.items() if k != "key"} | {"device_type": "cuda"})
    with pytest.warns(UserWarning, match="made on cuda, this run is on cpu"):
        assert store.load(torch.device("cpu")) is None
    with pytest.warns(UserWarning, match="made on cuda"):
        result = generate(tiny_vit.model, settings, "cpu", prompts, checkpoint=store, progress=False)
    assert result.resumed_from == 0
