#!/usr/bin/env python
"""Speed of the MSE range search on the activations a calibration of the small CLIP observes.

    python benchmarks/bench_mse_search.py                # every quantizer of the 8 blocks (~1-2 min)
    python benchmarks/bench_mse_search.py --quick        # first block of each tower, fewer timed candidates
    python benchmarks/bench_mse_search.py --golden       # also time golden_section_search

The model is ``SMALL_ARCHITECTURES['small-vit']`` (ViT 4 x 256, patch 32, 224 px; text 4 x 256),
random weights (seed 0), fed 32 N(0, 1) images and the first 32 calibration texts (digit templates
x the generic class names). Hooks capture, per transformer block of both towers, every tensor an
activation quantizer sees (docs/method.md, "What is quantized"): the q/k/v projection inputs
(three quantizers, per-channel over the last dim), the projected q, k, v and the softmax output
(recomputed from the block's packed in-projection), the out-projection input, the MLP c_fc input
(per-channel) and the c_proj input (per-channel in the text tower). All are 8-bit asymmetric (``exp/config48.yaml``'s
``a_qconfig``; text quantizers are 8-bit anyway).

``search_range`` is timed on each tensor. The reference loop (``brute_force_search``) would take
hours, so its cost is estimated: its per-candidate step is timed on the tensor over a few
candidates and multiplied by the number of candidates (25,600 for a two-sided 8-bit search, 100
for a one-sided one). Writes ``benchmarks/results/mse_search.json``.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
import torch.nn.functional as F

from common import RESULTS_DIR, environment, format_table  # noqa: E402  (also puts the repository on sys.path)

import clip  # noqa: E402
from tqdm import tqdm  # noqa: E402

from d4c.data.digits import DIGIT_TEMPLATES  # noqa: E402
from d4c.data.prompts import GENERIC_PROMPTS, calibration_texts, load_prompt_file  # noqa: E402
from d4c.generation.engine import initial_images  # noqa: E402
from d4c.io import write_json  # noqa: E402
from d4c.models.architectures import SMALL_ARCHITECTURES  # noqa: E402
from d4c.quantization.qparams import channels_first, quant_range  # noqa: E402
# candidate_errors is the reference loop's per-candidate step, timed for the estimate.
from d4c.quantization.range_search import (LP_NORM, candidate_errors, data_sidedness,  # noqa: E402
                                           golden_section_search, search_range)

REFERENCE_FIGURE_S = 75 * 60  # the brute-force calibration time on a 2-core CPU
BITS = 8
CALIBRATION_BATCH = 32


def calibration_inputs(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """32 N(0, 1) images and the first 32 calibration texts, tokenized (docs/method.md, "Calibration")."""
    images = initial_images(CALIBRATION_BATCH, 224, seed=0)[0]  # the Gaussian-noise row's images
    prompts = load_prompt_file(str(GENERIC_PROMPTS))
    texts = calibration_texts(DIGIT_TEMPLATES, prompts.classnames, CALIBRATION_BATCH, seed=0)
    return images.to(device), clip.tokenize(texts).to(device)


@torch.no_grad()
def capture_quantizer_inputs(model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor,
                             blocks: int | None = None) -> list[dict]:
    """Every activation-quantizer input of the transformer blocks, as ``{name, kind, tensor, ch_axis}``."""
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    towers = [("image", model.visual.transformer), ("text", model.transformer)]
    for tower, transformer in towers:
        for b, block in enumerate(transformer.resblocks):
            hooks.append(block.ln_1.register_forward_hook(
                lambda m, i, o, key=f"{tower}.{b}.ln_1": seen.__setitem__(key, o.detach())))
            for name in ("c_fc", "c_proj"):
                hooks.append(getattr(block.mlp, name).register_forward_hook(
                    lambda m, i, o, key=f"{tower}.{b}.{name}": seen.__setitem__(key, i[0].detach())))
    model.encode_image(images)
    model.encode_text(tokens)
    for h in hooks:
        h.remove()

    captured = []
    for tower, transformer in towers:
        for b, block in enumerate(transformer.resblocks[:blocks]):
            y = seen[f"{tower}.{b}.ln_1"]  # [L, N, D]: the q/k/v projections' input
            length, batch, width = y.shape
            heads = block.attn.num_heads
            q, k, v = F.linear(y, block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, -1)
            split = [t.reshape(length, batch * heads, width // heads).transpose(0, 1) for t in (q, k, v)]
            logits = split[0] @ split[1].transpose(1, 2) / (width // heads) ** 0.5
            if block.attn_mask is not None:
                logits = logits + block.attn_mask[:length, :length].to(logits)
            attn = logits.softmax(-1)
            out_in = (attn @ split[2]).transpose(0, 1).reshape(length, batch, width)
            per_channel = 2  # per-channel over the last (hidden) dimension (docs/method.md)
            entries = [("q_proj_in", y, per_channel), ("k_proj_in", y, per_channel), ("v_proj_in", y, per_channel),
                       ("q", split[0], -1), ("k", split[1], -1), ("v", split[2], -1), ("softmax", attn, -1),
                       ("out_proj_in", out_in, -1), ("c_fc_in", seen[f"{tower}.{b}.c_fc"], per_channel),
                       ("c_proj_in", seen[f"{tower}.{b}.c_proj"], per_channel if tower == "text" else -1)]
            captured += [{"name": f"{tower}.{b}.{kind}", "kind": f"{tower}/{kind}", "tensor": t.contiguous(),
                          "ch_axis": axis} for kind, t, axis in entries]
    return captured


def reference_cost(x: torch.Tensor, ch_axis: int, qmin: int, qmax: int, timed_candidates: int,
                   device: torch.device) -> tuple[float, int]:
    """Estimated seconds of ``brute_force_search`` on ``x``: its per-candidate step timed over a few
    candidates (same tensors, same update of the running best), times the number of candidates."""
    xc = channels_first(x.detach().float(), ch_axis)
    x_min, x_max = xc.min(1).values, xc.max(1).values
    two_sided = data_sidedness(x_min, x_max) == "no"
    candidates = 100 * (qmax - qmin + 1) if two_sided else 100
    best = torch.full_like(x_min, float("inf"))
    lo, hi = x_min.clone(), x_max.clone()
    delta = (x_max - x_min) / 100 * 90 / float(qmax - qmin)

    def step(zp: int) -> None:  # the body of brute_force_search's loop for one candidate
        new_min, new_max = -zp * delta, x_max - x_min - zp * delta
        score = candidate_errors(xc, new_min, new_max, qmin, qmax, False, LP_NORM)
        better = score < best
        best.copy_(torch.where(better, score, best))
        lo.copy_(torch.where(better, new_min, lo))
        hi.copy_(torch.where(better, new_max, hi))

    step(qmin)  # warm-up
    _sync(device)
    start = time.perf_counter()
    for zp in range(timed_candidates):
        step(qmin + zp)
    _sync(device)
    return (time.perf_counter() - start) / timed_candidates * candidates, candidates


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of ``fn()``."""
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="first block of each tower, 2 timed reference candidates")
    parser.add_argument("--golden", action="store_true", help="also time golden_section_search (MSEFastObserver)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--ref_candidates", type=int, default=None,
                        help="reference candidates timed per tensor (default 4, --quick 2)")
    parser.add_argument("--out", default=str(RESULTS_DIR / "mse_search.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    timed_candidates = args.ref_candidates or (2 if args.quick else 4)
    qmin, qmax = quant_range(BITS, symmetric=False)

    model = SMALL_ARCHITECTURES["small-vit"].build(seed=0).to(device)
    images, tokens = calibration_inputs(device)
    captured = capture_quantizer_inputs(model, images, tokens, blocks=1 if args.quick else None)
    search_range(captured[0]["tensor"][:2], qmin, qmax, False, captured[0]["ch_axis"])  # warm-up

    records = []
    for item in tqdm(captured, desc="tensors", unit="tensor"):
        x, axis = item["tensor"], item["ch_axis"]
        fast_s, fast_cpu_s = timed(lambda: search_range(x, qmin, qmax, False, axis), device)
        ref_s, candidates = reference_cost(x, axis, qmin, qmax, timed_candidates, device)
        record = {"name": item["name"], "kind": item["kind"], "shape": list(x.shape), "per_channel": axis >= 0,
                  "ch_axis": axis, "candidates": candidates, "fast_s": fast_s, "fast_cpu_s": fast_cpu_s,
                  "reference_est_s": ref_s, "speedup": ref_s / fast_s}
        if args.golden:
            record["golden_s"] = timed(lambda: golden_section_search(x, qmin, qmax, False, axis), device)[0]
        records.append(record)

    by_kind: dict[str, dict] = defaultdict(lambda: {"count": 0, "fast_s": 0.0, "reference_est_s": 0.0,
                                                      "golden_s": 0.0})
    for r in records:
        k = by_kind[r["kind"]]
        k.update(kind=r["kind"], shape="x".join(map(str, r["shape"])), per_channel=r["per_channel"])
        k["count"] += 1
        k["fast_s"] += r["fast_s"]
        k["reference_est_s"] += r["reference_est_s"]
        k["golden_s"] += r.get("golden_s", 0.0)
    rows = list(by_kind.values())
    for k in rows:
        k["speedup"] = k["reference_est_s"] / k["fast_s"]
    total_fast = sum(r["fast_s"] for r in records)
    total_ref = sum(r["reference_est_s"] for r in records)
    columns = ["kind", "shape", "per_channel", "count", "fast_s", "reference_est_s", "speedup"]
    print(format_table(rows, columns + (["golden_s"] if args.golden else [])))
    total = {"tensors": len(records), "fast_s": total_fast, "fast_cpu_s": sum(r["fast_cpu_s"] for r in records),
             "reference_est_s": total_ref, "speedup_vs_estimate": total_ref / total_fast,
             "reference_figure_s": REFERENCE_FIGURE_S,
             # The figure is for the whole calibration: only comparable in a full run.
             "speedup_vs_figure": None if args.quick else REFERENCE_FIGURE_S / total_fast}
    if args.golden:
        total["golden_s"] = sum(r["golden_s"] for r in records)
    print(f"\n{len(records)} quantizer inputs: search_range {total_fast:.1f} s "
          f"(CPU {total['fast_cpu_s']:.1f} s); reference estimated {total_ref / 60:.1f} min here "
          f"(x{total['speedup_vs_estimate']:.0f})"
          + ("" if args.quick else f"; vs the issue's 75-min figure x{total['speedup_vs_figure']:.0f}")
          + (f"; golden_section_search {total['golden_s']:.1f} s" if args.golden else ""))
    settings = {"model": "small-vit (random, seed 0)", "images": CALIBRATION_BATCH, "texts": CALIBRATION_BATCH,
                "bits": BITS, "symmetric": False, "p": 2.4, "num": 100, "quick": args.quick,
                "reference_timed_candidates": timed_candidates}
    write_json(args.out, {"benchmark": "mse_search", "environment": environment(device), "settings": settings,
                          "total": total, "by_kind": rows, "records": records})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
