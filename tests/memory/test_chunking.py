"""Feed-forward chunking is exact: chunked output == unchunked output on the tiny model (CPU, fp32)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from diffusers.models.attention import FeedForward

from stillmotion.memory.chunking import (
    chunk_bounds,
    disable_ff_chunking,
    enable_ff_chunking,
    feed_forwards,
    ff_chunking_enabled,
    rows_per_chunk,
)
from stillmotion.memory.estimate import ff_chunk_mib_for, latent_tokens
from stillmotion.memory.types import Shape
from stillmotion.models.registry import I2VGENXL
from tests.memory.conftest import run_unet


@pytest.mark.parametrize(
    ("rows", "max_rows", "expected"),
    [
        (10, 10, [(0, 10)]),
        (10, 4, [(0, 4), (4, 7), (7, 10)]),
        (7, 100, [(0, 7)]),
        (5, 1, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]),
    ],
)
def test_chunk_bounds_cover_rows_in_fewest_equal_chunks(
    rows: int, max_rows: int, expected: list[tuple[int, int]]
) -> None:
    assert chunk_bounds(rows, max_rows) == expected


def test_feed_forward_chunks_match_unchunked_and_really_chunk() -> None:
    torch.manual_seed(0)
    ff = FeedForward(64, activation_fn="geglu").eval()  # projection 64 -> 2 x 256 = 512 wide
    x = torch.randn(3, 700, 64)
    with torch.no_grad():
        expected = ff(x)
    calls: list[int] = []
    ff.net[0].register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape[0]))
    # 1 MiB cap / (512 x 4 bytes) = 512 rows per chunk -> 2100 rows in 5 chunks of 420.
    enable_ff_chunking(ff, 1)
    with torch.no_grad():
        chunked = ff(x)
    assert calls == [420] * 5
    assert chunked.shape == expected.shape
    torch.testing.assert_close(chunked, expected, atol=1e-5, rtol=0)


def test_chunking_reaches_every_feed_forward_including_the_image_latents_encoder(
    tiny: dict[str, Any],
) -> None:
    unet = tiny["unet"]
    names = [name for name, module in unet.named_modules() if isinstance(module, FeedForward)]
    assert any(name.startswith("image_latents_temporal_encoder") for name in names)
    assert any(name.startswith("transformer_in") for name in names)
    assert enable_ff_chunking(unet, 1) == len(feed_forwards(unet)) == len(names)
    assert ff_chunking_enabled(unet)
    disable_ff_chunking(unet)
    assert not ff_chunking_enabled(unet)


def test_chunked_unet_equals_unchunked_within_1e_5(
    tiny: dict[str, Any], unet_inputs: dict[str, torch.Tensor]
) -> None:
    unet = tiny["unet"]
    expected = run_unet(unet, unet_inputs)
    # The tiny UNet's widest projection (transformer_in) is 256 floats per token over 2 x 4 x 16 x 16 = 2048
    # tokens (2 MiB in fp32): a 1 MiB cap cuts it into 2 chunks; the 64-wide ones stay whole.
    enable_ff_chunking(unet, 1)
    chunked = run_unet(unet, unet_inputs)
    assert (chunked - expected).abs().max().item() <= 1e-5
    disable_ff_chunking(unet)
    assert torch.equal(run_unet(unet, unet_inputs), expected)


def test_planner_caps_cut_the_full_size_unet_into_a_few_large_chunks() -> None:
    """The point of the cap: a handful of chunks per layer, not diffusers' chunk_size=1 (16-4096)."""
    spec = I2VGENXL
    for size, frames, batch in [(512, 16, 2), (768, 16, 2), (1024, 16, 1), (1024, 32, 2)]:
        shape = Shape(size, size, frames)
        cap_mib = ff_chunk_mib_for(spec, shape, batch=batch)
        tokens = latent_tokens(spec, shape, batch)
        max_rows = rows_per_chunk(spec.memory.denoiser_ff_proj_width, 2, cap_mib * 1024**2)
        assert 2 <= len(chunk_bounds(tokens, max_rows)) <= 8, (size, frames, batch, cap_mib)
