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
from d4c.figures.names import run_label, sort_by_row
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


def load_results(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The result records in ``paths`` (JSON files with ``model``, ``dataset``, ``method`` and ``metrics``).

    Other JSON files in a folder (recipes, summaries) are skipped; a file named directly must be a result.

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
                               "results")
            continue
        record["_path"] = str(path)
        records.append(record)
    if not records:
        raise D4CError(f"{', '.join(map(str, paths))} hold no d4c result files.", "results")
    return records


def single_model(records: Sequence[dict[str, Any]], parameter: str = "results") -> str:
    """The one model of ``records``; a sentence naming the files of each model when there are several."""
    models: dict[str, str] = {}
    for record in records:
        models.setdefault(str(record.get("model")), record.get("_path", "?"))
    if len(models) > 1:
        listed = ", ".join(f"{m} ({path})" for m, path in sorted(models.items()))
        raise D4CError(f"mixes result files of different models: {listed}; give the files of one model.", parameter)
    return next(iter(models))


def bits_label(record: dict[str, Any]) -> tuple[int, int] | None:
    """``(weight bits, activation bits)`` of a quantized result, None for FP."""
    q_config = record.get("q_config") or {}
    try:
        return int(q_config["w_qconfig"]["bit"]), int(q_config["a_qconfig"]["bit"])
    except (KeyError, TypeError, ValueError):
        return None


TABLE_COLUMNS = ("model", "dataset", "method", "recon", "seed", "w_bit", "a_bit", "acc1")
"""The columns a results CSV must have for the ``tables`` figure (extra columns are ignored)."""


def flat_row(record: dict[str, Any]) -> dict[str, Any]:
    """One result record as a ``TABLE_COLUMNS`` row (``w_bit``/``a_bit`` None for FP)."""
    bits = bits_label(record)
    return {"model": str(record["model"]), "dataset": str(record["dataset"]), "method": str(record["method"]),
            "recon": bool(record.get("recon", False)), "seed": int(record.get("seed", 0)),
            "w_bit": None if bits is None else bits[0], "a_bit": None if bits is None else bits[1],
            "acc1": float(record["metrics"]["acc1"]), "path": record.get("_path", "")}


def _csv_bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "recon", "on")


def _csv_int(value: str) -> int | None:
    value = value.strip()
    return None if value in ("", "none", "None", "nan", "-") else int(float(value))


def read_results_csv(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a results CSV (``d4c-results build --csv``) with the columns of :data:`TABLE_COLUMNS`."""
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
            try:
                rows.append({"model": row["model"], "dataset": row["dataset"], "method": row["method"],
                             "recon": _csv_bool(row["recon"]), "seed": _csv_int(row["seed"]) or 0,
                             "w_bit": _csv_int(row["w_bit"]), "a_bit": _csv_int(row["a_bit"]),
                             "acc1": float(row["acc1"]), "path": f"{path}:{number}"})
            except (TypeError, ValueError):
                raise D4CError(f"{path} line {number} has a value that is not a number in seed, w_bit, a_bit or "
                               f"acc1.", "csv") from None
    if not rows:
        raise D4CError(f"{path} holds no result rows.", "csv")
    return rows


# -- saved quantized models -------------------------------------------------------------------------------------

def load_states(paths: Sequence[str | Path], model: str) -> list[tuple[Path, dict[str, Any]]]:
    """The saved quantized models in ``paths`` (through the public loader), each checked to be of ``model``.

    A result JSON may stand for its saved model (its ``quant_state`` entry).
    """
    states = []
    for value in paths:
        path = Path(value).expanduser()
        if path.suffix == ".json" and path.is_file():
            try:
                recorded = json.loads(path.read_text()).get("quant_state")
            except (OSError, json.JSONDecodeError, AttributeError):
                recorded = None
            if not recorded:
                raise D4CError(f"{path} is not a result file with a saved quantized model (quant_state).", "states")
            # recorded as the run wrote it (maybe relative to its working directory); else beside the result
            path = Path(recorded) if Path(recorded).is_file() else path.parent / Path(recorded).name
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
