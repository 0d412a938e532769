"""The tiny build is the real architecture, deterministic, and offline."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, I2VGenXLUNet
from transformers import CLIPTextModel, CLIPVisionModelWithProjection

from stillmotion.models.tiny import build_tiny_components, build_tiny_tokenizer


def test_real_classes_with_the_real_downsampling_and_scaling() -> None:
    parts = build_tiny_components()
    assert isinstance(parts["unet"], I2VGenXLUNet) and isinstance(parts["vae"], AutoencoderKL)
    assert isinstance(parts["text_encoder"], CLIPTextModel)
    assert isinstance(parts["image_encoder"], CLIPVisionModelWithProjection)
    assert 2 ** (len(parts["vae"].config.block_out_channels) - 1) == 8
    assert parts["vae"].config.scaling_factor == 0.18125
    assert parts["scheduler"].config.prediction_type == "v_prediction"


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    a, b, c = build_tiny_components(0), build_tiny_components(0), build_tiny_components(1)
    for name in ("unet", "vae", "text_encoder", "image_encoder"):
        sa, sb, sc = a[name].state_dict(), b[name].state_dict(), c[name].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
        assert any(not torch.equal(sa[k], sc[k]) for k in sa), name


def test_tokenizer_reads_any_text_into_77_tokens() -> None:
    tokenizer = build_tiny_tokenizer()
    ids = tokenizer(["héllo, wörld ✨"], padding="max_length", max_length=77, truncation=True).input_ids[0]
    assert len(ids) == 77 and ids[0] == 0
    assert len(set(ids[1:14])) > 5  # characters map to distinct tokens, not all to "unknown"
