"""The typed run configuration: what the command-line flags mean, checked once.

Data flows one way: flags (``d4c.cli``) -> :class:`RunConfig` -> pipeline stages
(``d4c.pipeline``) -> result file. Every field is named and defaulted as the paper's flag.
"""

from __future__ import annotations

import dataclasses
import re
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d4c.errors import D4CError

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent

DEFAULT_CUSTOM_FILE = "./d4c/template/custom_classnames_templates.json"
DEFAULT_Q_CONFIG = "./exp/config66.yaml"
GEN_METHODS = ("d4c", "baseline", "bns", "pse")
D4C_CONFIGS = (0, 1, 2, 3)
GEN_SCHEDULES = ("reference", "batched")
DEFAULT_GEN_CACHE_DIR = "./cache/pseudo_images"
DEFAULT_RANGE_CACHE_DIR = "./cache/weight_ranges"


def resolve_resource(path: str) -> Path:
    """``path`` as given if it exists; else, for a relative path, the same path under the repository root.

    The paper's defaults (``./exp/config66.yaml``, ``./d4c/template/...``) are relative to the
    repository root; this lets ``d4c-quant`` find them from any working directory.
    """
    candidate = Path(path).expanduser()
    if candidate.exists() or candidate.is_absolute():
        return candidate
    fallback = REPO_ROOT / candidate
    return fallback if fallback.exists() else candidate


def check_generation_values(gen_batch_size: int, gen_iter: int, gen_lr: float, d4c_config: int,
                            gen_schedule: str) -> None:
    """The generation flags' checks (one-sentence :class:`D4CError`), shared by :class:`RunConfig`
    and :class:`d4c.generation.settings.GenerationSettings`."""
    for name, value in (("gen_batch_size", gen_batch_size), ("gen_iter", gen_iter), ("gen_lr", gen_lr)):
        if not value > 0:
            raise D4CError(f"--{name} must be positive, got {value}.")
    if d4c_config not in D4C_CONFIGS:
        raise D4CError(f"--d4c_config must be one of 0, 1, 2, 3, got {d4c_config}.")
    if gen_schedule not in GEN_SCHEDULES:
        raise D4CError(f"--gen_schedule must be one of {', '.join(GEN_SCHEDULES)}, got {gen_schedule!r}.")


