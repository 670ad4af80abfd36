"""Load a CLIP model by name or file, always as a float32 ``clip.model.CLIP`` in eval mode.

Accepted ``--model`` values:

* an OpenAI name (``RN50`` ... ``ViT-L/14@336px``): the file ``clip`` caches it under
  (``--model_cache_dir``, default ``~/.cache/clip``), verified against its published SHA-256 and
  loaded with ``clip.load(path, jit=False)``; an absent file is downloaded with ``clip``'s
  downloader unless ``D4C_OFFLINE`` is set (then, or without network, one sentence names the file
  to place and the folder); a cached file that fails its checksum is never overwritten (one
  sentence: delete it, or give the file itself as the model);
* ``tiny-vit`` / ``tiny-rn``: the offline zoo's shipped checkpoints (:mod:`d4c.models.zoo`);
* a path to a checkpoint file: a state dict (optionally nested under ``state_dict`` / ``model``
  and with a ``module.`` prefix) or a TorchScript archive, converted to a state dict on load; a
  file named like an OpenAI checkpoint (``ViT-B-32.pt``) must hold that architecture;
* ``random:<architecture>``: a seeded, randomly initialised model, for timing only.

``model_type="open_clip"`` hands over to :mod:`d4c.models.open_clip_loading` (open_clip's
architectures with ``--pretrained`` tags or files); this is the one dispatch point between families.
"""

from __future__ import annotations

import os
import socket
import urllib.error
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import clip
import torch
from clip.model import CLIP, build_model

from d4c.data.transforms import clip_transform
from d4c.errors import D4CError
from d4c.models.architectures import (OPENAI_ARCHITECTURES, RANDOM_PREFIX, architecture_by_name,
                                      architecture_of_state_dict, describe_architecture, random_model_names)
from d4c.models.family import MODEL_TYPES, VIT, ClipFamily, family_of
from d4c.models.identity import OPENAI_FILE_NAMES, OPENAI_SHA256, file_sha256
from d4c.models.zoo import ZOO_MODELS, require_zoo_checkpoint
from d4c.runtime import OFFLINE_ENV, offline
# Scalars OpenAI's archives carry next to the weights (build_model drops them too).
_NON_PARAMETER_KEYS = ("input_resolution", "context_length", "vocab_size")
DOWNLOAD_TIMEOUT_S = 30


@dataclass
class LoadedModel:
    """A loaded CLIP model with its preprocessing and where it came from."""

    model: CLIP
    preprocess: Callable
    name: str
    source: str
    model_type: str = "openai"
    pretrained: str | None = None
    """open_clip's pretrained tag or checkpoint file (``--pretrained``); None for OpenAI models."""

    @property
    def family(self) -> ClipFamily:
        """What the stages need to know about the model's family (tokenizer, normalisation, towers)."""
        return family_of(self.model)

    @property
    def resolution(self) -> int:
        return self.family.resolution

    @property
    def is_vit(self) -> bool:
        return self.family.image_kind == VIT


def accepted_model_names() -> list[str]:
    """Every ``--model`` name (besides a checkpoint path)."""
    return clip.available_models() + list(ZOO_MODELS)


