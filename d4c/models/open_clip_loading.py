"""Load open_clip models (``--model_type open_clip``), named as clip_benchmark names them.

``--model ARCH`` is an open_clip architecture (``ViT-B-32``, ``ViT-B-16-quickgelu``, ``RN50``;
``/`` may stand for ``-``) and ``--pretrained`` a pretrained tag of it (``laion2b_s34b_b79k``,
``datacomp_xl_s13b_b90k``, ``metaclip_400m``, ``openai``) or a checkpoint file. A tag's weights
are looked up in ``--model_cache_dir`` where open_clip itself puts them (a Hugging Face hub cache
``models--ORG--NAME/snapshots/*/FILE``, or the file named by the tag's URL); found, they are loaded
from there without any network access; missing, they are downloaded by open_clip unless
``D4C_OFFLINE`` is set, when the run stops with one sentence naming the tag, the file and the folder.
Also accepted: the offline zoo's ``tiny-vit`` / ``tiny-rn`` (their OpenAI-format state dicts
converted by open_clip's ``build_model_from_openai_state_dict``) and ``random:ARCH`` (seeded random
weights, for timing and end-to-end checks). Unsupported towers are refused before any weights are
read (:mod:`d4c.models.open_clip_family`).

The model's preprocessing (resize mode, interpolation, mean / std) and tokenizer are open_clip's
own for the architecture and tag.
"""

from __future__ import annotations

import os
import socket
import urllib.error
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from d4c.data.clip_tokenizer import fast_tokenizer
from d4c.errors import D4CError
from d4c.models.family import RESNET, VIT, attach_tokenizer, family_of
from d4c.models.open_clip_family import config_reason, unsupported
from d4c.runtime import OFFLINE_ENV, offline

PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")
DOWNLOAD_TIMEOUT_S = 30
RANDOM_PREFIX = "random:"


def architecture_config(arch: str) -> dict[str, Any]:
    """open_clip's model config of ``arch`` (``/`` read as ``-``), checked to be one d4c supports."""
    import open_clip

    config = open_clip.get_model_config(arch.replace("/", "-"))
    if config is None:
        known = [m for m in open_clip.list_models() if config_reason(open_clip.get_model_config(m)) is None]
        raise D4CError(f"{arch} is not an open_clip architecture; supported ones include {', '.join(known[:12])}, ... "
                       f"({len(known)} in all, open_clip.list_models()).", "model")
    reason = config_reason(config)
    if reason is not None:
        raise unsupported(arch, reason)
    return config


def _hf_candidates(hf_hub: str) -> tuple[str, list[str]]:
    """The repository and the file names open_clip tries for a tag's ``hf_hub`` entry, in its order."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    repo_id, filename = os.path.split(hf_hub)
    filename = filename or HF_WEIGHTS_NAME
    safe = [HF_SAFE_WEIGHTS_NAME] if filename == HF_WEIGHTS_NAME else \
        [filename[:-4] + ".safetensors"] if filename.endswith((".bin", ".pth")) else []
    return repo_id, [*safe, filename]


def _hub_cache(cache_dir: str | None) -> Path:
    from huggingface_hub import constants

    return Path(cache_dir) if cache_dir else Path(constants.HF_HUB_CACHE)


def cached_tag_file(tag_cfg: dict[str, Any], cache_dir: str | None) -> Path | None:
    """The cached weights of a pretrained tag (open_clip's layout in ``cache_dir``), or None."""
    if tag_cfg.get("file"):
        return Path(tag_cfg["file"]) if Path(tag_cfg["file"]).is_file() else None
    if tag_cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo_id, names = _hf_candidates(tag_cfg["hf_hub"])
        for name in names:
            found = try_to_load_from_cache(repo_id, name, cache_dir=str(_hub_cache(cache_dir)))
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    if tag_cfg.get("url"):
        target = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(tag_cfg["url"])
        if target.is_file():
            return target
    return None


def expected_tag_file(tag_cfg: dict[str, Any], cache_dir: str | None) -> str:
    """Where a tag's weights are expected, in words: the file and the folder."""
    if tag_cfg.get("hf_hub"):
        from huggingface_hub.file_download import repo_folder_name

        repo_id, names = _hf_candidates(tag_cfg["hf_hub"])
        folder = _hub_cache(cache_dir) / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots" / "REVISION"
        return (f"{' or '.join(names)} of the Hugging Face repository {repo_id} in {folder} "
                f"(`huggingface-cli download {repo_id} {names[-1]} --cache-dir {_hub_cache(cache_dir)}`)")
    if tag_cfg.get("url"):
        folder = Path(cache_dir or os.path.expanduser("~/.cache/clip"))
        return f"{os.path.basename(tag_cfg['url'])} (from {tag_cfg['url']}) in {folder}"
    return str(tag_cfg.get("file"))


def _tag_config(arch: str, tag: str) -> dict[str, Any]:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch.replace("/", "-"), tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch.replace("/", "-"))
        raise D4CError(f"{tag} is neither a pretrained tag of {arch} ({', '.join(tags) or 'it has none'}) nor an "
                       "existing checkpoint file.", "pretrained")
    return cfg


