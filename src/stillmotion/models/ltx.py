"""The LTX-Video adapter (models/family.py): image-to-video with LTX-Video 0.9 (2B).

Every piece of math follows diffusers' LTXImageToVideoPipeline (diffusers 0.42.1, pipelines/ltx/
pipeline_ltx_image2video.py) so the frames equal it (tests/engine/test_family_equivalence.py); the latent
packing, normalisation and timestep shift are the pipeline's own functions. The image is the first latent
frame, kept clean: its tokens get timestep 0 and the scheduler steps only the frames after it. The VAE
posterior of the image is sampled from the generator before the noise, as in the pipeline. ``fps`` is the
output frame rate and the pipeline's ``frame_rate`` (it scales the rotary positions in time).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel
from diffusers.pipelines.ltx.pipeline_ltx_image2video import LTXImageToVideoPipeline, calculate_shift
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor

from stillmotion.models.family import (
    Cached,
    FamilyRequest,
    ModelFamily,
    ModuleRoles,
    NetworkBuilders,
    read_config,
)
from stillmotion.models.int8 import loading_kwargs

if TYPE_CHECKING:
    from stillmotion.models.registry import ModelSpec

MAX_SEQUENCE_LENGTH = 128  # LTXImageToVideoPipeline.__call__'s default: T5 tokens per prompt
# diffusers' LTXImageToVideoPipeline.model_cpu_offload_seq
ROLES = ModuleRoles(
    denoiser="transformer", encoders=("text_encoder",), offload_order=("text_encoder", "transformer", "vae")
)
_pack = LTXImageToVideoPipeline._pack_latents
_unpack = LTXImageToVideoPipeline._unpack_latents


@dataclass
class LTXComponents:
    """The parts of an LTX-Video checkpoint."""

    transformer: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"transformer": self.transformer, "vae": self.vae, "text_encoder": self.text_encoder}

    @property
    def patch(self) -> tuple[int, int]:
        """The transformer's (spatial, temporal) patch size."""
        config = self.transformer.config
        return int(config.patch_size), int(config.patch_size_t)


@dataclass(frozen=True)
class LTXConditioning:
    """Text states and masks (negative first when guided), the image's latent and the video's latent shape."""

    prompt_embeds: torch.Tensor  # (1 or 2, 128, D): [negative, positive] with guidance
    prompt_attention_mask: torch.Tensor  # (1 or 2, 128)
    image_latent: torch.Tensor  # (1, C, 1, h, w) normalised, float32
    conditioning_mask: torch.Tensor  # (1, tokens): 1 for the image's (first frame's) tokens
    latent_shape: tuple[int, int, int]  # (frames, height, width) of the latent video
    patch: tuple[int, int]  # the transformer's (spatial, temporal) patch size, to pack and unpack
    frame_rate: int
    guided: bool


@torch.no_grad()
def encode_text(components: LTXComponents, text: str, device: torch.device) -> torch.Tensor:
    """T5 states of the prompt padded to 128 tokens (the encoder sees no mask; the transformer does)."""
    ids = _tokens(components, text).input_ids
    states: torch.Tensor = components.text_encoder(ids.to(device))[0]
    return states.to(dtype=components.text_encoder.dtype, device=device)


def _cached_text(components: LTXComponents, text: str, device: torch.device, cached: Cached) -> torch.Tensor:
    return cached(("text", text), lambda: encode_text(components, text, device))


def _tokens(components: LTXComponents, text: str) -> Any:
    return components.tokenizer(
        [text],
        padding="max_length",
        max_length=MAX_SEQUENCE_LENGTH,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )


