"""Label embeddings = averaged classifier rows; the classifiers' loss; the encoder taps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from d4c.errors import D4CError
from d4c.generation.methods.enhancing_dfq.embeddings import LayerClassifiers, embeddings_from_classifiers
from d4c.generation.methods.enhancing_dfq.features import EncoderTaps, chosen_indices


def test_embeddings_are_the_averaged_rows_centred_and_scaled():
    torch.manual_seed(0)
    classifiers = LayerClassifiers([5, 7, 3], latent_dim=4, num_classes=6)
    rows = [head[-1].weight.detach() for head in classifiers.heads]  # each 6 x 4
    average = (rows[0] + rows[1] + rows[2]) / 3
    centred = average - average.mean(dim=0)
    expected = torch.stack([r / r.norm() * 2.0 for r in centred])  # sqrt(d) = 2
    assert torch.allclose(embeddings_from_classifiers(classifiers), expected, atol=1e-6)


def test_classifier_loss_is_ce_plus_kl_per_layer():
    torch.manual_seed(1)
    classifiers = LayerClassifiers([5, 3], latent_dim=4, num_classes=6)
    features = [torch.randn(8, 5), torch.randn(8, 3)]
    targets = F.one_hot(torch.randint(6, (8,)), 6).float()
    teacher = torch.softmax(torch.randn(8, 6), dim=1)
    expected = 0.0
    for head, f in zip(classifiers.heads, features):
        hidden = F.relu(head[1](F.layer_norm(f, f.shape[1:])))
        logits = hidden @ head[3].weight.t()
        log_q = F.log_softmax(logits, dim=1)
        expected = expected + F.cross_entropy(logits, targets.argmax(dim=1)) \
            + (teacher * (teacher.log() - log_q)).sum(dim=1).mean()
    assert torch.allclose(classifiers.loss(features, targets, teacher), expected, rtol=1e-5)


def test_chosen_layers_are_evenly_spaced_with_the_last():
    assert chosen_indices(12, 4) == [2, 5, 8, 11]
    assert chosen_indices(4, 4) == [0, 1, 2, 3]
    assert chosen_indices(4, 2) == [1, 3]
    assert chosen_indices(24, 1) == [23]
    with pytest.raises(D4CError, match="between 1 and the image encoder's 4 levels"):
        chosen_indices(4, 5)


def _outputs(visual, modules, images, inputs_of=()):
    """Each of ``modules``' output (and each of ``inputs_of``'s input) in one forward, by plain hooks."""
    outputs, inputs = [], []
    handles = [m.register_forward_hook(lambda m, a, out: outputs.append(out.clone())) for m in modules]
    handles += [m.register_forward_pre_hook(lambda m, a: inputs.append(a[0].clone())) for m in inputs_of]
    with torch.no_grad():
        visual(images)
    for handle in handles:
        handle.remove()
    return outputs, inputs


def test_vit_taps_read_block_outputs_and_the_last_mlp_activation(tiny_vit):
    visual = tiny_vit.model.visual
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    blocks = visual.transformer.resblocks
    outputs, activations = _outputs(visual, blocks, images, [blocks[-1].mlp.c_proj])
    taps = EncoderTaps(tiny_vit.model, layers=2)
    with torch.no_grad(), taps:
        visual(images)
    assert taps.indices == [1, 3]
    assert torch.allclose(taps.features[0], outputs[1].mean(dim=0))
    assert torch.allclose(taps.features[1], outputs[3].mean(dim=0))
    assert torch.allclose(taps.last, activations[0].permute(1, 0, 2).reshape(3, -1))
    assert taps.feature_dims(visual, 32, torch.device("cpu")) == [128, 128]


def test_resnet_taps_read_stage_outputs_and_the_last_relu(tiny_rn):
    visual = tiny_rn.model.visual
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    stages, _ = _outputs(visual, [getattr(visual, f"layer{i}") for i in range(1, 5)], images)
    taps = EncoderTaps(tiny_rn.model, layers=4)
    with torch.no_grad(), taps:
        visual(images)
    for feature, stage in zip(taps.features, stages):
        assert torch.allclose(feature, stage.mean(dim=(2, 3)))
    assert torch.allclose(taps.last, stages[-1].flatten(1))
    assert not visual.layer4[-1].relu3._forward_hooks  # detached on exit
