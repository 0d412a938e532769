"""The registry of model families: data, not inheritance.

``get_spec(name)`` accepts a registered name, a known Hugging Face repo id, any other ``owner/name`` repo id
(assumed to be an I2VGen-XL fine-tune, checked when loading), or a local folder with a ``model_index.json``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from stillmotion.errors import UnknownModel
from stillmotion.models.memory_facts import MemoryFacts

I2VGENXL_NEGATIVE_PROMPT = (
    "Distorted, discontinuous, Ugly, blurry, low resolution, motionless, static, disfigured, "
    "disconnected limbs, Ugly faces, incomplete arms"
)

# Resolution presets: the output area is about preset**2 pixels, the input's aspect ratio is kept.
RESOLUTION_PRESETS: dict[str, int] = {"512p": 512, "768p": 768, "1024p": 1024}


@dataclass(frozen=True)
class Defaults:
    """What a request gets for every parameter it leaves out."""

    resolution: str = "512p"
    num_frames: int = 16
    num_inference_steps: int = 50
    guidance_scale: float = 9.0
    fps: int = 8
    negative_prompt: str = I2VGENXL_NEGATIVE_PROMPT


@dataclass(frozen=True)
class Limits:
    """The rules a request must keep; ``GenerationRequest.validate`` raises one error per rule."""

    min_frames: int = 8
    max_frames: int = 32
    min_side: int = 256
    max_side: int = 1536
    max_pixels: int = 1536 * 1024
    size_multiple: int = 8  # the VAE's downsampling factor: explicit sizes must be multiples of it
    preset_multiple: int = 64  # presets snap to this, so every UNet level divides evenly
    max_inference_steps: int = 500
    min_guidance_scale: float = 1.0
    max_guidance_scale: float = 30.0
    min_fps: int = 1
    max_fps: int = 60
    max_prompt_chars: int = 2000


@dataclass(frozen=True)
class ComponentParams:
    """Parameter counts per component (exact, from the configs in shared/model-configs)."""

    unet: int
    vae: int
    text_encoder: int
    image_encoder: int

    def bytes(self, component: str, bytes_per_param: int) -> int:
        return int(getattr(self, component)) * bytes_per_param

    @property
    def total(self) -> int:
        return self.unet + self.vae + self.text_encoder + self.image_encoder


@dataclass(frozen=True)
class Architecture:
    """Shape facts the estimator and the engine need before any weight is loaded."""

    latent_channels: int = 4
    vae_scale_factor: int = 8
    unet_block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    text_max_length: int = 77


@dataclass(frozen=True)
class ModelSpec:
    """One model: where its weights come from, its defaults, limits and memory facts."""

    name: str
    family: str
    repo_id: str | None
    revision: str | None
    local_path: Path | None
    defaults: Defaults
    limits: Limits
    params: ComponentParams
    architecture: Architecture
    memory: MemoryFacts
    description: str = ""
    tiny: bool = False  # built in memory with random weights, no download
    random_weights: bool = False  # full size, seeded random weights built offline (models/random_full.py)
    aliases: tuple[str, ...] = field(default=())

    @property
    def source(self) -> str:
        """Where the weights come from, for logs and metadata."""
        if self.tiny:
            return "built-in random weights"
        if self.random_weights:
            return "built-in random weights (full size, cached after the first build)"
        if self.local_path is not None:
            return str(self.local_path)
        return f"{self.repo_id}@{self.revision or 'main'}"


I2VGENXL_MEMORY = MemoryFacts(
    # The measured coefficients are what stillmotion.memory.calibrate fits on all of ../shared/measurements
    # (tests/memory/test_estimate_vs_measurements.py holds them to it, and checks fits on held-out rows).
    # Sources: ../shared/measurements (H100, fp16, diffusers 0.42.1); the meta-device simulator
    # (stillmotion.bench.simulate); PRIOR = not yet checked on a GPU. Derivations: docs/memory.md.
    # 2.588 GiB for batch 2 x 16 frames x 64x64 latent (512p); linear in tokens to 0.1% over all 24 cells.
    unet_act_gib_per_unit=2.588 / (2 * 16 * 64 * 64),
    # Simulator: with every feed-forward chunked, the peak is 0.516-0.517 of the unchunked one on every shape.
    unet_ff_floor_fraction=0.517,
    # transformer_in: width 8 heads x 64 = 512, GEGLU projection 2 x 4 x 512.
    unet_ff_proj_width=4096,
    unet_ff_out_width=512,
    # Pipeline runs peak 1.5% above the bare UNet call (fp16-group / fp16-offload-exp rows).
    loop_extra_fraction=0.015,
    loop_extra_gib=0.02,
    # 0.5 GiB per 512x512 frame for 2-8 frames at once; 0.596 GiB for one frame (cuDNN workspace).
    vae_decode_gib_per_pixel_frame=0.5 / (512 * 512),
    vae_decode_single_gib_per_pixel=0.596 / (512 * 512),
    vae_tile_side=768,  # vae/config.json sample_size
    # 0.375 GiB for one 512x512 image.
    vae_encode_gib_per_pixel=0.375 / (512 * 512),
    encoder_act_gib=0.1,  # PRIOR: ViT-H/14 on one 224x224 image and 2 x 77 text tokens
    # Resident above the parameter bytes, mean over the activation rows (2.857-2.877 GiB resident for 2.802
    # GiB of fp16 UNet + VAE parameters).
    workspace_gib=0.0589,
    # Parameter split of the UNet (unmatched group 13%, largest pair of neighbouring up blocks 46%).
    group_block_resident_fraction=0.6,
    group_leaf_resident_gib=0.06,  # largest leaf 56 MiB, running + prefetched
    reserved_ratio_expandable=1.027,  # the largest of the measured 1.020-1.027 (fp16-offload-exp)
    # reserved - resident = 1.323 x UNet activations + 1.996 x VAE activations + 0.193 GiB: least squares on
    # relative error over the unet and vae_decode rows of the activation table (memory/calibrate.py).
    reserved_act_ratio_unet=1.323,
    reserved_act_ratio_vae=1.996,
    reserved_extra_gib=0.193,
    # s/step 0.2304 at 512p and 0.9044 at 1024p (batch 2 x 16 frames, fp16 recipe).
    step_s_fixed=0.0057,
    step_s_per_unit=(0.9044 - 0.2304) / (2 * 16 * (128 * 128 - 64 * 64)),
    pre_s=2.0,
    decode_s_per_pixel_frame=1.46 / (16 * 1024 * 1024),
    split_guidance_step_factor=1.08,  # PRIOR
    ff_chunk_step_factor=1.03,  # PRIOR (CPU: see docs/memory.md)
    fp8_step_factor=1.10,  # PRIOR: diffusers reports +8-13% for layerwise casting
    model_offload_fixed_s=3.0,  # measured: fp16-offload minus fp16, 50 steps, 512p
    group_block_step_overhead_s=0.05,  # PRIOR
    group_leaf_step_overhead_s=0.15,  # measured: fp16-group minus fp16 per step (0.136-0.162 s)
    sequential_step_overhead_s=1.0,  # PRIOR
)

I2VGENXL = ModelSpec(
    name="i2vgen-xl",
    family="i2vgen-xl",
    repo_id="ali-vilab/i2vgen-xl",
    # "Update config.json of UNet to include attention_head_dim (#12)": the last commit that changed a
    # diffusers file of the repo (see shared/model-configs/NOTES.md).
    revision="39e1979ea27be737b0278c06755e321f2b4360d5",
    local_path=None,
    defaults=Defaults(),
    limits=Limits(),
    params=ComponentParams(
        unet=1_420_469_224, vae=83_653_863, text_encoder=352_984_064, image_encoder=632_076_800
    ),
    architecture=Architecture(),
    memory=I2VGENXL_MEMORY,
    description="I2VGen-XL (Alibaba, 2023): image + text to 16-32 frames, trained at 1280x704.",
    aliases=("ali-vilab/i2vgen-xl",),
)

TINY_I2VGENXL = ModelSpec(
    name="tiny-i2vgen-xl",
    family="i2vgen-xl",
    repo_id=None,
    revision=None,
    local_path=None,
    defaults=Defaults(resolution="512p", num_frames=8, num_inference_steps=4),
    limits=Limits(min_side=32),
    # Counted from the tiny build (tests/test_tiny_model.py keeps this honest).
    params=ComponentParams(unet=0, vae=0, text_encoder=0, image_encoder=0),
    architecture=Architecture(unet_block_out_channels=(8, 16), text_max_length=77),
    memory=I2VGENXL_MEMORY,
    description="The I2VGen-XL architecture at tiny sizes with random weights: for tests and offline demos. "
    "Its videos are noise.",
    tiny=True,
)

RANDOM_I2VGENXL = replace(
    I2VGENXL,
    name="i2vgen-xl-random",
    repo_id=None,
    revision=None,
    description="The full-size I2VGen-XL architecture with seeded random weights, built offline (no "
    "download): for memory and speed testing, e.g. the benchmark. Its videos are noise. Same parameter "
    "counts as i2vgen-xl, so the same memory estimates.",
    random_weights=True,
    aliases=(),
)

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (I2VGENXL, TINY_I2VGENXL, RANDOM_I2VGENXL)}

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def list_specs() -> list[ModelSpec]:
    """Registered models, default first."""
    return list(MODELS.values())


def get_spec(name: str) -> ModelSpec:
    """Resolve a model name, repo id or local folder to its spec; raise UnknownModel listing the choices."""
    name = name.strip()
    if name in MODELS:
        return MODELS[name]
    for spec in MODELS.values():
        if name in spec.aliases:
            return spec
    path = Path(name).expanduser()
    if _is_dir(path):
        return _spec_for_folder(path)
    if _REPO_ID.match(name) and not name.startswith((".", "/")):
        # Another repo of the same family (a fine-tune or a mirror); its model_index.json is checked on load.
        return replace(I2VGENXL, name=name, repo_id=name, revision=None, aliases=())
    known = ", ".join(sorted(MODELS))
    raise UnknownModel(
        f"model={name!r} is not a registered model ({known}), an existing local folder, "
        "or a Hugging Face repo id of the form owner/name.",
        field="model",
    )


def _is_dir(path: Path) -> bool:
    """Path.is_dir that says False for a name the OS cannot even look up (too long: ENAMETOOLONG)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _spec_for_folder(path: Path) -> ModelSpec:
    index = path / "model_index.json"
    if not index.is_file():
        raise UnknownModel(
            f"model={str(path)!r} is a folder without model_index.json; point it at a diffusers-format "
            "I2VGen-XL folder (e.g. a snapshot of ali-vilab/i2vgen-xl).",
            field="model",
        )
    try:
        class_name = json.loads(index.read_text()).get("_class_name")
    except (OSError, ValueError) as exc:
        raise UnknownModel(
            f"model={str(path)!r}: model_index.json is unreadable ({exc}).", field="model"
        ) from exc
    if class_name != "I2VGenXLPipeline":
        raise UnknownModel(
            f"model={str(path)!r} holds a {class_name!r}; stillmotion runs I2VGenXLPipeline models.",
            field="model",
        )
    return replace(
        I2VGENXL, name=str(path.resolve()), repo_id=None, revision=None, local_path=path.resolve(), aliases=()
    )
