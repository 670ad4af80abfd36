"""The pseudo-image cache: generated images stored with their recipe, reused by later runs.

A recipe is everything the images depend on: the model's identity (its name, and for checkpoint
files their SHA-256, or size and modification time above 256 MiB), the method and its fields
(D4C config, the prompts' SHA-256), number of images, mini-batch size, learning rate,
iterations, schedule, seed, input resolution and the generation code's version. Its SHA-256 is
the key. ``<key>.pt`` holds the images (with D4C's targets and the mean loss of every outer
iteration; entries written before the loss was kept lack it), ``<key>.json`` the recipe
(readable), ``<key>.ckpt.pt`` the resumable checkpoint while a generation is under way, and
``<key>.lock`` the lock of the process generating it (:mod:`d4c.generation.lock`); a method that
trains a generator keeps it in ``<model>_<row>_<key without the number of images>.generator.pt``.
Every file is written atomically. The default folder is ``./cache/pseudo_images``.

A generation split into ``gen_groups`` K > 1 groups (its recipe then holds ``gen_groups``) keeps
each finished group as an entry of its own (:func:`group_recipe`) until all are there and
assembled into the whole entry.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from d4c.errors import D4CError
from d4c.generation.checkpoint import ArtifactStore, CheckpointStore
from d4c.generation.lock import EntryLock
from d4c.generation.methods import method_class
from d4c.generation.rows import row_of
from d4c.generation.settings import GenerationSettings
from d4c.io import load_torch, save_torch, slug, write_json

GENERATION_CODE_VERSION = 3
"""Bump whenever a change to the generation code changes the images a recipe produces (3: PAE erasing
squares shifted inside at the top/left border, as in the reference)."""
HASH_LIMIT_BYTES = 256 * 2**20
NO_CACHE = ("", "none", "None", "off")


def file_identity(path: Path) -> dict[str, Any]:
    """SHA-256 of a checkpoint file up to 256 MiB; size and modification time beyond."""
    stat = path.stat()
    if stat.st_size <= HASH_LIMIT_BYTES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(2**20), b""):
                digest.update(block)
        return {"sha256": digest.hexdigest()}
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def model_identity(name: str, source: str) -> dict[str, Any]:
    """What identifies a loaded model's weights: a file's content for files, the name otherwise.

    OpenAI names (``source`` ``openai:NAME``) are verified against their SHA-256 by ``clip`` and
    random architectures are seeded, so their name identifies the weights; an open_clip tag whose
    file could not be located after its download (``open_clip:ARCH:TAG``) is identified by that source.
    """
    if source.startswith("open_clip:"):
        return {"name": source}
    path = Path(source)
    if not source.startswith(("openai:", "random")) and path.is_file():
        return {"file": file_identity(path)}
    return {"name": name}


def recipe_model(name: str, source: str, model_type: str = "openai") -> dict[str, Any]:
    """A recipe's ``model`` entry: :func:`model_identity`, naming the family for open_clip models (the same
    weights run through another family give images that differ by float rounding)."""
    identity = model_identity(name, source)
    return identity if model_type == "openai" else {**identity, "model_type": model_type}


def build_recipe(settings: GenerationSettings, model_name: str, model_source: str, resolution: int,
                 prompts: Sequence[str] | None, model_type: str = "openai") -> dict[str, Any]:
    """The recipe of one generation (what its images depend on); ``settings.method`` is a registered method.

    ``model_type`` names the family (:func:`recipe_model`).
    """
    return {
        "model": recipe_model(model_name, model_source, model_type),
        "method": settings.method,
        **method_class(settings.method).recipe_fields(settings, prompts),
        "num_images": settings.num_images,
        "gen_batch_size": settings.gen_batch_size,
        "gen_lr": settings.gen_lr,
        "gen_iter": settings.gen_iter,
        "gen_schedule": settings.gen_schedule,
        "seed": settings.seed,
        **({"gen_groups": settings.gen_groups} if settings.gen_groups > 1 else {}),  # K = 1 keys stay as they were
        "resolution": resolution,
        "code_version": GENERATION_CODE_VERSION,
    }


def group_recipe(whole: dict[str, Any], group_settings: GenerationSettings, group: int, groups: int) -> dict[str, Any]:
    """The recipe of group ``group`` of ``groups`` of the generation whose recipe is ``whole``."""
    return {**whole, "num_images": group_settings.num_images, "seed": group_settings.seed,
            "gen_groups": groups, "group": group}


def recipe_key(recipe: dict[str, Any]) -> str:
    """SHA-256 of the recipe's canonical JSON."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode("utf-8")).hexdigest()


