"""What a ``--model`` value is, as a stable identity: which weights, independent of how they were named.

* an OpenAI name (``ViT-B/32``): the SHA-256 that ``clip``'s download URL carries (no file is read);
* a checkpoint path: the SHA-256 of the file's content, and the OpenAI name whose checksum it has,
  if any (a genuine ``ViT-B-32.pt`` given as a path *is* ``ViT-B/32``);
* a zoo model: the SHA-256 of its shipped checkpoint;
* ``random:<architecture>``: the name (the weights are seeded).

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
    """openai, file, zoo or random."""
    sha256: str | None = None
    """SHA-256 of the checkpoint (OpenAI: the published one; files and zoo: their content)."""
    path: str | None = None
    """The resolved checkpoint path (files only)."""
    openai_name: str | None = None
    """The OpenAI model whose published checksum the file has (files only)."""

    def key(self) -> str:
        """Equal for two values exactly when they name the same weights."""
        return f"sha256:{self.sha256}" if self.sha256 else f"name:{self.name}"

    def slug(self) -> str:
        """``{model}`` of ``--output``: the name, or for a checkpoint file its stem and a short digest."""
        if self.kind == "file":
            if self.openai_name:
                return slug(self.openai_name)
            return f"{slug(Path(self.name).stem)}-{self.sha256[:SLUG_DIGEST_CHARS]}"
        return slug(self.name)

    def describe(self) -> str:
        """A short human label: the name and, where there is one, the start of the checksum."""
        if self.kind == "file":
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
            sha = recorded.get("sha256")
            return (f"sha256:{sha}" if sha else f"name:{recorded.get('name')}") == self.key()
        return recorded_name == self.name


def model_identity(name: str) -> ModelIdentity:
    """The identity of ``--model`` ``name`` (reads a checkpoint file's content once; no model is built)."""
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
