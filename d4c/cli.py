"""The command line: ``d4c-quant`` and ``python d4c/solver/test_quant.py`` are this program.

It only parses flags into a :class:`d4c.config.RunConfig` and hands it to
:func:`d4c.pipeline.run`; a :class:`d4c.errors.D4CError` becomes one line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from d4c.config import (DEFAULT_CUSTOM_FILE, DEFAULT_GEN_CACHE_DIR, DEFAULT_Q_CONFIG, DEFAULT_RANGE_CACHE_DIR,
                        GEN_METHODS, GEN_SCHEDULES, RunConfig)
from d4c.errors import D4CError

EPILOG = """paper rows (SPEC section 1):
  FP                 --fp_model
  real-data PTQ      (no --dfq)                        128 random training images
  Gaussian noise     --dfq
  BNS / PSE          --dfq --gen_img --gen_method baseline
  D4C                --dfq --gen_img --gen_method d4c --d4c_config 3
  each with and without --recon

offline: --model tiny-vit|tiny-rn --dataset digits runs everything without network."""


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default="cifar10",
                       help="evaluation dataset: cifar10, cifar100, imagenet1k, or digits (offline) (default: %(default)s)")
    group.add_argument("--dataset_root", default=None,
                       help="folder holding the dataset in clip_benchmark's layout (ImageNet: meta.bin, train/, val/)")
    group.add_argument("--split", default="test", help="split that is evaluated (default: %(default)s)")
    group.add_argument("--train_split", default="train",
                       help="split real calibration images come from (default: %(default)s)")


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="ViT-B/32",
                       help="RN50, RN101, RN50x4, RN50x16, RN50x64, ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px, "
                            "tiny-vit, tiny-rn (offline zoo), random:<architecture> (timing only), or a checkpoint "
                            "file (default: %(default)s)")
    group.add_argument("--model_cache_dir", default=None,
                       help="where named OpenAI checkpoints are looked up / downloaded (default: ~/.cache/clip)")
    group.add_argument("--device", default="auto",
                       help="auto (CUDA when available), cpu, cuda or cuda:N (default: %(default)s)")


def _add_quantization_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("quantization")
    group.add_argument("--fp_model", action="store_true", help="evaluate the full-precision model, no quantization")
    group.add_argument("--q_config", default=DEFAULT_Q_CONFIG,
                       help="quantization YAML: bit widths, quantizers, observers, calibration, reconstruction "
                            "(default: %(default)s)")
    group.add_argument("--recon", action="store_true", help="run block reconstruction after calibration")
    group.add_argument("--recon_iters", default=None, type=int, metavar="N",
                       help="reconstruction steps per unit, overriding recon.iters of --q_config")
    group.add_argument("--load_quant", default=None, metavar="PATH",
                       help="evaluate a saved quantized model (the *.quant.pt every quantized run writes next to "
                            "its result) without calibrating again; --model must be the model it was made from")
    group.add_argument("--range_cache_dir", default=DEFAULT_RANGE_CACHE_DIR,
                       help="cache of calibrated weight ranges, reused by every run with the same weights and weight "
                            "quantizer config (they do not depend on the calibration data); 'none' turns it off "
                            "(default: %(default)s)")


def _add_generation_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data-free calibration (pseudo-image synthesis)")
    group.add_argument("--dfq", action="store_true",
                       help="data-free: calibrate on synthetic images instead of real training images")
    group.add_argument("--gen_img", action="store_true",
                       help="with --dfq: optimise the pseudo images (without it they stay Gaussian noise)")
    group.add_argument("--gen_method", default="d4c", choices=GEN_METHODS,
                       help="d4c, or baseline (BNS for ResNets, PSE for ViTs); bns / pse name the baseline "
                            "explicitly and stop on the wrong architecture family (default: %(default)s)")
    group.add_argument("--d4c_config", default=3, type=int, choices=[0, 1, 2, 3],
                       help="D4C ablation: 0 PGSI, 1 PGSI+SCG, 2 PGSI+PAE, 3 PGSI+SCG+PAE (default: %(default)s)")
    group.add_argument("--custom_file", default=DEFAULT_CUSTOM_FILE,
                       help="JSON with generic class names and generation templates (default: %(default)s)")
    group.add_argument("--gen_batch_size", default=16, type=int,
                       help="mini-batch size of pseudo-image generation (default: %(default)s)")
    group.add_argument("--gen_lr", default=0.01, type=float,
                       help="Adam learning rate of the pseudo-image pixels (default: %(default)s)")
    group.add_argument("--gen_iter", default=3000, type=int,
                       help="outer generation iterations (default: %(default)s)")
    group.add_argument("--img_path", default=None, help="save the pseudo images as PNG files in this folder")
    group.add_argument("--gen_schedule", default="reference", choices=GEN_SCHEDULES,
                       help="reference: one Adam step per mini-batch, as in the paper; batched: all mini-batches in "
                            "one pass (SCG negatives within each mini-batch) and one step per pass (default: %(default)s)")
    group.add_argument("--gen_cache_dir", default=DEFAULT_GEN_CACHE_DIR,
                       help="cache of generated pseudo images (reused by runs with the same recipe) and of resumable "
                            "generation checkpoints; 'none' turns both off (default: %(default)s)")
    group.add_argument("--gen_force", action="store_true",
                       help="ignore cached pseudo images and checkpoints of this recipe: generate anew")
    group.add_argument("--gen_ckpt_every", default=200, type=int,
                       help="save a generation checkpoint every N outer iterations, 0 for never (default: %(default)s)")


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("evaluation and output")
    group.add_argument("--seed", default=0, type=int, help="seeds torch, numpy and python's random (default: %(default)s)")
    group.add_argument("--batch_size", default=64, type=int, help="evaluation batch size (default: %(default)s)")
    group.add_argument("--num_workers", default=4, type=int, help="evaluation data-loader workers (default: %(default)s)")
    group.add_argument("--output", default="result.json",
                       help="result JSON; may be a template with {dataset}, {model}, {task}, {method}, {q_config}, "
                            "{seed}, {recon} (default: %(default)s)")
    group.add_argument("--skip_existing", action="store_true", help="skip the run if the result file exists")
    group.add_argument("--no_amp", action="store_true", help="disable autocast during evaluation (used on CUDA only)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every flag of the paper's command line (and a few of ours)."""
    parser = argparse.ArgumentParser(
        prog="d4c-quant",
        description="Data-free quantization of CLIP models (D4C) and its baselines: generate calibration images, "
                    "quantize both encoders, calibrate, reconstruct, evaluate zero-shot, write a result JSON.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_data_flags(parser)
    _add_model_flags(parser)
    _add_quantization_flags(parser)
    _add_generation_flags(parser)
    _add_run_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the pipeline, and return the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        from d4c.pipeline import run

        run(RunConfig.from_namespace(args))
    except D4CError as exc:
        print(f"d4c-quant: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("d4c-quant: interrupted; finished stages and their files are kept.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
