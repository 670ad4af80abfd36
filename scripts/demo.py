#!/usr/bin/env python
"""The offline demo: full-precision and D4C-quantized tiny-vit on digits, side by side.

    python scripts/demo.py [extra flags for the quantized run]

Two ordinary runs of the main command (``d4c.cli.main``), each writing its result JSON under
``results/demo/``: the full-precision evaluation, then the paper's D4C row at W4A8
(``--q_config exp/config48.yaml --recon --dfq --gen_img``, D4C config 3) with the work reduced
so that it finishes in a few minutes on a 2-core CPU: ``--gen_iter 50`` instead of 3000 and
``--recon_iters 100`` instead of 20,000, prompts from the digits-domain prompt file. Pseudo
images are cached in ``./cache/pseudo_images``, so a second demo run skips generation.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from d4c.cli import main as cli_main  # noqa: E402

OUT = ROOT / "results" / "demo"
COMMON = ["--model", "tiny-vit", "--dataset", "digits", "--num_workers", "0"]
QUANTIZED = ["--q_config", str(ROOT / "exp" / "config48.yaml"), "--recon", "--recon_iters", "100",
             "--dfq", "--gen_img", "--d4c_config", "3", "--gen_iter", "50",
             "--custom_file", str(ROOT / "d4c" / "template" / "digits_classnames_templates.json")]


def _run(name: str, flags: list[str]) -> dict:
    out = OUT / f"{name}.json"
    print(f"\n=== {name}: d4c-quant {' '.join(flags)}", flush=True)
    status = cli_main([*COMMON, *flags, "--output", str(out)])
    if status != 0:
        raise SystemExit(status)
    return json.loads(out.read_text())


def main(extra: list[str]) -> int:
    began = time.perf_counter()
    fp = _run("tiny-vit_digits_fp", ["--fp_model"])
    quant = _run("tiny-vit_digits_W4A8_d4c3_recon", [*QUANTIZED, *extra])
    seconds = {k: v for k, v in quant["timings_s"].items() if v is not None}
    print("\n| model | digits top-1 | top-5 |\n|---|---|---|")
    for label, record in (("tiny-vit FP32", fp), ("tiny-vit W4A8, D4C images + reconstruction", quant)):
        print(f"| {label} | {100 * record['metrics']['acc1']:.2f} | {100 * record['metrics']['acc5']:.2f} |")
    print("\nstages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    print(f"demo finished in {time.perf_counter() - began:.0f} s; result files in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
