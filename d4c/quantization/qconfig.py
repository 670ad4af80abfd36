"""Quantization config files (docs/method.md, "Quantization configs"): read, inherit, validate, type.

A file has four sections::

    a_qconfig: {quantizer, observer, bit, symmetric, ch_axis}   # activations
    w_qconfig: {quantizer, observer, bit, symmetric, ch_axis}   # weights
    calibrate: {visual, text}
    recon:     {visual_batch_size, text_batch_size, visual_scale_lr, text_scale_lr, warm_up, weight,
                iters, b_range, keep_gpu, round_mode, drop_prob[, token_loss, attention_unit, loss_sum]}

(``recon.token_loss``, ``recon.attention_unit`` and ``recon.loss_sum`` are optional, see
:class:`ReconConfig`) and may name a parent with
``root: other.yaml`` (relative to the file's folder): the parent's sections are read first and
the child's keys override them key by key. The whole file is checked
before any model is loaded; every problem is one :class:`D4CError` sentence naming the file and
the key (``exp/bad.yaml: w_qconfig.bit must be an integer in 2..16, got 1.``).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from d4c.errors import D4CError
from d4c.io import atomic_path, resolve_resource
from d4c.quantization.fake_quant import QUANTIZER_CLASSES
from d4c.quantization.observers import OBSERVER_CLASSES
from d4c.quantization.quantizer_config import QuantizerConfig

QUANTIZERS = tuple(QUANTIZER_CLASSES)
"""The quantizer classes a config may name (the registry in :mod:`d4c.quantization.fake_quant`)."""
OBSERVERS = tuple(OBSERVER_CLASSES)
"""The observer classes a config may name (the registry in :mod:`d4c.quantization.observers`)."""
ROUND_MODES = ("learned_hard_sigmoid",)
TOKEN_LOSSES = ("relevant", "all")
ATTENTION_UNITS = ("linear", "core")
LOSS_SUMS = ("dim1", "channels")
OPTIONAL_KEYS = {"recon": {"token_loss": "all", "attention_unit": "linear", "loss_sum": "dim1"}}
"""Keys a file may leave out, with their defaults (everything else is required)."""
BIT_RANGE = (2, 16)
QUANTIZER_KEYS = ("quantizer", "observer", "bit", "symmetric", "ch_axis")
SECTIONS = {
    "a_qconfig": QUANTIZER_KEYS,
    "w_qconfig": QUANTIZER_KEYS,
    "calibrate": ("visual", "text"),
    "recon": ("visual_batch_size", "text_batch_size", "visual_scale_lr", "text_scale_lr", "warm_up", "weight",
              "iters", "b_range", "keep_gpu", "round_mode", "drop_prob", "token_loss", "attention_unit", "loss_sum"),
}
MAX_ROOT_DEPTH = 16


@dataclass(frozen=True)
class CalibrateConfig:
    visual: int
    """Number of calibration images (and of reconstruction images)."""
    text: int
    """Number of calibration texts (and of reconstruction texts)."""


@dataclass(frozen=True)
class ReconConfig:
    """Block reconstruction hyper-parameters (docs/method.md, "Reconstruction"), named as in the paper's configs."""

    visual_batch_size: int
    text_batch_size: int
    visual_scale_lr: float
    text_scale_lr: float
    warm_up: float
    """Fraction of ``iters`` before the rounding loss starts."""
    weight: float
    """Weight of the rounding loss."""
    iters: int
    b_range: tuple[float, float]
    """Start and end of the rounding-loss exponent b (decayed linearly after warm-up)."""
    keep_gpu: bool
    """Keep cached unit inputs/outputs on the run's device (False: on the CPU)."""
    round_mode: str
    drop_prob: float
    """QDrop: probability of keeping an activation's quantized value during reconstruction."""
    token_loss: str = "all"
    """Token encoders: ``all`` (default, the reference's) averages the loss over every token, padding
    included; ``relevant`` only over the tokens that can reach the encoder output (text: up to the
    end-of-text token; last block's query/attention/MLP: the class or end-of-text token only)."""
    attention_unit: str = "linear"
    """``linear`` (default, the reference implementation's units): every quantized Linear of an
    attention is its own unit (q, k, v, out projection) and the activation quantizers on the
    projected q, k, v and on the softmax output belong to no unit (they keep their calibrated
    scales); ``core``: those four quantizers and the out projection form one attention-core unit
    whose input is the projected q, k, v (this project's earlier default)."""
    loss_sum: str = "dim1"
    """``dim1`` (default, the reference's ``((y_hat - y)^2).sum(1).mean()`` on batch-first
    tensors): the sum runs over tokens for transformer Linears (``[N, L, D]``) and over channels
    for convolutions, the mean over the rest; ``channels``: the sum runs over each token's
    features (conv: channels), the mean over images and tokens."""


