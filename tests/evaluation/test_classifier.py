"""The batched, cut zero-shot classifier equals clip_benchmark's; precomputed weights change nothing."""

from __future__ import annotations

from functools import partial

import clip
import pytest
import torch
from clip_benchmark.metrics.zeroshot_classification import zero_shot_classifier

from d4c.evaluation.classifier import encode_text_cut, prompt_tokens, zeroshot_classifier
from d4c.models.family import family_of
from d4c.quantization.calibration import calibrate
from d4c.quantization.frozen import precomputed_weights
from d4c.quantization.qconfig import load_qconfig
from d4c.quantization.quant_clip import quantize_clip, quantized_layers

CLASSES = ["cat", "dog", "sea otter", "jack-o'-lantern", "a very long class name with many many words in it"]
TEMPLATES = ["a photo of a {c}.", "itap of the {c}.", "a {c}", "a low resolution photo of the {c}, with words."]


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _reference(model):
    tokenizer = partial(clip.tokenize, context_length=model.context_length, truncate=True)
    with torch.no_grad():
        return zero_shot_classifier(model, tokenizer, CLASSES, TEMPLATES, "cpu", amp=False)


@pytest.mark.parametrize("arch", ["micro_vit", "micro_rn"])
def test_full_precision_classifier_equals_clip_benchmarks(arch, request):
    model = request.getfixturevalue(arch)
    got = zeroshot_classifier(model, CLASSES, TEMPLATES, "cpu", batch_size=7)
    ref = _reference(model)
    assert got.shape == ref.shape == (model.text_projection.shape[1], len(CLASSES))
    assert _relative_error(got, ref) < 1e-5


def test_quantized_classifier_equals_clip_benchmarks(micro_vit, fast_qconfig):
    quantize_clip(micro_vit, load_qconfig(fast_qconfig("config48")))
    torch.manual_seed(0)
    calibrate(micro_vit, torch.randn(4, 3, 32, 32), clip.tokenize(["a photo of a cat.", "dogs"]), progress=False)
    ref = _reference(micro_vit)
    with precomputed_weights(micro_vit):
        got = zeroshot_classifier(micro_vit, CLASSES, TEMPLATES, "cpu")
    # Rounding-order differences may move a value across a quantization boundary: small, not zero.
    assert _relative_error(got, ref) < 1e-4


def test_cut_text_encoding_equals_the_whole_context(micro_vit):
    tokens = clip.tokenize(["a photo", "a much longer caption of a photo of a cat on a mat"])
    with torch.no_grad():
        assert _relative_error(encode_text_cut(micro_vit, tokens), micro_vit.encode_text(tokens)) < 1e-6
    assert all(block.attn_mask.shape == (77, 77) for block in micro_vit.transformer.resblocks)


def test_prompts_are_tokenised_once():
    first = prompt_tokens(CLASSES, TEMPLATES)
    assert prompt_tokens(CLASSES, TEMPLATES) is first
    tokens, owner = first
    assert tokens.shape == (len(CLASSES) * len(TEMPLATES), 77) and owner.tolist()[:5] == [0, 0, 0, 0, 1]


def test_precomputed_weights_compute_the_same_and_restore(micro_rn, fast_qconfig):
    quantize_clip(micro_rn, load_qconfig(fast_qconfig("config44")))
    images, tokens = torch.randn(2, 3, 32, 32), clip.tokenize(["a", "b"])
    calibrate(micro_rn, images, tokens, progress=False)
    weights = {n: layer.weight.detach().clone() for n, layer in quantized_layers(micro_rn)}
    with torch.no_grad():
        ref = micro_rn.encode_image(images), micro_rn.encode_text(tokens)
        with precomputed_weights(micro_rn):
            got = micro_rn.encode_image(images), micro_rn.encode_text(tokens)
    assert all(torch.equal(a, b) for a, b in zip(ref, got))
    for n, layer in quantized_layers(micro_rn):
        assert torch.equal(layer.weight, weights[n]) and layer.weight_quantizer.fake_quant_enabled


OPEN_CLIP_TEXT = {  # open_clip text towers: (micro_open_clip variant or micro_config text settings, cut or not)
    "vit": True, "custom-text": True, "text-linear-projection": True, "rn-quickgelu-custom-text": True,
    "text-bidirectional-last": False,  # not causal: every token reaches the pooled one
    "eos-pool": True, "first-pool": True, "last-pool": False,
}


def _open_clip_text_model(name: str):
    from tests.open_clip_models import VARIANTS, build_from_config, micro_config, micro_open_clip

    if name in VARIANTS:
        return micro_open_clip(name)
    # eos pooling on OpenAI's end-of-text id (the tokenizer's); first / last pooling on a causal tower
    text = {"eos-pool": {"pool_type": "eos", "eos_id": 49407}, "first-pool": {"pool_type": "first"},
            "last-pool": {"pool_type": "last"}}[name]
    return build_from_config(micro_config(text=text))


def _encoded_lengths(model) -> list[int]:
    """Records the token count of every text-tower call (the token embedding's input)."""
    lengths: list[int] = []
    family_of(model).text_module.token_embedding.register_forward_hook(lambda module, args, out: lengths.append(args[0].shape[1]))
    return lengths


@pytest.mark.parametrize("name", list(OPEN_CLIP_TEXT))
def test_open_clip_towers_are_cut_where_exact_and_equal_the_whole_context(name):
    import open_clip

    model = _open_clip_text_model(name)
    text = family_of(model).text_module
    position, mask = text.positional_embedding, text.attn_mask
    tokens = open_clip.get_tokenizer("ViT-B-32")(["a photo", "a much longer caption of a photo of a cat on a mat"])
    lengths = _encoded_lengths(model)
    with torch.no_grad():
        whole = model.encode_text(tokens)
        got = encode_text_cut(model, tokens)
    assert _relative_error(got, whole) < 1e-6
    longest = int(tokens.argmax(dim=-1).max()) + 1
    expected = (1 if name == "first-pool" else longest) if OPEN_CLIP_TEXT[name] else 77
    assert lengths == [77, expected]
    assert text.positional_embedding is position and text.attn_mask is mask  # restored, the same objects


@pytest.mark.parametrize("name", ["vit", "custom-text"])
def test_quantized_open_clip_classifier_equals_clip_benchmarks(name, fast_qconfig):
    import open_clip

    model = _open_clip_text_model(name)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    quantize_clip(model, load_qconfig(fast_qconfig("config48")))
    torch.manual_seed(0)
    calibrate(model, torch.randn(4, 3, 32, 32), tokenizer(["a photo of a cat.", "dogs"]), progress=False)
    with torch.no_grad():
        ref = zero_shot_classifier(model, tokenizer, CLASSES, TEMPLATES, "cpu", amp=False)
    lengths = _encoded_lengths(model)
    with precomputed_weights(model):
        got = zeroshot_classifier(model, CLASSES, TEMPLATES, "cpu", tokenize=tokenizer)
    assert max(lengths) < 77  # cut
    assert _relative_error(got, ref) < 1e-4
