"""Offline activation-memory simulator: runs a model on the ``meta`` device and tracks live tensor bytes.

Every tensor an op creates during the call is counted (rounded up to the CUDA caching allocator's 512-byte
blocks) until its storage dies; the maximum is the activation peak that ``torch.cuda.max_memory_allocated``
would show above the weights and inputs. ``scaled_dot_product_attention`` is replaced by an empty output of
the right shape, as CUDA's flash / memory-efficient kernels hold no attention matrix.

It needs no GPU and no weights, and it reproduces the H100 measurements of the full-size I2VGen-XL UNet to the
MiB (tests/memory/test_estimate_vs_measurements.py). The estimator's coefficients for plans that were never
measured on a GPU (feed-forward chunking) come from it (docs/memory.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F  # noqa: N812  (the conventional name)
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

if TYPE_CHECKING:
    from stillmotion.models.registry import ModelSpec

ALLOCATOR_BLOCK_BYTES = 512  # the CUDA caching allocator rounds every block up to this
# The configs of ali-vilab/i2vgen-xl shipped with the package (models/configs/i2vgen-xl).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "models" / "configs" / "i2vgen-xl"


def _storage_key(tensor: torch.Tensor) -> int:
    return int(StorageWeakRef(tensor.untyped_storage()).cdata)  # type: ignore[no-untyped-call]


class LiveBytesTracker(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Counts the bytes of storages created under it while they are alive; keeps the peak."""

    def __init__(self, ignore: list[torch.Tensor]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.ignored = {_storage_key(t) for t in ignore}
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                storage = leaf.untyped_storage()
                ref = StorageWeakRef(storage)  # type: ignore[no-untyped-call]
                key = int(ref.cdata)
                if key not in self.live and key not in self.ignored:
                    size = -(-storage.nbytes() // ALLOCATOR_BLOCK_BYTES) * ALLOCATOR_BLOCK_BYTES
                    self.live[key] = (ref, size)
                    self.current += size
        self.peak = max(self.peak, self.current)
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:  # type: ignore[no-untyped-call]
            self.current -= self.live.pop(key)[1]
        return out


class FlashAttentionShapes(TorchFunctionMode):
    """Replaces SDPA by an empty output of the right shape (flash attention's memory behaviour)."""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        if func is F.scaled_dot_product_attention:
            kwargs = kwargs or {}
            query = args[0] if args else kwargs["query"]
            value = args[2] if len(args) > 2 else kwargs["value"]  # diffusers' dispatcher passes keywords
            return query.new_empty((*query.shape[:-1], value.shape[-1]))
        return func(*args, **(kwargs or {}))


@contextmanager
def tracking(ignore: list[torch.Tensor]) -> Iterator[LiveBytesTracker]:
    tracker = LiveBytesTracker(ignore)
    with torch.no_grad(), FlashAttentionShapes(), tracker:
        yield tracker


def meta_unet(config_dir: Path = CONFIG_DIR, dtype: torch.dtype = torch.float16) -> torch.nn.Module:
    """The UNet built from its config with every parameter on ``meta`` (no memory, no weights)."""
    from accelerate import init_empty_weights
    from diffusers import I2VGenXLUNet

    config = json.loads((config_dir / "unet" / "config.json").read_text())
    with init_empty_weights():
        unet = I2VGenXLUNet.from_config(config)
    return unet.to(dtype=dtype)  # type: ignore[no-any-return]


def meta_vae(config_dir: Path = CONFIG_DIR, dtype: torch.dtype = torch.float16) -> torch.nn.Module:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL

    config = json.loads((config_dir / "vae" / "config.json").read_text())
    with init_empty_weights():
        vae = AutoencoderKL.from_config(config)
    return vae.to(dtype=dtype)  # type: ignore[no-any-return]


def meta_unet_inputs(
    unet: torch.nn.Module,
    height: int,
    width: int,
    num_frames: int,
    batch: int,
    cross_attention_dim: int = 1024,
) -> dict[str, torch.Tensor]:
    """Keyword arguments of one UNet forward at ``height x width`` pixels (latent / 8), on ``meta``."""
    dtype = next(unet.parameters()).dtype
    h, w = height // 8, width // 8

    def empty(*shape: int) -> torch.Tensor:
        return torch.empty(*shape, device="meta", dtype=dtype)

    return {
        "sample": empty(batch, 4, num_frames, h, w),
        "timestep": torch.tensor(500, device="meta"),
        "fps": torch.full((batch,), 16, device="meta", dtype=torch.int64),
        "image_latents": empty(batch, 4, num_frames, h, w),
        "image_embeddings": empty(batch, cross_attention_dim),
        "encoder_hidden_states": empty(batch, 77, cross_attention_dim),
    }


def unet_activation_peak_bytes(
    unet: torch.nn.Module,
    height: int,
    width: int,
    num_frames: int,
    batch: int,
    *,
    cross_attention_dim: int = 1024,
) -> int:
    """Simulated activation peak of one UNet forward at ``height x width`` pixels (latent / 8)."""
    inputs = meta_unet_inputs(unet, height, width, num_frames, batch, cross_attention_dim)
    with tracking([*unet.parameters(), *unet.buffers(), *inputs.values()]) as tracker:
        unet(**inputs, return_dict=False)
    return tracker.peak


def vae_decode_peak_bytes(vae: Any, height: int, width: int, frames: int) -> int:
    """Simulated activation peak of ``vae.decode`` of ``frames`` latents at once."""
    dtype = next(vae.parameters()).dtype
    latents = torch.empty(frames, 4, height // 8, width // 8, device="meta", dtype=dtype)
    with tracking([*vae.parameters(), *vae.buffers(), latents]) as tracker:
        vae.decode(latents, return_dict=False)
    return tracker.peak


def simulate(fn: Callable[[], int]) -> float:
    """Run one simulation and return GiB."""
    return fn() / 1024**3


# -- Every family: the full-size networks of a ModelSpec on ``meta`` ---------------------------------------
#
# The networks come from the shipped configs (models/configs/<config_name>, via models/random_full.py); the
# inputs below are the shapes each family's pipeline feeds them (models/<family>.py), so the peaks are those
# of the engine's calls. ``python -m stillmotion.bench.simulate MODEL`` prints the coefficients that
# models/registry.py holds for MODEL (docs/memory.md, "Other families").

FAMILY_TEXT_TOKENS = {"wan": 512, "ltx": 128}  # padded prompt lengths (the pipelines' max_sequence_length)
CLIP_TOKENS = 257  # ViT-H/14 on 224 x 224: 16 x 16 patches + the class token


def meta_networks(spec: ModelSpec, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.nn.Module]:
    """Every network of ``spec`` with parameters and buffers on ``meta`` (no memory, no weights)."""
    from stillmotion.models.random_full import empty_modules

    # Buffers too (Wan's rotary tables are buffers): an op mixing a CPU buffer and meta activations fails.
    return {name: module.to(device="meta", dtype=dtype) for name, module in empty_modules(spec).items()}


def _meta(dtype: torch.dtype, *shape: int) -> torch.Tensor:
    return torch.empty(*shape, device="meta", dtype=dtype)


def denoiser_inputs(
    spec: ModelSpec, denoiser: torch.nn.Module, height: int, width: int, num_frames: int, batch: int
) -> dict[str, Any]:
    """Keyword arguments of one denoiser call of ``spec``'s family, on ``meta``."""
    from stillmotion.memory.estimate import latent_frames

    dtype = next(denoiser.parameters()).dtype
    config: Any = getattr(denoiser, "config", None)
    factor = spec.architecture.vae_scale_factor
    frames = latent_frames(spec, num_frames)
    h, w = height // factor, width // factor
    if spec.family == "i2vgen-xl":
        return meta_unet_inputs(denoiser, height, width, num_frames, batch, config.cross_attention_dim)
    if spec.family == "svd":
        return {
            "sample": _meta(dtype, batch, frames, config.in_channels, h, w),
            "timestep": torch.tensor(1.0, device="meta"),
            "encoder_hidden_states": _meta(dtype, batch, 1, config.cross_attention_dim),
            "added_time_ids": _meta(dtype, batch, 3),
        }
    if spec.family == "wan":
        patch = config.patch_size
        expand = config.image_dim is None  # Wan 2.2 TI2V: one timestep per token
        tokens = frames * (h // patch[1]) * (w // patch[2])
        inputs = {
            "hidden_states": _meta(dtype, batch, config.in_channels, frames, h, w),
            "timestep": _meta(torch.float32, batch, tokens) if expand else _meta(torch.float32, batch),
            "encoder_hidden_states": _meta(dtype, batch, FAMILY_TEXT_TOKENS["wan"], config.text_dim),
        }
        if not expand:
            inputs["encoder_hidden_states_image"] = _meta(dtype, batch, CLIP_TOKENS, config.image_dim)
        return inputs
    if spec.family == "ltx":
        tokens = frames * h * w
        text = FAMILY_TEXT_TOKENS["ltx"]
        return {
            "hidden_states": _meta(dtype, batch, tokens, config.in_channels),
            "encoder_hidden_states": _meta(dtype, batch, text, config.caption_channels),
            "timestep": _meta(torch.float32, batch, tokens),
            "encoder_attention_mask": torch.ones(batch, text, device="meta", dtype=torch.bool),
            "num_frames": frames,
            "height": h,
            "width": w,
            "rope_interpolation_scale": (spec.architecture.temporal_compression / 25, factor, factor),
        }
    raise ValueError(f"no meta inputs for family {spec.family!r}")


def denoiser_peak_bytes(
    spec: ModelSpec, denoiser: torch.nn.Module, height: int, width: int, num_frames: int, batch: int
) -> int:
    """Simulated activation peak of one denoiser call (above weights and inputs)."""
    inputs = denoiser_inputs(spec, denoiser, height, width, num_frames, batch)
    tensors = [value for value in inputs.values() if isinstance(value, torch.Tensor)]
    with tracking([*denoiser.parameters(), *denoiser.buffers(), *tensors]) as tracker:
        denoiser(**inputs, return_dict=False)
    return tracker.peak


def family_vae_decode_peak_bytes(spec: ModelSpec, vae: Any, height: int, width: int, frames: int) -> int:
    """Simulated peak of decoding ``frames`` frames at once (the decoded frames included)."""
    from stillmotion.memory.estimate import latent_frames

    dtype = next(vae.parameters()).dtype
    factor = spec.architecture.vae_scale_factor
    h, w = height // factor, width // factor
    channels = spec.architecture.latent_channels
    with tracking([*vae.parameters(), *vae.buffers()]) as tracker:
        if spec.family == "i2vgen-xl":
            vae.decode(_meta(dtype, frames, channels, h, w), return_dict=False)
        elif spec.family == "svd":
            vae.decode(_meta(dtype, frames, channels, h, w), num_frames=frames, return_dict=False)
        else:  # a whole-video VAE
            vae.decode(_meta(dtype, 1, channels, latent_frames(spec, frames), h, w), return_dict=False)
    return tracker.peak


def family_vae_encode_peak_bytes(spec: ModelSpec, vae: Any, height: int, width: int, frames: int) -> int:
    """Simulated peak of encoding the image (Wan 2.1: the image followed by black frames), input included."""
    dtype = next(vae.parameters()).dtype
    with tracking([*vae.parameters(), *vae.buffers()]) as tracker:
        if spec.family in ("i2vgen-xl", "svd"):
            vae.encode(_meta(dtype, 1, 3, height, width))
        else:
            # Wan 2.1 I2V encodes the image followed by black frames; Wan 2.2 TI2V and LTX the image alone.
            video_frames = frames if spec.family == "wan" and spec.params.image_encoder else 1
            vae.encode(_meta(dtype, 1, 3, video_frames, height, width))
    return tracker.peak


def group_block_resident_fraction(denoiser: torch.nn.Module) -> float:
    """Weights on the device under block-level group offload, one block per group, with streams.

    diffusers groups each top-level ModuleList's blocks; every other top-level module forms one "unmatched"
    group that stays for the whole call. At the peak the running block and the prefetched next one are there.
    """
    total = sum(p.numel() for p in denoiser.parameters())
    unmatched = 0
    largest_block = 0
    for child in denoiser.children():
        if isinstance(child, torch.nn.ModuleList | torch.nn.Sequential):
            for block in child:
                largest_block = max(largest_block, sum(p.numel() for p in block.parameters()))
        else:
            unmatched += sum(p.numel() for p in child.parameters())
    unmatched += sum(p.numel() for p in denoiser.parameters(recurse=False))
    return (unmatched + 2 * largest_block) / total


def largest_leaf_params(module: torch.nn.Module) -> int:
    """Parameters of the largest leaf layer (leaf-level group offload moves one at a time)."""
    sizes = [
        sum(p.numel() for p in leaf.parameters(recurse=False))
        for leaf in module.modules()
        if not list(leaf.children())
    ]
    return max(sizes, default=0)
