#!/usr/bin/env python
"""Generate (and time) pseudo images without quantization, with the main command line's flag names.

    python scripts/generate.py --model tiny-vit --gen_method d4c --d4c_config 3 --gen_iter 200 \\
        --custom_file d4c/template/digits_classnames_templates.json --img_path out/

``--gen_method``: any registered method (d4c, bns, pse, gaussian: plain N(0, 1) noise) or
baseline (BNS for ResNets, PSE for ViTs); generation is always on (``--dfq --gen_img`` are
implied). The images go through the same cache as the pipeline (``--gen_cache_dir``,
``--gen_force``), are checkpointed every ``--gen_ckpt_every`` iterations, and the run prints its
time. ``--summary FILE`` writes a JSON with the settings, timing, loss history, environment and
FP-model diagnostics of the images (:mod:`d4c.generation.diagnostics`).

Several processes share one generation split into ``--gen_groups K`` groups: ``torchrun
--nproc_per_node N scripts/generate.py --gen_groups K ...`` (or ``srun``) starts N processes, each
generates groups rank, rank + N, ... (on its own GPU: ``cuda:LOCAL_RANK``), and rank 0 assembles
them into the cache and writes the summary; the images are the same for any N.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import d4c  # noqa: E402,F401  (before clip: silences its pkg_resources notice)
from d4c.cli import add_run_flags, configure_logging, describe_error  # noqa: E402
from d4c.config import DFQ, MODEL, RunConfig  # noqa: E402
from d4c.data.prompts import load_prompt_file  # noqa: E402
from d4c.environment import environment  # noqa: E402
from d4c.errors import D4CError  # noqa: E402
from d4c.generation.cache import PseudoImageCache  # noqa: E402
from d4c.generation.diagnostics import image_diagnostics  # noqa: E402
from d4c.generation.settings import DEFAULT_NUM_IMAGES  # noqa: E402
from d4c.generation.synthesis import synthesize  # noqa: E402
from d4c.io import write_json  # noqa: E402
from d4c.models.loading import load_clip  # noqa: E402
from d4c.preflight import check_file_target, check_generation_folders, check_model  # noqa: E402
from d4c.runtime import process_share, resolve_device, share_device, tune_cpu_allocator  # noqa: E402

PROG = "generate.py"
logger = logging.getLogger("d4c.scripts.generate")


def build_parser() -> argparse.ArgumentParser:
    """The main CLI's model and generation flags, plus a few of this script's own."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_flags(parser, groups=(MODEL, DFQ))
    for action in parser._actions:
        if action.dest in ("dfq", "gen_img"):
            action.help = argparse.SUPPRESS  # implied here
    group = parser.add_argument_group("this script")
    group.add_argument("--seed", default=0, type=int, help="seed of the generation (default: %(default)s)")
    group.add_argument("--num_images", default=DEFAULT_NUM_IMAGES, type=int,
                       help="number of pseudo images, calibrate.visual in the pipeline (default: %(default)s)")
    group.add_argument("--summary", default=None, help="write settings, timing, losses and diagnostics to this JSON")
    group.add_argument("--threads", default=None, type=int, help="torch CPU threads (default: torch's choice)")
    group.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> dict:
    """Generate as the flags say; return the summary record."""
    if args.threads:
        torch.set_num_threads(args.threads)
    config = RunConfig.from_flags({**vars(args), "dfq": True, "gen_img": True})  # implied here
    settings = replace(config.generation, seed=args.seed, num_images=args.num_images)
    # Every output location and what is known about the model, before it is loaded.
    check_generation_folders(config)
    if args.summary:
        check_file_target(Path(args.summary), "summary", "summary")
    check_model(config)
    share = process_share()
    device = resolve_device(share_device(config.device, share))
    loaded = load_clip(config.model, device, config.model_cache_dir, config.model_type, config.pretrained)
    prompts = load_prompt_file(config.custom_file).prompts()
    outcome = synthesize(settings, loaded, device, prompts, cache=PseudoImageCache.from_flag(config.gen_cache_dir),
                         force=config.gen_force, img_path=config.img_path, progress=not args.no_progress, share=share)
    if not outcome.complete:  # another process of the split generation assembles and reports
        return {}
    settings = outcome.settings
    diagnostics = image_diagnostics(loaded.model, outcome.images, prompts, outcome.targets)
    logger.info("FP-model diagnostics: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                      for k, v in diagnostics.items()))
    return {
        "model": config.model, "model_type": config.model_type, "pretrained": config.pretrained,
        "settings": settings.as_dict(), "environment": environment(device),
        "from_cache": outcome.from_cache, "cache_path": str(outcome.cache_path) if outcome.cache_path else None,
        "generation_seconds": round(outcome.generation_seconds, 3),
        "seconds_per_iteration": (round(outcome.generation_seconds / max(settings.gen_iter - outcome.resumed_from, 1), 4)
                                  if outcome.generation_seconds else None),
        "resumed_from": outcome.resumed_from, "final_loss": outcome.final_loss,
        "loss_history": [round(float(v), 5) for v in outcome.loss_history],
        "diagnostics": diagnostics,
    }


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging()
    tune_cpu_allocator()
    try:
        record = run(args)
    except D4CError as exc:
        print(f"{PROG}: error: {describe_error(exc, parser)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the last checkpoint is kept and the next run resumes from it.", file=sys.stderr)
        return 130
    if args.summary and record:
        write_json(args.summary, record)
        logger.info(f"Summary written to {args.summary}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
