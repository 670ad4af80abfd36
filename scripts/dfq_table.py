#!/usr/bin/env python
"""Regenerate the README's data-free quantization table on the offline zoo.

    python scripts/dfq_table.py                      # every run, then the README table
    python scripts/dfq_table.py --dry_run            # print the commands only
    python scripts/dfq_table.py --render_only        # rebuild the table from existing result files

Rows (docs/method.md, "The paper's rows"): FP, real-data PTQ, Gaussian noise, the baseline (BNS for tiny-rn, PSE for
tiny-vit) and D4C configs 0-3; columns: W4A8 (exp/config48.yaml) and W4A4 (exp/config44.yaml)
for tiny-vit and tiny-rn on ``digits``, every quantized row with ``--recon``. The generated rows
run with the reference schedule and again with ``--gen_schedule batched``. Generation is reduced
(``--gen_iter``, default 200) and so is reconstruction (``--recon_iters``, default 2000). Each run
is the main CLI in a subprocess writing ``results/dfq_table/<name>.json`` (``--skip_existing``: an interrupted
table resumes); pseudo images are cached, so W4A4 reuses W4A8's. The top-1 accuracies go to
``benchmarks/results/dfq_table.json`` and between ``<!-- dfq-table:start -->`` and
``<!-- dfq-table:end -->`` in README.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from d4c.cli import row_argv  # noqa: E402
from d4c.io import replace_marked_block, write_json  # noqa: E402
from d4c.quantization.qconfig import write_derived_qconfig  # noqa: E402

START, END = "<!-- dfq-table:start -->", "<!-- dfq-table:end -->"
MODELS = ("tiny-vit", "tiny-rn")
BITS = {"W4A8": "config48.yaml", "W4A4": "config44.yaml"}  # in --exp_dir
SCHEDULES = ("reference", "batched")
# (row, label, its flags); rows after the first three depend on the generation schedule.
ROWS = [(row, label, row_argv(row)) for row, label in [
    ("fp", "FP (no quantization)"),
    ("real", "Real-data PTQ (train images)"),
    ("gaussian", "Gaussian noise"),
    ("baseline", "BNS (tiny-rn) / PSE (tiny-vit)"),
    ("d4c0", "D4C config 0 (PGSI)"),
    ("d4c1", "D4C config 1 (PGSI + SCG)"),
    ("d4c2", "D4C config 2 (PGSI + PAE)"),
    ("d4c3", "D4C config 3 (PGSI + SCG + PAE)"),
]]
GENERATED = {"baseline", "d4c0", "d4c1", "d4c2", "d4c3"}
LABELS = {key: label for key, label, _ in ROWS}


@dataclass
class Run:
    """One CLI run of the table."""

    model: str
    row: str
    bits: str | None          # None for FP
    schedule: str | None      # None for rows without generated images
    argv: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def name(self) -> str:
        parts = [self.model, self.bits or "fp", self.row] + ([self.schedule] if self.schedule else [])
        return "_".join(parts)


def q_config_args(bits: str, recon_iters: int, work: Path, exp_dir: Path, num_images: int | None = None) -> list[str]:
    """``--q_config`` and ``--recon_iters`` of one bit width.

    With ``num_images`` the run gets a derived YAML that inherits the shipped one (``root:``) and
    sets ``calibrate.visual`` (fewer calibration images, hence fewer images to generate)."""
    path = exp_dir / BITS[bits]
    if not path.is_file():
        raise SystemExit(f"dfq_table.py: error: {path} is missing (the quantization configs come with the PTQ engine).")
    if num_images is not None:
        path = write_derived_qconfig(work / "configs" / f"{path.stem}_img{num_images}.yaml", path,
                                     {"calibrate": {"visual": num_images}}, comment="derived by scripts/dfq_table.py")
    return ["--q_config", str(path), "--recon_iters", str(recon_iters)]


def plan_runs(args: argparse.Namespace, work: Path) -> list[Run]:
    """Every run of the table, in an order that generates each pseudo-image recipe once."""
    common = ["--dataset", "digits", "--num_workers", "0", "--seed", str(args.seed), "--gen_iter", str(args.gen_iter),
              "--custom_file", str(REPO / "d4c/template/digits_classnames_templates.json"), "--skip_existing",
              *args.extra]
    runs = []
    for model in args.models:
        if "fp" in args.rows:
            runs.append(Run(model, "fp", None, None, ["--model", model, "--fp_model", *common]))
        for bits in args.bits:
            quant = q_config_args(bits, args.recon_iters, work, Path(args.exp_dir), args.num_images) + ["--recon"]
            for key, _, flags in ROWS[1:]:
                if key not in args.rows:
                    continue
                schedules = args.schedules if key in GENERATED else [None]
                for schedule in schedules:
                    extra = ["--gen_schedule", schedule] if schedule else []
                    runs.append(Run(model, key, bits, schedule, ["--model", model, *flags, *quant, *extra, *common]))
    for run in runs:
        run.output = str(work / f"{run.name}.json")
        run.argv = [*run.argv, "--output", run.output]
    return runs


def execute(runs: list[Run], work: Path) -> None:
    """Run each command (``--skip_existing`` makes finished ones instant); failures are logged, not fatal."""
    entry = REPO / "d4c" / "solver" / "test_quant.py"
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for i, run in enumerate(runs, 1):
        began = time.perf_counter()
        with open(logs / f"{run.name}.log", "w") as log:
            status = subprocess.run([sys.executable, str(entry), *run.argv], cwd=REPO, stdout=log,
                                    stderr=subprocess.STDOUT).returncode
        state = "ok" if status == 0 else f"FAILED (exit {status}, see {logs / (run.name + '.log')})"
        print(f"[{i}/{len(runs)}] {run.name}: {state} in {time.perf_counter() - began:.0f} s", flush=True)


def collect(runs: list[Run]) -> list[dict]:
    """One entry per run: its identity and, when its result file exists, top-1/top-5 and timings."""
    entries = []
    for run in runs:
        entry = {k: v for k, v in asdict(run).items() if k != "argv"}
        path = Path(run.output)
        if path.is_file():
            record = json.loads(path.read_text())
            metrics = record.get("metrics", {})
            entry.update(acc1=metrics.get("acc1"), acc5=metrics.get("acc5"),
                         generation_s=(record.get("timings_s") or {}).get("generation"),
                         total_s=(record.get("timings_s") or {}).get("total"), method=record.get("method"))
        entries.append(entry)
    return entries


def _cell(entries: list[dict], model: str, row: str, bits: str, schedule: str | None) -> str:
    for e in entries:
        if e["model"] == model and e["row"] == row and (row == "fp" or e["bits"] == bits) \
                and (row not in GENERATED or e["schedule"] == schedule) and e.get("acc1") is not None:
            return f"{100 * e['acc1']:.2f}"
    return "–"


def render_table(entries: list[dict], models=MODELS, bits=tuple(BITS), schedules=SCHEDULES,
                 note: str = "") -> str:
    """The markdown table: one line per row and schedule, one column per model and bit width (top-1 %)."""
    header = "| row | schedule | " + " | ".join(f"{m} {b}" for m in models for b in bits) + " |"
    lines = [header, "|" + "---|" * (2 + len(models) * len(bits))]
    for key, label, _ in ROWS:
        for schedule in (schedules if key in GENERATED else [None]):
            cells = [_cell(entries, m, key, b, schedule) for m in models for b in bits]
            lines.append(f"| {label} | {schedule or '–'} | " + " | ".join(cells) + " |")
    if note:
        lines += ["", note]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--bits", nargs="+", default=list(BITS), choices=list(BITS))
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=list(SCHEDULES))
    parser.add_argument("--rows", nargs="+", default=[k for k, _, _ in ROWS], choices=[k for k, _, _ in ROWS])
    parser.add_argument("--gen_iter", type=int, default=200, help="generation iterations (default: %(default)s)")
    parser.add_argument("--recon_iters", type=int, default=2000, help="reconstruction iterations (default: %(default)s)")
    parser.add_argument("--num_images", type=int, default=None,
                        help="calibration (and generated) images per run (default: the config's calibrate.visual, 128)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exp_dir", default=str(REPO / "exp"), help="folder of config48.yaml and config44.yaml")
    parser.add_argument("--work", default=str(REPO / "results" / "dfq_table"), help="result files and logs")
    parser.add_argument("--summary", default=str(REPO / "benchmarks" / "results" / "dfq_table.json"))
    parser.add_argument("--readme", default=str(REPO / "README.md"))
    parser.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--render_only", action="store_true", help="only rebuild the table from existing results")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further CLI flags for every run")
    args = parser.parse_args(argv)
    work = Path(args.work)
    runs = plan_runs(args, work)
    if args.dry_run:
        for run in runs:
            print(" ".join([sys.executable, "d4c/solver/test_quant.py", *run.argv]))
        return 0
    if not args.render_only:
        execute(runs, work)
    entries = collect(runs)
    note = (f"Top-1 (%) on digits test; quantized rows with --recon ({args.recon_iters} reconstruction iterations), "
            f"{args.num_images or 128} calibration images (generated: {args.gen_iter} iterations, seed {args.seed}); "
            f"regenerate with `python scripts/dfq_table.py --gen_iter {args.gen_iter} --recon_iters {args.recon_iters}"
            f"{f' --num_images {args.num_images}' if args.num_images else ''}`.")
    table = render_table(entries, args.models, args.bits, args.schedules, note)
    print(table)
    write_json(args.summary, {"settings": vars(args),
                              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "entries": entries})
    readme = Path(args.readme)
    try:
        replace_marked_block(readme, START, END, table)
    except ValueError as error:
        raise SystemExit(f"dfq_table.py: error: {readme} has {error}.") from None
    print(f"\nupdated {readme} and {args.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