def _create(arch: str, pretrained: str | None, cache_dir: str | None, preprocess: dict[str, Any] | None = None):
    import open_clip

    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*QuickGELU mismatch.*")  # warned about once, by us
            return open_clip.create_model(arch.replace("/", "-"), pretrained=pretrained, cache_dir=cache_dir,
                                          force_preprocess_cfg=preprocess)
    finally:
        socket.setdefaulttimeout(previous_timeout)


def _cached_or_downloadable(arch: str, tag: str, tag_cfg: dict[str, Any], cache_dir: str | None) -> Path | None:
    """The cached file of ``tag``, or None when it may be downloaded; one sentence when it is absent offline."""
    found = cached_tag_file(tag_cfg, cache_dir)
    if found is None and offline():
        raise D4CError(f"{tag} of {arch} is not cached and {OFFLINE_ENV} is set: place "
                       f"{expected_tag_file(tag_cfg, cache_dir)}, or give the checkpoint file as --pretrained.",
                       "pretrained")
    return found


def _image_kind(config: dict[str, Any]) -> str:
    """``resnet`` for a ModifiedResNet image tower (its ``layers`` a tuple per stage), else ``vit``."""
    return RESNET if isinstance(config.get("vision_cfg", {}).get("layers"), (tuple, list)) else VIT


def check_open_clip_model(name: str, pretrained: str | None, cache_dir: str | None) -> str:
    """Everything known about an open_clip model before its weights are read (one-sentence errors): the
    architecture is one d4c supports, ``pretrained`` fits it, a tag is cached or may be downloaded.

    Returns the image tower's kind (``vit`` or ``resnet``), for the checks of methods that need one.
    """
    from d4c.models.zoo import ZOO_MODELS, zoo_architecture

    if name in ZOO_MODELS or name.startswith(RANDOM_PREFIX):
        if pretrained is not None:
            raise D4CError(f"does not apply to --model {name} (its weights are "
                           f"{'shipped' if name in ZOO_MODELS else 'random'}); drop it.", "pretrained")
        if name in ZOO_MODELS:
            return VIT if zoo_architecture(name).is_vit else RESNET
        return _image_kind(architecture_config(name[len(RANDOM_PREFIX):]))
    config = architecture_config(name)
    if pretrained is None:
        import open_clip

        tags = open_clip.list_pretrained_tags_by_model(name.replace("/", "-"))
        raise D4CError(f"is required with --model_type open_clip: a pretrained tag of {name} "
                       f"({', '.join(tags) or 'it has none'}) or a checkpoint file.", "pretrained")
    if not os.path.isfile(pretrained):
        _cached_or_downloadable(name, pretrained, _tag_config(name, pretrained), cache_dir)
    return _image_kind(config)


