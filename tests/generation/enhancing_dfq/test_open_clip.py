"""EnhancingDFQ on open_clip image towers: its taps read the batch-first blocks and open_clip's Bottleneck
activations, and the same weights through either family train the same generator (up to float rounding)."""

from __future__ import annotations

import pytest
import torch

from d4c.errors import D4CError
from d4c.generation.engine import generate
from d4c.generation.methods.enhancing_dfq.features import EncoderTaps, levels
from d4c.models.loading import load_clip
from tests.numerics import relative_error

from .conftest import small_settings


def _hooked_outputs(modules, run):
    outputs = []
    handles = [m.register_forward_hook(lambda _m, _a, out: outputs.append(out.detach())) for m in modules]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def test_taps_of_an_open_clip_vit_average_batch_first_tokens(open_clip_vit):
    visual = open_clip_vit.model.visual
    blocks = visual.transformer.resblocks
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    outputs = _hooked_outputs(blocks, lambda: visual(images))
    activation = _hooked_outputs([blocks[-1].mlp.gelu], lambda: visual(images))[0]
    assert outputs[0].shape[0] == 3  # open_clip's blocks are batch-first: N x L x D
    taps = EncoderTaps(open_clip_vit.model, layers=2)
    with torch.no_grad(), taps:
        visual(images)
    assert taps.indices == [1, 3]
    assert torch.allclose(taps.features[0], outputs[1].mean(dim=1))
    assert torch.allclose(taps.features[1], outputs[3].mean(dim=1))
    assert torch.allclose(taps.last, activation.reshape(3, -1))


def test_taps_of_an_open_clip_resnet_read_the_stages_and_act3(open_clip_rn):
    visual = open_clip_rn.model.visual
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    stages = [getattr(visual, f"layer{i}") for i in range(1, 5)]
    outputs = _hooked_outputs(stages, lambda: visual(images))
    activation = _hooked_outputs([visual.layer4[-1].act3], lambda: visual(images))[0]
    taps = EncoderTaps(open_clip_rn.model, layers=4)
    with torch.no_grad(), taps:
        visual(images)
    for feature, stage in zip(taps.features, outputs):
        assert torch.allclose(feature, stage.mean(dim=(2, 3)))
    assert torch.allclose(taps.last, activation.flatten(1))


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_the_same_weights_through_either_family_train_the_same_generator(name, request, digit_prompts):
    ours = request.getfixturevalue("open_clip_vit" if name == "tiny-vit" else "open_clip_rn")
    settings = small_settings(layers=2, warmup=0.5, gen_iter=4)
    a = generate(ours.model, settings, "cpu", digit_prompts, progress=False)
    b = generate(load_clip(name).model, settings, "cpu", digit_prompts, progress=False)
    assert a.images.shape == b.images.shape == (6, 3, ours.resolution, ours.resolution)
    assert relative_error(a.loss_history, b.loss_history) < 1e-3
    assert relative_error(a.images, b.images) < 1e-3 and torch.equal(a.targets, b.targets)


def test_too_many_layers_is_one_sentence_naming_the_option(open_clip_vit):
    assert len(levels(open_clip_vit.model)) == 4
    with pytest.raises(D4CError, match=r"option layers \(J = 5\) must be between 1 and the image encoder's 4") as info:
        EncoderTaps(open_clip_vit.model, layers=5)
    assert info.value.parameter == "edfq"