def _finish(model: CLIP, device: torch.device) -> CLIP:
    # Generation and quantization work in float32 on every device (clip.load keeps fp16 on CUDA).
    return model.float().to(device).eval()


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """True for a TorchScript archive (a zip holding compiled ``code/``), False for a ``torch.save`` file."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _state_dict_from_file(path: Path) -> dict:
    """Read a state dict from a TorchScript archive or a ``torch.save`` file."""
    if is_torchscript_archive(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            archive = torch.jit.load(str(path), map_location="cpu")
        return dict(archive.state_dict())
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same sentence
        raise D4CError(f"file {path} is neither a TorchScript archive nor a torch.save state dict "
                       f"({type(exc).__name__}).", "model") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise D4CError(f"file {path} holds a {type(obj).__name__}, expected a CLIP state dict.", "model")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_checkpoint_file(path: str | os.PathLike, device: torch.device | str = "cpu") -> CLIP:
    """Build a float32 CLIP from a checkpoint file (state dict or TorchScript archive)."""
    path = Path(path)
    state_dict = _state_dict_from_file(path)
    check_named_architecture(path, state_dict)
    try:
        # build_model infers the architecture but casts to fp16 before loading; reload the
        # weights into the float32 model so fp32 checkpoints keep their exact values.
        model = build_model(dict(state_dict)).float()
        model.load_state_dict({k: v for k, v in state_dict.items() if k not in _NON_PARAMETER_KEYS})
    except (KeyError, RuntimeError, AssertionError, AttributeError, IndexError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise D4CError(f"file {path} is not a CLIP checkpoint that clip.model.build_model can rebuild ({reason}).",
                       "model") from None
    return _finish(model, torch.device(device))


def _openai_file(name: str, cache_dir: str | None) -> tuple[Path, str]:
    url = clip.clip._MODELS[name]
    root = Path(cache_dir).expanduser() if cache_dir else Path(os.path.expanduser("~/.cache/clip"))
    return root / os.path.basename(url), url


def check_openai_cache(name: str, cache_dir: str | None) -> Path | None:
    """Check the model cache entry of OpenAI model ``name`` without loading it (one-sentence errors).

    Returns the verified cached file, or None when it is absent and may be downloaded. The cache
    folder must be a folder, the entry a file with the published SHA-256 (a file that fails it is
    never overwritten: the sentence says how to replace it or use it as it is); with
    ``D4C_OFFLINE`` set an absent file is an error, as no download is ever attempted.
    """
    target, url = _openai_file(name, cache_dir)
    folder = target.parent
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise D4CError(f"{folder} cannot be a folder: {parent} is a file, not a folder; give the folder "
                               f"holding {target.name}.", "model_cache_dir")
            break
    if target.exists() and not target.is_file():
        raise D4CError(f"{folder} holds a folder {target.name}, not the checkpoint file: remove it and place the file "
                       f"(from {url}) there, or give another folder.", "model_cache_dir")
    if target.is_file():
        if file_sha256(target) != OPENAI_SHA256[name]:
            raise D4CError(f"{folder} holds {target.name}, but the file fails its SHA256 checksum (a partial or "
                           f"corrupted download, or another file under that name): delete it to download {name} "
                           f"again, or give the file itself as the model ({target}) to use it as it is.",
                           "model_cache_dir")
        return target
    if offline():
        raise D4CError(f"{folder} holds no {target.name} for model {name} and it cannot be downloaded ({OFFLINE_ENV} "
                       f"is set): place the file (from {url}) there or give the folder holding it.", "model_cache_dir")
    return None


def _download_openai(name: str, cache_dir: str | None) -> Path:
    """Download OpenAI model ``name`` into the cache with ``clip``'s downloader (checksum verified)."""
    target, url = _openai_file(name, cache_dir)
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return Path(clip.clip._download(url, str(target.parent)))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise D4CError(f"{target.parent} holds no {target.name} for model {name} and it cannot be downloaded (no "
                       f"network: {reason}): place the file (from {url}) there or give the folder holding it.",
                       "model_cache_dir") from None
    except RuntimeError as exc:
        if "SHA256" in str(exc):
            raise D4CError(f"The downloaded file {target} does not match its SHA256 checksum: delete it and "
                           f"download {url} again.") from None
        raise D4CError(f"Model {name} could not be downloaded into {target.parent} ({exc}).") from None
    finally:
        socket.setdefaulttimeout(previous_timeout)


def _load_openai(name: str, cache_dir: str | None, device: torch.device) -> CLIP:
    path = check_openai_cache(name, cache_dir) or _download_openai(name, cache_dir)
    # A verified file: clip.load with its path builds the model and never touches the network.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        model, _ = clip.load(str(path), device="cpu", jit=False)
    return _finish(model, device)


def check_named_architecture(path: Path, state_dict: dict) -> None:
    """Refuse a checkpoint file named like an OpenAI model's (``ViT-B-32.pt``) that holds another architecture."""
    claimed = OPENAI_FILE_NAMES.get(path.name)
    if claimed is None:
        return
    try:
        found = architecture_of_state_dict(state_dict)
    except (KeyError, IndexError, AttributeError):
        return  # not a CLIP state dict at all: build_model's sentence follows
    expected = OPENAI_ARCHITECTURES[claimed]
    if found != expected:
        raise D4CError(f"file {path} is named like {claimed}'s checkpoint but holds a different model: "
                       f"{describe_architecture(found)} instead of {describe_architecture(expected)}; rename it "
                       f"if that is intended.", "model")


def _archive_family(path: Path) -> str | None:
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if "/code/" in member and member.endswith(".py"):
                text = archive.read(member).decode("utf-8", "replace")
                if "class VisionTransformer" in text:
                    return "vit"
                if "class ModifiedResNet" in text:
                    return "resnet"
    return None


def _keys_family(keys: Iterable[str]) -> str | None:
    keys = set(keys)
    if "visual.proj" in keys or ("visual.conv1.weight" in keys and "visual.class_embedding" in keys):
        return "vit"
    if "visual.attnpool.c_proj.weight" in keys or "visual.layer1.0.conv1.weight" in keys:
        return "resnet"
    return None


