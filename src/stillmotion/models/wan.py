"""The Wan adapter (models/family.py): Wan 2.1 I2V-14B (480P, 720P), Wan 2.2 TI2V-5B and Wan 2.2 I2V A14B.

Every piece of math follows diffusers' WanImageToVideoPipeline (diffusers 0.42.1, pipelines/wan/
pipeline_wan_i2v.py) so the frames equal it (tests/engine/test_family_equivalence.py):

- Wan 2.1 I2V: the transformer sees the noisy latents concatenated with a first-frame mask and the VAE
  latents of the image followed by zero frames; CLIP's penultimate hidden states condition it too.
- Wan 2.2 TI2V (``expand_timesteps``): no CLIP; the first latent frame is the image's own latent, kept clean
  (timestep 0 for its tokens) and written back after the loop.
- Wan 2.2 I2V A14B: Wan 2.1's conditioning without CLIP, and two experts: ``transformer`` while the timestep
  is at or above ``boundary_ratio`` x 1000, ``transformer_2`` below (with ``guidance_scale_2``). The choice is
  made per step from the timestep (``expert_for``), so a resume at any step picks the same expert. With a
  ``last_image`` the VAE sees the first frame, black frames and the last frame, and the mask keeps both.

The text is UMT5 (cleaned with ftfy as the pipeline does), cut to its real length and zero-padded to 512
tokens. The scheduler is UniPC on flow-matching sigmas: a multistep solver that keeps past model outputs,
which the engine snapshots after every step so an out-of-memory resume is exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import PIL.Image
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from diffusers.pipelines.wan.pipeline_wan_i2v import prompt_clean
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor

from stillmotion import bounded_json
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

TI2V_CONFIG = "wan2.2-ti2v-5b"  # the config folder (and tiny variant) of Wan 2.2 TI2V
MAX_SEQUENCE_LENGTH = 512  # WanImageToVideoPipeline.__call__'s default: UMT5 tokens per prompt
# diffusers' Wan examples load the VAE in float32 beside a bfloat16 transformer, for quality; so do we (the
# planner counts it: MemoryFacts.vae_dtype in models/registry.py, MemoryPlan.vae_dtype).
VAE_DTYPE = torch.float32
# diffusers' WanImageToVideoPipeline.model_cpu_offload_seq: with model offload the two experts of Wan 2.2
# A14B take turns on the device (the hook of transformer_2 offloads transformer before loading itself).
ROLES = ModuleRoles(
    denoiser="transformer",
    encoders=("text_encoder", "image_encoder"),
    offload_order=("text_encoder", "image_encoder", "transformer", "transformer_2", "vae"),
    experts=("transformer_2",),
)


@dataclass
class WanComponents:
    """A Wan checkpoint's parts; ``image_encoder`` / ``image_processor`` are None for Wan 2.2 TI2V."""

    transformer: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    image_encoder: Any = None
    image_processor: Any = None
    expand_timesteps: bool = False  # Wan 2.2 TI2V: the first latent frame is the clean image latent
    transformer_2: Any = None  # Wan 2.2 A14B: the low-noise expert
    boundary_ratio: float | None = None  # Wan 2.2 A14B: where transformer_2 takes over (x 1000 timesteps)

    def modules(self) -> dict[str, torch.nn.Module]:
        names = ("transformer", "transformer_2", "vae", "text_encoder", "image_encoder")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    @property
    def vae_scale_factor_spatial(self) -> int:
        return int(self.vae.config.scale_factor_spatial)

    @property
    def vae_scale_factor_temporal(self) -> int:
        return int(self.vae.config.scale_factor_temporal)


@dataclass(frozen=True)
class WanConditioning:
    """The transformer's conditioning: text (and, Wan 2.1, CLIP) embeddings and the image's latents."""

    prompt_embeds: torch.Tensor  # (1, 512, D)
    negative_prompt_embeds: torch.Tensor | None  # None without classifier-free guidance
    image_embeds: torch.Tensor | None  # (1, 257, 1280) CLIP hidden states; None for Wan 2.2 TI2V
    # Wan 2.1: mask (4 channels) + image latents, the transformer's extra input channels. Wan 2.2 TI2V: the
    # normalised latent of the image alone (one latent frame).
    condition: torch.Tensor
    first_frame_mask: torch.Tensor | None = field(default=None)  # Wan 2.2 TI2V: 0 on the first latent frame


# 1. Prompt and image -----------------------------------------------------------------------------------


