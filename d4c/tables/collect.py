"""Result files -> one flat row per run -> a CSV with stable, documented columns.

Every JSON under the given folders that is a ``d4c-quant`` record (a result, or a ``--gen_only``
generation record) becomes one row; a sweep folder's ``plan.json`` adds the sweep, block and cell
of each row. The columns are :data:`COLUMNS` in this order, then ``arg_<flag>`` for every flag
recorded (sorted by name). Accuracies are fractions as in the result files (0.9685), times seconds.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterable

from d4c.io import atomic_path

COLUMNS = (
    "file",                 # the result JSON
    "sweep", "block", "cell",  # from the sweep folder's plan.json ("" for results outside a sweep)
    "task",                 # zeroshot_classification, or generation (--gen_only records)
    "model", "dataset",
    "method",               # the paper row: fp, real, gaussian, baseline, bns, pse, d4c0..d4c3, ...
    "generation_method",    # the method that made the pseudo images (baseline resolved to bns / pse), else ""
    "recon",                # True / False
    "recon_iters",          # reconstruction steps per unit of the run ("" without --recon)
    "gen_iter", "gen_schedule", "gen_groups",  # generation settings ("" for rows without pseudo images)
    "seed",
    "q_config",             # the --q_config file ("" for FP)
    "bits",                 # W4A8, ... (FP for full precision)
    "w_bit", "a_bit",
    "calibration_images", "calibration_texts",
    "acc1", "acc5", "mean_per_class_recall",
    "time_load_model", "time_generation", "time_calibration", "time_reconstruction", "time_evaluation",
    "time_total",           # seconds per stage (timings_s)
    "generation_seconds",   # optimisation seconds of the pseudo images (0 when they came from the cache)
    "images_from_cache",    # True when the run reused cached pseudo images
    "images_key",           # the pseudo images' cache key
    "device", "device_name", "torch", "d4c", "created",
)
SKIP_NAMES = ("plan.json",)


def _plan_index(folder: Path) -> dict[str, dict[str, Any]]:
    """Result file (resolved) -> its sweep, block and cell, from every plan.json under ``folder``."""
    index: dict[str, dict[str, Any]] = {}
    for plan_file in sorted(folder.rglob("plan.json")):
        try:
            plan = json.loads(plan_file.read_text())
        except (OSError, ValueError):
            continue
        for cell in plan.get("cells", []):
            index[str(Path(cell["output"]).resolve())] = {"sweep": plan.get("name", ""),
                                                          "block": ",".join(cell.get("blocks", [])),
                                                          "cell": cell.get("name", "")}
        for gen in plan.get("generations", []):
            index.setdefault(str(Path(gen["output"]).resolve()),
                             {"sweep": plan.get("name", ""), "block": "generation", "cell": gen.get("name", "")})
    return index


def _blank(value: Any) -> Any:
    return "" if value is None else value


def flatten(record: dict[str, Any], file: str, where: dict[str, Any] | None = None) -> dict[str, Any]:
    """One CSV row of a result record."""
    args = record.get("args") or {}
    qc = record.get("q_config") or {}
    images = record.get("pseudo_images") or {}
    timings = record.get("timings_s") or {}
    metrics = record.get("metrics") or {}
    device, versions = record.get("device") or {}, record.get("versions") or {}
    w_bit, a_bit = (qc.get("w_qconfig") or {}).get("bit"), (qc.get("a_qconfig") or {}).get("bit")
    fp = record.get("method") == "fp"
    generated = bool(images) or record.get("task") == "generation"
    row = {
        "file": file, **{k: (where or {}).get(k, "") for k in ("sweep", "block", "cell")},
        "task": record.get("task", ""), "model": record.get("model", ""),
        "dataset": "" if record.get("task") == "generation" else record.get("dataset", ""),
        "method": record.get("method", ""), "generation_method": images.get("row", ""),
        "recon": bool(record.get("recon")),
        "recon_iters": _blank((qc.get("recon") or {}).get("iters")) if record.get("recon") else "",
        "gen_iter": args.get("gen_iter", "") if generated else "",
        "gen_schedule": args.get("gen_schedule", "") if generated else "",
        "gen_groups": args.get("gen_groups", 1) if generated else "",
        "seed": record.get("seed", ""), "q_config": "" if fp else _blank(qc.get("path") or args.get("q_config")),
        "bits": "FP" if fp else (f"W{w_bit}A{a_bit}" if w_bit and a_bit else ""),
        "w_bit": _blank(w_bit), "a_bit": _blank(a_bit),
        "calibration_images": _blank((record.get("calibration_data") or {}).get("images") or images.get("num_images")),
        "calibration_texts": _blank((record.get("calibration_data") or {}).get("texts")),
        **{k: _blank(metrics.get(k)) for k in ("acc1", "acc5", "mean_per_class_recall")},
        **{f"time_{k}": _blank(timings.get(k)) for k in ("load_model", "generation", "calibration", "reconstruction",
                                                         "evaluation", "total")},
        "generation_seconds": _blank(images.get("generation_seconds")),
        "images_from_cache": _blank(images.get("from_cache")), "images_key": _blank(images.get("key")),
        "device": device.get("type", ""), "device_name": device.get("name", ""),
        "torch": versions.get("torch", device.get("torch", "")), "d4c": versions.get("d4c", ""),
        "created": record.get("created", ""),
    }
    row.update({f"arg_{k}": _blank(v) if not isinstance(v, (list, dict)) else json.dumps(v)
                for k, v in sorted(args.items())})
    return row


def is_record(doc: Any) -> bool:
    return isinstance(doc, dict) and "task" in doc and "args" in doc and "model" in doc


def collect(folders: Iterable[str | Path]) -> list[dict[str, Any]]:
    """One row per result record found under ``folders`` (files or folders), in path order."""
    rows = []
    for folder in map(Path, folders):
        index = _plan_index(folder) if folder.is_dir() else {}
        files = sorted(folder.rglob("*.json")) if folder.is_dir() else [folder]
        for file in files:
            if file.name in SKIP_NAMES or any(part in ("slurm", "configs") for part in file.parts[-3:-1]):
                continue
            try:
                doc = json.loads(file.read_text())
            except (OSError, ValueError):
                continue
            if is_record(doc):
                rows.append(flatten(doc, str(file), index.get(str(file.resolve()))))
    return rows


def columns_of(rows: list[dict[str, Any]]) -> list[str]:
    """:data:`COLUMNS`, then every ``arg_`` column that occurs, sorted."""
    extra = sorted({k for row in rows for k in row if k not in COLUMNS})
    return [*COLUMNS, *extra]


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns_of(rows), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write the rows as CSV, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(to_csv(rows))