@dataclass(frozen=True)
class QConfig:
    """A validated quantization config (after ``root`` inheritance and overrides)."""

    a_qconfig: QuantizerConfig
    w_qconfig: QuantizerConfig
    calibrate: CalibrateConfig
    recon: ReconConfig
    path: str = ""
    """The file it was read from (for messages and the result file)."""

    def as_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (YAML/JSON-able), without ``path``."""
        out = asdict(self)
        out.pop("path")
        out["recon"]["b_range"] = list(self.recon.b_range)
        return out


def _read_yaml(path: Path, shown: str) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise D4CError(f"{shown} cannot be read ({exc.strerror or type(exc).__name__}).", "q_config") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise D4CError(f"{shown} is not valid YAML ({problem}{where}).") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise D4CError(f"{shown} must hold a YAML mapping with a_qconfig, w_qconfig, calibrate and recon sections.")
    return doc


def _resolve_root(root: Any, parent_file: Path, shown: str) -> tuple[Path, str]:
    if not isinstance(root, str) or not root.strip():
        raise D4CError(f"{shown}: root must be the path of a parent config file, got {root!r}.")
    candidate = Path(root).expanduser()
    if not candidate.is_absolute():
        beside = parent_file.parent / candidate
        candidate = beside if beside.exists() else resolve_resource(root)
    if not candidate.is_file():
        raise D4CError(f"{shown}: root {root} does not exist (looked beside the file and in the repository).")
    return candidate, str(candidate)


def _merged_document(path: Path, shown: str, seen: tuple[Path, ...] = ()) -> tuple[dict, dict[str, str]]:
    """The file's sections merged over its ``root`` chain, and which file each key came from."""
    if len(seen) > MAX_ROOT_DEPTH or path.resolve() in seen:
        raise D4CError(f"{shown}: root forms a cycle or a chain deeper than {MAX_ROOT_DEPTH} files.")
    doc = _read_yaml(path, shown)
    merged: dict[str, dict] = {}
    origin: dict[str, str] = {}
    if "root" in doc:
        parent_path, parent_shown = _resolve_root(doc["root"], path, shown)
        merged, origin = _merged_document(parent_path, parent_shown, seen + (path.resolve(),))
    for section, body in doc.items():
        if section == "root":
            continue
        if section not in SECTIONS:
            raise D4CError(f"{shown}: unknown section {section!r}; expected {', '.join(SECTIONS)} (and root).")
        if not isinstance(body, dict):
            raise D4CError(f"{shown}: {section} must be a mapping of keys to values, got {body!r}.")
        target = merged.setdefault(section, {})
        for key, value in body.items():
            if key not in SECTIONS[section]:
                raise D4CError(f"{shown}: unknown key {section}.{key}; expected {', '.join(SECTIONS[section])}.")
            target[key] = value
            origin[f"{section}.{key}"] = shown
    return merged, origin


