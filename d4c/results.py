"""The result file: one JSON per run, written atomically.

It holds clip_benchmark's keys (``dataset``, ``model``, ``pretrained``, ``task``, ``metrics``,
``language``; and ``model_type``, its flag),
then everything needed to know how the figure was made: the paper-table row (``method``,
``recon``), every flag, the quantization config, the seed, per-stage timings, package
versions, the device, and each stage's peak memory.
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
from d4c.models.identity import SLUG_DIGEST_CHARS, file_sha256, model_identity

TASK = "zeroshot_classification"
GENERATION_TASK = "generation"
"""The task of a ``--gen_only`` record: pseudo images made (or found in the cache), nothing evaluated."""
STAGES = ("load_model", "generation", "calibration", "reconstruction", "evaluation")
OUTPUT_KEYS = ("dataset", "model", "pretrained", "model_type", "task", "method", "q_config", "seed", "recon")


def pretrained_label(pretrained: str | None) -> str:
    """``{pretrained}`` of ``--output``: a tag, or a checkpoint file's stem and a short digest of its content
    (unique per file, as ``{model}`` is); ``none`` unset."""
    if pretrained is None:
        return "none"
    if os.path.isfile(pretrained):
        return f"{slug(Path(pretrained).stem)}-{file_sha256(pretrained)[:SLUG_DIGEST_CHARS]}"
    return pretrained


def output_path(config: RunConfig) -> Path:
    """``--output`` with its template fields filled in (``ViT-B/32`` becomes ``ViT-B-32``; a checkpoint
    file its stem and a short digest of its content, unless it is an OpenAI checkpoint)."""
    values = {
        "dataset": slug(config.dataset),
        "model": model_identity(config.model, config.model_type, config.pretrained).slug(),
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


def _reset_peak_rss() -> bool:
    """Restart the kernel's count of this process's peak resident size (Linux), True if it could."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """This process's peak resident size in MB (since the last reset on Linux; since start elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, 1)


class StageTimer:
    """Wall-clock seconds and peak memory per pipeline stage (CUDA is synchronised so queued work is counted).

    Peak memory per stage: the process's peak resident size during the stage (Linux restarts the
    count at each stage; elsewhere it is the peak so far) and, on CUDA, ``max_memory_allocated``.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.parts: dict[str, Any] = {}
        """Record parts the stages add as they run (``pseudo_images``)."""
        self.peak_memory_mb: dict[str, dict[str, float]] = {}
        self._start = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        per_stage = _reset_peak_rss()
        start = time.perf_counter()
        try:
            yield
        finally:
            cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
            if cuda:
                torch.cuda.synchronize()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            peak = {"rss": peak_rss_mb(), "rss_per_stage": per_stage}
            if cuda:
                peak["cuda_max_allocated"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            previous = self.peak_memory_mb.get(name, {})
            self.peak_memory_mb[name] = {k: max(v, previous.get(k, v)) if not isinstance(v, bool) else v
                                         for k, v in peak.items()}

    def as_dict(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {s: (round(self.seconds[s], 3) if s in self.seconds else None) for s in STAGES}
        out.update({k: round(v, 3) for k, v in self.seconds.items() if k not in STAGES})
        out["total"] = round(time.perf_counter() - self._start, 3)
        return out


def build_record(config: RunConfig, metrics: dict[str, float], timer: StageTimer, device: torch.device,
                 quant_config: dict | None = None, extra: dict[str, Any] | None = None,
                 task: str = TASK) -> dict[str, Any]:
    """The result record of one run (``task``: zero-shot classification, or ``generation`` for ``--gen_only``)."""
    record: dict[str, Any] = {
        "dataset": config.dataset,
        "model": config.model,
        "pretrained": config.pretrained,
        "model_type": config.model_type,
        "model_identity": model_identity(config.model, config.model_type, config.pretrained).as_dict(),
        "task": task,
        "metrics": metrics,
        "language": "en",
        "method": config.row,
        "recon": bool(config.recon and not config.fp_model),
        "seed": config.seed,
        "q_config": quant_config,
        "args": config.as_flags(),
        "timings_s": timer.as_dict(),
        "peak_memory_mb": timer.peak_memory_mb,
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
