"""The Stable Video Diffusion adapter (models/family.py): SVD-XT, image in, video out, no text.

Every piece of math follows diffusers' StableVideoDiffusionPipeline (diffusers 0.42.1,
pipelines/stable_video_diffusion) so the frames equal it (tests/engine/test_family_equivalence.py). How the
request's fields map onto it:

- ``prompt`` / ``negative_prompt``: SVD has no text encoder. A request that gives either is refused (rule in
  engine/request.py), never silently ignored.
- ``guidance_scale`` is the pipeline's ``max_guidance_scale``: guidance grows linearly over the frames from
  ``MIN_GUIDANCE_SCALE`` (1.0, the pipeline's default) on the first frame to it on the last.
- ``fps`` is the output frame rate and the micro-conditioning (the UNet sees fps - 1, as in the pipeline).
- ``motion_bucket_id`` and ``noise_aug_strength`` are the pipeline's defaults (127, 0.02).

Decoding in chunks of frames is approximate here: the temporal decoder sees only its chunk (flicker), so the
planner decodes every frame at once unless approximate savings are allowed (memory/plan.py).
One deviation from the pipeline, on GPUs only: it upcasts a float16 VAE to float32 for the one image encode;
the engine encodes in the plan's dtype, since offload hooks hold the weights' dtype (same result in float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import PIL.Image
import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
    _append_dims,
    _resize_with_antialiasing,
)
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

MIN_GUIDANCE_SCALE = 1.0  # guidance on the first frame (the pipeline's min_guidance_scale default)
MOTION_BUCKET_ID = 127  # the pipeline's defaults for the two other micro-conditionings
NOISE_AUG_STRENGTH = 0.02
CLIP_INPUT_SIZE = (224, 224)  # the pipeline resizes the image to this itself, with antialiasing
# diffusers' StableVideoDiffusionPipeline.model_cpu_offload_seq
ROLES = ModuleRoles(
    denoiser="unet", encoders=("image_encoder",), offload_order=("image_encoder", "unet", "vae")
)


@dataclass
class SVDComponents:
    """The parts of an SVD checkpoint."""

    unet: Any
    vae: Any
    image_encoder: Any
    feature_extractor: Any
    scheduler: Any

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet, "vae": self.vae, "image_encoder": self.image_encoder}

    @property
    def vae_scale_factor(self) -> int:
        return int(2 ** (len(self.vae.config.block_out_channels) - 1))


@dataclass(frozen=True)
class SVDConditioning:
    """The UNet's conditioning; the unconditional halves are zeros, as in the pipeline."""

    image_embeds: torch.Tensor  # (1, 1, D)
    image_latents: torch.Tensor  # (1, frames, 4, h, w): the noise-augmented image's latent on every frame
    added_time_ids: torch.Tensor  # (1, 3): fps - 1, motion bucket, noise augmentation
    guidance: torch.Tensor | None  # (1, frames, 1, 1, 1) per-frame guidance scale; None without guidance


@torch.no_grad()
def encode_image(components: SVDComponents, image: PIL.Image.Image, device: torch.device) -> torch.Tensor:
    """CLIP image embedding (1, 1, D) of the whole image resized to 224 x 224 (the pipeline's own resize)."""
    processor = VideoProcessor(do_resize=True, vae_scale_factor=components.vae_scale_factor)
    pixels = processor.numpy_to_pt(processor.pil_to_numpy(image))
    pixels = _resize_with_antialiasing(pixels * 2.0 - 1.0, CLIP_INPUT_SIZE)
    pixels = (pixels + 1.0) / 2.0
    pixels = components.feature_extractor(
        images=pixels,
        do_normalize=True,
        do_center_crop=False,
        do_resize=False,
        do_rescale=False,
        return_tensors="pt",
    ).pixel_values
    encoder = components.image_encoder
    embeds: torch.Tensor = encoder(
        pixels.to(device=device, dtype=next(encoder.parameters()).dtype)
    ).image_embeds
    return embeds.unsqueeze(1)