class _Checker:
    """Typed access to the merged document with one-sentence errors naming file and key."""

    def __init__(self, doc: dict, origin: dict[str, str], shown: str):
        self.doc, self.origin, self.shown = doc, origin, shown

    def fail(self, key: str, expected: str, value: Any) -> None:
        raise D4CError(f"{self.origin.get(key, self.shown)}: {key} must be {expected}, got {value!r}.")

    def get(self, section: str, key: str) -> Any:
        body = self.doc.get(section)
        if body is None:
            raise D4CError(f"{self.shown}: section {section} is missing (keys {', '.join(SECTIONS[section])}).")
        if key not in body:
            if key in OPTIONAL_KEYS.get(section, {}):
                return OPTIONAL_KEYS[section][key]
            raise D4CError(f"{self.shown}: {section}.{key} is missing.")
        return body[key]

    def integer(self, section: str, key: str, low: int, high: float = math.inf, expected: str = "") -> int:
        value = self.get(section, key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(f"{section}.{key}", expected or f"an integer of at least {low}", value)
        return value

    def number(self, section: str, key: str, low: float = 0.0, high: float = math.inf, low_open: bool = True,
               expected: str = "a positive number") -> float:
        value = self.get(section, key)
        number = _as_float(value)
        ok = (number is not None and math.isfinite(number) and number <= high
              and (number > low if low_open else number >= low))
        if not ok:
            self.fail(f"{section}.{key}", expected, value)
        return float(number)

    def boolean(self, section: str, key: str) -> bool:
        value = self.get(section, key)
        if not isinstance(value, bool):
            self.fail(f"{section}.{key}", "true or false", value)
        return value

    def choice(self, section: str, key: str, choices: tuple[str, ...]) -> str:
        value = self.get(section, key)
        if value not in choices:
            self.fail(f"{section}.{key}", f"one of {', '.join(choices)}", value)
        return value


def _as_float(value: Any) -> float | None:
    # PyYAML reads 1e-3 (no dot) as a string; accept any number-like value.
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _quantizer_config(check: _Checker, section: str) -> QuantizerConfig:
    quantizer = check.choice(section, "quantizer", QUANTIZERS)
    if section == "a_qconfig" and quantizer == "AdaRoundFakeQuantize":
        check.fail("a_qconfig.quantizer", "an activation quantizer (AdaRoundFakeQuantize rounds weights only)",
                   quantizer)
    observer = check.choice(section, "observer", OBSERVERS)
    bit = check.integer(section, "bit", BIT_RANGE[0], BIT_RANGE[1], expected="an integer in 2..16")
    symmetric = check.boolean(section, "symmetric")
    axes = (-1,) if section == "a_qconfig" else (-1, 0)
    ch_axis = check.get(section, "ch_axis")
    if isinstance(ch_axis, bool) or ch_axis not in axes:
        expected = ("-1 (per-tensor; per-channel activations are fixed by the model's exceptions)"
                    if section == "a_qconfig" else "-1 (per-tensor) or 0 (per output channel)")
        check.fail(f"{section}.ch_axis", expected, ch_axis)
    return QuantizerConfig(quantizer, observer, bit, symmetric, int(ch_axis))


def _recon_config(check: _Checker) -> ReconConfig:
    b_range = check.get("recon", "b_range")
    values = [_as_float(v) for v in b_range] if isinstance(b_range, (list, tuple)) else []
    if len(values) != 2 or any(v is None or not math.isfinite(v) or v <= 0 for v in values):
        check.fail("recon.b_range", "a list of two positive numbers [start, end]", b_range)
    return ReconConfig(
        visual_batch_size=check.integer("recon", "visual_batch_size", 1, expected="a positive integer"),
        text_batch_size=check.integer("recon", "text_batch_size", 1, expected="a positive integer"),
        visual_scale_lr=check.number("recon", "visual_scale_lr"),
        text_scale_lr=check.number("recon", "text_scale_lr"),
        warm_up=check.number("recon", "warm_up", high=1.0, low_open=False, expected="a number in [0, 1]"),
        weight=check.number("recon", "weight", low_open=False, expected="a non-negative number"),
        iters=check.integer("recon", "iters", 1, expected="a positive integer"),
        b_range=(float(values[0]), float(values[1])),
        keep_gpu=check.boolean("recon", "keep_gpu"),
        round_mode=check.choice("recon", "round_mode", ROUND_MODES),
        drop_prob=check.number("recon", "drop_prob", high=1.0, expected="a number in (0, 1]"),
        token_loss=check.choice("recon", "token_loss", TOKEN_LOSSES),
        attention_unit=check.choice("recon", "attention_unit", ATTENTION_UNITS),
        loss_sum=check.choice("recon", "loss_sum", LOSS_SUMS),
    )


def load_qconfig(path: str, recon_iters: int | None = None) -> QConfig:
    """Read, inherit (``root``) and validate ``path``; ``recon_iters`` overrides ``recon.iters``.

    Errors name the file and key (``exp/bad.yaml: w_qconfig.bit must be ...``); a missing or
    unreadable file is an error about the parameter ``q_config``.
    """
    resolved = resolve_resource(path)
    if not resolved.is_file():
        raise D4CError(f"{path} does not exist.", "q_config")
    doc, origin = _merged_document(resolved, path)
    if recon_iters is not None:
        doc = copy.deepcopy(doc)
        doc.setdefault("recon", {})["iters"] = recon_iters
        origin["recon.iters"] = "recon_iters"
    check = _Checker(doc, origin, path)
    return QConfig(
        a_qconfig=_quantizer_config(check, "a_qconfig"),
        w_qconfig=_quantizer_config(check, "w_qconfig"),
        calibrate=CalibrateConfig(
            visual=check.integer("calibrate", "visual", 1, expected="a positive integer"),
            text=check.integer("calibrate", "text", 1, expected="a positive integer"),
        ),
        recon=_recon_config(check),
        path=str(resolved),
    )


def qconfig_from_dict(data: dict[str, Any], path: str = "") -> QConfig:
    """Rebuild a :class:`QConfig` from :meth:`QConfig.as_dict` output (saved quantized states)."""
    recon = {**OPTIONAL_KEYS["recon"], **data["recon"]}
    recon["b_range"] = tuple(recon["b_range"])
    return QConfig(
        a_qconfig=QuantizerConfig(**data["a_qconfig"]),
        w_qconfig=QuantizerConfig(**data["w_qconfig"]),
        calibrate=CalibrateConfig(**data["calibrate"]),
        recon=ReconConfig(**recon),
        path=path,
    )


def write_derived_qconfig(path: str | os.PathLike, root: str | os.PathLike, overrides: dict[str, dict[str, Any]],
                          comment: str | None = None) -> Path:
    """Write (atomically) a config that inherits ``root`` (``root:``, made absolute) and overrides keys by section.

    ``write_derived_qconfig(p, "exp/config48.yaml", {"calibrate": {"visual": 32}})`` is W4A8 with 32
    calibration images; return ``path``.
    """
    path = Path(path)
    text = yaml.safe_dump({"root": str(Path(root).resolve()), **overrides}, sort_keys=False)
    with atomic_path(path) as tmp:
        tmp.write_text((f"# {comment}\n" if comment else "") + text)
    return path
