"""The I2VGen-XL adapter (models/family.py): load its components and run encode / one step / decode.

stillmotion owns the loop (engine/engine.py) because diffusers' I2VGenXLPipeline is deprecated and has no
step callback or interrupt; every piece of math here follows that pipeline (diffusers 0.42.1,
pipelines/deprecated/i2vgen_xl) so the frames agree with it (tests/engine/test_equivalence.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import PIL.Image
import torch
from diffusers import AutoencoderKL, DDIMScheduler, I2VGenXLUNet
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

logger = logging.getLogger(__name__)

MODULE_NAMES = ("unet", "vae", "text_encoder", "image_encoder")
# diffusers' I2VGenXLPipeline.model_cpu_offload_seq
ROLES = ModuleRoles(
    denoiser="unet",
    encoders=("text_encoder", "image_encoder"),
    offload_order=("text_encoder", "image_encoder", "unet", "vae"),
)


@dataclass
class I2VGenXLComponents:
    """The seven parts of an I2VGen-XL checkpoint, as diffusers and transformers objects."""

    unet: Any
    vae: Any
    text_encoder: Any
    image_encoder: Any
    tokenizer: Any
    feature_extractor: Any
    scheduler: Any

    def modules(self) -> dict[str, torch.nn.Module]:
        """The four weight-carrying models, by name (what the memory plan places)."""
        return {name: getattr(self, name) for name in MODULE_NAMES}

    @property
    def vae_scale_factor(self) -> int:
        return int(2 ** (len(self.vae.config.block_out_channels) - 1))

    @property
    def dtype(self) -> torch.dtype:
        dtype: torch.dtype = self.unet.dtype
        return dtype


@dataclass(frozen=True)
class Conditioning:
    """Everything the UNet is conditioned on, for the negative (unconditional) and positive halves."""

    prompt_embeds: torch.Tensor  # (1, 77, D)
    negative_prompt_embeds: torch.Tensor | None  # None without classifier-free guidance
    image_embeds: torch.Tensor  # (1, 1, D); the negative half is zeros, as in the reference
    image_latents: torch.Tensor  # (1, 4, frames, h, w): the image latent plus per-frame position masks
    fps: int


def check_components(components: I2VGenXLComponents) -> None:
    """Fail early with a clear message when a folder holds something other than I2VGen-XL."""
    if not isinstance(components.unet, I2VGenXLUNet):
        raise TypeError(f"unet is a {type(components.unet).__name__}, not an I2VGenXLUNet")
    if not isinstance(components.vae, AutoencoderKL):
        raise TypeError(f"vae is a {type(components.vae).__name__}, not an AutoencoderKL")
    if not isinstance(components.scheduler, DDIMScheduler):
        logger.warning(
            "scheduler is %s, not DDIMScheduler: OOM resume assumes a stateless step",
            type(components.scheduler).__name__,
        )


# 1. Prompt ---------------------------------------------------------------------------------------------


@torch.no_grad()
def encode_text(components: I2VGenXLComponents, text: str, device: torch.device) -> torch.Tensor:
    """CLIP text embedding, clip_skip=1: penultimate layer, then the final layer norm (as the pipeline)."""
    tokenizer = components.tokenizer
    ids = tokenizer(
        [text],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    encoder = components.text_encoder
    output = encoder(ids.to(device), output_hidden_states=True)
    hidden = output.hidden_states[-2]
    # transformers 5 flattened CLIPTextModel (no .text_model); 4.x keeps the layer norm under text_model.
    final_layer_norm = getattr(encoder, "text_model", encoder).final_layer_norm
    embeds: torch.Tensor = final_layer_norm(hidden)
    return embeds.to(dtype=encoder.dtype, device=device)


# 2. Image ----------------------------------------------------------------------------------------------


def center_crop_wide(image: PIL.Image.Image, size: tuple[int, int]) -> PIL.Image.Image:
    """Scale so the image covers ``size`` (width, height), then centre-crop: the reference preprocessing.

    Hand-written because diffusers keeps it private in the deprecated pipeline; the floor division inside
    round() is the reference's own and is kept for identical pixels.
    """
    scale = min(image.size[0] / size[0], image.size[1] / size[1])
    image = image.resize(
        (round(image.width // scale), round(image.height // scale)), resample=PIL.Image.Resampling.BOX
    )
    left = (image.width - size[0]) // 2
    top = (image.height - size[1]) // 2
    return image.crop((left, top, left + size[0], top + size[1]))


@torch.no_grad()
def encode_image(
    components: I2VGenXLComponents, image: PIL.Image.Image, width: int, device: torch.device
) -> torch.Tensor:
    """CLIP image embedding of the square centre crop, (1, 1, D)."""
    crop = components.feature_extractor.crop_size
    square = center_crop_wide(image, (width, width)).resize(
        (crop["width"], crop["height"]), PIL.Image.Resampling.BILINEAR
    )
    processor = VideoProcessor(vae_scale_factor=components.vae_scale_factor, do_resize=False)
    pixels = processor.numpy_to_pt(processor.pil_to_numpy(square))
    pixels = components.feature_extractor(
        images=pixels,
        do_normalize=True,
        do_center_crop=False,
        do_resize=False,
        do_rescale=False,
        return_tensors="pt",
    ).pixel_values
    encoder = components.image_encoder
    embeds: torch.Tensor = encoder(pixels.to(device=device, dtype=encoder.dtype)).image_embeds
    return embeds.unsqueeze(1)


@torch.no_grad()
def encode_image_latents(
    components: I2VGenXLComponents,
    image: PIL.Image.Image,
    height: int,
    width: int,
    num_frames: int,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """VAE latent of the input, followed by one position mask per later frame: (1, 4, frames, h, w)."""
    processor = VideoProcessor(vae_scale_factor=components.vae_scale_factor, do_resize=False)
    pixels = processor.preprocess(center_crop_wide(image, (width, height))).to(device=device, dtype=dtype)
    latent = components.vae.encode(pixels).latent_dist.sample(generator=generator)
    latent = (latent * components.vae.config.scaling_factor).unsqueeze(2)
    masks = [torch.ones_like(latent) * ((i + 1) / (num_frames - 1)) for i in range(num_frames - 1)]
    return torch.cat([latent, *masks], dim=2)


# 3. Denoising ------------------------------------------------------------------------------------------


def initial_latents(
    components: I2VGenXLComponents,
    num_frames: int,
    height: int,
    width: int,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
    init_noise_sigma: float,
) -> torch.Tensor:
    """Seeded starting noise (drawn on the generator's device, so a seed means the same video everywhere)."""
    shape = (
        1,
        components.unet.config.in_channels,
        num_frames,
        height // components.vae_scale_factor,
        width // components.vae_scale_factor,
    )
    latents: torch.Tensor = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    return latents * init_noise_sigma


@torch.no_grad()
def predict_noise(
    components: I2VGenXLComponents,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    cond: Conditioning,
    guidance_scale: float,
    split_guidance: bool,
) -> torch.Tensor:
    """The guided noise prediction for one step.

    With guidance, the unconditional and conditional halves run as one batch of 2 (the reference), or one
    after the other when ``split_guidance`` is set: the same math at half the activation memory.
    """
    unet = components.unet
    device = latents.device

    def run(
        batch_latents: torch.Tensor,
        text: torch.Tensor,
        image_embeds: torch.Tensor,
        image_latents: torch.Tensor,
    ) -> torch.Tensor:
        batch = batch_latents.shape[0]
        fps = torch.tensor([cond.fps] * batch, device=device)
        out: torch.Tensor = unet(
            batch_latents,
            timestep,
            encoder_hidden_states=text,
            fps=fps,
            image_latents=image_latents,
            image_embeddings=image_embeds,
            return_dict=False,
        )[0]
        return out

    if cond.negative_prompt_embeds is None:
        return run(latents, cond.prompt_embeds, cond.image_embeds, cond.image_latents)
    zeros = torch.zeros_like(cond.image_embeds)
    if split_guidance:
        uncond = run(latents, cond.negative_prompt_embeds, zeros, cond.image_latents)
        text = run(latents, cond.prompt_embeds, cond.image_embeds, cond.image_latents)
    else:
        both = run(
            torch.cat([latents, latents]),
            torch.cat([cond.negative_prompt_embeds, cond.prompt_embeds]),
            torch.cat([zeros, cond.image_embeds]),
            torch.cat([cond.image_latents, cond.image_latents]),
        )
        uncond, text = both.chunk(2)
    return uncond + guidance_scale * (text - uncond)


def scheduler_step(
    scheduler: Any, noise_pred: torch.Tensor, timestep: torch.Tensor, latents: torch.Tensor
) -> torch.Tensor:
    """One DDIM step (eta=0) on the frames-as-batch layout the reference uses."""
    b, c, f, h, w = latents.shape
    flat_latents = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    flat_noise = noise_pred.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    stepped: torch.Tensor = scheduler.step(flat_noise, timestep, flat_latents, eta=0.0).prev_sample
    return stepped[None, :].reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


# 4. Decode ---------------------------------------------------------------------------------------------


@torch.no_grad()
def decode_latents(
    components: I2VGenXLComponents, latents: torch.Tensor, decode_chunk_size: int, vae_tiling: bool = False
) -> torch.Tensor:
    """Latents -> float32 frames (frames, height, width, 3) in [0, 1], ``decode_chunk_size`` at a time.

    The VAE is a per-frame 2-D decoder, so chunking is exact; tiling is not (it blends tile seams).
    """
    vae = components.vae
    if vae_tiling:
        vae.enable_tiling()
    else:
        vae.disable_tiling()
    latents = latents / vae.config.scaling_factor
    b, c, f, h, w = latents.shape
    flat = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    chunks = [
        vae.decode(flat[i : i + decode_chunk_size]).sample for i in range(0, flat.shape[0], decode_chunk_size)
    ]
    images = torch.cat(chunks, dim=0).float()
    # Same post-processing as the pipeline's VideoProcessor: [-1, 1] -> [0, 1], channels last.
    frames = (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    return frames.cpu()


# 5. The family interface --------------------------------------------------------------------------------


class I2VGenXLFamily(ModelFamily[I2VGenXLComponents, Conditioning]):
    """I2VGen-XL through the engine's one flow: the functions above, in the order of the interface."""

    name = "i2vgen-xl"
    pipeline_classes = ("I2VGenXLPipeline",)
    roles = ROLES
    text_token_limit = 77  # CLIP's context (the tokenizer's model_max_length)
    # Each repeats (16 transformer blocks spatial + temporal, 22 resnets, 22 temporal convs) so one graph per
    # shape serves many modules; the temporal encoder holds the largest activation peak (measurements/).
    compile_blocks = (
        "BasicTransformerBlock",
        "ResnetBlock2D",
        "TemporalConvLayer",
        "I2VGenXLTransformerTemporalEncoder",
    )

    def load_folder(
        self, folder: Path, dtype: torch.dtype, variant: str | None, *, int8: bool = False
    ) -> I2VGenXLComponents:
        from transformers import (
            CLIPImageProcessor,
            CLIPTextModel,
            CLIPTokenizer,
            CLIPVisionModelWithProjection,
        )

        common = {"torch_dtype": dtype, "variant": variant, "local_files_only": True}
        src = str(folder)
        components = I2VGenXLComponents(
            unet=I2VGenXLUNet.from_pretrained(
                src, subfolder="unet", **common, **loading_kwargs(int8, "diffusers")
            ),
            vae=AutoencoderKL.from_pretrained(src, subfolder="vae", **common),
            text_encoder=CLIPTextModel.from_pretrained(
                src, subfolder="text_encoder", **common, **loading_kwargs(int8, "transformers")
            ),
            image_encoder=CLIPVisionModelWithProjection.from_pretrained(
                src, subfolder="image_encoder", **common
            ),
            tokenizer=CLIPTokenizer.from_pretrained(src, subfolder="tokenizer", local_files_only=True),
            feature_extractor=CLIPImageProcessor.from_pretrained(
                src, subfolder="feature_extractor", local_files_only=True
            ),
            scheduler=DDIMScheduler.from_pretrained(src, subfolder="scheduler", local_files_only=True),
        )
        check_components(components)
        return components

    def build_tiny(self, spec: ModelSpec, seed: int) -> I2VGenXLComponents:
        from stillmotion.models.tiny import build_tiny_components

        return I2VGenXLComponents(**build_tiny_components(seed))

    def network_builders(self, config_dir: Path) -> NetworkBuilders:
        from transformers import (
            CLIPTextConfig,
            CLIPTextModel,
            CLIPVisionConfig,
            CLIPVisionModelWithProjection,
        )

        return {
            "unet": lambda: I2VGenXLUNet.from_config(read_config(config_dir / "unet")),
            "vae": lambda: AutoencoderKL.from_config(read_config(config_dir / "vae")),
            "text_encoder": lambda: CLIPTextModel(
                CLIPTextConfig.from_json_file(config_dir / "text_encoder" / "config.json")
            ),
            "image_encoder": lambda: CLIPVisionModelWithProjection(
                CLIPVisionConfig.from_json_file(config_dir / "image_encoder" / "config.json")
            ),
        }

    def assemble(self, networks: dict[str, torch.nn.Module], config_dir: Path) -> I2VGenXLComponents:
        from transformers import CLIPImageProcessor

        from stillmotion.models.tiny import build_tiny_tokenizer

        return I2VGenXLComponents(
            **networks,
            tokenizer=build_tiny_tokenizer(),  # byte-level, 77 tokens like the real one; ids fit the vocab
            feature_extractor=CLIPImageProcessor.from_pretrained(
                str(config_dir / "feature_extractor"), local_files_only=True
            ),
            scheduler=DDIMScheduler.from_config(
                read_config(config_dir / "scheduler", "scheduler_config.json")
            ),
        )

    def encode(
        self,
        components: I2VGenXLComponents,
        request: FamilyRequest,
        image: PIL.Image.Image,
        device: torch.device,
        dtype: torch.dtype,
        generator: torch.Generator,
        cached: Cached,
        last_image: PIL.Image.Image | None = None,
    ) -> Conditioning:
        prompt = cached(("text", request.prompt), lambda: encode_text(components, request.prompt, device))
        negative = None
        if request.do_classifier_free_guidance:
            negative = cached(
                ("text", request.negative_prompt),
                lambda: encode_text(components, request.negative_prompt, device),
            )
        image_embeds = cached(
            ("image", request.width), lambda: encode_image(components, image, request.width, device)
        )
        # The reference samples the VAE posterior from the global RNG seeded like the noise, not from the
        # noise generator: a generator of its own, seeded the same, gives the reference's draw.
        sample = torch.Generator(device="cpu").manual_seed(request.seed)
        image_latents = encode_image_latents(
            components, image, request.height, request.width, request.num_frames, sample, device, dtype
        )
        return Conditioning(
            prompt_embeds=prompt.to(dtype),
            image_embeds=image_embeds.to(dtype),
            negative_prompt_embeds=None if negative is None else negative.to(dtype),
            image_latents=image_latents,
            fps=request.fps,
        )

    def new_scheduler(
        self, components: I2VGenXLComponents, request: FamilyRequest, device: torch.device
    ) -> Any:
        scheduler = type(components.scheduler).from_config(components.scheduler.config)
        # Timesteps stay on the CPU: DDIM indexes its CPU tables with them, which would force a host sync
        # per step if they lived on the GPU (exact either way; see BENCHMARKING "removing host syncs").
        scheduler.set_timesteps(request.num_inference_steps)
        return scheduler

    def initial_latents(
        self,
        components: I2VGenXLComponents,
        request: FamilyRequest,
        cond: Conditioning,
        scheduler: Any,
        generator: torch.Generator,
        device: torch.device,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        return initial_latents(
            components,
            request.num_frames,
            request.height,
            request.width,
            generator,
            device,
            dtype,
            scheduler.init_noise_sigma,
        )

    def predict_noise(
        self,
        components: I2VGenXLComponents,
        scheduler: Any,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        cond: Conditioning,
        request: FamilyRequest,
        split_guidance: bool,
    ) -> torch.Tensor:
        model_input = scheduler.scale_model_input(
            latents, timestep
        )  # DDIM: the identity, kept for schedulers
        return predict_noise(components, model_input, timestep, cond, request.guidance_scale, split_guidance)

    def scheduler_step(
        self,
        scheduler: Any,
        noise_pred: torch.Tensor,
        timestep: torch.Tensor,
        latents: torch.Tensor,
        cond: Conditioning,
    ) -> torch.Tensor:
        return scheduler_step(scheduler, noise_pred, timestep, latents)

    def decode(
        self,
        components: I2VGenXLComponents,
        latents: torch.Tensor,
        cond: Conditioning,
        request: FamilyRequest,
        decode_chunk_size: int,
        vae_tiling: bool,
        generator: torch.Generator,
    ) -> torch.Tensor:
        return decode_latents(components, latents, decode_chunk_size, vae_tiling)


FAMILY = I2VGenXLFamily()
