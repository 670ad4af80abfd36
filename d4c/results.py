"""The result file: one JSON per run, written atomically.

It holds clip_benchmark's keys (``dataset``, ``model``, ``pretrained``, ``task``, ``metrics``,
``language``; and ``model_type``, its flag),
then everything needed to know how the figure was made: the paper-table row (``method``,
``recon``), every flag, the quantization config, the seed, per-stage timings, package
versions and the device.
"""

from __future__ import annotations

import datetime as _dt
import os
import string
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from d4c.config import RunConfig
from d4c.environment import environment, package_versions
from d4c.errors import D4CError
from d4c.io import slug, write_json

TASK = "zeroshot_classification"
STAGES = ("load_model", "generation", "calibration", "reconstruction", "evaluation")
OUTPUT_KEYS = ("dataset", "model", "pretrained", "model_type", "task", "method", "q_config", "seed", "recon")


def pretrained_label(pretrained: str | None) -> str:
    """``--pretrained`` as clip_benchmark's file names show it: a tag, or a checkpoint file's name; ``none`` unset."""
    if pretrained is None:
        return "none"
    return os.path.basename(pretrained) if os.path.isfile(pretrained) else pretrained


def output_path(config: RunConfig) -> Path:
    """``--output`` with its template fields filled in (``ViT-B/32`` becomes ``ViT-B-32``)."""
    values = {
        "dataset": slug(config.dataset),
        "model": slug(config.model),
        "pretrained": slug(pretrained_label(config.pretrained)),
        "model_type": config.model_type,
        "task": TASK,
        "method": config.row,
        "q_config": "fp" if config.fp_model else slug(Path(config.q_config).stem),
        "seed": config.seed,
        "recon": "recon" if config.recon and not config.fp_model else "norecon",
    }
    fields = {name for _, name, _, _ in string.Formatter().parse(config.output) if name is not None}
    unknown = sorted(f for f in fields if f not in values)
    if unknown:
        raise D4CError(f"--output {config.output} uses unknown placeholder {{{unknown[0]}}}; "
                       f"use any of {', '.join('{' + k + '}' for k in OUTPUT_KEYS)}.")
    try:
        return Path(config.output.format(**values))
    except (ValueError, IndexError) as exc:
        raise D4CError(f"--output {config.output} is not a valid template ({exc}).") from None


class StageTimer:
    """Wall-clock seconds per pipeline stage (CUDA is synchronised so queued work is counted)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def as_dict(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {s: (round(self.seconds[s], 3) if s in self.seconds else None) for s in STAGES}
        out.update({k: round(v, 3) for k, v in self.seconds.items() if k not in STAGES})
        out["total"] = round(time.perf_counter() - self._start, 3)
        return out


def build_record(config: RunConfig, metrics: dict[str, float], timer: StageTimer, device: torch.device,
                 quant_config: dict | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The result record of one run."""
    record: dict[str, Any] = {
        "dataset": config.dataset,
        "model": config.model,
        "pretrained": config.pretrained,
        "model_type": config.model_type,
        "task": TASK,
        "metrics": metrics,
        "language": "en",
        "method": config.row,
        "recon": bool(config.recon and not config.fp_model),
        "seed": config.seed,
        "q_config": quant_config,
        "args": config.as_flags(),
        "timings_s": timer.as_dict(),
        "versions": package_versions(),
        "device": environment(device),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        record.update(extra)
    return record


def write_result(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Write the record atomically (a crash never leaves half a file)."""
    write_json(path, record)