@torch.no_grad()
def encode_image_latents(
    components: SVDComponents,
    image: PIL.Image.Image,
    request: FamilyRequest,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The noise-augmented image's VAE latent (mode), repeated on every frame: (1, frames, 4, h, w).

    The augmentation noise is the generator's first draw, before the initial latents (as in the pipeline).
    """
    processor = VideoProcessor(do_resize=True, vae_scale_factor=components.vae_scale_factor)
    pixels = processor.preprocess(image, height=request.height, width=request.width).to(device)
    noise = randn_tensor(pixels.shape, generator=generator, device=device, dtype=pixels.dtype)
    pixels = pixels + NOISE_AUG_STRENGTH * noise
    vae = components.vae
    latent: torch.Tensor = vae.encode(pixels.to(device=device, dtype=vae.dtype)).latent_dist.mode().to(dtype)
    return latent.unsqueeze(1).repeat(1, request.num_frames, 1, 1, 1)


@torch.no_grad()
def predict_noise(
    components: SVDComponents,
    scheduler: Any,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    cond: SVDConditioning,
    split_guidance: bool,
) -> torch.Tensor:
    """The per-frame guided prediction; the halves batched (the pipeline) or one after the other."""
    model_input = scheduler.scale_model_input(latents, timestep)

    def run(image_embeds: torch.Tensor, image_latents: torch.Tensor, batch: int) -> torch.Tensor:
        inputs = torch.cat([torch.cat([model_input] * batch), image_latents], dim=2)
        out: torch.Tensor = components.unet(
            inputs,
            timestep,
            encoder_hidden_states=image_embeds,
            added_time_ids=torch.cat([cond.added_time_ids] * batch),
            return_dict=False,
        )[0]
        return out

    if cond.guidance is None:
        return run(cond.image_embeds, cond.image_latents, 1)
    zero_embeds, zero_latents = torch.zeros_like(cond.image_embeds), torch.zeros_like(cond.image_latents)
    if split_guidance:
        uncond = run(zero_embeds, zero_latents, 1)
        noise = run(cond.image_embeds, cond.image_latents, 1)
    else:
        both = run(
            torch.cat([zero_embeds, cond.image_embeds]), torch.cat([zero_latents, cond.image_latents]), 2
        )
        uncond, noise = both.chunk(2)
    return uncond + cond.guidance * (noise - uncond)


@torch.no_grad()
def decode_latents(components: SVDComponents, latents: torch.Tensor, decode_chunk_size: int) -> torch.Tensor:
    """Latents -> float32 frames (frames, height, width, 3) in [0, 1], ``decode_chunk_size`` at once."""
    vae = components.vae
    num_frames = latents.shape[1]
    flat = 1 / vae.config.scaling_factor * latents.flatten(0, 1)  # the pipeline's own order of operations
    chunks = [
        vae.decode(
            flat[i : i + decode_chunk_size], num_frames=flat[i : i + decode_chunk_size].shape[0]
        ).sample
        for i in range(0, flat.shape[0], decode_chunk_size)
    ]
    images = torch.cat(chunks, dim=0).float()
    assert images.shape[0] == num_frames
    # The pipeline's postprocess_video: [-1, 1] -> [0, 1], channels last.
    return (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu()


class SVDFamily(ModelFamily[SVDComponents, SVDConditioning]):
    """Stable Video Diffusion (SVD-XT) through the engine's one flow."""

    name = "svd"
    pipeline_classes = ("StableVideoDiffusionPipeline",)
    roles = ROLES
    compile_blocks = ("BasicTransformerBlock", "TemporalBasicTransformerBlock", "SpatioTemporalResBlock")

    def load_folder(
        self, folder: Path, dtype: torch.dtype, variant: str | None, *, int8: bool = False
    ) -> SVDComponents:
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        common = {"torch_dtype": dtype, "variant": variant, "local_files_only": True}
        src = str(folder)
        return SVDComponents(
            unet=UNetSpatioTemporalConditionModel.from_pretrained(
                src, subfolder="unet", **common, **loading_kwargs(int8, "diffusers")
            ),
            vae=AutoencoderKLTemporalDecoder.from_pretrained(src, subfolder="vae", **common),
            image_encoder=CLIPVisionModelWithProjection.from_pretrained(
                src, subfolder="image_encoder", **common
            ),
            feature_extractor=CLIPImageProcessor.from_pretrained(
                src, subfolder="feature_extractor", local_files_only=True
            ),
            scheduler=EulerDiscreteScheduler.from_pretrained(
                src, subfolder="scheduler", local_files_only=True
            ),
        )

    def build_tiny(self, spec: ModelSpec, seed: int) -> SVDComponents:
        from stillmotion.models.tiny import build_tiny_svd_components

        return SVDComponents(**build_tiny_svd_components(seed))

    def network_builders(self, config_dir: Path) -> NetworkBuilders:
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        return {
            "unet": lambda: UNetSpatioTemporalConditionModel.from_config(read_config(config_dir / "unet")),
            "vae": lambda: AutoencoderKLTemporalDecoder.from_config(read_config(config_dir / "vae")),
            "image_encoder": lambda: CLIPVisionModelWithProjection(
                CLIPVisionConfig.from_json_file(config_dir / "image_encoder" / "config.json")
            ),
        }

    def assemble(self, networks: dict[str, torch.nn.Module], config_dir: Path) -> SVDComponents:
        from transformers import CLIPImageProcessor

        return SVDComponents(
            unet=networks["unet"],
            vae=networks["vae"],
            image_encoder=networks["image_encoder"],
            feature_extractor=CLIPImageProcessor.from_pretrained(
                str(config_dir / "feature_extractor"), local_files_only=True
            ),
            scheduler=EulerDiscreteScheduler.from_config(
                read_config(config_dir / "scheduler", "scheduler_config.json")
            ),
        )

    def encode(
        self,
        components: SVDComponents,
        request: FamilyRequest,
        image: PIL.Image.Image,
        device: torch.device,
        dtype: torch.dtype,
        generator: torch.Generator,
        cached: Cached,
        last_image: PIL.Image.Image | None = None,
    ) -> SVDConditioning:
        embeds = cached(("image",), lambda: encode_image(components, image, device)).to(dtype)
        latents = encode_image_latents(components, image, request, generator, device, dtype)
        time_ids = torch.tensor(
            [[request.fps - 1, MOTION_BUCKET_ID, NOISE_AUG_STRENGTH]], dtype=dtype, device=device
        )
        guidance = None
        if request.do_classifier_free_guidance:
            ramp = torch.linspace(MIN_GUIDANCE_SCALE, request.guidance_scale, request.num_frames).unsqueeze(0)
            guidance = _append_dims(ramp.to(device, dtype), latents.ndim)
        return SVDConditioning(
            image_embeds=embeds, image_latents=latents, added_time_ids=time_ids, guidance=guidance
        )

    def initial_latents(
        self,
        components: SVDComponents,
        request: FamilyRequest,
        cond: SVDConditioning,
        scheduler: Any,
        generator: torch.Generator,
        device: torch.device,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """Noise of (1, frames, 4, h, w) in the conditioning's dtype, scaled to the first sigma."""
        shape = (
            1,
            request.num_frames,
            components.unet.config.in_channels // 2,
            request.height // components.vae_scale_factor,
            request.width // components.vae_scale_factor,
        )
        noise: torch.Tensor = randn_tensor(
            shape, generator=generator, device=device, dtype=cond.image_embeds.dtype
        )
        scaled: torch.Tensor = noise * scheduler.init_noise_sigma
        return scaled

    def predict_noise(
        self,
        components: SVDComponents,
        scheduler: Any,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        cond: SVDConditioning,
        request: FamilyRequest,
        split_guidance: bool,
    ) -> torch.Tensor:
        return predict_noise(components, scheduler, latents, timestep, cond, split_guidance)

    def scheduler_step(
        self,
        scheduler: Any,
        noise_pred: torch.Tensor,
        timestep: torch.Tensor,
        latents: torch.Tensor,
        cond: SVDConditioning,
    ) -> torch.Tensor:
        stepped: torch.Tensor = scheduler.step(noise_pred, timestep, latents).prev_sample
        return stepped

    def decode(
        self,
        components: SVDComponents,
        latents: torch.Tensor,
        cond: SVDConditioning,
        request: FamilyRequest,
        decode_chunk_size: int,
        vae_tiling: bool,
        generator: torch.Generator,
    ) -> torch.Tensor:
        # AutoencoderKLTemporalDecoder has no tiling: the approximate rung's saving here is the chunking.
        return decode_latents(components, latents, decode_chunk_size)


FAMILY = SVDFamily()
