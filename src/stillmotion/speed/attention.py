"""Attention backend choice per head width, and an exact zero-padding re-layout of narrow heads.

I2VGen-XL runs 64 heads at every level, so heads are only 5, 10 and 20 wide: poor tiles for tensor cores,
and fused kernels that want widths in multiples of 8 pad or refuse. ``SpeedAttnProcessor`` is diffusers'
``AttnProcessor2_0`` with the SDPA call made pluggable: it runs under ``torch.nn.attention.sdpa_kernel`` with
the backends chosen for the head width, and optionally zero-pads q, k, v to a wider head. Padding is exact:
zero columns add nothing to q.k (the softmax scale stays 1/sqrt(true width)) and give zero output columns,
which are cut off. It can also record the attention shapes a UNet call uses, for the benchmark's sweep.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812  # the PyTorch convention
from torch.nn.attention import SDPBackend, sdpa_kernel

from stillmotion.speed.options import AttentionBackend

BACKENDS: dict[AttentionBackend, tuple[SDPBackend, ...]] = {
    AttentionBackend.MATH: (SDPBackend.MATH,),
    AttentionBackend.FLASH: (SDPBackend.FLASH_ATTENTION,),
    AttentionBackend.EFFICIENT: (SDPBackend.EFFICIENT_ATTENTION,),
    AttentionBackend.CUDNN: (SDPBackend.CUDNN_ATTENTION,),
}

# Head width -> backend for AttentionBackend.AUTO. Empty until the GPU sweep (issue 5) measures it: an
# unlisted width keeps PyTorch's own choice, so AUTO is DEFAULT until then. To measure.
AUTO_POLICY: dict[int, AttentionBackend] = {}


@dataclass(frozen=True)
class AttentionShape:
    """One attention call: (batch, heads, query tokens, key tokens, head width) and dtype."""

    batch: int
    heads: int
    q_len: int
    kv_len: int
    head_dim: int
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "heads": self.heads,
            "q_len": self.q_len,
            "kv_len": self.kv_len,
            "head_dim": self.head_dim,
            "dtype": self.dtype,
        }


def padded_width(head_dim: int, multiple: int | None) -> int:
    """``head_dim`` rounded up to ``multiple`` (unchanged for None)."""
    if multiple is None:
        return head_dim
    return -(-head_dim // multiple) * multiple


def sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    backend: AttentionBackend = AttentionBackend.DEFAULT,
    pad_head_dim: int | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention on (batch, heads, tokens, width), with a backend and optional padding."""
    width = query.shape[-1]
    if backend is AttentionBackend.AUTO:
        backend = AUTO_POLICY.get(width, AttentionBackend.DEFAULT)
    wide = padded_width(width, pad_head_dim)
    scale = width**-0.5  # the true width's scale, also when padded
    if wide != width:
        pad = (0, wide - width)
        query, key, value = F.pad(query, pad), F.pad(key, pad), F.pad(value, pad)
    if backend is AttentionBackend.DEFAULT:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, scale=scale)
    else:
        with sdpa_kernel(list(BACKENDS[backend])):
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, scale=scale)
    return out[..., :width] if wide != width else out


class SpeedAttnProcessor:
    """diffusers ``AttnProcessor2_0`` (0.42.1) with a pluggable SDPA call; same math, line for line."""

    def __init__(
        self,
        backend: AttentionBackend = AttentionBackend.DEFAULT,
        pad_head_dim: int | None = None,
        record: list[AttentionShape] | None = None,
    ) -> None:
        self.backend = backend
        self.pad_head_dim = pad_head_dim
        self.record = record  # when a list: every call appends its shape (eager only; for the sweep)

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        # (batch, tokens, heads * width) -> (batch, heads, tokens, width)
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if self.record is not None:
            self.record.append(
                AttentionShape(
                    batch_size, attn.heads, query.shape[2], key.shape[2], head_dim, str(query.dtype)[6:]
                )
            )

        hidden_states = sdpa(query, key, value, attention_mask, self.backend, self.pad_head_dim)

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        out: torch.Tensor = hidden_states / attn.rescale_output_factor
        return out


_SAVED_PROCESSORS = "_stillmotion_saved_attn_processors"


def set_attention(unet: Any, backend: AttentionBackend, pad_head_dim: int | None = None) -> bool:
    """Install ``SpeedAttnProcessor`` on every attention of ``unet``; False (and no change) for DEFAULT."""
    if backend is AttentionBackend.DEFAULT and pad_head_dim is None:
        return False
    if getattr(unet, _SAVED_PROCESSORS, None) is None:
        setattr(unet, _SAVED_PROCESSORS, dict(unet.attn_processors))
    unet.set_attn_processor(SpeedAttnProcessor(backend, pad_head_dim))
    return True


def restore_attention(unet: Any) -> None:
    """Put back the processors ``set_attention`` replaced."""
    saved: Mapping[str, Any] | None = getattr(unet, _SAVED_PROCESSORS, None)
    if saved is not None:
        unet.set_attn_processor(dict(saved))
        setattr(unet, _SAVED_PROCESSORS, None)


def record_attention_shapes(unet: Any, call: Any) -> list[AttentionShape]:
    """The distinct attention shapes one ``call()`` of ``unet`` uses (processors restored afterwards)."""
    shapes: list[AttentionShape] = []
    saved = dict(unet.attn_processors)
    unet.set_attn_processor(SpeedAttnProcessor(record=shapes))
    try:
        call()
    finally:
        unet.set_attn_processor(saved)
    return list(dict.fromkeys(shapes))
