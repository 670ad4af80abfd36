"""The training loop: ablation switches, warm-up embeddings, resume, the saved generator, RNG hygiene."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from d4c.errors import D4CError
from d4c.generation.cache import PseudoImageCache
from d4c.generation.checkpoint import CheckpointStore
from d4c.generation.engine import frozen, generate, step_generator
from d4c.generation.fastpaths import fast_image_encoder
from d4c.generation.methods.enhancing_dfq import options_of
from d4c.generation.methods.enhancing_dfq.embeddings import embeddings_from_classifiers
from d4c.generation.methods.enhancing_dfq.training import GeneratorTrainer, build_sampler
from d4c.generation.synthesis import synthesize
from d4c.models.loading import load_clip

from .conftest import small_settings


class Interrupt(Exception):
    pass


def _inputs(sampler, n=4, seed=0):
    return sampler.draw_inputs(n, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mixer, flow", [(True, True), (True, False), (False, True), (False, False)])
def test_mixer_and_flow_switches_change_the_generator_input(mixer, flow):
    options = options_of(small_settings(mixer=mixer, flow_attention=flow, layers=2))
    sampler, _ = build_sampler(5, 32, options, seed=0, device=torch.device("cpu"))
    assert (sampler.mixer is not None, sampler.flow is not None) == (mixer, flow)
    labels, weights, z = _inputs(sampler)
    h, targets = sampler.condition(labels, weights, z)
    if mixer:
        embedding, expected_targets = sampler.mixer(sampler.embeddings, weights)
    else:
        embedding, expected_targets = sampler.embeddings[labels], F.one_hot(labels, 5).float()
    assert torch.equal(targets, expected_targets)
    assert torch.allclose(h, sampler.flow(embedding, z) if flow else z * embedding)


def test_label_embeddings_come_from_the_classifiers_at_the_end_of_the_warm_up(tiny_vit, digit_prompts):
    settings = small_settings(gen_iter=10, warmup=0.3)
    trainer = GeneratorTrainer(tiny_vit.model, settings, options_of(settings), digit_prompts, torch.device("cpu"))
    initial = trainer.state.sampler.embeddings.detach().clone()
    generator = step_generator(0, torch.device("cpu"))
    with frozen(tiny_vit.model), fast_image_encoder(tiny_vit.model), trainer.taps:
        for index in range(3):
            assert not trainer.state.embeddings_replaced
            trainer.step(index, generator)
        assert trainer.state.embeddings_replaced
        assert torch.allclose(trainer.state.sampler.embeddings, embeddings_from_classifiers(trainer.state.classifiers))
        classifier_weights = [p.detach().clone() for p in trainer.state.classifiers.parameters()]
        trainer.step(3, generator)  # after the warm-up the classifiers rest
    assert all(torch.equal(a, b) for a, b in zip(classifier_weights, trainer.state.classifiers.parameters()))
    assert not torch.allclose(initial, trainer.state.sampler.embeddings)

    off = small_settings(gen_iter=10, label_embeddings=False)
    trainer = GeneratorTrainer(tiny_vit.model, off, options_of(off), digit_prompts, torch.device("cpu"))
    assert trainer.state.classifiers is None and trainer.warmup == 0
    assert torch.equal(trainer.state.sampler.embeddings, initial)  # the same seeded N(0, 1) start


def test_the_losses_switch_adds_simloss1(tiny_rn, digit_prompts):
    cpu = torch.device("cpu")
    trainers, steps = {}, {}
    for on in (True, False):
        settings = small_settings(losses=on, label_embeddings=False)
        trainers[on] = GeneratorTrainer(tiny_rn.model, settings, options_of(settings), digit_prompts, cpu)
    generators = {on: step_generator(0, cpu) for on in trainers}
    with frozen(tiny_rn.model), fast_image_encoder(tiny_rn.model):
        for on, trainer in trainers.items():
            with trainer.taps:
                steps[on] = [trainer.step(0, generators[on])]  # no averages yet: same loss, same update
        before = copy.deepcopy(trainers[False].state.sampler)
        means = trainers[True].state.memory.means.clone()
        seen = trainers[True].state.memory.seen.clone()
        state = generators[True].get_state()
        for on, trainer in trainers.items():
            with trainer.taps:
                steps[on].append(trainer.step(1, generators[on]))
        # SimLoss_1 of the second batch against the first batch's averages, recomputed by hand
        generator = torch.Generator().manual_seed(0)
        generator.set_state(state)
        images, targets = before(*before.draw_inputs(4, generator))
        taps = trainers[True].taps
        with torch.no_grad(), taps:
            tiny_rn.model.encode_image(images)
        labels = targets.argmax(dim=1)
        cosine = F.cosine_similarity(taps.last, means[labels], dim=1) * seen[labels]
    assert torch.allclose(steps[True][0], steps[False][0]) and trainers[False].state.memory.means is None
    assert float(cosine.abs().sum()) > 0
    assert torch.allclose(steps[True][1] - steps[False][1], cosine.mean(), rtol=1e-4, atol=1e-6)


def test_resume_gives_the_identical_images(tmp_path, tiny_vit, digit_prompts):
    settings = small_settings()
    straight = generate(tiny_vit.model, settings, "cpu", digit_prompts, progress=False)
    store = CheckpointStore(tmp_path / "run.ckpt.pt", "key")

    def stop(done):
        if done == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        generate(tiny_vit.model, settings, "cpu", digit_prompts, checkpoint=store, progress=False, on_iteration=stop)
    assert store.path.is_file()
    resumed = generate(tiny_vit.model, settings, "cpu", digit_prompts, checkpoint=store, progress=False)
    assert resumed.resumed_from == 2 and resumed.iterations_run == 4
    assert torch.equal(resumed.images, straight.images) and torch.equal(resumed.targets, straight.targets)
    assert torch.equal(resumed.loss_history, straight.loss_history)


def test_the_saved_generator_draws_more_images_without_training(tmp_path, tiny_rn, digit_prompts):
    cache = PseudoImageCache(tmp_path)
    state = torch.get_rng_state()
    first = synthesize(small_settings(num_images=5), tiny_rn, "cpu", digit_prompts, cache=cache, progress=False)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    generators = list(tmp_path.glob("*.generator.pt"))
    assert len(generators) == 1 and first.generation_seconds > 0
    more = synthesize(small_settings(num_images=9), tiny_rn, "cpu", digit_prompts, cache=cache, progress=False)
    assert more.resumed_from == 6 and not more.from_cache  # drawn from the saved generator, no step taken
    assert torch.equal(more.images[:5], first.images) and more.images.shape == (9, 3, 64, 64)
    assert more.captions()[:5] == first.captions()
    assert len(list(tmp_path.glob("*.pt"))) == 3  # two image sets, one generator
    forced = synthesize(small_settings(num_images=9), tiny_rn, "cpu", digit_prompts, cache=cache, force=True,
                        progress=False)
    assert forced.resumed_from == 0 and torch.equal(forced.images, more.images)  # retrained, same seed


def test_divergence_is_one_sentence(tiny_vit, digit_prompts):
    settings = small_settings(lr_generator=1e30, gen_iter=4)
    with pytest.raises(D4CError, match="lr_generator 1e.30.*diverged") as info:
        generate(tiny_vit.model, settings, "cpu", digit_prompts, progress=False)
    assert "\n" not in str(info.value)


def test_unknown_encoders_and_missing_prompts_are_refused(micro_vit, tiny_vit):
    with pytest.raises(D4CError, match="between 1 and the image encoder's 1 levels"):
        generate(micro_vit, small_settings(), "cpu", ["a photo of a thing."], progress=False)
    with pytest.raises(D4CError, match="needs generation prompts"):
        generate(tiny_vit.model, small_settings(), "cpu", None, progress=False)
    model = load_clip("tiny-rn", "cpu").model
    model.visual = torch.nn.Identity()
    with pytest.raises(D4CError, match=r"ViT \(VisionTransformer\) or ResNet \(ModifiedResNet\)") as info:
        generate(model, small_settings(), "cpu", ["a photo of a thing."], progress=False)
    assert info.value.parameter == "method" and "not of a Identity" in str(info.value)
