"""``d4c-figures`` (also ``python -m d4c.figures``): one subcommand per figure, from files the pipeline wrote.

    d4c-figures images   --cache DIR --model M [--custom_file F]          pseudo images per method, captioned
    d4c-figures curves   [--cache DIR --model M] [--results PATH ...]     generation and reconstruction losses
    d4c-figures features --cache DIR --model M --dataset D [--embedding pca|tsne]   FP feature map
    d4c-figures layers   --model M --states PATH ... --dataset D          per-layer SQNR of saved quantized models
    d4c-figures tables   --results PATH ... | --csv FILE [--model M]      top-1 against bit width

Each writes ``--output`` (a PNG) and the numbers behind it as JSON beside it, atomically, and
never generates, calibrates or reconstructs. Bad input (an empty cache, result files of several
models, a saved model of another model, an unwritable output) is one sentence on stderr, exit
status 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from d4c.data.datasets import build_dataset, check_dataset, sample_images
from d4c.data.prompts import load_prompt_file
from d4c.errors import D4CError
from d4c.figures import curves, features, images, layers, tables
from d4c.figures.output import check_output, save_figure
from d4c.figures.sources import (CacheEntry, cache_entries, flat_row, load_results, load_states, read_results_csv,
                                 select_results, selected, state_label)
from d4c.generation.cache import recipe_model
from d4c.generation.engine import initial_images
from d4c.generation.pgsi import prompts_digest
from d4c.generation.settings import SCHEDULES
from d4c.models.family import MODEL_TYPES
from d4c.models.loading import LoadedModel, load_clip
from d4c.runtime import resolve_device

PARAMETER_FLAGS = {"prompts": "--custom_file"}
DEFAULT_PROMPTS = "./d4c/template/custom_classnames_templates.json"


# -- shared steps ------------------------------------------------------------------------------------------------

def _methods(value: str | None) -> set[str] | None:
    return None if not value else {v.strip() for v in value.split(",") if v.strip()}


BASELINE_ROWS = {"bns", "pse"}
"""What the ``baseline`` row's images are cached as (BNS for ResNets, PSE for ViTs)."""


def _entries(args: argparse.Namespace) -> list[CacheEntry]:
    entries = cache_entries(args.cache, args.model, args.seed, args.gen_schedule)
    wanted = _methods(getattr(args, "methods", None))
    if wanted is not None and "baseline" in wanted:
        wanted |= BASELINE_ROWS
    if wanted is not None:
        entries = [e for e in entries if e.row in wanted]
        if not entries:
            raise D4CError(f"{args.methods} selects none of the cached rows of {args.model}.", "methods")
    return entries


def _load_model(args: argparse.Namespace, device: torch.device) -> LoadedModel:
    return load_clip(args.model, device, getattr(args, "model_cache_dir", None), args.model_type, args.pretrained)


def _check_entries_fit(entries: Sequence[CacheEntry], loaded: LoadedModel, prompts: Sequence[str],
                       prompt_file: str) -> None:
    """The cached images were made from these weights, and D4C's from these prompts."""
    identity = recipe_model(loaded.name, loaded.source, loaded.model_type)
    digest = prompts_digest(prompts)
    for entry in entries:
        if entry.recipe.get("model") != identity:
            raise D4CError(f"{entry.path} was generated from other weights than --model {loaded.name} "
                           f"({entry.recipe.get('model')} against {identity}).", "cache")
        if "prompts_sha256" in entry.recipe and entry.recipe["prompts_sha256"] != digest:
            raise D4CError(f"{prompt_file} is not the prompt file the cached {entry.row} images were made with "
                           f"({entry.recipe.get('num_prompts')} prompts, another digest); pass that file.", "prompts")


def _gaussian(entries: Sequence[CacheEntry], loaded: LoadedModel, seed: int) -> torch.Tensor:
    """The Gaussian-noise row's images: the engine's seeded N(0, 1) start, as many as the cached sets hold."""
    count = max((int(e.recipe.get("num_images", 0)) for e in entries), default=0) or 32
    return initial_images(count, loaded.resolution, seed)[0]