@torch.no_grad()
def encode_text(components: WanComponents, text: str, device: torch.device) -> torch.Tensor:
    """UMT5 states of the cleaned prompt, cut to its length and zero-padded to 512 tokens (the pipeline's)."""
    inputs = components.tokenizer(
        [prompt_clean(text)],
        padding="max_length",
        max_length=MAX_SEQUENCE_LENGTH,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    ids, mask = inputs.input_ids.to(device), inputs.attention_mask.to(device)
    length = int(mask.gt(0).sum())
    states = components.text_encoder(ids, mask).last_hidden_state
    states = states.to(dtype=components.text_encoder.dtype, device=device)[:, :length]
    padding = states.new_zeros(1, MAX_SEQUENCE_LENGTH - length, states.shape[-1])
    return torch.cat([states, padding], dim=1)


@torch.no_grad()
def encode_image(components: WanComponents, image: PIL.Image.Image, device: torch.device) -> torch.Tensor:
    """CLIP's penultimate hidden states of the input image (Wan 2.1 I2V only)."""
    pixels = components.image_processor(images=image, return_tensors="pt").to(device)
    hidden: torch.Tensor = components.image_encoder(**pixels, output_hidden_states=True).hidden_states[-2]
    return hidden


def _latent_stats(components: WanComponents, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, 1 / std) of the VAE's latents, shaped to broadcast over (batch, channels, frames, h, w)."""
    config = components.vae.config
    mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1).to(like.device, like.dtype)
    inverse_std = 1.0 / torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1).to(
        like.device, like.dtype
    )
    return mean, inverse_std


