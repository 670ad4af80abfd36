"""Which images each optimiser step sees.

* ``reference`` (the paper's): each outer iteration visits consecutive mini-batches of
  ``gen_batch_size`` and takes one Adam step per mini-batch. A single Adam holds the whole image
  tensor, so images outside the mini-batch keep moving on their momentum.
* ``batched``: each outer iteration is one pass over every mini-batch at once and one Adam step;
  each mini-batch keeps its own loss (SCG negatives, BN / KDE statistics within the mini-batch).

A step is a list of chunks ``(slice of images, number of equal mini-batches in it)``; a last,
smaller mini-batch is a chunk of its own.
"""

from __future__ import annotations

Chunk = tuple[slice, int]


def minibatches(num_images: int, batch_size: int) -> list[slice]:
    """Consecutive mini-batches of ``batch_size`` covering ``num_images`` (the last may be smaller)."""
    return [slice(start, min(start + batch_size, num_images)) for start in range(0, num_images, batch_size)]


def schedule_steps(num_images: int, batch_size: int, schedule: str) -> list[list[Chunk]]:
    """The optimiser steps of one outer iteration, each a list of chunks."""
    if schedule == "reference":
        return [[(batch, 1)] for batch in minibatches(num_images, batch_size)]
    if schedule == "batched":
        full = num_images // batch_size
        chunks: list[Chunk] = []
        if full:
            chunks.append((slice(0, full * batch_size), full))
        if num_images % batch_size:
            chunks.append((slice(full * batch_size, num_images), 1))
        return [chunks]
    raise ValueError(f"unknown schedule {schedule!r}")
