"""What the figures are drawn from: the pseudo-image cache, result files, saved quantized models, real images.

Nothing here generates, calibrates or reconstructs: every reader takes files the pipeline already
wrote. Each problem with them is one sentence (:class:`~d4c.errors.D4CError` naming the
parameter), found before any figure is drawn.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from d4c.errors import D4CError
from d4c.generation.methods import method_class
from d4c.generation.settings import GenerationSettings
from d4c.figures.names import row_rank, run_label, sort_by_row
from d4c.io import load_torch
from d4c.quantization.state import load_quant_state

CACHE_SKIP_SUFFIXES = (".ckpt.pt", ".generator.pt")
"""Files of the cache folder that are not finished image sets (checkpoints, trained generators)."""


@dataclass
class CacheEntry:
    """One finished set of pseudo images in the cache (its ``<stem>.pt`` and ``<stem>.json``)."""

    path: Path
    recipe: dict[str, Any]
    info: dict[str, Any]
    _stored: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def row(self) -> str:
        """The paper row of the images (``d4c3``, ``pse``, ``bns``, ...), from the recipe."""
        return recipe_row(self.recipe)

    @property
    def model_name(self) -> str:
        return str(self.info.get("model_name") or self.recipe.get("model", {}).get("name", "?"))

    def stored(self) -> dict[str, Any]:
        """The ``.pt`` file's content (images, targets, loss history), read once."""
        if self._stored is None:
            self._stored = load_torch(self.path, "file of cached pseudo images", parameter="cache")
        return self._stored

    @property
    def images(self) -> torch.Tensor:
        return self.stored()["images"]

    @property
    def targets(self) -> torch.Tensor | None:
        return self.stored().get("targets")

    @property
    def loss_history(self) -> torch.Tensor | None:
        """Mean mini-batch loss per outer iteration; None for entries written before it was kept."""
        history = self.stored().get("loss_history")
        return None if history is None or len(history) == 0 else history


def recipe_row(recipe: dict[str, Any]) -> str:
    """The row label of a cache recipe, through the method registry (the method name for unknown methods)."""
    name = str(recipe.get("method", "?"))
    try:
        cls = method_class(name)
    except Exception:  # noqa: BLE001 - a method this checkout does not register keeps its name
        return name
    options = {option.name: recipe[option.name] for option in cls.options if option.name in recipe}
    try:
        return cls.row(GenerationSettings(method=name, options=options))
    except ValueError:
        return name