@torch.no_grad()
def encode_image_latent(
    components: LTXComponents,
    image: PIL.Image.Image,
    height: int,
    width: int,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The image's normalised VAE latent (1, C, 1, h, w), float32; the posterior sample is the generator's
    first draw."""
    vae = components.vae
    processor = VideoProcessor(vae_scale_factor=vae.spatial_compression_ratio)
    pixels = processor.preprocess(image, height=height, width=width).to(device=device, dtype=dtype)
    posterior = vae.encode(pixels[0].unsqueeze(0).unsqueeze(2)).latent_dist
    latent: torch.Tensor = posterior.sample(generator).to(torch.float32)
    mean: torch.Tensor = vae.latents_mean.view(1, -1, 1, 1, 1).to(latent.device, latent.dtype)
    std: torch.Tensor = vae.latents_std.view(1, -1, 1, 1, 1).to(latent.device, latent.dtype)
    return (latent - mean) * 1.0 / std  # the pipeline's _normalize_latents with scaling_factor 1.0


@torch.no_grad()
def predict_noise(
    components: LTXComponents,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    cond: LTXConditioning,
    guidance_scale: float,
    split_guidance: bool,
) -> torch.Tensor:
    """The guided velocity for the packed latents (tokens first); the image's tokens get timestep 0."""
    frames, height, width = cond.latent_shape
    compression = components.vae

    def run(embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch = embeds.shape[0]
        inputs = torch.cat([latents] * batch).to(embeds.dtype)
        steps = timestep.to(latents.device).expand(batch).unsqueeze(-1) * (1 - cond.conditioning_mask)
        out: torch.Tensor = components.transformer(
            hidden_states=inputs,
            encoder_hidden_states=embeds,
            timestep=steps,
            encoder_attention_mask=mask,
            num_frames=frames,
            height=height,
            width=width,
            rope_interpolation_scale=(
                compression.temporal_compression_ratio / cond.frame_rate,
                compression.spatial_compression_ratio,
                compression.spatial_compression_ratio,
            ),
            return_dict=False,
        )[0]
        return out.float()

    if not cond.guided:
        return run(cond.prompt_embeds, cond.prompt_attention_mask)
    if split_guidance:
        uncond = run(cond.prompt_embeds[:1], cond.prompt_attention_mask[:1])
        noise = run(cond.prompt_embeds[1:], cond.prompt_attention_mask[1:])
    else:
        uncond, noise = run(cond.prompt_embeds, cond.prompt_attention_mask).chunk(2)
    return uncond + guidance_scale * (noise - uncond)


def scheduler_step(
    scheduler: Any,
    noise_pred: torch.Tensor,
    timestep: torch.Tensor,
    latents: torch.Tensor,
    cond: LTXConditioning,
) -> torch.Tensor:
    """One step on every latent frame but the first (the image's, kept as it is)."""
    patch, patch_t = cond.patch
    noise = _unpack(noise_pred, *cond.latent_shape, patch, patch_t)
    video = _unpack(latents, *cond.latent_shape, patch, patch_t)
    stepped = scheduler.step(noise[:, :, 1:], timestep, video[:, :, 1:], return_dict=False)[0]
    packed: torch.Tensor = _pack(torch.cat([video[:, :, :1], stepped], dim=2), patch, patch_t)
    return packed


@torch.no_grad()
def decode_latents(
    components: LTXComponents,
    latents: torch.Tensor,
    cond: LTXConditioning,
    vae_tiling: bool,
    request: FamilyRequest,
    generator: torch.Generator,
) -> torch.Tensor:
    """Packed latents -> float32 frames (frames, height, width, 3) in [0, 1]; the VAE decodes the whole video.

    A VAE with timestep conditioning (LTX-Video 0.9.1+) decodes at ``decode_timestep``, from latents mixed
    with ``decode_noise_scale`` of noise drawn from ``generator`` (the pipeline's next draw after the initial
    latents); a request without the options (stored before they existed) gets the pipeline's defaults, 0 and
    None (= the timestep), under which the noise drops out exactly, so none is drawn. Other VAEs take none.
    """
    vae = components.vae
    if vae_tiling:
        vae.enable_tiling()
    else:
        vae.disable_tiling()
    video = _unpack(latents, *cond.latent_shape, *cond.patch)
    mean = vae.latents_mean.view(1, -1, 1, 1, 1).to(video.device, video.dtype)
    std = vae.latents_std.view(1, -1, 1, 1, 1).to(video.device, video.dtype)
    video = (video * std / vae.config.scaling_factor + mean).to(cond.prompt_embeds.dtype)
    timestep = None
    if vae.config.timestep_conditioning:
        decode_timestep = request.decode_timestep or 0.0
        noise_scale = decode_timestep if request.decode_noise_scale is None else request.decode_noise_scale
        timestep = torch.tensor([decode_timestep], device=video.device, dtype=video.dtype)
        if noise_scale:
            noise = randn_tensor(video.shape, generator=generator, device=video.device, dtype=video.dtype)
            scale = torch.tensor(noise_scale, device=video.device, dtype=video.dtype)
            video = (1 - scale) * video + scale * noise
    decoded: torch.Tensor = vae.decode(video, timestep, return_dict=False)[0]
    return (decoded[0].float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).cpu()


class LTXFamily(ModelFamily[LTXComponents, LTXConditioning]):
    """LTX-Video image-to-video through the engine's one flow."""

    name = "ltx"
    pipeline_classes = ("LTXImageToVideoPipeline", "LTXPipeline")
    roles = ROLES
    compile_blocks = ("LTXVideoTransformerBlock",)
    text_token_limit = MAX_SEQUENCE_LENGTH

    def load_folder(
        self, folder: Path, dtype: torch.dtype, variant: str | None, *, int8: bool = False
    ) -> LTXComponents:
        return self._load_folder(folder, dtype, variant, {}, int8=int8)

    def load_folder_with_denoisers(
        self, folder: Path, dtype: torch.dtype, variant: str | None, given: Mapping[str, torch.nn.Module]
    ) -> LTXComponents:
        return self._load_folder(folder, dtype, variant, given)

    def _load_folder(
        self,
        folder: Path,
        dtype: torch.dtype,
        variant: str | None,
        given: Mapping[str, torch.nn.Module],
        *,
        int8: bool = False,
    ) -> LTXComponents:
        from transformers import AutoTokenizer, T5EncoderModel

        common = {"torch_dtype": dtype, "variant": variant, "local_files_only": True}
        src = str(folder)
        return LTXComponents(
            transformer=(
                given["transformer"]
                if "transformer" in given
                else LTXVideoTransformer3DModel.from_pretrained(
                    src, subfolder="transformer", **common, **loading_kwargs(int8, "diffusers")
                )
            ),
            vae=AutoencoderKLLTXVideo.from_pretrained(src, subfolder="vae", **common),
            text_encoder=T5EncoderModel.from_pretrained(
                src, subfolder="text_encoder", **common, **loading_kwargs(int8, "transformers")
            ),
            tokenizer=AutoTokenizer.from_pretrained(src, subfolder="tokenizer", local_files_only=True),
            scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(
                src, subfolder="scheduler", local_files_only=True
            ),
        )

    def build_tiny(self, spec: ModelSpec, seed: int) -> LTXComponents:
        from stillmotion.models.tiny import build_tiny_ltx_components

        return LTXComponents(**build_tiny_ltx_components(seed))

    def network_builders(self, config_dir: Path) -> NetworkBuilders:
        from transformers import T5Config, T5EncoderModel

        return {
            "transformer": lambda: LTXVideoTransformer3DModel.from_config(
                read_config(config_dir / "transformer")
            ),
            "vae": lambda: AutoencoderKLLTXVideo.from_config(read_config(config_dir / "vae")),
            "text_encoder": lambda: T5EncoderModel(
                T5Config.from_json_file(config_dir / "text_encoder" / "config.json")
            ),
        }

    def assemble(self, networks: dict[str, torch.nn.Module], config_dir: Path) -> LTXComponents:
        from stillmotion.models.tiny import build_tiny_t5_tokenizer

        return LTXComponents(
            transformer=networks["transformer"],
            vae=networks["vae"],
            text_encoder=networks["text_encoder"],
            # Character-level, ids far below T5's 32k vocabulary: the shapes and the work are the real ones.
            tokenizer=build_tiny_t5_tokenizer(model_max_length=MAX_SEQUENCE_LENGTH),
            scheduler=FlowMatchEulerDiscreteScheduler.from_config(
                read_config(config_dir / "scheduler", "scheduler_config.json")
            ),
        )

    def encode(
        self,
        components: LTXComponents,
        request: FamilyRequest,
        image: PIL.Image.Image,
        device: torch.device,
        dtype: torch.dtype,
        generator: torch.Generator,
        cached: Cached,
        last_image: PIL.Image.Image | None = None,
    ) -> LTXConditioning:
        texts = [request.prompt]
        if request.do_classifier_free_guidance:
            texts.insert(0, request.negative_prompt)  # the pipeline batches [negative, positive]
        embeds = torch.cat([_cached_text(components, text, device, cached) for text in texts])
        masks = torch.cat([_tokens(components, text).attention_mask.bool().to(device) for text in texts])
        vae = components.vae
        spatial, temporal = vae.spatial_compression_ratio, vae.temporal_compression_ratio
        shape = (
            (request.num_frames - 1) // temporal + 1,
            request.height // spatial,
            request.width // spatial,
        )
        latent = encode_image_latent(
            components, image, request.height, request.width, generator, device, embeds.dtype
        )
        first_frame = torch.zeros(1, 1, *shape, device=device, dtype=torch.float32)
        first_frame[:, :, 0] = 1.0
        patch, patch_t = components.patch
        return LTXConditioning(
            prompt_embeds=embeds,
            prompt_attention_mask=masks,
            image_latent=latent,
            conditioning_mask=_pack(first_frame, patch, patch_t).squeeze(-1),
            latent_shape=shape,
            patch=(patch, patch_t),
            frame_rate=request.fps,
            guided=request.do_classifier_free_guidance,
        )

    def new_scheduler(self, components: LTXComponents, request: FamilyRequest, device: torch.device) -> Any:
        """Sigmas from 1 to 1/steps, shifted by the video's token count (the pipeline's schedule)."""
        scheduler = type(components.scheduler).from_config(components.scheduler.config)
        config = scheduler.config
        vae = components.vae
        tokens = (
            ((request.num_frames - 1) // vae.temporal_compression_ratio + 1)
            * (request.height // vae.spatial_compression_ratio)
            * (request.width // vae.spatial_compression_ratio)
        )
        mu = calculate_shift(
            tokens,
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        steps = request.num_inference_steps
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), device=device, mu=mu)
        return scheduler

    def initial_latents(
        self,
        components: LTXComponents,
        request: FamilyRequest,
        cond: LTXConditioning,
        scheduler: Any,
        generator: torch.Generator,
        device: torch.device,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """The image's latent on the first frame, float32 noise after it (the generator's second draw)."""
        shape = (1, cond.image_latent.shape[1], *cond.latent_shape)
        mask = torch.zeros(1, 1, *cond.latent_shape, device=device, dtype=torch.float32)
        mask[:, :, 0] = 1.0
        noise = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        latents = cond.image_latent.repeat(1, 1, cond.latent_shape[0], 1, 1) * mask + noise * (1 - mask)
        packed: torch.Tensor = _pack(latents, *components.patch)
        return packed

    def predict_noise(
        self,
        components: LTXComponents,
        scheduler: Any,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        cond: LTXConditioning,
        request: FamilyRequest,
        split_guidance: bool,
    ) -> torch.Tensor:
        return predict_noise(components, latents, timestep, cond, request.guidance_scale, split_guidance)

    def scheduler_step(
        self,
        scheduler: Any,
        noise_pred: torch.Tensor,
        timestep: torch.Tensor,
        latents: torch.Tensor,
        cond: LTXConditioning,
    ) -> torch.Tensor:
        return scheduler_step(scheduler, noise_pred, timestep, latents, cond)

    def decode(
        self,
        components: LTXComponents,
        latents: torch.Tensor,
        cond: LTXConditioning,
        request: FamilyRequest,
        decode_chunk_size: int,
        vae_tiling: bool,
        generator: torch.Generator,
    ) -> torch.Tensor:
        return decode_latents(components, latents, cond, vae_tiling, request, generator)


FAMILY = LTXFamily()
