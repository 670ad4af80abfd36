#!/usr/bin/env python
"""Calibration of full-size CLIP models on the CPU, before and after, in paired runs on the same machine.

    python benchmarks/bench_calibration_full.py --compare main            # ViT-B/32 and RN50, one pair each
    python benchmarks/bench_calibration_full.py --models random:ViT-B/32 --pairs 2 --compare main

Each row (its own process) wraps a randomly initialised full-size model (``random:<name>``: the
weights do not change the work) with ``exp/config48.yaml`` (W4A8, MSEObserver: the paper's
config) and times what :func:`d4c.quantization.calibration.calibrate` does: the activation
observers on one forward of 32 N(0, 1) images and 32 texts (per quantizer, summed per layer kind;
the revision's own way: in the forward, or on a thread pool after it as ``calibrate`` runs them), then the weight observers as the code of that revision runs them. For the current code the weight
observers are timed cold (no cache) and warm (from the weight-range cache a sweep's later cells
hit). ``--compare REV`` also runs every row with the code of git revision ``REV`` (exported with
``git archive``), alternating before/after, so both see the same machine and load; each row records
wall and CPU seconds and the load average. Writes ``benchmarks/results/calibration_full.json``.

``--load N`` runs N busy-loop processes beside every row (before and after alike): the shared,
loaded machine the issue's figures came from (load average about N + 2), where code whose searches
use several intra-op threads waits at every operation's barrier. Those rows go to
``benchmarks/results/calibration_full_loaded.json``.

    python benchmarks/bench_calibration_full.py --models random:ViT-B/32 --samples 8 --texts 16 \
        --load 7 --compare cf593b4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from common import export_revision, format_table, load_average, peak_memory_mb, run_row, write_results

SCRIPT = Path(__file__).resolve()
MODELS = ("random:ViT-B/32", "random:RN50")
KINDS = ("q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj", "q_quantizer", "k_quantizer", "v_quantizer",
         "softmax_quantizer", "conv1", "conv2", "conv3")


def _kind(name: str) -> str:
    parts = name.split(".")
    tower = "image" if parts[0] == "visual" else "text"
    role = "weight" if parts[-1] == "weight_quantizer" else "act"
    kind = next((p for p in reversed(parts) if p in KINDS), parts[-2])
    return f"{tower} {role} {kind}"


def time_row(row: dict) -> dict:
    """Time one calibration (runs in its own process, importing whichever d4c is first on sys.path)."""
    import torch
    import clip
    import d4c
    from d4c.models.loading import load_clip
    from d4c.quantization.modules import ACTIVATION
    from d4c.quantization.qconfig import load_qconfig
    from d4c.quantization.quant_clip import named_quantizers, quantize_clip, quantized_layers, set_quant_state

    code = str(Path(d4c.__file__).resolve().parents[1])
    loaded = load_clip(row["model"], "cpu")
    model = quantize_clip(loaded.model, load_qconfig(row["config"]))
    try:  # the code whose activation searches run on a thread pool after the forward, as calibrate() runs them
        from d4c.quantization.calibration import deferred_activation_observers
    except ImportError:
        deferred_activation_observers = None
    seconds: dict[str, float] = defaultdict(float)  # per kind, summed over the pool's threads
    lock = threading.Lock()
    for name, quantizer in named_quantizers(model):
        forward = quantizer.observer.forward

        def timed_forward(x, _forward=forward, _kind=_kind(name)):
            start = time.perf_counter()
            out = _forward(x)
            with lock:
                seconds[_kind] += time.perf_counter() - start
            return out

        quantizer.observer.forward = timed_forward
    samples, texts, res = row["samples"], row.get("texts") or row["samples"], loaded.resolution
    images = torch.randn(samples, 3, res, res, generator=torch.Generator().manual_seed(0))
    tokens = clip.tokenize([f"a photo of thing number {i}." for i in range(texts)])
    out = {"model": row["model"], "config": Path(row["config"]).stem, "code": code, "samples": samples,
           "texts": texts, "load_processes": row.get("load", 0),
           "torch_threads": torch.get_num_threads(), "load_before": load_average()}
    with torch.no_grad():
        set_quant_state(model, observe=True, quantize=False, role=ACTIVATION)
        for tower, run in (("image", lambda: model.encode_image(images)), ("text", lambda: model.encode_text(tokens))):
            wall, cpu = time.perf_counter(), time.process_time()
            with (deferred_activation_observers(model, torch.get_num_threads()) if deferred_activation_observers
                  else contextlib.nullcontext()):
                run()
            out[f"{tower}_activation_s"] = round(time.perf_counter() - wall, 2)
            out[f"{tower}_activation_cpu_s"] = round(time.process_time() - cpu, 2)
        set_quant_state(model, observe=False, quantize=False)
        try:
            from d4c.quantization.weight_ranges import WeightRangeCache, observe_weights
        except ImportError:  # the code before the batched weight observers
            observe_weights = None
        wall, cpu = time.perf_counter(), time.process_time()
        if observe_weights is None:
            for _, layer in quantized_layers(model):
                layer.weight_quantizer.observe(layer.weight)
        else:
            observe_weights(model, None, progress=False)
        out["weight_s"] = round(time.perf_counter() - wall, 2)
        out["weight_cpu_s"] = round(time.process_time() - cpu, 2)
        if observe_weights is not None:
            with tempfile.TemporaryDirectory() as folder:
                cache = WeightRangeCache(folder)
                observe_weights(model, cache, progress=False)  # stores the ranges (a sweep's first cell)
                wall = time.perf_counter()
                report = observe_weights(model, cache, progress=False)
                out["weight_warm_s"] = round(time.perf_counter() - wall, 2)
                assert report.from_cache
    out["activation_s"] = round(out["image_activation_s"] + out["text_activation_s"], 2)
    out["total_s"] = round(out["activation_s"] + out["weight_s"], 2)
    if "weight_warm_s" in out:
        out["total_warm_s"] = round(out["activation_s"] + out["weight_warm_s"], 2)
    out["per_kind_s"] = {k: round(v, 2) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])}
    out["load_after"] = load_average()
    out.update(peak_memory_mb(torch.device("cpu")))
    return out


@contextlib.contextmanager
def busy_processes(count: int):
    """``count`` single-threaded busy loops (other processes) while the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        if procs:
            time.sleep(2.0)  # let the load build before the row starts
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--config", default="./exp/config48.yaml")
    parser.add_argument("--samples", type=int, default=32, help="images (and texts) of the activation pass")
    parser.add_argument("--texts", type=int, default=None, help="texts of the activation pass (default: --samples)")
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="busy-loop processes running beside every row: the loaded shared machine a "
                             "measurement was taken on (load average about N + 2)")
    parser.add_argument("--compare", default=None, metavar="REV", help="git revision to pair every row with")
    parser.add_argument("--after", default=None, metavar="REV",
                        help="git revision of the 'after' rows (default: the working tree)")
    parser.add_argument("--pairs", type=int, default=1, help="before/after pairs per model")
    parser.add_argument("--_row", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._row:
        print(json.dumps(time_row(json.loads(args._row))))
        return
    before = export_revision(args.compare) if args.compare else None
    after = export_revision(args.after) if args.after else (None, "working tree")
    records = []
    for name in args.models:
        row = {"model": name, "config": args.config, "samples": args.samples, "texts": args.texts, "load": args.load}
        for pair in range(args.pairs):
            runs = ([("before", before[0])] if before else []) + [("after", after[0])]
            if pair % 2:
                runs.reverse()  # alternate the order so a load trend favours neither side
            for label, code in runs:
                with busy_processes(args.load):
                    record = run_row(SCRIPT, row, code)
                record.update(label=label, pair=pair, revision=before[1] if label == "before" else after[1])
                records.append(record)
                print(f"{name} {label}: activations {record['activation_s']} s, weights {record['weight_s']} s"
                      f"{', warm ' + str(record['weight_warm_s']) + ' s' if 'weight_warm_s' in record else ''}"
                      f" (load {record['load_before'][0]} -> {record['load_after'][0]})", flush=True)
    summary = []
    for name in args.models:
        for pair in range(args.pairs):
            got = {r["label"]: r for r in records if r["model"] == name and r["pair"] == pair}
            if "before" in got and "after" in got:
                b, a = got["before"], got["after"]
                summary.append({"model": name, "pair": pair, "before_s": b["total_s"], "after_s": a["total_s"],
                                "after_warm_s": a.get("total_warm_s"),
                                "speedup": round(b["total_s"] / a["total_s"], 1),
                                "speedup_warm": round(b["total_s"] / a["total_warm_s"], 1) if a.get("total_warm_s") else None,
                                "weight_speedup": round(b["weight_s"] / a["weight_s"], 1),
                                "activation_speedup": round(b["activation_s"] / a["activation_s"], 1)})
    import torch

    name = "calibration_full_loaded" if args.load else "calibration_full"
    path = write_results(name, torch.device("cpu"), {**vars(args), "summary": summary}, records)
    print(format_table(records, ["model", "label", "activation_s", "weight_s", "weight_warm_s", "total_s",
                                 "load_before", "load_after"]))
    if summary:
        print(format_table(summary, list(summary[0])))
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