def cache_entries(folder: str | Path, model: str | None = None, seed: int | None = None,
                  schedule: str | None = None) -> list[CacheEntry]:
    """The finished image sets in ``folder`` (of ``model``, ``seed``, ``schedule`` when given), one per row.

    Where several sets of one row match (other iteration counts or image counts), the newest is
    taken and a warning names the others.

    Raises:
        D4CError: the folder does not exist or holds no matching entry (the sentence lists what it holds).
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise D4CError(f"{folder} is not a folder of cached pseudo images.", "cache")
    everything: list[CacheEntry] = []
    for recipe_path in sorted(root.glob("*.json")):
        images_path = recipe_path.with_suffix(".pt")
        if not images_path.is_file() or images_path.name.endswith(CACHE_SKIP_SUFFIXES):
            continue
        try:
            doc = json.loads(recipe_path.read_text())
        except (OSError, json.JSONDecodeError):
            warnings.warn(f"Skipping {recipe_path}: not a readable recipe file.", stacklevel=2)
            continue
        if isinstance(doc, dict) and isinstance(doc.get("recipe"), dict):
            everything.append(CacheEntry(images_path, doc["recipe"], {k: v for k, v in doc.items() if k != "recipe"}))
    if not everything:
        raise D4CError(f"{folder} holds no cached pseudo images (no <stem>.pt with its <stem>.json recipe).", "cache")
    chosen = [e for e in everything if (model is None or e.model_name == model)
              and (seed is None or e.recipe.get("seed") == seed)
              and (schedule is None or e.recipe.get("gen_schedule") == schedule)]
    if not chosen:
        held = sorted({f"{e.model_name} seed {e.recipe.get('seed')} {e.recipe.get('gen_schedule')}" for e in everything})
        wanted = ", ".join(f"{k} {v}" for k, v in (("model", model), ("seed", seed), ("schedule", schedule))
                           if v is not None)
        raise D4CError(f"{folder} holds no cached pseudo images of {wanted}; it holds: {'; '.join(held)}.", "cache")
    by_row: dict[str, list[CacheEntry]] = {}
    for entry in chosen:
        by_row.setdefault(entry.row, []).append(entry)
    picked = []
    for row, entries in by_row.items():
        entries.sort(key=lambda e: str(e.info.get("created", "")))
        if len(entries) > 1:
            warnings.warn(f"{len(entries)} cached {row} image sets match; using the newest, {entries[-1].path.name}.",
                          stacklevel=2)
        picked.append(entries[-1])
    return sort_by_row(picked, key=lambda e: e.row)


# -- result files ------------------------------------------------------------------------------------------------

def result_files(paths: Sequence[str | Path]) -> list[Path]:
    """Every result JSON named by ``paths`` (files, or folders searched recursively for ``*.json``)."""
    files: list[Path] = []
    for value in paths:
        path = Path(value).expanduser()
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*.json") if not p.name.startswith(".")))
        elif path.is_file():
            files.append(path)
        else:
            raise D4CError(f"{value} does not exist.", "results")
    return files


def load_results(paths: Sequence[str | Path], parameter: str = "results") -> list[dict[str, Any]]:
    """The result records in ``paths`` (JSON files with ``model``, ``dataset``, ``method`` and ``metrics``).

    Other JSON files in a folder (recipes, summaries, ``--gen_only`` generation records) are skipped;
    a file named directly must be a result. Each record gets ``_path`` (its file) and ``_named`` (True when the file was named directly).

    Raises:
        D4CError: a named file is not a result, or no result was found.
    """
    records = []
    named = {Path(p).expanduser() for p in paths if Path(p).expanduser().is_file()}
    for path in result_files(paths):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if not (isinstance(record, dict) and {"model", "dataset", "method", "metrics"} <= set(record)):
            if path in named:
                raise D4CError(f"{path} is not a d4c result file (it lacks model, dataset, method or metrics).",
                               parameter)
            continue
        if record.get("task") == "generation" or "acc1" not in (record.get("metrics") or {}):
            if path in named:  # a --gen_only record: images, no accuracy
                raise D4CError(f"{path} is a generation record (--gen_only), not the result of an evaluation.",
                               parameter)
            continue
        record["_path"], record["_named"] = str(path), path in named
        records.append(record)
    if not records:
        raise D4CError(f"{' '.join(map(str, paths))} hold no d4c result files.", parameter)
    return records


def select_results(records: Sequence[dict[str, Any]], model: str | None = None, methods: set[str] | None = None,
                   bits: set[str] | None = None, seed: int | None = None, schedule: str | None = None,
                   recon_iters: int | None = None, parameter: str = "results") -> tuple[str, list[dict[str, Any]]]:
    """The model and the records of one model (``model``, or the only one) that :func:`selected` keeps.

    Files named directly must be of ``model``; results found in folders are chosen by it. Without
    ``model``, results of several models are an error (a sentence naming a file of each).
    """
    if model is None:
        model = single_model(records, parameter)
    wrong = [r for r in records if r["_named"] and r["model"] != model]
    if wrong:
        raise D4CError(f"{wrong[0]['_path']} is a result of {wrong[0]['model']}, not --model {model}.", parameter)
    chosen = [r for r in records if r["model"] == model
              and selected(flat_row(r), methods, bits, seed, schedule, recon_iters)]
    if not chosen:
        held = sorted({f"{r['model']} {r['method']} {bits_name(bits_label(r))} seed {r.get('seed')}" for r in records})
        raise D4CError(f"hold no result of the selection (model {model}); they hold: {'; '.join(held[:12])}"
                       f"{' ...' if len(held) > 12 else ''}.", parameter)
    return model, chosen


def selected(row: dict[str, Any], methods: set[str] | None = None, bits: set[str] | None = None,
             seed: int | None = None, schedule: str | None = None, recon_iters: int | None = None,
             keep_fp: bool = False) -> bool:
    """Whether a flat row (:func:`flat_row`) is of these rows, bit widths, seed, generation schedule and steps.

    FP passes every bit width (and every row too with ``keep_fp``); rows without pseudo images pass
    every schedule, runs without reconstruction every step count.
    """
    fp = row["method"] == "fp"
    return ((methods is None or row["method"] in methods or (keep_fp and fp))
            and (bits is None or fp or bits_name(_row_bits(row)) in bits)
            and (seed is None or row["seed"] == seed)
            and (schedule is None or not row.get("gen_schedule") or row["gen_schedule"] == schedule)
            and (recon_iters is None or not row["recon"] or row.get("recon_iters") in (None, recon_iters)))


def _row_bits(row: dict[str, Any]) -> tuple[int, int] | None:
    return None if row["w_bit"] is None else (row["w_bit"], row["a_bit"])


def single_model(records: Sequence[dict[str, Any]], parameter: str = "results") -> str:
    """The one model of ``records``; a sentence naming a file of each model when there are several."""
    models: dict[str, str] = {}
    for record in records:
        models.setdefault(str(record.get("model")), record.get("_path", "?"))
    if len(models) > 1:
        listed = ", ".join(f"{m} ({path})" for m, path in sorted(models.items()))
        raise D4CError(f"mixes result files of different models: {listed}; give the files of one model or choose "
                       f"one with --model.", parameter)
    return next(iter(models))


def bits_name(bits: tuple[int, int] | None) -> str:
    """``W4A8`` (``FP`` for None)."""
    return "FP" if bits is None else f"W{bits[0]}A{bits[1]}"


def bits_label(record: dict[str, Any]) -> tuple[int, int] | None:
    """``(weight bits, activation bits)`` of a quantized result, None for FP."""
    q_config = record.get("q_config") or {}
    try:
        return int(q_config["w_qconfig"]["bit"]), int(q_config["a_qconfig"]["bit"])
    except (KeyError, TypeError, ValueError):
        return None


TABLE_COLUMNS = ("model", "dataset", "method", "recon", "seed", "w_bit", "a_bit", "acc1")
"""The columns a results CSV must have for the ``tables`` figure (extra columns are ignored)."""

OPTIONAL_COLUMNS = ("gen_schedule", "recon_iters", "task", "file")
"""Columns of ``d4c-results`` CSVs the figures use where present (selection, generation rows, file names)."""

IMAGE_FREE_ROWS = ("fp", "real", "gaussian")
"""Rows whose runs synthesize no pseudo images (their generation schedule means nothing)."""


def flat_row(record: dict[str, Any]) -> dict[str, Any]:
    """One result record as a flat row: ``TABLE_COLUMNS`` (``w_bit``/``a_bit`` None for FP, ``acc1`` None
    without one), ``gen_schedule`` ("" without pseudo images), ``recon_iters`` (None without
    reconstruction) and ``path``."""
    bits = bits_label(record)
    args = record.get("args") if isinstance(record.get("args"), dict) else {}
    method, recon = str(record["method"]), bool(record.get("recon", False))
    generated = bool(record.get("pseudo_images")) or method not in IMAGE_FREE_ROWS
    recon_iters = args.get("recon_iters") or ((record.get("q_config") or {}).get("recon") or {}).get("iters")
    acc1 = (record.get("metrics") or {}).get("acc1")
    return {"model": str(record["model"]), "dataset": str(record["dataset"]), "method": method,
            "recon": recon, "seed": int(record.get("seed", 0)),
            "w_bit": None if bits is None else bits[0], "a_bit": None if bits is None else bits[1],
            "acc1": None if acc1 is None else float(acc1),
            "gen_schedule": str(args.get("gen_schedule") or "") if generated else "",
            "recon_iters": int(recon_iters) if recon and recon_iters else None, "path": record.get("_path", "")}


def _csv_bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "recon", "on")


def _csv_int(value: str) -> int | None:
    value = value.strip()
    return None if value in ("", "none", "None", "nan", "-") else int(float(value))


def read_results_csv(path: str | Path) -> list[dict[str, Any]]:
    """The evaluation rows of a results CSV (``d4c-results build --csv``) as :func:`flat_row` rows.

    It needs the columns of :data:`TABLE_COLUMNS`; those of :data:`OPTIONAL_COLUMNS` are read where
    present, and generation rows (``task`` generation, from ``--gen_only`` records) are skipped.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise D4CError(f"{path} does not exist.", "csv")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in TABLE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise D4CError(f"{path} lacks the column(s) {', '.join(missing)}; expected {', '.join(TABLE_COLUMNS)}.",
                           "csv")
        rows = []
        for number, row in enumerate(reader, start=2):
            if row.get("task") == "generation":
                continue
            try:
                recon = _csv_bool(row["recon"])
                rows.append({"model": row["model"], "dataset": row["dataset"], "method": row["method"],
                             "recon": recon, "seed": _csv_int(row["seed"]) or 0,
                             "w_bit": _csv_int(row["w_bit"]), "a_bit": _csv_int(row["a_bit"]),
                             "acc1": float(row["acc1"]), "gen_schedule": (row.get("gen_schedule") or "").strip(),
                             "recon_iters": _csv_int(row.get("recon_iters") or "") if recon else None,
                             "path": row.get("file") or f"{path}:{number}"})
            except (TypeError, ValueError):
                raise D4CError(f"{path} line {number} has a value that is not a number in seed, w_bit, a_bit, "
                               f"recon_iters or acc1.", "csv") from None
    if not rows:
        raise D4CError(f"{path} holds no result rows.", "csv")
    return rows