def peek_state_dict(path: str | os.PathLike) -> dict | None:
    """The state dict of a ``torch.save`` zip file, memory-mapped (shapes without reading the weights);
    None for TorchScript archives and files that are not zip state dicts."""
    path = Path(path)
    try:
        if is_torchscript_archive(path) or not zipfile.is_zipfile(path):
            return None
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - an unreadable file is reported when it is loaded
        return None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        return None
    return {(k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k): v for k, v in obj.items()}


def checkpoint_family(path: str | os.PathLike) -> str | None:
    """``vit`` or ``resnet`` for a CLIP checkpoint file, read without building the model; None if unknown.

    TorchScript archives are recognised by their compiled classes, ``torch.save`` zip files by their
    keys (memory-mapped, no tensor is read).
    """
    path = Path(path)
    try:
        if is_torchscript_archive(path):
            return _archive_family(path)
    except (OSError, zipfile.BadZipFile):
        return None
    state_dict = peek_state_dict(path)
    return None if state_dict is None else _keys_family(state_dict.keys())


def check_checkpoint_file(path: str | os.PathLike) -> None:
    """Before loading: a ``torch.save`` file named like an OpenAI checkpoint must hold its architecture."""
    path = Path(path)
    if path.name in OPENAI_FILE_NAMES:
        state_dict = peek_state_dict(path)
        if state_dict is not None:
            check_named_architecture(path, state_dict)


def model_family(name: str) -> str | None:
    """``vit`` or ``resnet``: the image tower of ``--model`` ``name``, known without loading it (None if unknown)."""
    if name.startswith(RANDOM_PREFIX) or name in OPENAI_ARCHITECTURES or name in ZOO_MODELS:
        arch = architecture_by_name(name[len(RANDOM_PREFIX):] if name.startswith(RANDOM_PREFIX) else name)
        return None if arch is None else ("vit" if arch.is_vit else "resnet")
    if os.path.isfile(name):
        return checkpoint_family(name)
    return None


def _load_other_family(name: str, device: torch.device, cache_dir: str | None, model_type: str,
                       pretrained: str | None) -> LoadedModel:
    """The dispatch to a family's own loader (open_clip's: :mod:`d4c.models.open_clip_loading`)."""
    if model_type not in MODEL_TYPES:
        raise D4CError(f"must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}.", "model_type")
    from d4c.models.open_clip_loading import load_open_clip

    model, source, preprocess = load_open_clip(name, pretrained, cache_dir)
    return LoadedModel(model=model.to(device), preprocess=preprocess, name=name, source=source,
                       model_type=model_type, pretrained=pretrained)


def load_clip(name: str, device: torch.device | str = "cpu", cache_dir: str | None = None,
              model_type: str = "openai", pretrained: str | None = None) -> LoadedModel:
    """Load the model called ``name`` onto ``device`` (see the module docstring for accepted names).

    ``cache_dir`` is where named checkpoints are looked up and downloaded (clip's or open_clip's default when
    None). ``model_type`` ``open_clip`` loads open_clip's architecture ``name`` with the weights ``pretrained``
    (a tag or a file; :mod:`d4c.models.open_clip_loading`).
    """
    device = torch.device(device)
    if model_type != "openai":
        return _load_other_family(name, device, cache_dir, model_type, pretrained)
    if pretrained is not None:
        raise D4CError(f"{pretrained} applies to --model_type open_clip only (OpenAI models are named by --model "
                       "alone).", "pretrained")
    if name in ZOO_MODELS:
        path = require_zoo_checkpoint(name)
        model, source = load_checkpoint_file(path, device), str(path)
    elif name.startswith(RANDOM_PREFIX):
        arch = architecture_by_name(name[len(RANDOM_PREFIX):])
        if arch is None:
            raise D4CError(f"{name} is not a known random architecture; choose one of "
                           f"{', '.join(random_model_names())}.", "model")
        model, source = _finish(arch.build(seed=0), device), "random initialisation (seed 0)"
    elif name in clip.available_models():
        model, source = _load_openai(name, cache_dir, device), f"openai:{name}"
    elif os.path.isfile(name):
        model, source = load_checkpoint_file(name, device), str(Path(name).resolve())
    else:
        raise D4CError(f"{name} is neither a known model ({', '.join(accepted_model_names())}) "
                       f"nor an existing checkpoint file.", "model")
    return LoadedModel(model=model, preprocess=clip_transform(model.visual.input_resolution), name=name, source=source)
