"""Atomic file writes: a crash or Ctrl-C never leaves a half-written result behind.

Each writer creates a temporary file in the destination folder and renames it over the
destination (``os.replace`` is atomic on POSIX and Windows when both are on one filesystem).
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch


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
