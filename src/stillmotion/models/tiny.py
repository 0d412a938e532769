"""Tiny builds of every family: the real classes at tiny sizes with seeded random weights, built offline.

Used by the test suite and by offline demos (tiny-i2vgen-xl, tiny-wan2.1-i2v, tiny-wan2.2-ti2v,
tiny-wan2.2-i2v-a14b, tiny-svd-xt, tiny-ltx-video): the same code paths as the real models (the diffusers
networks and schedulers, the
transformers text and vision towers, tokenizers of the real classes built from a hand-made vocabulary), with
the real VAE compression ratios so size and frame rules are the real ones; deterministic for a given seed, no
download. Their videos are noise: the weights are random.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLLTXVideo,
    AutoencoderKLTemporalDecoder,
    AutoencoderKLWan,
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    I2VGenXLUNet,
    LTXVideoTransformer3DModel,
    UNetSpatioTemporalConditionModel,
    UniPCMultistepScheduler,
    WanTransformer3DModel,
)
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
    UMT5Config,
    UMT5EncoderModel,
)

CROSS_ATTENTION_DIM = 32  # text hidden size == image projection size == UNet cross-attention size
VOCAB_SIZE = 1000  # >= the 514 byte-level tokens below
IMAGE_ENCODER_SIZE = 32  # CLIP input crop; the real model's is 224
SVD_IMAGE_SIZE = 224  # fixed in StableVideoDiffusionPipeline._encode_image


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


# -- T5-family models (Wan's UMT5, LTX-Video's T5) ---------------------------------------------------------

T5_WIDTH = 32  # tiny text hidden size == the transformers' text_dim / caption_channels


def build_tiny_t5_tokenizer(model_max_length: int) -> T5Tokenizer:
    """A character-level T5 tokenizer (transformers' own class, a Unigram vocab of printable ASCII).

    The real ones (google/umt5-xxl, google/t5-v1_1-xxl) ship a 250k/32k-piece vocabulary that cannot be
    downloaded here; the class, its special tokens (<pad>=0, </s>=1, <unk>=2), padding and truncation are the
    real ones. Characters outside ASCII become <unk>.
    """
    printable = [chr(code) for code in range(33, 127)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(char, -3.0) for char in printable] + [("▁" + char, -2.5) for char in printable]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


def _tiny_t5_config(config_class: type[T5Config] | type[UMT5Config], vocab_size: int) -> Any:
    return config_class(
        d_model=T5_WIDTH,
        d_ff=37,
        d_kv=8,
        num_heads=4,
        num_layers=2,
        vocab_size=vocab_size,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        pad_token_id=0,
        eos_token_id=1,
    )


def _tiny_clip_vision(with_projection: bool, image_size: int = IMAGE_ENCODER_SIZE) -> torch.nn.Module:
    config = CLIPVisionConfig(
        hidden_size=16,
        projection_dim=CROSS_ATTENTION_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        intermediate_size=37,
        patch_size=image_size // 8,  # 8 x 8 patches
    )
    tower: torch.nn.Module = (
        CLIPVisionModelWithProjection(config) if with_projection else CLIPVisionModel(config)
    )
    return tower


def _tiny_clip_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(
        crop_size={"height": IMAGE_ENCODER_SIZE, "width": IMAGE_ENCODER_SIZE},
        size={"shortest_edge": IMAGE_ENCODER_SIZE},
    )


# -- Wan ------------------------------------------------------------------------------------------------


def build_tiny_wan_components(seed: int = 0, *, ti2v: bool = False, experts: bool = False) -> dict[str, Any]:
    """Wan 2.1 I2V (CLIP image encoder, 8x/4x VAE) or, with ``ti2v``, Wan 2.2 TI2V (16x/4x VAE, no CLIP), or,
    with ``experts``, Wan 2.2 I2V A14B: two transformers of their own weights (high noise, low noise), no CLIP
    (the image reaches them through its VAE latents only), the Wan 2.1 VAE, ``boundary_ratio`` 0.9."""
    torch.manual_seed(seed)
    tokenizer = build_tiny_t5_tokenizer(model_max_length=512)
    text_encoder = UMT5EncoderModel(_tiny_t5_config(UMT5Config, len(tokenizer)))
    torch.manual_seed(seed + 1)
    if ti2v:
        # Wan 2.2's VAE: 2x2 pixel patches in, 8x downsampling inside: 16x, 48 latent channels.
        z_dim = 48
        vae = AutoencoderKLWan(
            base_dim=8,
            decoder_base_dim=8,
            z_dim=z_dim,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
            is_residual=True,
            in_channels=12,
            out_channels=12,
            patch_size=2,
            scale_factor_spatial=16,
            latents_mean=[0.1 * (i % 7 - 3) for i in range(z_dim)],
            latents_std=[0.5 + 0.05 * (i % 5) for i in range(z_dim)],
        )
    else:
        vae = AutoencoderKLWan(
            base_dim=3,
            z_dim=16,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
        )
    channels = vae.config.z_dim

    def tiny_transformer(weights_seed: int) -> WanTransformer3DModel:
        torch.manual_seed(weights_seed)
        return WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            # 2 x 16 = 32 wide: every linear layer's input is a multiple of the GGUF block size (32), so the
            # tests can quantize the tiny transformer as users' GGUF files are (tests/support/gguf_files.py).
            attention_head_dim=16,
            in_channels=channels if ti2v else 2 * channels + 4,  # I2V: latents + mask (4) + image latents
            out_channels=channels,
            text_dim=T5_WIDTH,
            freq_dim=256,
            ffn_dim=32,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
            image_dim=None if ti2v or experts else 16,
        )

    transformer = tiny_transformer(seed + 2)
    transformer_2 = tiny_transformer(seed + 4) if experts else None
    image_encoder = None
    if not ti2v and not experts:
        torch.manual_seed(seed + 3)
        image_encoder = _tiny_clip_vision(with_projection=False)
    # The real schedulers' settings (diffusers' convert_wan_to_diffusers.py): UniPC on flow sigmas.
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        num_train_timesteps=1000,
        flow_shift=5.0 if ti2v else 3.0,
    )
    for module in (transformer, transformer_2, vae, text_encoder, image_encoder):
        if module is not None:
            module.eval()
    parts = {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "image_encoder": image_encoder,
        "tokenizer": tokenizer,
        "image_processor": None if ti2v or experts else _tiny_clip_processor(),
        "scheduler": scheduler,
        "expand_timesteps": ti2v,
    }
    if experts:
        parts |= {"transformer_2": transformer_2, "boundary_ratio": 0.9}
    return parts


# -- Stable Video Diffusion -----------------------------------------------------------------------------


def build_tiny_svd_components(seed: int = 0) -> dict[str, Any]:
    """SVD-XT's classes: spatio-temporal UNet, temporal-decoder VAE (8x), CLIP image encoder, Euler."""
    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=8,  # noisy latents + image latents
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=CROSS_ATTENTION_DIM,
        num_attention_heads=(2, 4),
        projection_class_embeddings_input_dim=3 * 8,  # fps, motion bucket, noise strength x 8 each
        addition_time_embed_dim=8,
    )
    torch.manual_seed(seed + 1)
    # Four blocks: the real 8x downsampling. The temporal decoder's group norms need 32 channels.
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 32, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
    )
    torch.manual_seed(seed + 2)
    # SVD's pipeline resizes to 224 x 224 itself (no processor resize), so the tower takes the real size.
    image_encoder = _tiny_clip_vision(with_projection=True, image_size=SVD_IMAGE_SIZE)
    # The real model's scheduler config (stable-video-diffusion-img2vid-xt scheduler/scheduler_config.json).
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        interpolation_type="linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )
    for module in (unet, vae, image_encoder):
        module.eval()
    return {
        "unet": unet,
        "vae": vae,
        "image_encoder": image_encoder,
        "feature_extractor": _tiny_clip_processor(),
        "scheduler": scheduler,
    }


# -- LTX-Video ------------------------------------------------------------------------------------------


def build_tiny_ltx_components(seed: int = 0, *, timestep_conditioning: bool = False) -> dict[str, Any]:
    """LTX-Video's classes: transformer, 3-D VAE with the real 32x / 8x compression, T5, flow-match Euler.

    ``timestep_conditioning``: the VAE decodes at a timestep, as LTX-Video 0.9.1 and later do (the registered
    tiny build is 0.9.0's, without)."""
    torch.manual_seed(seed)
    tokenizer = build_tiny_t5_tokenizer(model_max_length=128)
    text_encoder = T5EncoderModel(_tiny_t5_config(T5Config, len(tokenizer)))
    torch.manual_seed(seed + 1)
    # 4x4 pixel patches and three space-time downsamplings: 32x in space, 8x in time, like LTX-Video 0.9.
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        patch_size=4,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
        timestep_conditioning=timestep_conditioning,
    )
    torch.manual_seed(seed + 2)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=T5_WIDTH,
    )
    # The real scheduler's settings (diffusers' convert_ltx_to_diffusers.py).
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )
    for module in (transformer, vae, text_encoder):
        module.eval()
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }
