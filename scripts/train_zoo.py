#!/usr/bin/env python
"""Train the offline zoo's small CLIP models on scikit-learn's handwritten digits.

    python scripts/train_zoo.py                 # both models, written to d4c/models/checkpoints/
    python scripts/train_zoo.py --model tiny-rn --epochs 30

Each model is a ``clip.model.CLIP`` (architectures in ``d4c.models.architectures``), trained
contrastively on the digits train split (``d4c.data.digits``) with captions made of the digit
templates and digit names. As several images in a batch share a class, the CLIP loss uses soft
targets spread evenly over the same-class pairs, in both directions. The checkpoint is saved as
an fp16 state dict (atomically), reloaded through ``d4c.models.load_clip`` like any checkpoint
file, and evaluated zero-shot on the test split; the script fails if top-1 is below ``--min_acc1``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import d4c  # noqa: E402,F401  (before clip: silences its pkg_resources notice)
import clip  # noqa: E402

from d4c.data.digits import DIGIT_CLASSNAMES, DIGIT_TEMPLATES, DigitsDataset  # noqa: E402
from d4c.data.transforms import clip_transform  # noqa: E402
from d4c.evaluation import evaluate_zeroshot  # noqa: E402
from d4c.io import save_torch  # noqa: E402
from d4c.models.loading import load_checkpoint_file  # noqa: E402
from d4c.models.zoo import CHECKPOINT_DIR, ZOO_MODELS, zoo_architecture  # noqa: E402
from d4c.runtime import seed_everything  # noqa: E402

DEFAULTS = {
    # epochs, peak learning rate
    "tiny-vit": (40, 1e-3),
    "tiny-rn": (30, 2e-3),
}


def random_affine(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rotate (+-10 deg), scale (0.9..1.1) and shift (+-10%) each image; border padding."""
    b = images.shape[0]
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(10)
    scale = 1 + (torch.rand(b, generator=generator) * 2 - 1) * 0.1
    shift = (torch.rand(b, 2, generator=generator) * 2 - 1) * 0.2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def soft_clip_loss(image_features, text_features, labels, logit_scale):
    """Symmetric CLIP loss whose targets are uniform over same-class pairs."""
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    logits = logit_scale * image_features @ text_features.t()
    same = (labels[:, None] == labels[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    loss_i = -(target * logits.log_softmax(1)).sum(1).mean()
    loss_t = -(target * logits.t().log_softmax(1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def train(name: str, epochs: int, lr: float, batch_size: int, seed: int, out_dir: Path, min_acc1: float) -> dict:
    seed_everything(seed)
    arch = zoo_architecture(name)
    model = arch.build(seed=seed).train()
    transform = clip_transform(arch.image_resolution)
    train_set = DigitsDataset("train", transform)
    images = torch.stack([train_set[i][0] for i in range(len(train_set))])
    labels = torch.as_tensor(train_set.targets)
    # Every caption: template t for class c at row c * T + t.
    captions = clip.tokenize([t.format(c=c) for c in DIGIT_CLASSNAMES for t in DIGIT_TEMPLATES])
    n_templates = len(DIGIT_TEMPLATES)

    steps_per_epoch = math.ceil(len(images) / batch_size)
    total = epochs * steps_per_epoch
    warmup = steps_per_epoch * 2
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    gen = torch.Generator().manual_seed(seed)
    start = time.time()
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=gen)
        running = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * batch_size:(step + 1) * batch_size]
            x = random_affine(images[idx], gen)
            y = labels[idx]
            caption_idx = y * n_templates + torch.randint(n_templates, (len(idx),), generator=gen)
            loss = soft_clip_loss(model.encode_image(x), model.encode_text(captions[caption_idx]), y,
                                  model.logit_scale.exp().clamp(max=100))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running += loss.item()
        if epoch % 10 == 0 or epoch == epochs - 1:
            print(f"[{name}] epoch {epoch + 1}/{epochs} loss {running / steps_per_epoch:.4f} "
                  f"({time.time() - start:.0f} s)", flush=True)
    train_seconds = time.time() - start

    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    path = out_dir / f"{name}.pt"
    save_torch(path, state)
    size_mb = os.path.getsize(path) / 2**20

    reloaded = load_checkpoint_file(path)
    metrics = evaluate_zeroshot(reloaded, DigitsDataset("test", transform), "cpu", batch_size=256, num_workers=0)
    record = {"model": name, "epochs": epochs, "lr": lr, "seed": seed, "train_seconds": round(train_seconds, 1),
              "checkpoint": str(path), "checkpoint_mb": round(size_mb, 2), **metrics}
    print(json.dumps(record), flush=True)
    if metrics["acc1"] < min_acc1:
        raise SystemExit(f"{name}: zero-shot top-1 {metrics['acc1']:.3f} is below --min_acc1 {min_acc1}.")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all", choices=["all", *ZOO_MODELS], help="which zoo model to train")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: per model, see DEFAULTS)")
    parser.add_argument("--lr", type=float, default=None, help="peak AdamW learning rate (default: per model)")
    parser.add_argument("--batch_size", type=int, default=128, help="training batch size")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, augmentation and order")
    parser.add_argument("--out_dir", type=Path, default=CHECKPOINT_DIR, help="where checkpoints are written")
    parser.add_argument("--min_acc1", type=float, default=0.85, help="fail below this zero-shot top-1")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    names = list(ZOO_MODELS) if args.model == "all" else [args.model]
    for name in names:
        epochs, lr = DEFAULTS[name]
        train(name, args.epochs or epochs, args.lr or lr, args.batch_size, args.seed, args.out_dir, args.min_acc1)


if __name__ == "__main__":
    main()
