#!/usr/bin/env python
"""Regenerate the README's PTQ table: FP and every config, with and without --recon, real data vs
Gaussian noise, for the offline zoo models on digits.

    python scripts/ptq_table.py                      # runs what is missing, prints, updates README.md
    python scripts/ptq_table.py --recon_iters 500    # reconstruction steps per unit (default 500)
    python scripts/ptq_table.py --observer MinMaxObserver   # a labelled variant with other observers
    python scripts/ptq_table.py --recon_iters 100 --extra_recon_iters 500   # plus 500-step W4A8 rows

Each cell is one ordinary run of the pipeline (``d4c.cli.main``) writing its result JSON (and
quantized model) under ``--results_dir``; runs whose JSON exists are reused (``--skip_existing``),
so an interrupted table resumes. The table goes between the ``ptq-table`` markers of README.md
and, with the per-run timings, to ``<results_dir>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from d4c.cli import main as cli_main  # noqa: E402
from d4c.io import replace_marked_block, write_json  # noqa: E402
from d4c.quantization.qconfig import write_derived_qconfig  # noqa: E402

CONFIGS = ("config44", "config48", "config66", "config88")
LABELS = {"config44": "W4A4", "config48": "W4A8", "config66": "W6A6", "config88": "W8A8"}
MODELS = ("tiny-vit", "tiny-rn")
DATA = (("real", []), ("gaussian", ["--dfq"]))
START, END = "<!-- ptq-table:start -->", "<!-- ptq-table:end -->"


def _config_path(config: str, observer: str | None, results_dir: Path) -> str:
    """The shipped config, or a derived one (``root:`` inheritance) with ``observer`` for both tensors."""
    shipped = ROOT / "exp" / f"{config}.yaml"
    if not observer:
        return str(shipped)
    overrides = {"a_qconfig": {"observer": observer}, "w_qconfig": {"observer": observer}}
    return str(write_derived_qconfig(results_dir / "configs" / f"{config}_{observer}.yaml", shipped, overrides))


def _run(out: Path, flags: list[str]) -> dict:
    if not out.exists():
        print(f"== {out.name}: {' '.join(flags)}", flush=True)
        status = cli_main([*flags, "--output", str(out), "--skip_existing"])
        if status != 0:
            raise SystemExit(f"run failed ({status}): {' '.join(flags)}")
    return json.loads(out.read_text())


def run_all(args: argparse.Namespace) -> dict:
    """Run (or reuse) every cell; return {model: {"fp": record, (config, data, steps): record}}.

    ``steps`` is 0 for the runs without ``--recon``.
    """
    results_dir = Path(args.results_dir)
    common = ["--dataset", "digits", "--num_workers", "0", "--seed", str(args.seed)]
    table: dict = {model: {"fp": _run(results_dir / f"{model}_fp.json", ["--model", model, "--fp_model", *common])}
                   for model in args.models}
    # Every cheap run first, then the reconstructions (W4A8 first), then the longer extra ones: an
    # interrupted table has its most informative cells.
    plan = [(config, 0) for config in args.configs]
    plan += [(config, args.recon_iters) for config in sorted(args.configs, key=lambda c: c != "config48")]
    plan += [(config, steps) for steps in args.extra_recon_iters for config in args.extra_recon_configs]
    for config, steps in plan:
        q_config = _config_path(config, args.observer, results_dir)
        for model in args.models:
            for data, data_flags in DATA:
                recon_flags = ["--recon", "--recon_iters", str(steps)] if steps else []
                tag = f"{model}_{config}_{data}_{'recon' + str(steps) if steps else 'norecon'}"
                table[model][(config, data, steps)] = _run(results_dir / f"{tag}.json",
                                                           ["--model", model, "--q_config", q_config,
                                                            *data_flags, *recon_flags, *common])
    return table


def _pct(record: dict | None) -> str:
    return "—" if record is None else f"{100 * record['metrics']['acc1']:.2f}"


def markdown(table: dict, args: argparse.Namespace) -> str:
    """The README block: accuracy table and timing table."""
    observers = args.observer or "the configs' own (MSEObserver)"
    lines = [
        f"Zero-shot top-1 (%) on `digits` (539 test images), seed {args.seed}, calibration on 128 images "
        f"and 512 texts, `--recon` with `--recon_iters {args.recon_iters}` steps per unit; observers: "
        f"{observers}. Regenerate with `python scripts/ptq_table.py"
        f"{' --observer ' + args.observer if args.observer else ''}"
        f"{' --recon_iters ' + str(args.recon_iters) if args.recon_iters != 500 else ''}"
        f"{' --extra_recon_iters ' + ' '.join(map(str, args.extra_recon_iters)) if args.extra_recon_iters else ''}`"
        + (f"; the {', '.join(str(n) for n in args.extra_recon_iters)}-step rows reconstruct only "
           f"{', '.join(LABELS[c] for c in args.extra_recon_configs)} (— elsewhere)." if args.extra_recon_iters else "."),
        "",
        "| model | FP | calibration data | recon | " + " | ".join(LABELS[c] for c in args.configs) + " |",
        "|---|---|---|---|" + "---|" * len(args.configs),
    ]
    for model, cells in table.items():
        for data, _ in DATA:
            for steps in (0, args.recon_iters, *args.extra_recon_iters):
                row = [f"`{model}`", _pct(cells["fp"]), "real (train split)" if data == "real" else "Gaussian noise",
                       f"{steps} steps" if steps else "no"]
                row += [_pct(cells.get((c, data, steps))) for c in args.configs]
                lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Stage times (s, shared 2-core CPU, noisy): calibration / reconstruction, real-data runs.", "",
              "| model | " + " | ".join(LABELS[c] for c in args.configs) + " |",
              "|---|" + "---|" * len(args.configs)]
    for model, cells in table.items():
        row = [f"`{model}`"]
        for c in args.configs:
            cal = cells[(c, "real", 0)]["timings_s"]["calibration"]
            rec = cells[(c, "real", args.recon_iters)]["timings_s"]["reconstruction"]
            row.append(f"{cal:.1f} / {rec:.0f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def update_readme(block: str, readme: Path) -> None:
    """Replace the text between the ptq-table markers (which must exist) with ``block``."""
    try:
        replace_marked_block(readme, START, END, block)
    except ValueError as error:
        raise SystemExit(f"ptq_table.py: error: {readme} has {error}.") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--recon_iters", type=int, default=500)
    parser.add_argument("--extra_recon_iters", type=int, nargs="*", default=[],
                        help="further, longer reconstruction lengths, run only for --extra_recon_configs")
    parser.add_argument("--extra_recon_configs", nargs="+", default=["config48"], choices=CONFIGS,
                        help="configs reconstructed at --extra_recon_iters (default: W4A8, the paper's main setting)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--observer", default=None, help="override both observers (a labelled variant)")
    parser.add_argument("--results_dir", default=None, help="default: results/ptq[_<observer>]")
    parser.add_argument("--no_readme", action="store_true", help="print the table without touching README.md")
    args = parser.parse_args()
    os.environ.setdefault("D4C_OFFLINE", "1")
    if args.results_dir is None:
        args.results_dir = str(ROOT / "results" / ("ptq" + (f"_{args.observer}" if args.observer else "")))
    table = run_all(args)
    block = markdown(table, args)
    print(block)
    summary = {model: {("fp" if key == "fp" else f"{key[0]}/{key[1]}/{'recon' + str(key[2]) if key[2] else 'norecon'}"):
                       {"acc1": rec["metrics"]["acc1"], "timings_s": rec["timings_s"], "q_config": rec["q_config"]}
                       for key, rec in cells.items()} for model, cells in table.items()}
    write_json(Path(args.results_dir) / "summary.json", {"settings": vars(args), "results": summary})
    if not args.no_readme:
        update_readme(block, ROOT / "README.md")
        print("README.md updated.")


if __name__ == "__main__":
    main()