def _image_sets(args: argparse.Namespace, entries: Sequence[CacheEntry], loaded: LoadedModel
                ) -> list[images.ImageSet]:
    sets = [images.ImageSet(e.row, e.images, e.targets, str(e.path)) for e in entries]
    wanted = _methods(getattr(args, "methods", None))
    if not args.no_gaussian and (wanted is None or "gaussian" in wanted):
        sets.insert(0, images.ImageSet("gaussian", _gaussian(entries, loaded, args.seed), None,
                                       f"N(0, 1), seed {args.seed} (not cached: drawn as the pipeline draws it)"))
    return sets


def _real_images(args: argparse.Namespace, loaded: LoadedModel, count: int) -> tuple[torch.Tensor, Any]:
    dataset = build_dataset(args.dataset, args.dataset_root, args.split, loaded.preprocess)
    return sample_images(dataset, min(count, len(dataset)), args.seed), dataset


def _write(figure: Any, data: dict[str, Any], output: Path, command: str, args: argparse.Namespace) -> None:
    data = {"figure": command, "arguments": {k: v for k, v in vars(args).items() if k != "handler"}, **data}
    png, json_path = save_figure(figure, data, output)
    print(f"Wrote {png} ({png.stat().st_size / 1024:.0f} KB) and {json_path}.")


# -- subcommands -------------------------------------------------------------------------------------------------

def run_images(args: argparse.Namespace, output: Path) -> None:
    entries = _entries(args)
    prompt_set = load_prompt_file(args.custom_file)
    device = resolve_device(args.device)
    loaded = _load_model(args, device)
    prompts = prompt_set.prompts()
    _check_entries_fit(entries, loaded, prompts, args.custom_file)
    mean, std = images.normalization(loaded.preprocess)
    figure, data = images.images_figure(_image_sets(args, entries, loaded), loaded.model, prompts, device,
                                        args.per_method, mean, std)
    _write(figure, {"model": args.model, **data}, output, "images", args)


def run_curves(args: argparse.Namespace, output: Path) -> None:
    if args.cache is None and not args.results:
        raise D4CError("curves needs --cache (generation losses) or --results (reconstruction losses), or both.")
    entries: list[CacheEntry] = []
    if args.cache is not None:
        if args.model is None:
            raise D4CError("must name the model whose cached generations to plot (with --cache).", "model")
        entries = _entries(args)
        entries = [e for e in entries if e.loss_history is not None]
        if not entries:
            missing = (f"{args.cache} holds no loss history for {args.model} (entries cached before the history "
                       f"was kept have none)")
            if not args.results:
                raise D4CError(f"{missing}.", "cache")
            print(f"d4c-figures curves: {missing}; drawing the reconstruction losses only.", file=sys.stderr)
    records: list[dict[str, Any]] = []
    if args.results:
        records = [r for r in load_results(args.results) if r.get("reconstruction_units")]
        if not records:
            raise D4CError(f"{' '.join(args.results)} hold no result of a run with --recon (reconstruction_units).",
                           "results")
        _, records = select_results(records, args.model, _methods(args.methods), _methods(args.bits), args.seed,
                                    args.gen_schedule, args.recon_iters)
    figure, data = curves.curves_figure(entries, records)
    _write(figure, data, output, "curves", args)


def run_features(args: argparse.Namespace, output: Path) -> None:
    entries = _entries(args)
    prompt_set = load_prompt_file(args.custom_file)
    check_dataset(args.dataset, args.dataset_root, args.split)
    device = resolve_device(args.device)
    loaded = _load_model(args, device)
    prompts = prompt_set.prompts()
    _check_entries_fit(entries, loaded, prompts, args.custom_file)
    real, _ = _real_images(args, loaded, args.num_real)
    sets = [(s.row, s.images) for s in _image_sets(args, entries, loaded)]
    figure, data = features.features_figure(real, sets, loaded.model, prompts, device, args.embedding, args.seed)
    _write(figure, {"model": args.model, "dataset": args.dataset, "split": args.split, **data}, output, "features",
           args)


def _evaluation_tokens(dataset: Any, count: int, seed: int, loaded: LoadedModel) -> torch.Tensor:
    """The dataset's zero-shot prompts (templates x class names), shuffled with ``seed``, the first ``count``,
    tokenised by the model's own tokenizer."""
    texts = [t.format(c=c) if isinstance(t, str) else t(c) for t in dataset.templates for c in dataset.classes]
    random.Random(seed).shuffle(texts)
    return loaded.family.tokenize(texts[:count])


