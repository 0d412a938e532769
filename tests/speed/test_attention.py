"""The attention re-routing is exact: every backend and the zero-padded narrow heads match the stock UNet."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from stillmotion.models.tiny import build_tiny_components
from stillmotion.speed import attention
from stillmotion.speed.attention import (
    SpeedAttnProcessor,
    padded_width,
    record_attention_shapes,
    restore_attention,
    sdpa,
    set_attention,
)
from stillmotion.speed.options import AttentionBackend

TOL = 1e-5  # fp32 on the CPU: only the reduction order may differ


@pytest.fixture(scope="module")
def unet_and_call() -> tuple[Any, Any]:
    unet = build_tiny_components(seed=0)["unet"].eval()
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 4, 4, 8, 8, generator=gen)
    kwargs = {
        "encoder_hidden_states": torch.randn(2, 77, 32, generator=gen),
        "fps": torch.tensor([8, 8]),
        "image_latents": torch.randn(2, 4, 4, 8, 8, generator=gen),
        "image_embeddings": torch.randn(2, 1, 32, generator=gen),
        "return_dict": False,
    }

    def call() -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = unet(latents, torch.tensor(500), **kwargs)[0]
        return out

    return unet, call


@pytest.mark.parametrize("width", [5, 10, 20])
@pytest.mark.parametrize("pad", [None, 8, 16])
@pytest.mark.parametrize("backend", [AttentionBackend.DEFAULT, AttentionBackend.MATH, AttentionBackend.FLASH])
def test_sdpa_narrow_heads_equal_reference(width: int, pad: int | None, backend: AttentionBackend) -> None:
    gen = torch.Generator().manual_seed(width)
    q, k, v = (torch.randn(2, 64, n, width, generator=gen) for n in (33, 17, 17))
    ref = torch.softmax(q @ k.transpose(-1, -2) / width**0.5, dim=-1) @ v
    out = sdpa(q, k, v, backend=backend, pad_head_dim=pad)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=TOL, rtol=TOL)


def test_padded_width() -> None:
    assert [padded_width(w, 8) for w in (5, 10, 20, 64)] == [8, 16, 24, 64]
    assert padded_width(5, None) == 5


@pytest.mark.parametrize(
    ("backend", "pad"),
    [(AttentionBackend.MATH, None), (AttentionBackend.FLASH, None), (AttentionBackend.DEFAULT, 8),
     (AttentionBackend.AUTO, 16)],
)  # fmt: skip
def test_unet_with_backend_equals_stock(
    unet_and_call: tuple[Any, Any], backend: AttentionBackend, pad: int
) -> None:
    unet, call = unet_and_call
    ref = call()
    assert set_attention(unet, backend, pad)
    try:
        assert all(isinstance(p, SpeedAttnProcessor) for p in unet.attn_processors.values())
        out = call()
    finally:
        restore_attention(unet)
    assert all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values())
    torch.testing.assert_close(out, ref, atol=TOL, rtol=TOL)
    torch.testing.assert_close(call(), ref, atol=0, rtol=0)  # restored exactly


def test_auto_policy_routes_by_head_width(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[Any]] = []
    real = attention.sdpa_kernel

    def spy(backends: list[Any]) -> Any:
        seen.append(backends)
        return real(backends)

    monkeypatch.setattr(attention, "sdpa_kernel", spy)
    monkeypatch.setitem(attention.AUTO_POLICY, 5, AttentionBackend.MATH)
    q = torch.randn(1, 2, 4, 5)
    sdpa(q, q, q, backend=AttentionBackend.AUTO)
    sdpa(
        torch.randn(1, 2, 4, 10),
        torch.randn(1, 2, 4, 10),
        torch.randn(1, 2, 4, 10),
        backend=AttentionBackend.AUTO,
    )
    assert seen == [[torch.nn.attention.SDPBackend.MATH]]  # width 10 is unlisted: PyTorch's own choice


def test_default_backend_leaves_processors_alone(unet_and_call: tuple[Any, Any]) -> None:
    unet, _ = unet_and_call
    before = dict(unet.attn_processors)
    assert not set_attention(unet, AttentionBackend.DEFAULT, None)
    assert dict(unet.attn_processors) == before


def test_record_attention_shapes(unet_and_call: tuple[Any, Any]) -> None:
    unet, call = unet_and_call
    shapes = record_attention_shapes(unet, call)
    assert shapes and len(shapes) == len(set(shapes))
    widths = {s.head_dim for s in shapes}
    assert widths <= {4, 8, 32}  # tiny UNet: attention_head_dim=4 on 8 and 16 channels, 32-wide encoder
    assert any(s.kv_len == 4 for s in shapes)  # temporal attention over the 4 frames
    assert all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values())
