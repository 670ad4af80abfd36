"""Zero-shot classification through ``clip_benchmark`` (top-1, top-5, mean per-class recall)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from clip_benchmark.metrics import zeroshot_classification
from torch.utils.data import DataLoader, Dataset

from d4c.models.family import family_of


def evaluate_zeroshot(
    model: torch.nn.Module,
    dataset: Dataset,
    device: torch.device | str,
    batch_size: int = 64,
    num_workers: int = 4,
    amp: bool = True,
    tokenizer: Callable[[Sequence[str]], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Zero-shot metrics of ``model`` (anything with ``encode_image``/``encode_text``) on ``dataset``.

    ``dataset`` must carry ``classes`` and ``templates`` (as clip_benchmark's datasets do).
    Autocast is used only on CUDA and only when ``amp`` is true. ``tokenizer`` defaults to the
    model's own (:func:`d4c.models.family.family_of`: its tokenizer and context length).
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    tokenizer = tokenizer or family_of(model).tokenize
    model.eval()
    metrics = zeroshot_classification.evaluate(
        model,
        loader,
        tokenizer,
        dataset.classes,
        dataset.templates,
        device.type,
        amp=amp and device.type == "cuda",
    )
    return {k: float(v) for k, v in metrics.items()}