def run_layers(args: argparse.Namespace, output: Path) -> None:
    states = load_states(args.states, args.model, _methods(args.methods), _methods(args.bits), args.seed,
                         args.gen_schedule, args.recon_iters)
    check_dataset(args.dataset, args.dataset_root, args.split)
    device = resolve_device(args.device)
    loaded = _load_model(args, device)
    real, dataset = _real_images(args, loaded, args.num_images)
    tokens = _evaluation_tokens(dataset, args.num_texts, args.seed, loaded)
    sqnr = layers.layer_sqnr(loaded.model, [saved for _, saved in states], real.to(device), tokens.to(device))
    labels = [state_label(path, saved) for path, saved in states]
    figure, data = layers.layers_figure(labels, [str(p) for p, _ in states], sqnr)
    _write(figure, {"model": args.model, "dataset": args.dataset, "split": args.split, "images": len(real),
                    "texts": len(tokens), **data}, output, "layers", args)


def run_tables(args: argparse.Namespace, output: Path) -> None:
    if bool(args.results) == bool(args.csv):
        raise D4CError("tables needs either --results (result files or folders) or --csv (d4c-results' CSV).")
    if args.csv:
        rows = read_results_csv(args.csv)
        models = sorted({r["model"] for r in rows})
        if args.model is None and len(models) > 1:
            raise D4CError(f"{args.csv} holds results of several models ({', '.join(models)}); choose one with "
                           f"--model.", "csv")
        model = args.model or models[0]
        rows = [r for r in rows if r["model"] == model]
        if not rows:
            raise D4CError(f"{args.csv} holds no results of --model {model} (it holds {', '.join(models)}).", "csv")
    else:
        model, records = select_results(load_results(args.results), args.model)
        rows = [flat_row(r) for r in records]
    parameter = "csv" if args.csv else "results"
    rows = [r for r in rows if selected(r, _methods(args.methods), _methods(args.bits), None, args.gen_schedule,
                                        args.recon_iters, keep_fp=True)]
    if not any(r["w_bit"] is not None for r in rows):
        raise D4CError("holds no quantized result of the selection (only full-precision ones, or none); the plot "
                       "needs quantized ones.", parameter)
    figure, data = tables.tables_figure(rows, model, args.recon, parameter)
    _write(figure, data, output, "tables", args)


# -- the parser --------------------------------------------------------------------------------------------------

def _add_cache_flags(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--cache", required=required, metavar="DIR",
                        help="the pseudo-image cache folder (a run's --gen_cache_dir)")
    parser.add_argument("--model", required=required, help="the model whose cached images to use (--model of the runs)")
    parser.add_argument("--seed", type=int, default=0, help="the runs' --seed (default: %(default)s)")
    parser.add_argument("--gen_schedule", choices=SCHEDULES, default="reference",
                        help="the runs' --gen_schedule (default: %(default)s)")
    parser.add_argument("--methods", metavar="ROWS", help="comma-separated rows to show (gaussian,pse,d4c0,...); "
                                                          "default: every cached row")


def _add_result_flags(parser: argparse.ArgumentParser, schedule: bool = True) -> None:
    """The flags that choose among result files: bit widths, reconstruction steps (and schedule)."""
    parser.add_argument("--bits", metavar="WxAy", help="comma-separated bit widths of the result files to use "
                                                        "(W4A4,W4A8,...); default: all")
    parser.add_argument("--recon_iters", type=int, metavar="N", help="only runs with reconstruction of N steps per "
                                                                     "unit (and runs without); default: all")
    if schedule:
        parser.add_argument("--gen_schedule", choices=SCHEDULES, default="reference",
                            help="the runs' --gen_schedule (rows with pseudo images; default: %(default)s)")


def _add_model_flags(parser: argparse.ArgumentParser, prompts: bool = True) -> None:
    parser.add_argument("--model_type", choices=MODEL_TYPES, default="openai",
                        help="the runs' --model_type (default: %(default)s)")
    parser.add_argument("--pretrained", help="the runs' --pretrained (--model_type open_clip)")
    parser.add_argument("--model_cache_dir", help="where named checkpoints are (as for d4c-quant)")
    parser.add_argument("--device", default="cpu", help="where the models run: cpu, cuda, cuda:N or auto "
                                                       "(default: %(default)s)")
    if prompts:
        parser.add_argument("--custom_file", default=DEFAULT_PROMPTS,
                            help="the runs' prompt file: generation prompts (default: %(default)s)")


