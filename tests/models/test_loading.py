"""Loading CLIP models from names, checkpoint files and TorchScript archives, offline."""

from __future__ import annotations

import clip
import pytest
import torch

from d4c.errors import D4CError
from d4c.models.loading import is_torchscript_archive, load_checkpoint_file, load_clip
from d4c.models.zoo import ZOO_MODELS, zoo_checkpoint_path


def _inputs(model, n=2):
    torch.manual_seed(1)
    r = model.visual.input_resolution
    images = torch.randn(n, 3, r, r)
    texts = clip.tokenize(["a photo of a cat.", "a photo of the digit seven."][:n])
    return images, texts


def _features(model, images, texts):
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(texts)


@pytest.mark.parametrize("arch", ["micro_vit", "micro_rn"])
def test_state_dict_file_gives_the_same_features(arch, request, tmp_path):
    model = request.getfixturevalue(arch)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    loaded = load_clip(str(path))
    images, texts = _inputs(model)
    for a, b in zip(_features(model, images, texts), _features(loaded.model, images, texts)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert loaded.model.visual.conv1.weight.dtype == torch.float32
    assert not loaded.model.training


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("arch", ["micro_vit", "micro_rn"])
def test_torchscript_archive_gives_the_same_features(arch, request, tmp_path):
    model = request.getfixturevalue(arch)
    images, texts = _inputs(model)
    path = tmp_path / "model.jit"
    torch.jit.trace(model, (images, texts), check_trace=False).save(str(path))
    assert is_torchscript_archive(path)
    loaded = load_checkpoint_file(path)
    for a, b in zip(_features(model, images, texts), _features(loaded, images, texts)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_fp16_and_nested_checkpoints_load_as_float32(micro_vit, tmp_path):
    state = {"module." + k: v.half() for k, v in micro_vit.state_dict().items()}
    path = tmp_path / "nested.pt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    model = load_checkpoint_file(path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    images, texts = _inputs(micro_vit)
    ref = _features(micro_vit, images, texts)
    got = _features(model, images, texts)
    for a, b in zip(ref, got):  # fp16 storage: close, not equal
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


def test_zoo_checkpoints_are_shipped_small_and_load():
    for name in ZOO_MODELS:
        path = zoo_checkpoint_path(name)
        assert path.is_file(), f"{path} missing"
        assert path.stat().st_size <= 10 * 2**20
        loaded = load_clip(name)
        assert loaded.model.visual.conv1.weight.dtype == torch.float32
    assert load_clip("tiny-vit").is_vit and not load_clip("tiny-rn").is_vit


def test_random_architectures_build_without_files():
    loaded = load_clip("random:small-vit")
    assert loaded.resolution == 224 and loaded.is_vit
    with pytest.raises(D4CError, match="random:small-vit"):
        load_clip("random:nonsense")


def test_unknown_model_lists_the_accepted_names():
    with pytest.raises(D4CError) as err:
        load_clip("ViT-Q/99")
    message = str(err.value)
    assert "ViT-B/32" in message and "tiny-vit" in message and "RN50x64" in message


def test_uncached_named_model_says_where_to_put_the_file(tmp_path):
    with pytest.raises(D4CError) as err:
        load_clip("ViT-B/32", cache_dir=str(tmp_path))
    message = str(err.value)
    assert "ViT-B-32.pt" in message and str(tmp_path) in message and err.value.parameter == "model_cache_dir"


def test_download_failure_without_offline_flag_is_one_sentence(tmp_path, monkeypatch):
    import urllib.request

    monkeypatch.delenv("D4C_OFFLINE")

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(D4CError, match=r"no network: network unreachable.*RN50\.pt"):
        load_clip("RN50", cache_dir=str(tmp_path))


@pytest.mark.parametrize("content, match", [
    (b"certainly not a checkpoint", "neither a TorchScript archive nor"),
    (None, "not a CLIP checkpoint"),
])
def test_bad_checkpoint_files_are_one_sentence(tmp_path, content, match):
    path = tmp_path / "bad.pt"
    if content is None:
        torch.save({"weight": torch.zeros(3)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(D4CError, match=match):
        load_clip(str(path))


def test_missing_checkpoint_path(tmp_path):
    with pytest.raises(D4CError, match="nor an existing checkpoint file"):
        load_clip(str(tmp_path / "absent.pt"))