class PseudoImageCache:
    """A folder of generated pseudo images keyed by recipe."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    @staticmethod
    def from_flag(value: str | None) -> "PseudoImageCache | None":
        """The cache in folder ``value`` (None when it is ``none``, ``off`` or empty: no caching)."""
        return None if value is None or value in NO_CACHE else PseudoImageCache(value)

    def stem(self, key: str, model_name: str, settings: GenerationSettings) -> str:
        """A readable file stem: model, row (``d4c3``, ``bns``), schedule, key prefix."""
        return f"{slug(model_name)}_{row_of(settings)}_{settings.gen_schedule}_{key[:16]}"

    def images_path(self, stem: str) -> Path:
        return self.root / f"{stem}.pt"

    def recipe_path(self, stem: str) -> Path:
        return self.root / f"{stem}.json"

    def lock(self, stem: str) -> EntryLock:
        """The lock a process holds while it generates this entry."""
        return EntryLock(self.root / f"{stem}.lock")

    def remove(self, stem: str) -> None:
        """Delete an entry's images and recipe (the groups of an assembled generation)."""
        self.images_path(stem).unlink(missing_ok=True)
        self.recipe_path(stem).unlink(missing_ok=True)

    def checkpoint(self, stem: str, key: str) -> CheckpointStore:
        """The checkpoint store of this recipe."""
        return CheckpointStore(self.root / f"{stem}.ckpt.pt", key)

    def trained_store(self, recipe: dict[str, Any], model_name: str, settings: GenerationSettings) -> ArtifactStore:
        """Where a method that trains a generator keeps it: keyed by the recipe without the number of images,
        so runs that want more (or fewer) images draw them from the same generator."""
        key = recipe_key({k: v for k, v in recipe.items() if k != "num_images"})
        return ArtifactStore(self.root / f"{slug(model_name)}_{row_of(settings)}_{key[:16]}.generator.pt", key)

    def load(self, stem: str, key: str) -> dict[str, Any] | None:
        """The cached entry of ``key`` (``images``, ``targets``, ``recipe``, ``loss_history``: None in entries written
        before it was kept); None if absent, unreadable or other."""
        path = self.images_path(stem)
        if not path.is_file():
            return None
        try:
            stored = load_torch(path, "file of cached pseudo images")
        except D4CError as exc:  # a damaged cache entry is regenerated, not fatal
            warnings.warn(f"{exc} Ignoring it: the images are generated again.", stacklevel=2)
            return None
        return stored if stored.get("key") == key else None

    def save(self, stem: str, key: str, images: torch.Tensor, targets: torch.Tensor | None, recipe: dict[str, Any],
             info: dict[str, Any], loss_history: torch.Tensor | None = None) -> Path:
        """Store ``images`` (and D4C's ``targets``, the per-iteration ``loss_history``) with the recipe and ``info``
        (time, loss, device) atomically."""
        path = self.images_path(stem)
        save_torch(path, {"key": key, "recipe": recipe, "images": images.detach().float().cpu().contiguous(),
                          "targets": None if targets is None else targets.cpu(),
                          "loss_history": None if loss_history is None else loss_history.detach().float().cpu()})
        created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        write_json(self.recipe_path(stem), {"key": key, "recipe": recipe, "created": created, **info})
        return path
