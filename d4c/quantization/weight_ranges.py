"""Weight observers of a whole model at once: the same ranges, computed batched, in parallel, and cached.

A weight quantizer's range depends on the weight and the quantizer's settings only, never on the
calibration data. :func:`observe_weights` therefore

* searches the rows (output channels) of every per-channel MSE weight quantizer of the model in one
  batch per (bit width, grid, row length), with :func:`d4c.quantization.range_search.sorted_rows.search_rows`
  (the exact search of :mod:`d4c.quantization.range_search`, same candidates and choice);
* runs each batch's row chunks on a small thread pool, each with one intra-op thread: the search is
  a long chain of small tensor operations, and intra-op threads on a shared machine spend most of
  their time waiting for each other at every operation's barrier (a 768 x 768 4-bit search took
  58 s with 2 intra-op threads and 3 s with 1 on the loaded 2-core machine, measured);
* keeps the ranges in a :class:`WeightRangeCache` keyed by the weights' SHA-256 and every weight
  quantizer's settings, so the cells of a sweep with the same model and weight config compute them
  once.

Every other weight quantizer (min/max, golden-section, per-tensor) observes its weight as before.
The observers end in the state a direct ``quantizer.observe(weight)`` leaves them in.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from d4c.io import save_torch
from d4c.quantization.observers import AvgMSEObserver, MSEObserver
from d4c.quantization.qparams import channels_first
from d4c.quantization.quant_clip import quantized_layers
from d4c.quantization.range_search import NUM_CANDIDATES, data_sidedness
from d4c.quantization.range_search.common import Problem
from d4c.quantization.range_search.sorted_rows import search_rows
from d4c.runtime import intra_op_threads

RANGE_CODE_VERSION = 1
"""Bump when a change to the search or the observers changes the ranges a weight gets."""
CACHE_FORMAT = "d4c-weight-ranges/1"
NO_CACHE = ("", "none", "None", "off")
POOL_CHUNK_ROWS = 1024
"""Rows per task of the thread pool."""


@dataclass
class _Task:
    """One batch of rows: same grid, same sidedness, same row length."""

    problem: Problem
    side: str
    layers: list[tuple[str, nn.Module, int]]
    """(name, layer, rows) in the order their rows are stacked."""

    def rows(self) -> torch.Tensor:
        return torch.cat([channels_first(layer.weight.detach().float(), layer.weight_quantizer.ch_axis)
                          for _, layer, _ in self.layers])


def _batched(layer: nn.Module) -> bool:
    """Whether ``layer``'s weight quantizer is searched here (exact MSE, per channel)."""
    quantizer = layer.weight_quantizer
    return type(quantizer.observer) in (MSEObserver, AvgMSEObserver) and quantizer.ch_axis >= 0 \
        and quantizer.observer.p >= 1 and layer.weight.numel() > 0


def _tasks(layers: list[tuple[str, nn.Module]]) -> list[_Task]:
    tasks: dict[tuple, _Task] = {}
    for name, layer in layers:
        quantizer = layer.weight_quantizer
        w = layer.weight.detach()
        xc = channels_first(w, quantizer.ch_axis)
        side = data_sidedness(xc.min(1).values, xc.max(1).values)  # as the observer decides on its first batch
        pb = Problem(quantizer.qmin, quantizer.qmax, quantizer.symmetric, quantizer.observer.p, NUM_CANDIDATES, xc.shape[1])
        task = tasks.setdefault((pb, side), _Task(pb, side, []))
        task.layers.append((name, layer, xc.shape[0]))
    return list(tasks.values())


def _search(task: _Task, workers: int) -> torch.Tensor:
    """``[rows, 2]`` (min, max) of every row of the task."""
    rows = task.rows()
    chunks = [rows[i:i + POOL_CHUNK_ROWS] for i in range(0, rows.shape[0], POOL_CHUNK_ROWS)]
    with intra_op_threads(1):
        if workers > 1 and len(chunks) > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                found = list(pool.map(lambda c: search_rows(c, task.problem, task.side), chunks))
        else:
            found = [search_rows(c, task.problem, task.side) for c in chunks]
    return torch.stack([torch.cat([f[0] for f in found]), torch.cat([f[1] for f in found])], 1)


