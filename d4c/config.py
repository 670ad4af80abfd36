"""The typed run configuration: every flag of the command line, defaulted as the paper's, checked once.

Data flows one way: flags (``d4c.cli``) -> :class:`RunConfig` -> pipeline stages
(``d4c.pipeline``) -> result file. Each field is one flag ``--<field>``; its metadata holds the
help text and the ``--help`` group the parser is built from. The generation flags are those of the
nested :class:`~d4c.generation.settings.GenerationSettings` and the registered methods' options.

A run's *row* (:attr:`RunConfig.row`) is the paper-table row it computes: ``fp``, ``real``, or a
row of pseudo images (``gaussian``, ``baseline``, ``bns``, ``pse``, ``d4c0`` ... ``d4c3``;
:mod:`d4c.generation.rows`); :meth:`RunConfig.for_row` is the way back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Mapping

from d4c.acceleration import COMPILE_CHOICES, check_compile_choice
from d4c.errors import D4CError
from d4c.generation.methods import BASELINE, method_choices, method_class, method_options, option_owner
from d4c.generation.methods.gaussian import GaussianNoise
from d4c.generation.rows import row_of, settings_for_row
from d4c.generation.settings import GenerationSettings, flag
from d4c.models.family import MODEL_TYPES

DEFAULT_CUSTOM_FILE = "./d4c/template/custom_classnames_templates.json"
DEFAULT_Q_CONFIG = "./exp/config66.yaml"
DEFAULT_GEN_CACHE_DIR = "./cache/pseudo_images"
DEFAULT_RANGE_CACHE_DIR = "./cache/weight_ranges"
RUN_ROWS = ("fp", "real")
"""The rows without pseudo images: full precision, and calibration on real training images."""

DATA, MODEL, QUANT = "data", "model", "quantization"
DFQ, OUTPUT = "data-free calibration (pseudo-image synthesis)", "evaluation and output"


@dataclass
class RunConfig:
    """One run of the pipeline; ``d4c-quant --help`` shows each flag's help text."""

    dataset: str = flag("cifar10", "evaluation dataset: cifar10, cifar100, imagenet1k, or digits (offline)",
                        group=DATA)
    dataset_root: str | None = flag(None, "folder holding the dataset in clip_benchmark's layout (ImageNet: "
                                          "meta.bin, train/, val/)", group=DATA)
    split: str = flag("test", "split that is evaluated", group=DATA)
    train_split: str = flag("train", "split real calibration images come from", group=DATA)
    model: str = flag("ViT-B/32", "RN50, RN101, RN50x4, RN50x16, RN50x64, ViT-B/32, ViT-B/16, ViT-L/14, "
                                  "ViT-L/14@336px, tiny-vit, tiny-rn (offline zoo), random:<architecture> (timing "
                                  "only), or a checkpoint file; with --model_type open_clip an open_clip "
                                  "architecture (ViT-B-32, RN50, ...), tiny-vit, tiny-rn or random:ARCH",
                 group=MODEL)
    model_type: str = flag("openai", "model family: openai (OpenAI's clip package) or open_clip (--model is then an "
                                     "open_clip architecture such as ViT-B-32, RN50, ViT-B-16-quickgelu, tiny-vit, "
                                     "tiny-rn or random:ARCH, with --pretrained), as clip_benchmark names it",
                           group=MODEL, choices=MODEL_TYPES)
    pretrained: str | None = flag(None, "with --model_type open_clip: a pretrained tag of --model (laion2b_s34b_b79k, "
                                        "datacomp_xl_s13b_b90k, metaclip_400m, openai, ...) looked up in "
                                        "--model_cache_dir, or a checkpoint file", group=MODEL, metavar="TAG_OR_FILE")
    model_cache_dir: str | None = flag(None, "where named checkpoints are looked up / downloaded (default: "
                                             "~/.cache/clip; open_clip tags: the Hugging Face hub cache)", group=MODEL)
    device: str = flag("auto", "auto (CUDA when available), cpu, cuda or cuda:N", group=MODEL)
    compile: str = flag("auto", "torch.compile the reconstruction and generation steps: auto (only where measured to "
                                "pay: CPU reconstruction of 2000+ steps per unit), on, off; compiled kernels round "
                                "floats differently", group=MODEL, choices=COMPILE_CHOICES)
    fp_model: bool = flag(False, "evaluate the full-precision model, no quantization", group=QUANT)
    q_config: str = flag(DEFAULT_Q_CONFIG, "quantization YAML: bit widths, quantizers, observers, calibration, "
                                           "reconstruction", group=QUANT)
    recon: bool = flag(False, "run block reconstruction after calibration", group=QUANT)
    recon_iters: int | None = flag(None, "reconstruction steps per unit, overriding recon.iters of --q_config",
                                   group=QUANT, type=int, metavar="N")
    load_quant: str | None = flag(None, "evaluate a saved quantized model (the *.quant.safetensors every quantized "
                                        "run writes next to its result; earlier *.quant.pt files too) without "
                                        "calibrating again; --model (and --model_type, --pretrained) must be the ones "
                                        "it was made from (the same name or checkpoint content)", group=QUANT,
                                  metavar="PATH")
    range_cache_dir: str = flag(DEFAULT_RANGE_CACHE_DIR, "cache of calibrated weight ranges, reused by every run with "
                                                         "the same weights and weight-quantizer settings (they do not "
                                                         "depend on the calibration data); 'none' turns it off",
                                group=QUANT)
    dfq: bool = flag(False, "data-free: calibrate on synthetic images instead of real training images", group=DFQ)
    gen_img: bool = flag(False, "with --dfq: optimise the pseudo images (without it they stay Gaussian noise)",
                         group=DFQ)
    generation: GenerationSettings = field(default_factory=GenerationSettings, metadata={"group": DFQ})
    """The generation flags; its ``seed`` and ``num_images`` are filled per run (:meth:`pseudo_image_settings`)."""
    custom_file: str = flag(DEFAULT_CUSTOM_FILE, "JSON with generic class names and generation templates",
                            group=DFQ)
    img_path: str | None = flag(None, "save the pseudo images as PNG files in this folder", group=DFQ)
    gen_cache_dir: str = flag(DEFAULT_GEN_CACHE_DIR, "cache of generated pseudo images (reused by runs with the "
                                                     "same recipe) and of resumable generation checkpoints; 'none' "
                                                     "turns both off", group=DFQ)
    gen_force: bool = flag(False, "ignore cached pseudo images and checkpoints of this recipe: generate anew",
                           group=DFQ)
    gen_only: bool = flag(False, "only generate (or find in the cache) this run's pseudo images, then stop: no "
                                 "quantization and no evaluation; --output receives a generation record. Under "
                                 "torchrun or srun each process generates its share of the --gen_groups groups",
                          group=DFQ)
    seed: int = flag(0, "seeds torch, numpy and python's random", group=OUTPUT)
    batch_size: int = flag(64, "evaluation batch size", group=OUTPUT)
    num_workers: int = flag(4, "evaluation data-loader workers", group=OUTPUT)
    output: str = flag("result.json", "result JSON; may be a template with {dataset}, {model}, {pretrained}, "
                                      "{model_type}, {task}, {method}, {q_config}, {seed}, {recon}", group=OUTPUT)
    skip_existing: bool = flag(False, "skip the run if the result file exists", group=OUTPUT)
    no_amp: bool = flag(False, "disable autocast during evaluation (used on CUDA only)", group=OUTPUT)

    def __post_init__(self) -> None:
        # Every registered method's options, defaulted: one spelling of each config.
        defaults = {o.name: list(o.default) if isinstance(o.default, list) else o.default for o in method_options()}
        self.generation = replace(self.generation, options={**defaults, **self.generation.options})

    @classmethod
    def from_flags(cls, values: Mapping[str, Any]) -> "RunConfig":
        """Build and validate a config from flag values by flag name (parsed ``vars(args)``); others are ignored."""
        run = {f.name: values[f.name] for f in dataclasses.fields(cls) if f.name != "generation" and f.name in values}
        generation = {name: values[dest] for name, dest in generation_flag_names().items() if dest in values}
        options = {o.name: values[o.name] for o in method_options() if values.get(o.name) is not None}
        config = cls(**run, generation=GenerationSettings(**generation, options=options))
        config.validate()
        return config

    def validate(self) -> None:
        """Raise a one-sentence :class:`D4CError` for values no stage could use."""
        for name, low in (("batch_size", 1), ("num_workers", 0)):
            if getattr(self, name) < low:
                raise D4CError(f"must be {'positive' if low else '0 or more'}, got {getattr(self, name)}.", name)
        check_compile_choice(self.compile)
        if self.recon_iters is not None and not self.recon_iters > 0:
            raise D4CError(f"must be positive, got {self.recon_iters}.", "recon_iters")
        if self.generation.method not in method_choices():
            raise D4CError(f"must be one of {', '.join(method_choices())}, got {self.generation.method!r}.", "method")
        known = {o.name: o for o in method_options()}
        for name, value in self.generation.options.items():
            if name not in known:
                raise D4CError(f"{name!r} is not an option of any method; choose among {', '.join(known)}.",
                               "options")
            if known[name].choices is not None and value not in known[name].choices:
                raise D4CError(f"must be one of {', '.join(map(str, known[name].choices))}, got {value!r}.", name)
        self._check_options_apply(known)
        if self.dfq and self.gen_img and self.generation.method != BASELINE:
            method_class(self.generation.method).check_options(self.generation)
        if self.model_type not in MODEL_TYPES:
            raise D4CError(f"must be one of {', '.join(MODEL_TYPES)}, got {self.model_type!r}.", "model_type")
        if self.pretrained is not None and self.model_type == "openai":
            raise D4CError(f"--pretrained {self.pretrained} applies to --model_type open_clip only (OpenAI models are "
                           "named by --model alone).")
        if self.load_quant and self.fp_model:
            raise D4CError("--load_quant evaluates a saved quantized model: drop --fp_model or --load_quant.")
        if self.gen_img and not self.dfq:
            raise D4CError("--gen_img only applies to data-free calibration: add --dfq or drop --gen_img.")
        if self.gen_only and (not (self.dfq and self.gen_img) or self.fp_model or self.load_quant):
            raise D4CError("--gen_only generates pseudo images: it needs --dfq --gen_img (and no --fp_model or "
                           "--load_quant).")

    def _check_options_apply(self, known: Mapping[str, Any]) -> None:
        """Refuse a method option set away from its default on a run that does not generate with its method (it
        would be ignored: ``--d4c_config 1`` without ``--gen_img`` runs Gaussian noise). Evaluation-only runs
        (``--fp_model``, ``--load_quant``) ignore every generation flag and are not checked."""
        if self.fp_model or self.load_quant:
            return
        generates = self.generation.method if self.dfq and self.gen_img else None
        for name, value in self.generation.options.items():
            default = known[name].default
            if value == default or (isinstance(default, list) and list(value or []) == default):
                continue
            owner = option_owner(name)
            if owner != generates:
                used = (f"this run generates with --gen_method {generates}" if generates else
                        "this run generates no pseudo images (that needs --dfq --gen_img)")
                raise D4CError(f"applies to --gen_method {owner} only, but {used}.", name)

    def pseudo_image_settings(self, num_images: int) -> GenerationSettings | None:
        """The generation of this run's calibration images (``num_images`` of them), or None when it uses none
        (``fp``, ``real``): Gaussian noise under ``--dfq`` alone, the chosen method with ``--gen_img``."""
        if self.fp_model or not self.dfq:
            return None
        method = self.generation.method if self.gen_img else GaussianNoise.name  # --dfq alone: the noise itself
        return replace(self.generation, method=method, seed=self.seed, num_images=num_images, compile=self.compile)

    @property
    def row(self) -> str:
        """The paper-table row of this run: ``fp``, ``real``, or its pseudo images' row (``gaussian``, ``d4c3``)."""
        if self.fp_model:
            return "fp"
        if not self.dfq:
            return "real"
        return row_of(self.pseudo_image_settings(self.generation.num_images))

    @classmethod
    def for_row(cls, row: str, **fields: Any) -> "RunConfig":
        """The config computing ``row`` (its other fields as given): the inverse of :attr:`row`."""
        if row in RUN_ROWS:
            return cls(fp_model=row == "fp", **fields)
        base = fields.pop("generation", GenerationSettings())
        settings = settings_for_row(row, base)
        optimizes = settings.method == BASELINE or method_class(settings.method).optimizes
        if not optimizes:  # Gaussian noise is --dfq alone: the method flag keeps its value
            settings = replace(settings, method=base.method)
        return cls(dfq=True, gen_img=optimizes, generation=settings, **fields)

    def as_flags(self) -> dict[str, Any]:
        """Every flag by name and its value, for the result file."""
        return dict(iter_flags(self))


def generation_flag_names() -> dict[str, str]:
    """The nested settings' flag fields: field name -> flag name (``method`` -> ``gen_method``)."""
    return {f.name: f.metadata.get("flag", f.name) for f in dataclasses.fields(GenerationSettings)
            if "help" in f.metadata}


def iter_flags(config: RunConfig) -> Iterator[tuple[str, Any]]:
    """``(flag name, value)`` of every flag of ``config``, in ``--help`` order (method options with their defaults)."""
    for f in dataclasses.fields(config):
        if f.name != "generation":
            yield f.name, getattr(config, f.name)
            continue
        for name, dest in generation_flag_names().items():
            yield dest, getattr(config.generation, name)
        for option in method_options():
            yield option.name, config.generation.options.get(option.name, option.default)
