"""Load a CLIP model by name or file, always as a float32 ``clip.model.CLIP`` in eval mode.

Accepted ``--model`` values:

* an OpenAI name (``RN50`` ... ``ViT-L/14@336px``): ``clip.load(name, jit=False,
  download_root=--model_cache_dir)``; without network an uncached model stops with one
  sentence naming the file to place and the folder;
* ``tiny-vit`` / ``tiny-rn``: the offline zoo's shipped checkpoints (:mod:`d4c.models.zoo`);
* a path to a checkpoint file: a state dict (optionally nested under ``state_dict`` / ``model``
  and with a ``module.`` prefix) or a TorchScript archive, converted to a state dict on load;
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
from typing import Callable

import clip
import torch
from clip.model import CLIP, build_model

from d4c.data.transforms import clip_transform
from d4c.errors import D4CError
from d4c.models.architectures import RANDOM_PREFIX, architecture_by_name, random_model_names
from d4c.models.family import MODEL_TYPES, VIT, ClipFamily, family_of
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
    root = Path(cache_dir or os.path.expanduser("~/.cache/clip"))
    return root / os.path.basename(url), url


def _load_openai(name: str, cache_dir: str | None, device: torch.device) -> CLIP:
    target, url = _openai_file(name, cache_dir)
    place = (f"{target.parent} holds no {target.name} for model {name} and it cannot be downloaded ({{why}}): "
             f"place the file (from {url}) there or give the folder holding it.")
    if not target.is_file() and offline():
        raise D4CError(place.format(why=f"{OFFLINE_ENV} is set"), "model_cache_dir")
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        model, _ = clip.load(name, device="cpu", jit=False, download_root=str(target.parent))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise D4CError(place.format(why=f"no network: {reason}"), "model_cache_dir") from None
    except RuntimeError as exc:
        if "SHA256" in str(exc):
            raise D4CError(f"The downloaded file {target} does not match its SHA256 checksum: delete it and download {url} again.") from None
        raise
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return _finish(model, device)


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