def _set_range(layer: nn.Module, lo: torch.Tensor, hi: torch.Tensor, side: str) -> None:
    """Leave the observer as ``observe(weight)`` would: one batch seen, its range, its sidedness."""
    quantizer = layer.weight_quantizer
    observer = quantizer.observer
    observer.reset()
    observer.min_val = lo.to(observer.min_val.device).clone()
    observer.max_val = hi.to(observer.max_val.device).clone()
    observer.batches = 1
    observer.sidedness = side
    quantizer.update_qparams()


def weights_digest(layers: list[tuple[str, nn.Module]]) -> str:
    """SHA-256 of every layer's name, weight shape, weight bytes and weight-quantizer settings."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}:{RANGE_CODE_VERSION}".encode())
    for name, layer in layers:
        q = layer.weight_quantizer
        settings = {"name": name, "shape": list(layer.weight.shape), "observer": type(q.observer).__name__,
                    "bit": q.bit, "symmetric": q.symmetric, "ch_axis": q.ch_axis, "p": getattr(q.observer, "p", None)}
        digest.update(json.dumps(settings, sort_keys=True).encode())
        digest.update(layer.weight.detach().float().cpu().contiguous().numpy())  # buffer protocol: no copy
    return digest.hexdigest()


class WeightRangeCache:
    """A folder of weight ranges, one file per (weights, weight-quantizer settings) digest."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()

    @staticmethod
    def from_flag(value: str | None) -> "WeightRangeCache | None":
        """The cache named by a folder flag (None when it is ``none``)."""
        return None if value is None or value in NO_CACHE else WeightRangeCache(value)

    def path(self, key: str) -> Path:
        return self.root / f"{key[:40]}.pt"

    def load(self, key: str) -> dict[str, dict] | None:
        """The stored ranges of ``key`` (layer name -> min, max, side), or None (absent, unreadable, other key)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged entry is recomputed, never fatal
            return None
        if not isinstance(stored, dict) or stored.get("format") != CACHE_FORMAT or stored.get("key") != key:
            return None
        return stored["ranges"]

    def save(self, key: str, ranges: dict[str, dict]) -> Path:
        path = self.path(key)
        save_torch(path, {"format": CACHE_FORMAT, "key": key, "ranges": ranges})
        return path


@dataclass
class WeightObservation:
    """How the weight observers of one model were served."""

    batched_layers: int = 0
    other_layers: int = 0
    from_cache: bool = False
    cache_path: Path | None = None


@torch.no_grad()
def observe_weights(model: nn.Module, cache: WeightRangeCache | None = None, progress: bool = True,
                    workers: int | None = None) -> WeightObservation:
    """Run every weight observer of a wrapped CLIP ``model`` (scales and zero points set, as
    ``layer.weight_quantizer.observe(layer.weight)`` for each layer would set them).

    ``workers``: threads of the pool (default: torch's intra-op thread count).
    """
    layers = list(quantized_layers(model))
    batched = [(n, layer) for n, layer in layers if _batched(layer)]
    others = [(n, layer) for n, layer in layers if not _batched(layer)]
    report = WeightObservation(batched_layers=len(batched), other_layers=len(others))
    for _, layer in others:
        layer.weight_quantizer.observe(layer.weight)
    if not batched:
        return report
    key = weights_digest(batched) if cache is not None else None
    stored = cache.load(key) if cache is not None else None
    if stored is not None and all(name in stored for name, _ in batched):
        for name, layer in batched:
            _set_range(layer, stored[name]["min"], stored[name]["max"], stored[name]["side"])
        report.from_cache, report.cache_path = True, cache.path(key)
        return report
    workers = workers or max(1, torch.get_num_threads())
    ranges: dict[str, dict] = {}
    tasks = _tasks(batched)
    bar = tqdm(total=sum(r for t in tasks for _, _, r in t.layers), desc="weight ranges", unit="ch",
               disable=not progress, leave=False)
    for task in tasks:
        found = _search(task, workers)
        start = 0
        for name, layer, rows in task.layers:
            lo, hi = found[start:start + rows, 0], found[start:start + rows, 1]
            start += rows
            _set_range(layer, lo, hi, task.side)
            ranges[name] = {"min": lo.clone(), "max": hi.clone(), "side": task.side}
        bar.update(sum(r for _, _, r in task.layers))
    bar.close()
    if cache is not None:
        report.cache_path = cache.save(key, ranges)
    return report
