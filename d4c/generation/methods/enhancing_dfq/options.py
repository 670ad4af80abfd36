"""The settings of EnhancingDFQ (``--gen_method enhancing_dfq``) beyond the shared generation flags.

The shared flags keep their names: ``--gen_iter`` is the number of generator optimiser steps,
``--gen_batch_size`` the generator's batch (per step, and per draw of the final images), ``--seed``
seeds everything and ``--gen_ckpt_every`` counts steps. ``--gen_lr`` (the pixels' learning rate
of the pixel-optimising methods) does not apply: the generator has ``lr_generator``.

Everything else is set in a small YAML (``--edfq_config FILE``, a mapping of the keys below) and
/ or with ``--edfq KEY=VALUE[,KEY=VALUE...]`` (repeatable, applied after the file). The paper (Zhao et al.,
CVPR 2024) defers its hyper-parameters to its supplementary material, which the project does not
have; the defaults are GDFQ's generator settings where GDFQ has one (Adam 1e-3, betas 0.5 / 0.999)
and documented choices elsewhere (``docs/methods/enhancing_dfq.md``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from d4c.errors import D4CError

PARAMETER, FILE_PARAMETER = "edfq", "edfq_config"
"""The method options (flags ``--edfq KEY=VALUE`` and ``--edfq_config FILE``) these settings come from."""
FINETUNE_KEYS = ("finetune", "finetune_iters", "finetune_lr")
"""Keys of the quantization side (they do not change the images, so they are not in the image recipe)."""


@dataclass(frozen=True)
class EnhancingDFQOptions:
    """EnhancingDFQ's own settings; defaults documented in ``docs/methods/enhancing_dfq.md``."""

    # ablation switches (the paper's Table 3)
    label_embeddings: bool = True
    """Label embeddings from multi-layer features (section 3.3.1); off: random N(0, 1) embeddings (GDFQ)."""
    mixer: bool = True
    """Multi-layer features mixer (section 3.3.2); off: each image is conditioned on its own class alone."""
    flow_attention: bool = True
    """Normalising-flow-based attention (section 3.3.3); off: the generator's input is noise * embedding (GDFQ)."""
    losses: bool = True
    """Regulation losses: SimLoss_1 for the generator (and SimLoss_2 when ``finetune``); off: CE (and KL) only."""
    # architecture
    layers: int = 4
    """J: chosen layers of the image encoder (evenly spaced, the last included) and flow-attention levels."""
    latent_dim: int = 128
    """Width of label embeddings, noise, mixer and flow attention (GDFQ: 100; a multiple of both head counts)."""
    mixer_heads: int = 1
    """Attention heads of the features mixer (1: eq. 6 as printed, scores over sqrt(d))."""
    heads: int = 4
    """Attention heads of each flow-attention Transformer block."""
    flow_transforms: int = 2
    """Planar transformations in each level's flow mapping (Rezende & Mohamed)."""
    transformer_blocks: int = 1
    """Transformer blocks per flow-attention level."""
    width: int = 128
    """Channels of the generator's convolutions (GDFQ: 128; the last stage has half)."""
    # optimisation
    lr_generator: float = 1e-3
    """Adam learning rate of the generator, embeddings, mixer and flow attention (GDFQ's)."""
    beta1: float = 0.5
    """Adam beta1 of the generator (GDFQ's)."""
    beta2: float = 0.999
    """Adam beta2 of the generator (GDFQ's)."""
    lr_classifier: float = 1e-3
    """Adam learning rate of the per-layer MLP classifiers (section 3.3.1)."""
    warmup: float = 0.2
    """Fraction of ``--gen_iter`` the warm-up takes: the classifiers learn on the warm-up generator's images, then
    their averaged weight rows replace the random label embeddings."""
    mix_prob: float = 0.5
    """Probability that an image's mixer query mixes its class with a second one (lambda ~ U(0, 1))."""
    simloss_momentum: float = 0.9
    """Momentum of SimLoss_1's per-label moving average of the last activation's features."""
    simloss_weight: float = 1.0
    """Weight of SimLoss_1 in the generator loss (eq. 12: 1)."""
    # quantization side
    finetune: bool = False
    """Run the paper's quantization loop before reconstruction: train the image encoder's activation-quantizer
    ranges (LSQ scales) with KL to the FP model on fresh generator batches (+ SimLoss_2 with ``losses``)."""
    finetune_iters: int = 200
    """Steps of that loop (one generator batch each)."""
    finetune_lr: float = 4e-5
    """Adam learning rate of the activation scales in that loop (the configs' recon.visual_scale_lr)."""

    def __post_init__(self) -> None:
        def fail(name: str, expected: str) -> D4CError:
            return D4CError(f"option {name} must be {expected}, got {getattr(self, name)}.", PARAMETER)

        for name in ("layers", "latent_dim", "mixer_heads", "heads", "flow_transforms", "transformer_blocks",
                     "width", "finetune_iters"):
            if not getattr(self, name) > 0:
                raise fail(name, "a positive integer")
        for name in ("lr_generator", "lr_classifier", "finetune_lr"):
            if not getattr(self, name) > 0 or not math.isfinite(getattr(self, name)):
                raise fail(name, "a positive number")
        for name in ("beta1", "beta2", "warmup", "simloss_momentum"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise fail(name, "in [0, 1)")
        if not 0.0 <= self.mix_prob <= 1.0:
            raise fail("mix_prob", "in [0, 1]")
        if not self.simloss_weight >= 0 or not math.isfinite(self.simloss_weight):
            raise fail("simloss_weight", "0 or more")
        for name in ("mixer_heads", "heads"):
            if self.latent_dim % getattr(self, name):
                raise D4CError(f"option latent_dim ({self.latent_dim}) must be a multiple of {name} "
                               f"({getattr(self, name)}).", PARAMETER)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def image_fields(self) -> dict[str, Any]:
        """The settings the images depend on (the quantization-side keys left out)."""
        return {k: v for k, v in self.as_dict().items() if k not in FINETUNE_KEYS}

    def ablation(self) -> str:
        """A short label of the parts switched off, e.g. ``no mixer, no losses`` ('' when all are on)."""
        names = {"label_embeddings": "label embeddings", "mixer": "mixer", "flow_attention": "flow attention",
                 "losses": "losses"}
        return ", ".join(f"no {label}" for key, label in names.items() if not getattr(self, key))


_TYPES = {f.name: type(f.default) for f in fields(EnhancingDFQOptions)}


def _coerce(name: str, value: Any, parameter: str, source: str) -> Any:
    """``value`` of option ``name`` as its type; ``source`` (the file or assignment) leads the error."""
    if name not in _TYPES:
        raise D4CError(f"{source}: {name!r} is not an EnhancingDFQ option; choose from {', '.join(_TYPES)}.",
                       parameter)
    kind = _TYPES[name]
    if kind is float and isinstance(value, str):
        try:  # PyYAML reads 1e-3 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    expected = {bool: "true or false", int: "an integer"}.get(kind, "a number")
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise D4CError(f"{source}: option {name} must be {expected}, got {value!r}.", parameter)
    return float(value) if kind is float else value


def _read_file(path: str) -> dict[str, Any]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise D4CError(f"{path} does not exist.", FILE_PARAMETER)
    try:
        doc = yaml.safe_load(file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise D4CError(f"{path} is not valid YAML ({type(exc).__name__}).", FILE_PARAMETER) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise D4CError(f"{path} must hold a mapping of EnhancingDFQ options (key: value).", FILE_PARAMETER)
    return {str(k): _coerce(str(k), v, FILE_PARAMETER, str(path)) for k, v in doc.items()}


def _parse_assignment(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise D4CError(f"{text!r} must have the form KEY=VALUE (for example mixer=false).", PARAMETER)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), _coerce(key.strip(), value, PARAMETER, text)


def parse_options(config_file: str | None = None, assignments: Iterable[str] | None = (),
                  base: Mapping[str, Any] | None = None) -> EnhancingDFQOptions:
    """The options of ``base`` (a dict of option values, e.g. a saved generator's), then the YAML file, then
    the ``KEY=VALUE`` assignments (each may hold several, comma-separated); every problem is one sentence
    led by the parameter that set it (``edfq_config`` or ``edfq``)."""
    values: dict[str, Any] = {k: _coerce(k, v, PARAMETER, "saved settings") for k, v in (base or {}).items()}
    if config_file:
        values.update(_read_file(config_file))
    for text in assignments or ():
        for part in text.split(","):  # --edfq mixer=false,layers=3 sets both
            key, value = _parse_assignment(part)
            values[key] = value
    return EnhancingDFQOptions(**values)