def _load_tag(arch: str, tag: str, config: dict[str, Any], cache_dir: str | None) -> tuple[torch.nn.Module, str]:
    """Build ``arch`` with the weights of ``tag``: from the cache when present (no network), else downloaded."""
    tag_cfg = _tag_config(arch, tag)
    if bool(tag_cfg.get("quick_gelu", False)) != bool(config.get("quick_gelu", False)):
        warnings.warn(f"--pretrained {tag} was trained with quick_gelu={tag_cfg.get('quick_gelu', False)} but {arch} "
                      f"uses quick_gelu={config.get('quick_gelu', False)} (open_clip warns the same): the "
                      f"{'-quickgelu' if tag_cfg.get('quick_gelu') else 'plain'} architecture is usually meant.",
                      stacklevel=3)
    preprocess = {k: tag_cfg[k] for k in PREPROCESS_KEYS if k in tag_cfg}
    found = _cached_or_downloadable(arch, tag, tag_cfg, cache_dir)
    if found is not None:
        return _create(arch, str(found), cache_dir, preprocess), str(found)
    expected = expected_tag_file(tag_cfg, cache_dir)
    try:
        model = _create(arch, tag, cache_dir)
    except (RuntimeError, OSError, urllib.error.URLError, TimeoutError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise D4CError(f"{tag} of {arch} could not be downloaded ({reason}): place {expected}, or give the "
                       "checkpoint file as --pretrained.", "pretrained") from None
    found = cached_tag_file(tag_cfg, cache_dir)
    return model, str(found) if found is not None else f"open_clip:{arch}:{tag}"


def _load_file(arch: str, path: str, cache_dir: str | None) -> torch.nn.Module:
    try:
        return _create(arch, path, cache_dir)
    except (RuntimeError, KeyError, ValueError, OSError, AttributeError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise D4CError(f"{path} is not a checkpoint of open_clip's {arch} ({reason}).", "pretrained") from None


def zoo_model(state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """An OpenAI-format state dict (the zoo's) as a float32 ``open_clip.CLIP`` (QuickGELU, OpenAI preprocessing),
    converted by open_clip's ``build_model_from_openai_state_dict``."""
    from open_clip import set_model_preprocess_cfg
    from open_clip.model import build_model_from_openai_state_dict
    from open_clip.transform import PreprocessCfg

    # build_model_from_openai_state_dict loads into fp16 weights; reload in float32 so fp32 files keep their values.
    model = build_model_from_openai_state_dict(dict(state_dict), quick_gelu=True, cast_dtype=None).float()
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in ("input_resolution", "context_length",
                                                                             "vocab_size")})
    set_model_preprocess_cfg(model, asdict(PreprocessCfg(size=model.visual.image_size)))
    return model


def _tokenizer(arch: str, config: dict[str, Any], cache_dir: str | None):
    import open_clip

    hf_name = config.get("text_cfg", {}).get("hf_tokenizer_name")
    try:
        if hf_name:
            return open_clip.get_tokenizer(arch.replace("/", "-"), cache_dir=cache_dir, local_files_only=offline())
        return open_clip.get_tokenizer(arch.replace("/", "-"))
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise D4CError(f"{arch}'s tokenizer {hf_name} (Hugging Face hub) could not be loaded ({reason}"
                       f"{f'; {OFFLINE_ENV} is set' if offline() else ''}).", "model") from None


def load_open_clip(name: str, pretrained: str | None, cache_dir: str | None) -> tuple[torch.nn.Module, str, Any]:
    """The float32 eval-mode open_clip model ``name`` on the CPU, where its weights came from, and its preprocessing.

    Args:
        name: an open_clip architecture, ``random:ARCH``, or a zoo model (``tiny-vit``, ``tiny-rn``).
        pretrained: a pretrained tag of the architecture or a checkpoint file (None for zoo and random models).
        cache_dir: where tags' weights are looked up and downloaded (open_clip's defaults when None).
    """
    from open_clip import get_model_preprocess_cfg
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from d4c.models.loading import load_checkpoint_file
    from d4c.models.zoo import ZOO_MODELS, require_zoo_checkpoint

    check_open_clip_model(name, pretrained, cache_dir)
    if name in ZOO_MODELS:
        path = require_zoo_checkpoint(name)
        model, source = zoo_model(load_checkpoint_file(path).state_dict()), str(path)
        tokenizer = None
    elif name.startswith(RANDOM_PREFIX):
        arch = name[len(RANDOM_PREFIX):]
        config = architecture_config(arch)
        torch.manual_seed(0)
        model, source = _create(arch, None, cache_dir), "random initialisation (seed 0)"
        tokenizer = _tokenizer(arch, config, cache_dir)
    else:
        config = architecture_config(name)
        if os.path.isfile(pretrained):
            model, source = _load_file(name, pretrained, cache_dir), str(Path(pretrained).resolve())
        else:
            model, source = _load_tag(name, pretrained, config, cache_dir)
        tokenizer = _tokenizer(name, config, cache_dir)
    family_of(model).check_supported(name)
    if tokenizer is not None:
        attach_tokenizer(model, fast_tokenizer(tokenizer))
    preprocess = image_transform_v2(PreprocessCfg(**get_model_preprocess_cfg(model)), is_train=False)
    return model.float().eval(), source, preprocess
