"""Files: atomic writes, checked reads of the project's own torch files, shipped resources, names.

Writers create a temporary file in the destination folder and rename it over the destination
(``os.replace`` is atomic on POSIX and Windows when both are on one filesystem), so a crash or
Ctrl-C never leaves a half-written result behind.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from d4c.errors import D4CError

REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve_resource(path: str) -> Path:
    """``path`` as given if it exists; else, for a relative path, the same path under the repository root.

    The paper's defaults (``./exp/config66.yaml``, ``./d4c/template/...``) are relative to the
    repository root; this lets ``d4c-quant`` find them from any working directory.
    """
    candidate = Path(path).expanduser()
    if candidate.exists() or candidate.is_absolute():
        return candidate
    fallback = REPO_ROOT / candidate
    return fallback if fallback.exists() else candidate


def slug(text: str) -> str:
    """A file-name-safe version of a model or file name (``ViT-B/32`` -> ``ViT-B-32``)."""
    if Path(text).suffix in (".pt", ".pth", ".bin"):
        text = Path(text).stem
    return re.sub(r"[^A-Za-z0-9_.@-]+", "-", text).strip("-")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_current_umask())  # mkstemp makes 0600 files; behave like open()
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` ``obj`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | os.PathLike, kind: str, map_location: torch.device | str = "cpu",
               format: str | None = None, parameter: str | None = None) -> dict[str, Any]:
    """A dict this project wrote with :func:`save_torch` (tensors and plain data only: ``weights_only``).

    Args:
        path: the file.
        kind: what the file should be, for the error (``generation checkpoint``).
        map_location: where tensors are loaded to.
        format: when given, the value the dict's ``format`` entry must have.
        parameter: the argument that named the file, for the error (see :class:`D4CError`).

    Raises:
        D4CError: one sentence when the file is missing, unreadable, not a dict or of another format.
    """
    def fail(problem: str) -> D4CError:
        return D4CError(f"{path} {problem}", parameter)

    if not Path(path).is_file():
        raise fail("does not exist.")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same sentence
        raise fail(f"is not a readable {kind} ({type(exc).__name__}).") from None
    if not isinstance(obj, dict) or (format is not None and obj.get("format") != format):
        raise fail(f"is not a {kind}" + (f" (expected format {format})." if format else "."))
    return obj


def replace_between(text: str, start: str, end: str, block: str) -> str:
    """``text`` with everything between the ``start`` and ``end`` markers replaced by ``block``.

    Raises ValueError when a marker is missing or they are out of order.
    """
    if start not in text or end not in text or text.index(start) > text.index(end):
        raise ValueError(f"no {start} ... {end} markers")
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{block}\n{end}{rest.split(end, 1)[1]}"


def replace_marked_block(path: str | os.PathLike, start: str, end: str, block: str) -> None:
    """Replace the block between ``start`` and ``end`` in the text file ``path``, atomically.

    The README tables are regenerated this way; on a ValueError (missing markers) the file is unchanged.
    """
    path = Path(path)
    text = replace_between(path.read_text(), start, end, block)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
