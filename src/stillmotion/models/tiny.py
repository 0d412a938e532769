"""tiny-i2vgen-xl: the real I2VGen-XL classes at tiny sizes with seeded random weights, built offline.

Used by the test suite and by offline demos: same code paths as the real model (diffusers' I2VGenXLUNet,
AutoencoderKL with the real 8x downsampling, DDIMScheduler; transformers' CLIP text and vision towers and
a byte-level CLIP tokenizer written to a temporary folder), deterministic for a given seed, no download.
Its videos are noise: the weights are random.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, I2VGenXLUNet
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

CROSS_ATTENTION_DIM = 32  # text hidden size == image projection size == UNet cross-attention size
VOCAB_SIZE = 1000  # >= the 514 byte-level tokens below
IMAGE_ENCODER_SIZE = 32  # CLIP input crop; the real model's is 224


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable-unicode table, so any text tokenizes without a real vocab."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def build_tiny_tokenizer(folder: Path | None = None) -> CLIPTokenizer:
    """A byte-level CLIP tokenizer (no merges): one token per character, 77 long like the real one."""
    folder = folder or Path(tempfile.mkdtemp(prefix="stillmotion-tiny-tokenizer-"))
    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in _bytes_to_unicode().values():
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 77, "pad_token": "<|endoftext|>", "do_lower_case": True})
    )
    tokenizer: CLIPTokenizer = CLIPTokenizer.from_pretrained(str(folder))
    return tokenizer


def build_tiny_components(seed: int = 0) -> dict[str, Any]:
    """All seven pipeline components, fp32 on the CPU; the same seed gives the same weights."""
    torch.manual_seed(seed)
    unet = I2VGenXLUNet(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=CROSS_ATTENTION_DIM,
        attention_head_dim=4,
        num_attention_heads=None,
        norm_num_groups=2,
    )
    torch.manual_seed(seed + 1)
    # Four blocks: the real VAE's 8x downsampling, so latent sizes match the full model's.
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        sample_size=64,
        scaling_factor=0.18125,  # the value of ali-vilab/i2vgen-xl, not SD's 0.18215
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=CROSS_ATTENTION_DIM,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=VOCAB_SIZE,
            hidden_act="gelu",
            projection_dim=CROSS_ATTENTION_DIM,
            layer_norm_eps=1e-5,
        )
    )
    torch.manual_seed(seed + 3)
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=CROSS_ATTENTION_DIM,
            projection_dim=CROSS_ATTENTION_DIM,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=IMAGE_ENCODER_SIZE,
            intermediate_size=37,
            patch_size=4,
        )
    )
    # The real model's scheduler config (ali-vilab/i2vgen-xl scheduler/scheduler_config.json).
    scheduler = DDIMScheduler(
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="squaredcos_cap_v2",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=1,
        timestep_spacing="leading",
        rescale_betas_zero_snr=True,
        prediction_type="v_prediction",
    )
    feature_extractor = CLIPImageProcessor(
        crop_size={"height": IMAGE_ENCODER_SIZE, "width": IMAGE_ENCODER_SIZE},
        size={"shortest_edge": IMAGE_ENCODER_SIZE},
    )
    for module in (unet, vae, text_encoder, image_encoder):
        module.eval()
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "image_encoder": image_encoder,
        "tokenizer": build_tiny_tokenizer(),
        "feature_extractor": feature_extractor,
        "scheduler": scheduler,
    }
