"""What a ``--model`` value is, as a stable identity: which weights, independent of how they were named.

* an OpenAI name (``ViT-B/32``): the SHA-256 that ``clip``'s download URL carries (no file is read);
* a checkpoint path: the SHA-256 of the file's content, and the OpenAI name whose checksum it has,
  if any (a genuine ``ViT-B-32.pt`` given as a path *is* ``ViT-B/32``);
* a zoo model: the SHA-256 of its shipped checkpoint;
* ``random:<architecture>``: the name (the weights are seeded);
* an open_clip model (``--model_type open_clip``): its family and ``--pretrained`` too (the
  architecture and tag, or the SHA-256 of the checkpoint file; a zoo model's checksum): the same
  weights through another family are another model for results and saved quantized models.

Two runs use the same model exactly when their identities' :meth:`ModelIdentity.key` agree. The
result file records the identity; ``--output``'s ``{model}`` is :meth:`ModelIdentity.slug`, unique
per checkpoint file (``RN50-1a2b3c4d`` for a file ``.../RN50.pt`` that is not OpenAI's RN50).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import clip

from d4c.io import slug
from d4c.models.architectures import RANDOM_PREFIX
from d4c.models.zoo import ZOO_MODELS, zoo_checkpoint_path

OPENAI_SHA256: dict[str, str] = {name: url.split("/")[-2] for name, url in clip.clip._MODELS.items()}
"""The SHA-256 of each OpenAI checkpoint, as the download URLs in ``clip/clip.py`` carry it."""
OPENAI_FILE_NAMES: dict[str, str] = {os.path.basename(url): name for name, url in clip.clip._MODELS.items()}
"""``ViT-B-32.pt`` -> ``ViT-B/32``: the cache file name of each OpenAI model."""
SLUG_DIGEST_CHARS = 8

_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's content, read in blocks; computed once per (path, size, mtime) in a process."""
    path = Path(path).resolve()
    stat = path.stat()
    memo_key = (str(path), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _SHA_MEMO:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        _SHA_MEMO[memo_key] = digest.hexdigest()
    return _SHA_MEMO[memo_key]


@dataclass(frozen=True)
class ModelIdentity:
    """The identity of one ``--model`` value (see the module docstring)."""

    name: str
    """``--model`` as given."""
    kind: str
    """openai, file, zoo, random, or tag (an open_clip pretrained tag)."""
    sha256: str | None = None
    """SHA-256 of the checkpoint (OpenAI: the published one; files and zoo: their content)."""
    path: str | None = None
    """The resolved checkpoint path (files only)."""
    openai_name: str | None = None
    """The OpenAI model whose published checksum the file has (files only)."""
    model_type: str | None = None
    """``open_clip`` for open_clip models; None (not recorded) for OpenAI's family."""
    pretrained: str | None = None
    """open_clip's ``--pretrained`` tag (a checkpoint file's is identified by ``sha256``)."""

    def key(self) -> str:
        """Equal for two values exactly when they name the same weights (in the same family)."""
        return _key(self.as_dict())

    def slug(self) -> str:
        """``{model}`` of ``--output``: the name, or for a checkpoint file its stem and a short digest."""
        if self.kind == "file" and self.model_type is None:  # open_clip's: the architecture ({pretrained}: the file)
            if self.openai_name:
                return slug(self.openai_name)
            return f"{slug(Path(self.name).stem)}-{self.sha256[:SLUG_DIGEST_CHARS]}"
        return slug(self.name)

    def describe(self) -> str:
        """A short human label: the name and, where there is one, the start of the checksum."""
        if self.model_type is not None:
            weights = self.pretrained or (f"sha256 {self.sha256[:12]}…" if self.sha256 else None)
            return f"{self.name} ({self.model_type}{f', {weights}' if weights else ''})"
        if self.kind == "file" and self.model_type is None:
            also = f", OpenAI's {self.openai_name}" if self.openai_name else ""
            return f"{self.name} (sha256 {self.sha256[:12]}…{also})"
        if self.sha256:
            return f"{self.name} (sha256 {self.sha256[:12]}…)"
        return self.name

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def matches(self, recorded: dict[str, Any] | None, recorded_name: str | None = None) -> bool:
        """Whether a recorded identity (a result file's or a saved state's) is this model.

        Records written before identities existed carry only the model name: it must then be equal.
        """
        if isinstance(recorded, dict) and recorded.get("kind"):
            return _key(recorded) == self.key()
        return recorded_name == self.name and self.model_type is None


def _key(identity: dict[str, Any]) -> str:
    sha = identity.get("sha256")
    key = f"sha256:{sha}" if sha else f"name:{identity.get('name')}"
    if identity.get("model_type"):
        key = f"{identity['model_type']}:{identity.get('name')}:{identity.get('pretrained') or ''}:{key}"
    return key


def open_clip_identity(name: str, pretrained: str | None) -> ModelIdentity:
    """The identity of open_clip's ``--model`` ``name`` with ``--pretrained`` (reads a checkpoint file's content)."""
    if name in ZOO_MODELS or name.startswith(RANDOM_PREFIX):
        base = model_identity(name)
        return ModelIdentity(name, base.kind, sha256=base.sha256, model_type="open_clip")
    if pretrained is not None and os.path.isfile(pretrained):
        return ModelIdentity(name, "file", sha256=file_sha256(pretrained), path=str(Path(pretrained).resolve()),
                             model_type="open_clip")
    return ModelIdentity(name, "tag", model_type="open_clip", pretrained=pretrained)


def model_identity(name: str, model_type: str = "openai", pretrained: str | None = None) -> ModelIdentity:
    """The identity of ``--model`` ``name`` (reads a checkpoint file's content once; no model is built);
    ``model_type`` ``open_clip``: of open_clip's architecture ``name`` with ``--pretrained`` ``pretrained``."""
    if model_type != "openai":
        return open_clip_identity(name, pretrained)
    if name in OPENAI_SHA256:
        return ModelIdentity(name, "openai", sha256=OPENAI_SHA256[name])
    if name in ZOO_MODELS:
        path = zoo_checkpoint_path(name)
        return ModelIdentity(name, "zoo", sha256=file_sha256(path) if path.is_file() else None)
    if name.startswith(RANDOM_PREFIX):
        return ModelIdentity(name, "random")
    if os.path.isfile(name):
        sha = file_sha256(name)
        openai = next((n for n, s in OPENAI_SHA256.items() if s == sha), None)
        return ModelIdentity(name, "file", sha256=sha, path=str(Path(name).resolve()), openai_name=openai)
    # Not a model at all: loading it stops with the sentence listing the accepted names.
    return ModelIdentity(name, "unknown")
