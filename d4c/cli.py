"""The command line: ``d4c-quant`` and ``python d4c/solver/test_quant.py`` are this program.

It builds its flags from the fields of :class:`d4c.config.RunConfig` (and of the nested
generation settings and the registered methods' options), parses them into a config and hands it
to :func:`d4c.pipeline.run`. It is the only layer that knows flag names: a
:class:`d4c.errors.D4CError` is printed as one line on stderr with its parameter shown as the
flag (exit status 2, never a traceback), and the library's progress messages (``logging``) are
printed on stdout, between the progress bars.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from typing import Any

from tqdm.auto import tqdm

from d4c.config import RunConfig, generation_flag_names, iter_flags
from d4c.errors import D4CError
from d4c.generation.methods import method_choices, method_options
from d4c.generation.settings import GenerationSettings
from d4c.runtime import tune_cpu_allocator

EPILOG = """paper rows (docs/method.md, "The paper's rows"):
  FP                 --fp_model
  real-data PTQ      (no --dfq)                        128 random training images
  Gaussian noise     --dfq
  BNS / PSE          --dfq --gen_img --gen_method baseline
  D4C                --dfq --gen_img --gen_method d4c --d4c_config 3
  each with and without --recon

offline: --model tiny-vit|tiny-rn --dataset digits runs everything without network."""

PARAMETER_NAMES = {"prompts": "--custom_file", "num_images": "calibrate.visual of --q_config",
                   "options": "a method option"}
"""How the CLI shows library parameters that are not flags of their own."""


def add_flag(group: Any, name: str, default: Any, help: str, **metadata: Any) -> None:
    """``--name`` with ``default``: a switch for booleans, else typed like the default (or ``metadata['type']``)."""
    kwargs: dict[str, Any] = {"default": default, "help": help}
    if isinstance(default, bool):
        kwargs["action"] = "store_true"
    elif isinstance(default, (list, tuple)):  # repeatable; None when absent (argparse would extend the default)
        kwargs.update(action="append", default=None, **{k: metadata[k] for k in ("metavar",) if metadata.get(k)})
    else:
        kwargs["type"] = metadata.get("type") or (type(default) if default is not None else str)
        kwargs.update({k: metadata[k] for k in ("choices", "metavar") if metadata.get(k) is not None})
        if default is not None:
            kwargs["help"] += " (default: %(default)s)"
    group.add_argument(f"--{name}", **kwargs)


def add_generation_flags(group: Any) -> None:
    """The generation settings' flags and every registered method's options."""
    names = generation_flag_names()
    for f in dataclasses.fields(GenerationSettings):
        if f.name in names:
            meta = {k: v for k, v in f.metadata.items() if k != "flag"}
            if f.name == "method":
                meta["choices"] = method_choices()
            add_flag(group, names[f.name], f.default, **meta)
    for option in method_options():
        add_flag(group, option.name, option.default, option.help, choices=option.choices, metavar=option.metavar)


def add_run_flags(parser: argparse.ArgumentParser, groups: tuple[str, ...] | None = None) -> None:
    """Every flag of :class:`RunConfig` (those of ``groups`` only, when given), in its ``--help`` groups."""
    sections: dict[str, Any] = {}
    for f in dataclasses.fields(RunConfig):
        name = f.metadata["group"]
        if groups is not None and name not in groups:
            continue
        group = sections.setdefault(name, parser.add_argument_group(name))
        if f.name == "generation":
            add_generation_flags(group)
        else:
            add_flag(group, f.name, f.default, **{k: v for k, v in f.metadata.items() if k != "group"})


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every flag of the paper's command line (and a few of ours)."""
    parser = argparse.ArgumentParser(
        prog="d4c-quant",
        description="Data-free quantization of CLIP models (D4C) and its baselines: generate calibration images, "
                    "quantize both encoders, calibrate, reconstruct, evaluate zero-shot, write a result JSON.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_flags(parser)
    return parser


def describe_error(exc: D4CError, parser: argparse.ArgumentParser) -> str:
    """The error's sentence with its parameter shown as the flag of ``parser`` that sets it."""
    flags = {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}
    fields = generation_flag_names()

    def name_of(parameter: str) -> str:
        flag = flags.get(fields.get(parameter, parameter))
        return flag or PARAMETER_NAMES.get(parameter, parameter)

    return exc.describe(name_of)


def row_argv(row: str) -> list[str]:
    """The flags that select paper row ``row`` (``d4c1`` -> ``--dfq --gen_img --d4c_config 1``)."""
    defaults = dict(iter_flags(RunConfig()))
    argv: list[str] = []
    for name, value in iter_flags(RunConfig.for_row(row)):
        if value != defaults[name]:
            argv += [f"--{name}"] if value is True else [f"--{name}", str(value)]
    return argv


class _ProgressHandler(logging.Handler):
    """Log records as plain lines on the current stdout, written between tqdm progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:  # noqa: BLE001 - logging must never break a run
            self.handleError(record)


def configure_logging(level: int = logging.INFO) -> None:
    """Show the library's progress messages (the ``d4c`` loggers) on stdout as plain lines (idempotent)."""
    logger = logging.getLogger("d4c")
    logger.setLevel(level)
    if not any(isinstance(h, _ProgressHandler) for h in logger.handlers):
        handler = _ProgressHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the pipeline, and return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging()
    tune_cpu_allocator()
    try:
        from d4c.pipeline import run

        run(RunConfig.from_flags(vars(args)))
    except D4CError as exc:
        print(f"d4c-quant: error: {describe_error(exc, parser)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("d4c-quant: interrupted; finished stages and their files are kept.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