@dataclass
class RunConfig:
    """One run of the pipeline; see ``d4c-quant --help`` for each flag's meaning."""

    # data
    dataset: str = "cifar10"
    """Evaluation dataset: cifar10, cifar100, imagenet1k or the offline digits."""
    dataset_root: str | None = None
    """Folder holding the dataset (clip_benchmark's layout)."""
    split: str = "test"
    """Split that is evaluated."""
    train_split: str = "train"
    """Split real calibration images are drawn from (real-data PTQ)."""
    # model
    model: str = "ViT-B/32"
    """OpenAI CLIP name, offline zoo name, random:<architecture> or a checkpoint path."""
    model_cache_dir: str | None = None
    """Where named OpenAI checkpoints are looked up and downloaded (clip's default when None)."""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda or cuda:N."""
    # quantization
    fp_model: bool = False
    """Evaluate the full-precision model; no quantization."""
    q_config: str = DEFAULT_Q_CONFIG
    """Quantization YAML (bit widths, quantizers, observers, calibration and reconstruction settings)."""
    recon: bool = False
    """Run block reconstruction after calibration."""
    recon_iters: int | None = None
    """Override of the config's ``recon.iters`` (reconstruction steps per unit)."""
    load_quant: str | None = None
    """Evaluate a saved quantized model (``*.quant.pt``) instead of quantizing and calibrating."""
    range_cache_dir: str = DEFAULT_RANGE_CACHE_DIR
    """Folder of cached weight ranges (they depend on the weights and the weight quantizer config only);
    ``none`` turns the cache off."""
    # data-free calibration
    dfq: bool = False
    """Calibrate on synthetic images instead of real training images."""
    gen_img: bool = False
    """With --dfq, optimise the pseudo images (otherwise they stay Gaussian noise)."""
    gen_method: str = "d4c"
    """Pseudo-image method: d4c, or baseline (BNS for ResNets, PSE for ViTs); bns / pse name one explicitly."""
    d4c_config: int = 3
    """D4C ablation: 0 PGSI, 1 PGSI+SCG, 2 PGSI+PAE, 3 PGSI+SCG+PAE."""
    custom_file: str = DEFAULT_CUSTOM_FILE
    """JSON with generic class names and generation templates (PGSI prompts)."""
    gen_batch_size: int = 16
    """Mini-batch size of pseudo-image generation."""
    gen_lr: float = 0.01
    """Adam learning rate of the pseudo-image pixels."""
    gen_iter: int = 3000
    """Outer iterations of pseudo-image generation."""
    img_path: str | None = None
    """Folder to save the pseudo images to as PNG."""
    gen_schedule: str = "reference"
    """reference: one Adam step per mini-batch (the paper's schedule); batched: one step per pass over all mini-batches."""
    gen_cache_dir: str = DEFAULT_GEN_CACHE_DIR
    """Folder of cached pseudo images and generation checkpoints; ``none`` turns caching and checkpoints off."""
    gen_force: bool = False
    """Ignore cached pseudo images and checkpoints of this recipe and generate anew."""
    gen_ckpt_every: int = 200
    """Save a resumable generation checkpoint every this many outer iterations (0: never)."""
    # evaluation and output
    seed: int = 0
    """Seed of torch, numpy and python's random."""
    batch_size: int = 64
    """Evaluation batch size."""
    num_workers: int = 4
    """Evaluation data-loader workers."""
    output: str = "result.json"
    """Result file; may contain {dataset}, {model}, {task}, {method}, {q_config}, {seed}, {recon}."""
    skip_existing: bool = False
    """Skip the run when the result file already exists."""
    no_amp: bool = False
    """Disable autocast during evaluation (it is only ever used on CUDA)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Flags added by later stages that this class does not name (kept for the result file)."""

    @classmethod
    def from_namespace(cls, args: Namespace) -> "RunConfig":
        """Build and validate a config from parsed flags."""
        values = vars(args).copy()
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: values.pop(k) for k in list(values) if k in names}
        config = cls(**known, extra=values)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise a one-sentence :class:`D4CError` for values no stage could use."""
        if not self.batch_size > 0:
            raise D4CError(f"--batch_size must be positive, got {self.batch_size}.")
        check_generation_values(self.gen_batch_size, self.gen_iter, self.gen_lr, self.d4c_config, self.gen_schedule)
        if self.num_workers < 0:
            raise D4CError(f"--num_workers must be 0 or more, got {self.num_workers}.")
        if self.gen_method not in GEN_METHODS:
            raise D4CError(f"--gen_method must be one of {', '.join(GEN_METHODS)}, got {self.gen_method!r}.")
        if self.gen_ckpt_every < 0:
            raise D4CError(f"--gen_ckpt_every must be 0 (no checkpoints) or more, got {self.gen_ckpt_every}.")
        if self.recon_iters is not None and not self.recon_iters > 0:
            raise D4CError(f"--recon_iters must be positive, got {self.recon_iters}.")
        if self.load_quant and self.fp_model:
            raise D4CError("--load_quant evaluates a saved quantized model: drop --fp_model or --load_quant.")
        if self.gen_img and not self.dfq:
            raise D4CError("--gen_img only applies to data-free calibration: add --dfq or drop --gen_img.")

    @property
    def method(self) -> str:
        """The paper-table row of this run: fp, real, gaussian, baseline or d4c0..d4c3."""
        if self.fp_model:
            return "fp"
        if not self.dfq:
            return "real"
        if not self.gen_img:
            return "gaussian"
        return f"d4c{self.d4c_config}" if self.gen_method == "d4c" else "baseline"

    def as_flags(self) -> dict[str, Any]:
        """Every flag and its value, for the result file."""
        flags = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        flags.update(self.extra)
        return flags


def slug(text: str) -> str:
    """A file-name-safe version of a model or file name (``ViT-B/32`` -> ``ViT-B-32``)."""
    if Path(text).suffix in (".pt", ".pth", ".bin"):
        text = Path(text).stem
    return re.sub(r"[^A-Za-z0-9_.@-]+", "-", text).strip("-")
