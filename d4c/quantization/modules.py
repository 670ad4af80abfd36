"""Quantized layers of CLIP (docs/method.md, "What is quantized"): Linear, Conv2d, attention, attention pooling.

Each quantized Linear/Conv2d has a weight quantizer and an input-activation quantizer in front of
it. Attention is split into q/k/v Linears and :class:`QuantAttentionCore`, which holds the
activation quantizers on the projected q, k, v and on the softmax output, the full-precision
products ``q k^T`` and ``A v``, and the output projection. Every layer reuses the wrapped
module's parameters (the packed in-projection is split into three Linears), so with its
quantizers disabled it computes what the original module computes.

Attention tensors follow the wrapped model's layout: sequence-first ``[L, N, D]`` (OpenAI's CLIP, the
ResNet attention pool) or batch-first ``[N, L, D]`` (open_clip's ``batch_first`` attention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from clip.model import AttentionPool2d
from torch import nn

from d4c.quantization.fake_quant import FakeQuantizeBase, build_quantizer
from d4c.quantization.quantizer_config import QuantizerConfig

WEIGHT, ACTIVATION = "weight", "activation"


def _quantizer(config: QuantizerConfig, role: str, ch_axis: int | None = None, channels: int = 1) -> FakeQuantizeBase:
    quantizer = build_quantizer(config, ch_axis=ch_axis, channels=channels)
    quantizer.role = role  # weight or activation: calibration and reconstruction treat them differently
    return quantizer


class QuantLinear(nn.Module):
    """``nn.Linear`` with weight and input quantizers; ``act_ch_axis`` makes the input per-channel."""

    def __init__(self, linear: nn.Linear, w_config: QuantizerConfig, a_config: QuantizerConfig,
                 act_ch_axis: int | None = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.weight_quantizer = _quantizer(w_config, WEIGHT, channels=self.out_features)
        self.input_quantizer = _quantizer(a_config, ACTIVATION, ch_axis=act_ch_axis, channels=self.in_features)
        self.to(self.weight.device)  # the quantizers' scales live with the weight

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias)


class QuantConv2d(nn.Module):
    """``nn.Conv2d`` (zero padding) with weight and input quantizers."""

    def __init__(self, conv: nn.Conv2d, w_config: QuantizerConfig, a_config: QuantizerConfig):
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ValueError(f"only zero-padded convolutions are supported, got padding_mode={conv.padding_mode}")
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.in_channels, self.out_channels, self.kernel_size = conv.in_channels, conv.out_channels, conv.kernel_size
        self.weight_quantizer = _quantizer(w_config, WEIGHT, channels=self.out_channels)
        self.input_quantizer = _quantizer(a_config, ACTIVATION, channels=self.in_channels)
        self.to(self.weight.device)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias, self.stride,
                        self.padding, self.dilation, self.groups)


class QuantAttentionCore(nn.Module):
    """Multi-head attention after the projections: quantized q, k, v and softmax, then the out projection.

    Inputs are the projected ``q`` ``[Lq, N, E]`` and ``k``, ``v`` ``[Lk, N, E]`` (``[N, L, E]`` when
    ``batch_first``); ``attn_mask`` is CLIP's additive float mask (or a boolean mask, True = masked).
    """

    def __init__(self, embed_dim: int, num_heads: int, out_proj: QuantLinear, a_config: QuantizerConfig,
                 batch_first: bool = False):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.batch_first = embed_dim, num_heads, batch_first
        self.head_dim = embed_dim // num_heads
        self.q_quantizer = _quantizer(a_config, ACTIVATION)
        self.k_quantizer = _quantizer(a_config, ACTIVATION)
        self.v_quantizer = _quantizer(a_config, ACTIVATION)
        self.softmax_quantizer = _quantizer(a_config, ACTIVATION)
        self.out_proj = out_proj
        self.to(out_proj.weight.device)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[N * heads, L, head_dim]`` (batch-major heads, as ``nn.MultiheadAttention`` orders them)."""
        if self.batch_first:
            batch, length, _ = x.shape
            return x.reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2).reshape(
                batch * self.num_heads, length, self.head_dim)
        length, batch, _ = x.shape
        return x.reshape(length, batch * self.num_heads, self.head_dim).transpose(0, 1)

    def _merge_heads(self, out: torch.Tensor, batch: int, length: int) -> torch.Tensor:
        if self.batch_first:
            return out.reshape(batch, self.num_heads, length, self.head_dim).transpose(1, 2).reshape(
                batch, length, self.embed_dim)
        return out.transpose(0, 1).reshape(length, batch, self.embed_dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length = (q.shape[0], q.shape[1]) if self.batch_first else (q.shape[1], q.shape[0])
        q = self._heads(self.q_quantizer(q)) * self.head_dim ** -0.5
        k = self._heads(self.k_quantizer(k))
        v = self._heads(self.v_quantizer(v))
        scores = torch.bmm(q, k.transpose(1, 2))
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                scores = scores.masked_fill(attn_mask, float("-inf"))
            else:
                scores = scores + attn_mask.to(scores.dtype)
        attn = self.softmax_quantizer(torch.softmax(scores, dim=-1))
        return self.out_proj(self._merge_heads(torch.bmm(attn, v), batch, length))


def _split_linear(weight: torch.Tensor, bias: torch.Tensor | None, part: int, width: int) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], width, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight[part * width:(part + 1) * width])
        if bias is not None:
            linear.bias.copy_(bias[part * width:(part + 1) * width])
    return linear


