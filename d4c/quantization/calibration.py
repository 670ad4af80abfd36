"""Calibration (docs/method.md, "Calibration"): every quantizer's scale and zero point from one pass.

The activation observers see one forward of the first 32 calibration images and 32 texts
through the full-precision model (every quantizer off); then the weight observers see the
weights directly (no forward pass; batched and cached, :mod:`d4c.quantization.weight_ranges`);
then every quantizer is switched on. Which images and texts
calibrate a run is the pipeline's choice (:mod:`d4c.pipeline`).

The MSE activation observers' range searches are chains of small operations that run with one
intra-op thread (barriers would dominate, :func:`d4c.runtime.intra_op_threads`), so on a CPU with
several threads they leave cores idle. :class:`DeferredObservations` keeps their inputs during the
forward (the output does not depend on them: fake quantization is off) and searches them on a
thread pool, one single-threaded search per quantizer, each quantizer's batches in the order seen:
the same ranges, bit for bit, as observing in the forward.

It also searches each distinct input once: the q, k and v projections of a self-attention block read
the same tensor, so their three input quantizers (same observer settings and state) would run three
identical searches. A search is a deterministic function of the observer's settings, its state and
the data, so the first quantizer of such a group searches and the others take its observer's state:
the same ranges, bit for bit, for a third of the work on those inputs. Inputs count as the same when
they are equal element for element (checked with ``torch.equal`` when a new input sits at a kept
input's address, shape and strides), whatever tensor object holds them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Iterator

import torch

from d4c.quantization.fake_quant import FakeQuantizeBase
from d4c.quantization.modules import ACTIVATION, WEIGHT
from d4c.quantization.quant_clip import enable_quantization, named_quantizers, set_quant_state
from d4c.quantization.weight_ranges import WeightObservation, WeightRangeCache, observe_weights
from d4c.runtime import intra_op_threads

ACTIVATION_SAMPLES = 32
"""Images and texts the activation observers see (one forward each)."""
DEFERRED_BYTES = 2**30
"""Activation inputs kept for the thread pool at most; reaching it searches what is kept, then goes on."""


class DeferredObservations:
    """Activation inputs kept during the calibration forward, then observed on a thread pool, each distinct
    input searched once per group of equivalent observers.

    Args:
        workers: searches at a time (the pool's threads; 1 searches one after another).
        max_bytes: the kept inputs' size at which they are searched before the forward goes on
            (default :data:`DEFERRED_BYTES`).
    """

    def __init__(self, workers: int, max_bytes: int | None = None) -> None:
        self.workers, self.max_bytes = workers, DEFERRED_BYTES if max_bytes is None else max_bytes
        self.kept: dict[FakeQuantizeBase, list[torch.Tensor]] = {}
        self.copies: dict[tuple, torch.Tensor] = {}  # (address, shape, strides, dtype) -> the copy kept of it
        self.bytes = 0
        self.searches = 0
        """Range searches run so far (a group of quantizers sharing inputs counts once)."""

    def __call__(self, quantizer: FakeQuantizeBase, x: torch.Tensor) -> None:
        x = x.detach()
        key = (x.data_ptr(), tuple(x.shape), x.stride(), x.dtype)
        copy = self.copies.get(key)
        if copy is None or not torch.equal(copy, x):
            # A copy: a later in-place operation of the forward (ResNets' ReLU(inplace=True)) must not change it.
            copy = self.copies[key] = x.clone()
            self.bytes += x.numel() * x.element_size()
        self.kept.setdefault(quantizer, []).append(copy)
        if self.bytes >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        """Observe everything kept (each quantizer's batches in order), then forget it."""
        groups: list[tuple[FakeQuantizeBase, list[torch.Tensor], list[FakeQuantizeBase]]] = []
        for quantizer, batches in self.kept.items():
            leader = next((g for g in groups if len(g[1]) == len(batches) and all(
                a is b for a, b in zip(g[1], batches)) and g[0].observer.equivalent(quantizer.observer)), None)
            if leader is None:
                groups.append((quantizer, batches, []))
            else:
                leader[2].append(quantizer)
        self.kept, self.copies, self.bytes = {}, {}, 0
        self.searches += len(groups)

        def observe(group: tuple[FakeQuantizeBase, list[torch.Tensor], list[FakeQuantizeBase]]) -> None:
            quantizer, batches, followers = group
            for x in batches:
                quantizer.observe(x)
            for follower in followers:
                follower.observer.adopt(quantizer.observer)
                follower.update_qparams()

        with intra_op_threads(1):
            if self.workers < 2:
                for group in groups:
                    observe(group)
                return
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                list(pool.map(observe, groups))  # re-raises a search's error here


@contextmanager
def deferred_activation_observers(model: torch.nn.Module, workers: int) -> Iterator[DeferredObservations | None]:
    """While the block runs, ``model``'s MSE activation observers on the CPU keep their inputs; they are
    searched on ``workers`` threads when it ends (nothing is deferred for ``workers`` < 1: each quantizer
    searches in the forward). Yields the :class:`DeferredObservations`, or None when nothing is deferred."""
    quantizers = [q for _, q in named_quantizers(model, ACTIVATION) if q.observer.searches
                  and q.scale.device.type == "cpu"]
    if workers < 1 or not quantizers:
        yield None
        return
    deferred = DeferredObservations(workers)
    for quantizer in quantizers:
        quantizer.observation_sink = deferred
    try:
        yield deferred
        deferred.flush()  # calls each quantizer's observe(), not its forward: the sinks may stay until then
    finally:
        for quantizer in quantizers:
            quantizer.observation_sink = None


@torch.no_grad()
def calibrate(model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor,
              samples: int = ACTIVATION_SAMPLES, progress: bool = True,
              range_cache: WeightRangeCache | None = None, workers: int | None = None) -> WeightObservation:
    """Set every quantizer's scale and zero point of a wrapped CLIP ``model``; leave them all enabled.

    Args:
        model: a CLIP wrapped by :func:`~d4c.quantization.quant_clip.quantize_clip`.
        images: calibration images ``[B, 3, R, R]`` in CLIP's normalised pixel space, on the model's device.
        tokens: tokenized calibration texts ``[T, context_length]``, on the model's device.
        samples: how many of the first images and texts the activation observers see.
        progress: show a progress bar over the weight observers.
        range_cache: where the weight ranges are looked up and stored (none when None).
        workers: threads of the MSE activation observers' searches on the CPU, run after the forward
            with shared inputs searched once (default: torch's intra-op thread count; 0 searches each
            quantizer's input in the forward, as the reference does).

    Returns:
        How the weight observers were served (batched layers, from the cache or not).
    """
    model.eval()
    set_quant_state(model, observe=False, quantize=False)
    set_quant_state(model, observe=True, quantize=False, role=ACTIVATION)
    with deferred_activation_observers(model, torch.get_num_threads() if workers is None else workers):
        model.encode_image(images[:samples])
        model.encode_text(tokens[:samples])
    set_quant_state(model, observe=False, quantize=False)
    report = observe_weights(model, range_cache, progress=progress)
    set_quant_state(model, observe=False, quantize=True, role=WEIGHT)
    enable_quantization(model)
    return report