def _add_dataset_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="the real images' dataset (as for d4c-quant)")
    parser.add_argument("--dataset_root", help="where it is (as for d4c-quant)")
    parser.add_argument("--split", default="test", help="its split (default: %(default)s)")


SUBCOMMANDS: dict[str, tuple[Callable, str]] = {
    "images": (run_images, "a grid of pseudo images per method, captioned with D4C's target and the FP top prompt"),
    "curves": (run_curves, "generation loss per iteration per method; reconstruction loss per unit before/after"),
    "features": (run_features, "FP image features of real and pseudo images in one 2-D map, with summaries"),
    "layers": (run_layers, "per-layer output SQNR (dB) of saved quantized models against FP, on real images"),
    "tables": (run_tables, "zero-shot top-1 against bit width per method, one panel per dataset"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="d4c-figures", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="FIGURE")
    made = {}
    for name, (handler, help_text) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--output", "-o", default=f"{name}.png", help="the PNG to write; the numbers go to the "
                                                                       ".json beside it (default: %(default)s)")
        sub.set_defaults(handler=handler)
        made[name] = sub
    _add_cache_flags(made["images"])
    _add_model_flags(made["images"])
    made["images"].add_argument("--per_method", type=int, default=8, help="images per method (default: %(default)s)")
    made["images"].add_argument("--no_gaussian", action="store_true", help="leave out the Gaussian-noise row")

    _add_cache_flags(made["curves"], required=False)
    made["curves"].add_argument("--results", nargs="+", metavar="PATH",
                                help="result JSONs or folders of them (runs with --recon: reconstruction_units)")
    _add_result_flags(made["curves"], schedule=False)

    _add_cache_flags(made["features"])
    _add_model_flags(made["features"])
    _add_dataset_flags(made["features"])
    made["features"].add_argument("--num_real", type=int, default=256, help="real images (default: %(default)s)")
    made["features"].add_argument("--embedding", choices=features.EMBEDDINGS, default="pca",
                                  help="the 2-D map (default: %(default)s)")
    made["features"].add_argument("--no_gaussian", action="store_true", help="leave out the Gaussian-noise images")

    made["layers"].add_argument("--model", required=True, help="the FP model the states were quantized from")
    made["layers"].add_argument("--states", nargs="+", required=True, metavar="PATH",
                                help="saved quantized models (<result>.quant.*), result JSONs that name one, or "
                                     "folders of result JSONs")
    _add_model_flags(made["layers"], prompts=False)
    _add_dataset_flags(made["layers"])
    made["layers"].add_argument("--num_images", type=int, default=64, help="real images (default: %(default)s)")
    made["layers"].add_argument("--num_texts", type=int, default=128,
                                help="evaluation prompts (templates x class names; default: %(default)s)")
    made["layers"].add_argument("--seed", type=int, default=0, help="the runs' --seed (chooses result files in "
                                                                    "folders) and draws the real images and texts "
                                                                    "(default: %(default)s)")
    made["layers"].add_argument("--methods", metavar="ROWS", help="comma-separated rows of result files in folders "
                                                                  "(gaussian,d4c3,...); default: all")
    _add_result_flags(made["layers"])

    made["tables"].add_argument("--results", nargs="+", metavar="PATH", help="result JSONs or folders of them")
    made["tables"].add_argument("--csv", help="d4c-results' CSV instead of result files")
    made["tables"].add_argument("--model", help="the model to plot (needed when the inputs hold several)")
    made["tables"].add_argument("--recon", choices=tables.RECON_CHOICES, default="both",
                                help="runs with reconstruction (on), without (off) or both (default)")
    made["tables"].add_argument("--methods", metavar="ROWS", help="comma-separated rows to plot; default: all")
    _add_result_flags(made["tables"])
    return parser


def _check_counts(args: argparse.Namespace) -> None:
    for name in ("per_method", "num_real", "num_images", "num_texts"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise D4CError(f"must be positive, got {value}.", name)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, draw the figure, write PNG and JSON; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_counts(args)
        output = check_output(args.output)
        args.handler(args, output)
    except D4CError as exc:
        shown = exc.describe(lambda p: PARAMETER_FLAGS.get(p, f"--{p}"))
        print(f"d4c-figures {args.command}: error: {shown}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"d4c-figures {args.command}: interrupted; nothing was written.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
