"""Faster image-encoder passes for generation that leave the encoder's outputs unchanged.

* ViT patch embedding: ``conv1`` has stride = kernel, no padding and no bias, so it is a
  patchify-and-matmul; on CPUs the convolution's input gradient (what generation needs) is several
  times slower than the matmul's. :func:`fast_image_encoder` swaps the module's forward for the
  matmul while generating and restores it afterwards.
* ResNet BatchNorm layers (eval mode: a per-channel affine map) are folded into the convolution
  before them while generating, for methods that do not read BN inputs (D4C; not BNS): the
  BN forward and backward passes (~15 % of a ResNet step on CPUs) disappear.
* ResNet image towers on the CPU take their input in channels-last memory format (oneDNN's
  preferred layout; about 20 % faster forward + backward here); values are identical.

They apply to both model families (OpenAI's and open_clip's ViTs and ModifiedResNets share these
layers; :func:`d4c.models.family.family_of` tells the kinds apart); other image towers run
unmodified. All are checked against the unmodified encoder in ``tests/generation/test_fastpaths.py``.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from d4c.models.family import RESNET, VIT, family_of

_MISSING = object()


def patch_embedding(conv: nn.Conv2d, images: torch.Tensor) -> torch.Tensor:
    """``conv(images)`` for a non-overlapping, bias-free patch convolution, as one matmul."""
    n, c, h, w = images.shape
    ph, pw = conv.kernel_size
    gh, gw = h // ph, w // pw
    patches = images[..., :gh * ph, :gw * pw].reshape(n, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5)
    out = patches.reshape(n * gh * gw, c * ph * pw) @ conv.weight.reshape(conv.out_channels, -1).t()
    return out.view(n, gh, gw, conv.out_channels).permute(0, 3, 1, 2)


def _is_patch_conv(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.bias is None and conv.stride == conv.kernel_size
            and conv.padding in ((0, 0), 0) and conv.dilation == (1, 1) and conv.groups == 1)


def conv_batchnorm_pairs(visual: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """(conv, BN) pairs where the BN is applied directly to the conv's output in a ModifiedResNet (either family):
    ``bnK(convK(x))`` in the stem and every Bottleneck, and the downsample branch's ``"0"``, ``"1"``."""
    pairs = []
    for module in visual.modules():
        for k in (1, 2, 3):
            conv, bn = getattr(module, f"conv{k}", None), getattr(module, f"bn{k}", None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                pairs.append((conv, bn))
        downsample = getattr(module, "downsample", None)
        if isinstance(downsample, nn.Sequential) and isinstance(downsample._modules.get("0"), nn.Conv2d) \
                and isinstance(downsample._modules.get("1"), nn.BatchNorm2d):
            pairs.append((downsample._modules["0"], downsample._modules["1"]))
    return pairs


@torch.no_grad()
def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return conv.weight * scale.view(-1, 1, 1, 1), bias


def _override(module: nn.Module, forward, saved: list) -> None:
    saved.append((module, vars(module).get("forward", _MISSING)))
    module.forward = forward


@contextlib.contextmanager
def fast_image_encoder(model: nn.Module, fold_batchnorm: bool = True) -> Iterator[None]:
    """While active: a ViT's patch embedding runs as a matmul; a ResNet's BatchNorms (eval mode) are
    folded into their convolutions when ``fold_batchnorm``. Everything is restored on exit, even on error."""
    visual, kind = model.visual, family_of(model).image_kind
    saved: list = []
    try:
        conv = getattr(visual, "conv1", None)
        if kind == VIT and _is_patch_conv(conv):
            _override(conv, lambda images, conv=conv: patch_embedding(conv, images), saved)
        if fold_batchnorm and kind == RESNET:
            for conv, bn in conv_batchnorm_pairs(visual):
                if bn.training or not bn.track_running_stats:
                    continue
                weight, bias = _folded(conv, bn)
                _override(conv, lambda x, c=conv, w=weight, b=bias: F.conv2d(x, w, b, c.stride, c.padding, c.dilation,
                                                                             c.groups), saved)
                _override(bn, lambda x: x, saved)
        yield
    finally:
        for module, previous in reversed(saved):
            if previous is _MISSING:
                del module.forward
            else:
                module.forward = previous


def encode_images(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``model.encode_image(images)``, with channels-last input for ResNet towers on the CPU."""
    if images.device.type == "cpu" and family_of(model).image_kind == RESNET:
        images = images.contiguous(memory_format=torch.channels_last)
    return model.encode_image(images)
