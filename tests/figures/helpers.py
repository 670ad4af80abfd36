"""Helpers of the figure tests: saved quantized models and result files made as the pipeline makes them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from d4c.data.prompts import DIGITS_PROMPTS, calibration_tokens, load_prompt_file
from d4c.generation.engine import initial_images
from d4c.quantization.calibration import calibrate
from d4c.quantization.qconfig import load_qconfig, write_derived_qconfig
from d4c.quantization.quant_clip import quantize_clip
from d4c.quantization.state import quant_state_path, save_quant_state

REPO = Path(__file__).resolve().parents[2]


def make_state(vit, folder: Path, bits: str, method: str, model_name: str = "tiny-vit") -> Path:
    """Quantize a copy of tiny-vit (min-max observers), calibrate on noise, save it as a run would; return the path."""
    config = write_derived_qconfig(folder / f"config{bits}_minmax.yaml", REPO / "exp" / f"config{bits}.yaml",
                                   {"a_qconfig": {"observer": "MinMaxObserver"},
                                    "w_qconfig": {"observer": "MinMaxObserver"}})
    qconfig = load_qconfig(str(config))
    model = quantize_clip(copy.deepcopy(vit.model), qconfig)
    prompt_set = load_prompt_file(str(DIGITS_PROMPTS))
    tokens = calibration_tokens(["a photo of the digit {c}."], prompt_set, 16, 0, model.context_length)
    calibrate(model, initial_images(8, vit.resolution, 0)[0], tokens, progress=False)
    path = quant_state_path(folder / f"{model_name}_w{bits}_{method}.json")
    save_quant_state(path, model, qconfig, model_name, info={"method": method, "recon": False, "seed": 0})
    return path


def write_result(folder: Path, name: str, model: str = "tiny-vit", dataset: str = "digits", method: str = "d4c3",
                 acc1: float = 0.9, seed: int = 0, bits: tuple[int, int] | None = (4, 8), recon: bool = True,
                 units: list[dict] | None = None, **extra) -> Path:
    """A result file with the keys the pipeline writes (the figures read these); ``extra``: more keys (args, ...)."""
    record = {"dataset": dataset, "model": model, "task": "zeroshot_classification",
              "metrics": {"acc1": acc1, "acc5": 1.0, "mean_per_class_recall": acc1}, "language": "en",
              "method": method, "recon": recon, "seed": seed,
              "q_config": None if bits is None else {"w_qconfig": {"bit": bits[0]}, "a_qconfig": {"bit": bits[1]}}}
    if units is not None:
        record["reconstruction_units"] = units
    record.update(extra)
    path = folder / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path