class QuantMultiheadAttention(nn.Module):
    """Drop-in for CLIP's ``nn.MultiheadAttention`` (sequence-first or batch-first, no extra k/v biases)."""

    def __init__(self, mha: nn.MultiheadAttention, w_config: QuantizerConfig, a_config: QuantizerConfig,
                 input_ch_axis: int | None = None):
        super().__init__()
        if mha.bias_k is not None or mha.add_zero_attn or not mha._qkv_same_embed_dim:
            raise ValueError("only CLIP's self-attention with a packed in-projection can be quantized")
        width = mha.embed_dim
        self.embed_dim, self.num_heads, self.batch_first = width, mha.num_heads, mha.batch_first
        self.q_proj, self.k_proj, self.v_proj = (
            QuantLinear(_split_linear(mha.in_proj_weight, mha.in_proj_bias, i, width), w_config, a_config,
                        act_ch_axis=input_ch_axis)
            for i in range(3)
        )
        out_proj = QuantLinear(mha.out_proj, w_config, a_config)
        self.core = QuantAttentionCore(width, mha.num_heads, out_proj, a_config, batch_first=mha.batch_first)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, need_weights: bool = False,
                attn_mask: torch.Tensor | None = None, **unused) -> tuple[torch.Tensor, None]:
        if need_weights:
            raise ValueError("the quantized attention does not return attention weights")
        # attn_mask by keyword: reconstruction caches positional (batched) arguments only.
        return self.core(self.q_proj(query), self.k_proj(key), self.v_proj(value), attn_mask=attn_mask), None


class QuantAttentionPool2d(nn.Module):
    """ModifiedResNet's ``AttentionPool2d`` with quantized q/k/v/c_proj (``core.out_proj`` is c_proj)."""

    def __init__(self, pool: AttentionPool2d, w_config: QuantizerConfig, a_config: QuantizerConfig):
        super().__init__()
        width = pool.q_proj.in_features
        self.positional_embedding = pool.positional_embedding
        self.num_heads = pool.num_heads
        self.q_proj = QuantLinear(pool.q_proj, w_config, a_config)
        self.k_proj = QuantLinear(pool.k_proj, w_config, a_config)
        self.v_proj = QuantLinear(pool.v_proj, w_config, a_config)
        self.core = QuantAttentionCore(width, pool.num_heads, QuantLinear(pool.c_proj, w_config, a_config), a_config)

    @property
    def c_proj(self) -> QuantLinear:
        return self.core.out_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(start_dim=2).permute(2, 0, 1)  # NCHW -> (HW)NC
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
        x = x + self.positional_embedding[:, None, :].to(x.dtype)
        return self.core(self.q_proj(x[:1]), self.k_proj(x), self.v_proj(x)).squeeze(0)
