"""Calibration data and calibration (SPEC 4.4).

* Texts: the evaluation dataset's zero-shot templates x the ``--custom_file`` class names, shuffled
  with the run's seed, the first ``calibrate.text``, tokenized.
* Images (``calibrate.visual``, normalised CLIP pixels): random training-split images (real-data
  PTQ), Gaussian noise ``N(0, 1)`` (``--dfq``), or pseudo images (``--dfq --gen_img``), all from
  :func:`calibration_images`.
* Calibration: activation observers see one forward of the first 32 images and 32 texts through
  the full-precision model (every quantizer off), then the weight observers see the weights
  directly (no forward pass; batched and cached, :mod:`d4c.quantization.weight_ranges`); then
  every quantizer is switched on.
"""

from __future__ import annotations

import clip
import torch
from torch.utils.data import DataLoader, Subset

from d4c.config import RunConfig
from d4c.data.datasets import build_dataset
from d4c.data.prompts import PromptSet, calibration_texts
from d4c.errors import D4CError
from d4c.models.loading import LoadedModel
from d4c.quantization.modules import ACTIVATION, WEIGHT
from d4c.quantization.quant_clip import enable_quantization, set_quant_state
from d4c.quantization.weight_ranges import WeightObservation, WeightRangeCache, observe_weights

ACTIVATION_SAMPLES = 32
"""Images and texts the activation observers see (one forward each)."""


def calibration_images(config: RunConfig, loaded: LoadedModel, num_images: int,
                       device: torch.device | str) -> torch.Tensor:
    """``num_images`` calibration images ``[B, 3, R, R]`` in normalised CLIP pixel space, on ``device``.

    Real-data PTQ: random images of ``--train_split`` (seeded, without replacement). ``--dfq``:
    seeded ``N(0, 1)`` noise. ``--dfq --gen_img``: the pseudo images of the generation stage.
    """
    generator = torch.Generator().manual_seed(config.seed)
    resolution = loaded.resolution
    if config.dfq and config.gen_img:
        # Imported here: generation depends on models and data only, not on quantization.
        from d4c.generation import synthesize_for_run

        return synthesize_for_run(config, loaded, num_images, device)
    if config.dfq:
        return torch.randn(num_images, 3, resolution, resolution, generator=generator).to(device)
    train = build_dataset(config.dataset, config.dataset_root, config.train_split, loaded.preprocess)
    if len(train) < num_images:
        raise D4CError(f"--train_split {config.train_split} of {config.dataset} has {len(train)} images, fewer than "
                       f"the {num_images} calibration images calibrate.visual asks for.")
    indices = torch.randperm(len(train), generator=generator)[:num_images].tolist()
    loader = DataLoader(Subset(train, indices), batch_size=64, shuffle=False, num_workers=config.num_workers)
    images = torch.cat([batch for batch, _ in loader])
    return images.to(device)


def calibration_tokens(templates: list[str] | tuple[str, ...], prompts: PromptSet, count: int, seed: int,
                       context_length: int = 77) -> torch.Tensor:
    """Tokenized calibration texts ``[count, context_length]`` (fewer if there are fewer texts)."""
    texts = calibration_texts(templates, prompts.classnames, count, seed)
    return clip.tokenize(texts, context_length=context_length, truncate=True)


@torch.no_grad()
def calibrate(model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor,
              samples: int = ACTIVATION_SAMPLES, progress: bool = True,
              range_cache: WeightRangeCache | None = None) -> WeightObservation:
    """Set every quantizer's scale and zero point of a wrapped CLIP ``model``; leave them all enabled.

    ``images`` and ``tokens`` must be on the model's device; the first ``samples`` of each are used
    for the activation observers. The weight observers run batched (:func:`observe_weights`), their
    ranges taken from / stored in ``range_cache`` when one is given.
    """
    model.eval()
    set_quant_state(model, observe=False, quantize=False)
    set_quant_state(model, observe=True, quantize=False, role=ACTIVATION)
    model.encode_image(images[:samples])
    model.encode_text(tokens[:samples])
    set_quant_state(model, observe=False, quantize=False)
    report = observe_weights(model, range_cache, progress=progress)
    set_quant_state(model, observe=False, quantize=True, role=WEIGHT)
    enable_quantization(model)
    return report
