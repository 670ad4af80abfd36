"""``d4c-sweep MANIFEST``: run a paper table (a manifest of ``d4c-quant`` cells) and resume it.

    d4c-sweep exp/sweeps/zoo.yaml --dry_run             # the plan: cells, generations, every command
    d4c-sweep exp/sweeps/zoo.yaml                       # run what is missing, one cell after another
    d4c-sweep exp/sweeps/main.yaml --executor gpus --dataset_root ~/data
    d4c-sweep exp/sweeps/main.yaml --executor slurm --slurm_partition gpu --slurm_timeout_min 720
    d4c-sweep exp/sweeps/zoo.yaml --set gen_iter=2 --set recon_iters=2 --only model=tiny-rn

A cell is done when its result JSON exists (made with the cell's flags); rerunning runs only what is
missing. A failing cell never stops the others; the end lists failures with their logs.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from d4c.cli import configure_logging
from d4c.errors import D4CError
from d4c.io import slug
from d4c.sweep import executors as X
from d4c.sweep import jobs as J
from d4c.sweep.manifest import load_manifest
from d4c.sweep.plan import Plan, Planner, command_line, result_status, write_plan

PROG = "d4c-sweep"
DEFAULT_ROOT = Path("results") / "sweeps"
logger = logging.getLogger("d4c.sweep")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", help="a sweep manifest (exp/sweeps/*.yaml)")
    parser.add_argument("--dry_run", action="store_true", help="print the plan and every command; run nothing")
    parser.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE",
                        help="set a d4c-quant flag in every cell (repeatable; VALUE is read as YAML)")
    parser.add_argument("--only", action="append", default=[], metavar="FLAG=VALUE",
                        help="run only the cells with this value (repeatable: one flag several times = any of them)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds for every cell, replacing the manifest's")
    parser.add_argument("--out", default=None, help=f"sweep folder (default: {DEFAULT_ROOT}/<name>[-<--set values>])")
    parser.add_argument("--dataset_root", default=None, help="shorthand for --set dataset_root=DIR")
    parser.add_argument("--model_cache_dir", default=None, help="shorthand for --set model_cache_dir=DIR")
    parser.add_argument("--overwrite_stale", action="store_true",
                        help="run again the cells whose result file was made with other flags (default: stop)")
    parser.add_argument("--executor", default="local", choices=X.EXECUTORS,
                        help="local: one job after another; gpus: one worker per visible GPU; slurm: job arrays "
                             "through submitit (submitit's local executor where SLURM is absent) (default: local)")
    parser.add_argument("--gpus", default=None, help="with --executor gpus: the GPU ids (default: CUDA_VISIBLE_DEVICES "
                                                     "or every GPU)")
    slurm = parser.add_argument_group("slurm (--executor slurm)")
    slurm.add_argument("--slurm_partition", default=None)
    slurm.add_argument("--slurm_gpus_per_node", type=int, default=1)
    slurm.add_argument("--slurm_cpus_per_task", type=int, default=None)
    slurm.add_argument("--slurm_mem_gb", type=float, default=None)
    slurm.add_argument("--slurm_timeout_min", type=int, default=24 * 60,
                       help="per job; a timed-out job is requeued and resumes from its checkpoints (default: 1440)")
    slurm.add_argument("--slurm_array_parallelism", type=int, default=None,
                       help="jobs of an array running at once (local executor: default 1)")
    slurm.add_argument("--slurm_account", default=None)
    slurm.add_argument("--slurm_qos", default=None)
    slurm.add_argument("--slurm_constraint", default=None)
    slurm.add_argument("--slurm_cluster", default=None, choices=("slurm", "local"),
                       help="submitit's cluster (default: slurm where sbatch exists, else submitit's local executor)")
    slurm.add_argument("--slurm_no_wait", action="store_true", help="submit the arrays and return")
    return parser


def _assignments(values: list[str], option: str) -> list[tuple[str, Any]]:
    out = []
    for item in values:
        if "=" not in item:
            raise D4CError(f"{option} {item!r} must be FLAG=VALUE.")
        key, value = item.split("=", 1)
        try:
            out.append((key.strip().lstrip("-"), yaml.safe_load(value) if value != "" else None))
        except yaml.YAMLError:
            out.append((key.strip().lstrip("-"), value))
    return out


def _seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise D4CError(f"--seeds {text} must be comma-separated integers.") from None
    if not seeds:
        raise D4CError("--seeds is empty.")
    return seeds


def make_plan(args: argparse.Namespace) -> Plan:
    manifest = load_manifest(args.manifest)
    overrides = dict(_assignments(args.set, "--set"))
    for name in ("dataset_root", "model_cache_dir"):
        if getattr(args, name):
            overrides[name] = getattr(args, name)
    only: dict[str, list[Any]] = {}
    for key, value in _assignments(args.only, "--only"):
        only.setdefault(key, []).append(value)
    if args.out:
        out = Path(args.out)
    else:
        tags = [f"{k}{slug(str(v))}" for k, v in _assignments(args.set, "--set")]
        out = DEFAULT_ROOT / "-".join([manifest.name, *tags])
    return Planner(manifest, out, overrides, only, _seeds(args.seeds)).plan()


def _jobs(plan: Plan, statuses: dict[str, str]) -> tuple[list[J.Job], list[J.Job]]:
    """The generations and cells still to run."""
    logs = plan.out / "logs"
    cells = [J.Job(c.name, J.CELL, c.argv, c.output, logs / f"{c.name}.log", c.generation)
             for c in plan.cells if statuses[c.name] != "done"]
    needed = {c.depends for c in cells if c.depends}
    generations = [J.Job(g.name, J.GENERATION, g.argv, g.output, logs / "generations" / f"{g.name}.log")
                   for g in plan.generations if g.name in needed and not g.output.is_file()]
    have = {g.name for g in generations}
    for cell in cells:
        if cell.depends not in have:
            cell.depends = None  # its images are there already
    return generations, cells


def print_plan(plan: Plan, statuses: dict[str, str], generations: list[J.Job], commands: bool) -> None:
    done = sum(s == "done" for s in statuses.values())
    stale = [n for n, s in statuses.items() if s.startswith("stale")]
    shared = sum(len(g.cells) for g in plan.generations)
    print(f"{plan.manifest.path} ({plan.manifest.name}, table {plan.manifest.table}): {len(plan.cells)} cells, "
          f"{done} done, {len(plan.cells) - done} to run{f' ({len(stale)} stale)' if stale else ''}; sweep folder "
          f"{plan.out}")
    if plan.generations:
        print(f"{len(plan.generations)} generations shared by {shared} cells ({shared / len(plan.generations):.1f} "
              f"cells per generation), {len(generations)} to run")
    if not commands:
        return
    width = len(str(len(plan.cells)))
    to_run = {g.name for g in generations}
    for i, g in enumerate(plan.generations, 1):
        state = "to run" if g.name in to_run else "done" if g.output.is_file() else "not needed"
        print(f"[gen {i}/{len(plan.generations)}] {state}: {g.name} ({len(g.cells)} cells)\n    {command_line(g.argv)}")
    for i, cell in enumerate(plan.cells, 1):
        reuse = f" (images of {cell.generation})" if cell.generation else ""
        print(f"[{i:>{width}}/{len(plan.cells)}] {statuses[cell.name]}: {cell.name}{reuse}\n    {command_line(cell.argv)}")


def execute(plan: Plan, generations: list[J.Job], cells: list[J.Job], args: argparse.Namespace) -> list[J.Outcome]:
    total, count = len(generations) + len(cells), [0]

    def report(outcome: J.Outcome) -> None:
        count[0] += 1
        print(f"[{count[0]}/{total}] {outcome.status}: {outcome.name} ({outcome.seconds:.0f} s)"
              + (f" - {outcome.detail}, log {outcome.log}" if not outcome.ok else ""), flush=True)

    if args.executor == "slurm":
        options = X.SlurmOptions(args.slurm_partition, args.slurm_gpus_per_node, args.slurm_cpus_per_task,
                                 args.slurm_mem_gb, args.slurm_timeout_min, args.slurm_array_parallelism,
                                 args.slurm_account, args.slurm_qos, args.slurm_constraint, args.slurm_cluster,
                                 not args.slurm_no_wait)
        return X.run_slurm([generations, cells], plan.out / "slurm", options, report)
    if args.executor == "gpus":
        gpus = X.visible_gpus(args.gpus)
        if not gpus:
            raise D4CError("--executor gpus found no GPU (CUDA_VISIBLE_DEVICES is empty and torch sees none); use "
                           "--executor local.")
        slots = [{"CUDA_VISIBLE_DEVICES": g} for g in gpus]
        print(f"{len(slots)} workers, one per GPU: {', '.join(gpus)}")
    else:
        slots = [{}]
    return X.run_slots(generations + cells, slots, report)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging()
    # SIGTERM (kill, a batch system) stops the sweep as Ctrl-C does; SIGINT even when started in the background.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    began = time.perf_counter()
    try:
        if args.executor == "slurm" and not args.dry_run:
            X._submitit()  # before any work: say how to install it
        plan = make_plan(args)
        statuses = {c.name: result_status(c.output, c.config) for c in plan.cells}
        stale = [c for c in plan.cells if statuses[c.name].startswith("stale")]
        if stale and not args.overwrite_stale and not args.dry_run:
            raise D4CError(f"{len(stale)} result files in {plan.out} were made with other flags (first: "
                           f"{stale[0].output}: {statuses[stale[0].name][7:]}); use another --out, or "
                           f"--overwrite_stale to run those cells again.")
        generations, cells = _jobs(plan, statuses)
        print_plan(plan, statuses, generations, commands=args.dry_run)
        if args.dry_run:
            return 0
        try:
            write_plan(plan)  # also when every cell is done: d4c-results reads the cells' blocks from it
            if cells:
                plan.write_configs()
        except OSError as exc:
            raise D4CError(f"--out {plan.out} cannot be written ({exc.strerror or exc}).") from None
        if not cells:
            print("Nothing to run: every cell is done.")
            return 0
        outcomes = execute(plan, generations, cells, args)
    except D4CError as exc:
        print(f"{PROG}: error: {exc.describe(lambda p: '--' + p)}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # the plan piped into head/less, which closed early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; finished cells are kept, running ones keep their checkpoints. Run the same "
              f"command again to continue.", file=sys.stderr)
        return 130
    failed = [o for o in outcomes if not o.ok]
    counts = J.summary_line(outcomes)
    print(f"Sweep {plan.manifest.name}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + f" in {time.perf_counter() - began:.0f} s; results in {plan.out}")
    if failed:
        print(f"{len(failed)} jobs did not finish:")
        for outcome in failed:
            print(f"  {J.describe(outcome)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