@torch.no_grad()
def encode_condition(
    components: WanComponents,
    image: PIL.Image.Image,
    num_frames: int,
    height: int,
    width: int,
    device: torch.device,
    last_image: PIL.Image.Image | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(condition, first_frame_mask): the VAE latents of the image (mode, no sampling) as the transformer
    wants them; float32 like the pipeline's latents. With ``last_image``, the video the VAE encodes ends on
    it and the mask keeps the last frame as well as the first."""
    processor = VideoProcessor(vae_scale_factor=components.vae_scale_factor_spatial)
    pixels = processor.preprocess(image, height=height, width=width).to(device, dtype=torch.float32)
    pixels = pixels.unsqueeze(2)  # (1, 3, 1, H, W)
    last = None
    if last_image is not None:
        last = processor.preprocess(last_image, height=height, width=width).to(device, dtype=torch.float32)
        last = last.unsqueeze(2)
    vae = components.vae
    temporal = components.vae_scale_factor_temporal
    latent_frames = (num_frames - 1) // temporal + 1
    latent_h, latent_w = (
        height // components.vae_scale_factor_spatial,
        width // components.vae_scale_factor_spatial,
    )
    if components.expand_timesteps:
        video = pixels
    elif last is None:  # the image followed by black frames
        video = torch.cat([pixels, pixels.new_zeros(1, 3, num_frames - 1, height, width)], dim=2)
    else:  # the image, black frames, the last image
        video = torch.cat([pixels, pixels.new_zeros(1, 3, num_frames - 2, height, width), last], dim=2)
    latent = vae.encode(video.to(device=device, dtype=vae.dtype)).latent_dist.mode()
    latent = latent.to(device=device, dtype=torch.float32)
    mean, inverse_std = _latent_stats(components, latent)
    latent = (latent - mean) * inverse_std
    if components.expand_timesteps:
        mask = torch.ones(1, 1, latent_frames, latent_h, latent_w, dtype=torch.float32, device=device)
        mask[:, :, 0] = 0
        return latent, mask
    # One mask channel per frame the VAE packs: the first frame counts 4 times (it is its own latent frame).
    frame_mask = torch.ones(1, 1, num_frames, latent_h, latent_w)
    frame_mask[:, :, 1 : num_frames if last is None else num_frames - 1] = 0
    first = torch.repeat_interleave(frame_mask[:, :, 0:1], dim=2, repeats=temporal)
    frame_mask = torch.concat([first, frame_mask[:, :, 1:]], dim=2)
    frame_mask = frame_mask.view(1, -1, temporal, latent_h, latent_w).transpose(1, 2).to(latent.device)
    return torch.concat([frame_mask, latent], dim=1), None


# 2. Denoising ------------------------------------------------------------------------------------------


def expert_for(
    components: WanComponents, timestep: torch.Tensor, guidance_scale: float, guidance_scale_2: float | None
) -> tuple[Any, float]:
    """(transformer, guidance) of this step: the low-noise expert below the boundary timestep, as the pipeline
    decides (``t >= boundary_ratio x num_train_timesteps`` stays on the high-noise one)."""
    if components.transformer_2 is None or components.boundary_ratio is None:
        return components.transformer, guidance_scale
    boundary = components.boundary_ratio * components.scheduler.config.num_train_timesteps
    if timestep >= boundary:
        return components.transformer, guidance_scale
    return components.transformer_2, guidance_scale if guidance_scale_2 is None else guidance_scale_2


@torch.no_grad()
def predict_noise(
    components: WanComponents,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    cond: WanConditioning,
    guidance_scale: float,
    split_guidance: bool,
    guidance_scale_2: float | None = None,
) -> torch.Tensor:
    """The guided flow prediction. The pipeline runs the halves one after the other; batched is the same
    math at twice the activations."""
    transformer, guidance_scale = expert_for(components, timestep, guidance_scale, guidance_scale_2)
    dtype = transformer.dtype
    t = timestep.to(latents.device)
    if cond.first_frame_mask is not None:
        mask = cond.first_frame_mask
        model_input = ((1 - mask) * cond.condition + mask * latents).to(dtype)
        patch = transformer.config.patch_size
        # One timestep per token: 0 for the clean first frame's tokens.
        per_token = (mask[0][0][:, :: patch[1], :: patch[2]] * t).flatten()
        step = per_token.unsqueeze(0).expand(latents.shape[0], -1)
    else:
        model_input = torch.cat([latents, cond.condition], dim=1).to(dtype)
        step = t.expand(latents.shape[0])

    def run(
        inputs: torch.Tensor, steps: torch.Tensor, text: torch.Tensor, image: torch.Tensor | None
    ) -> torch.Tensor:
        out: torch.Tensor = transformer(
            hidden_states=inputs,
            timestep=steps,
            encoder_hidden_states=text,
            encoder_hidden_states_image=image,
            return_dict=False,
        )[0]
        return out

    if cond.negative_prompt_embeds is None:
        return run(model_input, step, cond.prompt_embeds, cond.image_embeds)
    if split_guidance:
        noise = run(model_input, step, cond.prompt_embeds, cond.image_embeds)
        uncond = run(model_input, step, cond.negative_prompt_embeds, cond.image_embeds)
    else:
        images = None if cond.image_embeds is None else torch.cat([cond.image_embeds, cond.image_embeds])
        both = run(
            torch.cat([model_input, model_input]),
            torch.cat([step, step]),
            torch.cat([cond.negative_prompt_embeds, cond.prompt_embeds]),
            images,
        )
        uncond, noise = both.chunk(2)
    return uncond + guidance_scale * (noise - uncond)


# 3. Decode ---------------------------------------------------------------------------------------------


@torch.no_grad()
def decode_latents(
    components: WanComponents, latents: torch.Tensor, cond: WanConditioning, vae_tiling: bool
) -> torch.Tensor:
    """Latents -> float32 frames (frames, height, width, 3) in [0, 1]; the causal VAE decodes the whole video.

    AutoencoderKLWan has no batch to chunk; its spatial tiling is approximate (tile seams) and is on only when
    the plan says so.
    """
    if cond.first_frame_mask is not None:
        latents = (1 - cond.first_frame_mask) * cond.condition + cond.first_frame_mask * latents
    vae = components.vae
    if vae_tiling:
        vae.enable_tiling()
    else:
        vae.disable_tiling()
    latents = latents.to(dtype=vae.dtype)
    mean, inverse_std = _latent_stats(components, latents)
    latents = latents / inverse_std + mean
    video: torch.Tensor = vae.decode(latents, return_dict=False)[0]
    # The pipeline's VideoProcessor.postprocess_video: [-1, 1] -> [0, 1], frames first, channels last.
    frames = (video[0].float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0)
    return frames.cpu()


# 4. The family interface --------------------------------------------------------------------------------


class WanFamily(ModelFamily[WanComponents, WanConditioning]):
    """Wan 2.1 I2V, Wan 2.2 TI2V and Wan 2.2 I2V A14B through the engine's one flow."""

    name = "wan"
    pipeline_classes = ("WanImageToVideoPipeline", "WanPipeline")
    roles = ROLES
    compile_blocks = ("WanTransformerBlock",)
    text_token_limit = MAX_SEQUENCE_LENGTH

    def load_folder(
        self, folder: Path, dtype: torch.dtype, variant: str | None, *, int8: bool = False
    ) -> WanComponents:
        return self._load_folder(folder, dtype, variant, {}, int8=int8)

    def load_folder_with_denoisers(
        self, folder: Path, dtype: torch.dtype, variant: str | None, given: Mapping[str, torch.nn.Module]
    ) -> WanComponents:
        return self._load_folder(folder, dtype, variant, given)

    def _load_folder(
        self,
        folder: Path,
        dtype: torch.dtype,
        variant: str | None,
        given: Mapping[str, torch.nn.Module],
        *,
        int8: bool = False,
    ) -> WanComponents:
        import diffusers
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionModel, UMT5EncoderModel

        index = bounded_json.read_json_file(folder / "model_index.json")
        two_experts = index.get("boundary_ratio") is not None
        if two_experts and not (folder / "transformer_2").is_dir():
            raise ValueError(f"model_index.json names two experts but {folder} has no transformer_2 folder")
        common = {"torch_dtype": dtype, "variant": variant, "local_files_only": True}
        src = str(folder)
        has_clip = (folder / "image_encoder").is_dir()
        scheduler_config = bounded_json.read_json_file(folder / "scheduler" / "scheduler_config.json")
        scheduler_class = getattr(diffusers, scheduler_config["_class_name"])
        return WanComponents(
            transformer=(
                given["transformer"]
                if "transformer" in given
                else WanTransformer3DModel.from_pretrained(
                    src, subfolder="transformer", **common, **loading_kwargs(int8, "diffusers")
                )
            ),
            vae=AutoencoderKLWan.from_pretrained(
                src, subfolder="vae", **(common | {"torch_dtype": VAE_DTYPE})
            ),
            text_encoder=UMT5EncoderModel.from_pretrained(
                src, subfolder="text_encoder", **common, **loading_kwargs(int8, "transformers")
            ),
            tokenizer=AutoTokenizer.from_pretrained(src, subfolder="tokenizer", local_files_only=True),
            scheduler=scheduler_class.from_pretrained(src, subfolder="scheduler", local_files_only=True),
            image_encoder=(
                CLIPVisionModel.from_pretrained(src, subfolder="image_encoder", **common)
                if has_clip
                else None
            ),
            image_processor=(
                CLIPImageProcessor.from_pretrained(src, subfolder="image_processor", local_files_only=True)
                if has_clip
                else None
            ),
            expand_timesteps=bool(index.get("expand_timesteps", False)),
            transformer_2=(
                given["transformer_2"]
                if "transformer_2" in given
                else WanTransformer3DModel.from_pretrained(
                    src, subfolder="transformer_2", **common, **loading_kwargs(int8, "diffusers")
                )
                if two_experts
                else None
            ),
            boundary_ratio=index.get("boundary_ratio"),
        )

    def build_tiny(self, spec: ModelSpec, seed: int) -> WanComponents:
        from stillmotion.models.tiny import build_tiny_wan_components

        parts = build_tiny_wan_components(
            seed, ti2v=spec.config_name == TI2V_CONFIG, experts=spec.experts is not None
        )
        return WanComponents(**parts)

    def network_builders(self, config_dir: Path) -> NetworkBuilders:
        from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

        builders: dict[str, Any] = {
            "transformer": lambda: WanTransformer3DModel.from_config(read_config(config_dir / "transformer")),
            "vae": lambda: AutoencoderKLWan.from_config(read_config(config_dir / "vae")),
            "text_encoder": lambda: UMT5EncoderModel(
                UMT5Config.from_json_file(config_dir / "text_encoder" / "config.json")
            ),
        }
        if (config_dir / "transformer_2").is_dir():
            builders["transformer_2"] = lambda: WanTransformer3DModel.from_config(
                read_config(config_dir / "transformer_2")
            )
        if (config_dir / "image_encoder").is_dir():
            builders["image_encoder"] = lambda: CLIPVisionModel(
                CLIPVisionConfig.from_json_file(config_dir / "image_encoder" / "config.json")
            )
        return builders

    def assemble(self, networks: dict[str, torch.nn.Module], config_dir: Path) -> WanComponents:
        import diffusers
        from transformers import CLIPImageProcessor

        from stillmotion.models.tiny import build_tiny_t5_tokenizer

        scheduler_config = read_config(config_dir / "scheduler", "scheduler_config.json")
        index = read_config(config_dir, "model_index.json")
        has_clip = "image_encoder" in networks
        return WanComponents(
            transformer=networks["transformer"],
            vae=networks["vae"],
            text_encoder=networks["text_encoder"],
            # Character-level, ids far below UMT5's 256k vocabulary: the shapes and the work are the real ones
            tokenizer=build_tiny_t5_tokenizer(model_max_length=MAX_SEQUENCE_LENGTH),
            scheduler=getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config),
            image_encoder=networks.get("image_encoder"),
            image_processor=(
                CLIPImageProcessor.from_pretrained(str(config_dir / "image_processor"), local_files_only=True)
                if has_clip
                else None
            ),
            expand_timesteps=bool(index.get("expand_timesteps", False)),
            transformer_2=networks.get("transformer_2"),
            boundary_ratio=index.get("boundary_ratio"),
        )

    def lora_host(self, components: WanComponents) -> Any:
        """WanImageToVideoPipeline over the same modules: its WanLoraLoaderMixin (load_lora_weights with the
        kohya/ComfyUI converters, set_adapters, fuse_lora, unload_lora_weights) works on them in place."""
        from diffusers import WanImageToVideoPipeline

        # Only the denoisers matter to the loaders: the rest may be absent (models/lora.py's meta check).
        parts = ("tokenizer", "text_encoder", "vae", "scheduler", "image_processor", "image_encoder")
        return WanImageToVideoPipeline(
            **{name: getattr(components, name, None) for name in parts},
            transformer=components.transformer,
            transformer_2=getattr(components, "transformer_2", None),
            boundary_ratio=getattr(components, "boundary_ratio", None),
            expand_timesteps=getattr(components, "expand_timesteps", False),
        )

    def new_scheduler(self, components: WanComponents, request: FamilyRequest, device: torch.device) -> Any:
        """The model's scheduler, with the request's shift where it has one (a step-distilled LoRA's)."""
        overrides = {} if request.flow_shift is None else {"flow_shift": request.flow_shift}
        scheduler = type(components.scheduler).from_config(components.scheduler.config, **overrides)
        scheduler.set_timesteps(request.num_inference_steps, device=device)
        return scheduler

    def encode(
        self,
        components: WanComponents,
        request: FamilyRequest,
        image: PIL.Image.Image,
        device: torch.device,
        dtype: torch.dtype,
        generator: torch.Generator,
        cached: Cached,
        last_image: PIL.Image.Image | None = None,
    ) -> WanConditioning:
        transformer_dtype = components.transformer.dtype
        prompt = cached(("text", request.prompt), lambda: encode_text(components, request.prompt, device))
        negative = None
        if request.do_classifier_free_guidance:
            negative = cached(
                ("text", request.negative_prompt),
                lambda: encode_text(components, request.negative_prompt, device),
            )
        image_embeds = None
        if components.transformer.config.image_dim is not None:  # Wan 2.1 I2V: CLIP conditions it too
            image_embeds = cached(("image",), lambda: encode_image(components, image, device)).to(
                transformer_dtype
            )
        condition, mask = encode_condition(
            components, image, request.num_frames, request.height, request.width, device, last_image
        )
        return WanConditioning(
            prompt_embeds=prompt.to(transformer_dtype),
            negative_prompt_embeds=None if negative is None else negative.to(transformer_dtype),
            image_embeds=image_embeds,
            condition=condition,
            first_frame_mask=mask,
        )

    def initial_latents(
        self,
        components: WanComponents,
        request: FamilyRequest,
        cond: WanConditioning,
        scheduler: Any,
        generator: torch.Generator,
        device: torch.device,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """float32 noise of the latent video's shape (the pipeline keeps latents in float32)."""
        spatial = components.vae_scale_factor_spatial
        shape = (
            1,
            components.vae.config.z_dim,
            (request.num_frames - 1) // components.vae_scale_factor_temporal + 1,
            request.height // spatial,
            request.width // spatial,
        )
        latents: torch.Tensor = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        return latents

    def predict_noise(
        self,
        components: WanComponents,
        scheduler: Any,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        cond: WanConditioning,
        request: FamilyRequest,
        split_guidance: bool,
    ) -> torch.Tensor:
        return predict_noise(
            components,
            latents,
            timestep,
            cond,
            request.guidance_scale,
            split_guidance,
            request.guidance_scale_2,
        )

    def scheduler_step(
        self,
        scheduler: Any,
        noise_pred: torch.Tensor,
        timestep: torch.Tensor,
        latents: torch.Tensor,
        cond: WanConditioning,
    ) -> torch.Tensor:
        stepped: torch.Tensor = scheduler.step(noise_pred, timestep, latents, return_dict=False)[0]
        return stepped

    def decode(
        self,
        components: WanComponents,
        latents: torch.Tensor,
        cond: WanConditioning,
        request: FamilyRequest,
        decode_chunk_size: int,
        vae_tiling: bool,
        generator: torch.Generator,
    ) -> torch.Tensor:
        return decode_latents(components, latents, cond, vae_tiling)


FAMILY = WanFamily()