# -- saved quantized models -------------------------------------------------------------------------------------

def _recorded_state(record: dict[str, Any]) -> Path:
    recorded = record.get("quant_state")
    if not recorded:
        raise D4CError(f"{record['_path']} is not a result file with a saved quantized model (quant_state).", "states")
    # recorded as the run wrote it (maybe relative to its working directory); else beside the result file
    return Path(recorded) if Path(recorded).is_file() else Path(record["_path"]).parent / Path(recorded).name


def load_states(paths: Sequence[str | Path], model: str, methods: set[str] | None = None,
                bits: set[str] | None = None, seed: int | None = None, schedule: str | None = None,
                recon_iters: int | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """The saved quantized models in ``paths`` (through the public loader), each checked to be of ``model``.

    A path is a saved model, a result file (its ``quant_state``) or a folder of result files (those
    of ``model`` that saved a model and :func:`selected` keeps, ordered by bit width, row and
    reconstruction).
    """
    files = [Path(p).expanduser() for p in paths]
    missing = [p for p in files if not p.exists()]
    if missing:
        raise D4CError(f"{missing[0]} does not exist.", "states")
    results = [p for p in files if p.is_dir() or p.suffix == ".json"]
    chosen: list[Path] = [p for p in files if p not in results]
    if results:
        records = [r for r in load_results(results, "states") if r["_named"] or r.get("quant_state")]
        records = [r for r in records if r["method"] != "fp" or r["_named"]]
        _, records = select_results(records, model, methods, bits, seed, schedule, recon_iters, "states")
        records.sort(key=lambda r: (bits_label(r) or (0, 0), row_rank(r["method"]), bool(r.get("recon"))))
        chosen += [_recorded_state(r) for r in records]
    states = []
    for path in chosen:
        try:
            saved = load_quant_state(path)
        except D4CError as exc:  # the loader words it for --load_quant
            raise D4CError(exc.message.removeprefix("--load_quant ")) from None
        if saved.get("model") != model:
            raise D4CError(f"{path} holds a quantized {saved.get('model')}, not --model {model}.", "states")
        states.append((path, saved))
    return states


def state_label(path: Path, saved: dict[str, Any]) -> str:
    """``D4C 3 (+SCG+PAE), recon`` from the state's recorded run (the file name when it records none)."""
    info = saved.get("info") or {}
    if "method" not in info:
        return path.name
    return run_label(str(info["method"]), bits_label(saved), info.get("recon"))
