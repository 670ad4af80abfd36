"""Zero-shot classification through ``clip_benchmark`` (top-1, top-5, mean per-class recall).

The classifier (one text embedding per class) is computed by :func:`d4c.evaluation.classifier.zeroshot_classifier`
(clip_benchmark's weights, batched across classes) and handed to ``clip_benchmark``'s ``evaluate``
as a saved classifier; everything else (the image pass, logits, metrics) is clip_benchmark's. The
quantized weights are fake-quantized once for the whole evaluation
(:func:`d4c.quantization.frozen.precomputed_weights`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Sequence

import torch
from clip_benchmark.metrics import zeroshot_classification
from torch.utils.data import DataLoader, Dataset

from d4c.evaluation.classifier import zeroshot_classifier
from d4c.models.family import family_of
from d4c.quantization.frozen import precomputed_weights


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
    tokenizer = tokenizer or family_of(model).tokenizer
    amp = amp and device.type == "cuda"
    model.eval()
    with precomputed_weights(model), tempfile.TemporaryDirectory(prefix="d4c-classifier-") as folder:
        classifier = zeroshot_classifier(model, dataset.classes, dataset.templates, device, amp=amp,
                                         tokenize=tokenizer)
        path = Path(folder) / "classifier.pt"
        torch.save(classifier.cpu(), path)
        metrics = zeroshot_classification.evaluate(
            model,
            loader,
            tokenizer,
            dataset.classes,
            dataset.templates,
            device.type,
            amp=amp,
            load_clfs=[str(path)],
        )
    return {k: float(v) for k, v in metrics.items()}
