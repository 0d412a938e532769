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
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F  # noqa: N812  (the conventional name)
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from stillmotion.bench.flops import PEAK_TFLOPS, call_flops
from stillmotion.bench.meta_device import denoiser_inputs, meta_networks, meta_tensor, meta_unet_inputs

if TYPE_CHECKING:
    from stillmotion.models.registry import ModelSpec

ALLOCATOR_BLOCK_BYTES = 512  # the CUDA caching allocator rounds every block up to this
GIB = 1024**3


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
# The networks and the inputs of their calls come from bench/meta_device.py (the engine's shapes).
# ``python -m stillmotion.bench.simulate MODEL`` prints the coefficients that models/registry.py holds for
# MODEL (docs/memory.md, "Other families").


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
            vae.decode(meta_tensor(dtype, frames, channels, h, w), return_dict=False)
        elif spec.family == "svd":
            vae.decode(meta_tensor(dtype, frames, channels, h, w), num_frames=frames, return_dict=False)
        else:  # a whole-video VAE
            vae.decode(meta_tensor(dtype, 1, channels, latent_frames(spec, frames), h, w), return_dict=False)
    return tracker.peak


def family_vae_encode_peak_bytes(spec: ModelSpec, vae: Any, height: int, width: int, frames: int) -> int:
    """Simulated peak of encoding the image (Wan 2.1: the image followed by black frames), input included."""
    dtype = next(vae.parameters()).dtype
    with tracking([*vae.parameters(), *vae.buffers()]) as tracker:
        if spec.family in ("i2vgen-xl", "svd"):
            vae.encode(meta_tensor(dtype, 1, 3, height, width))
        else:
            # Wan 2.1 I2V encodes the image followed by black frames; Wan 2.2 TI2V and LTX the image alone.
            video_frames = frames if spec.family == "wan" and spec.params.image_encoder else 1
            vae.encode(meta_tensor(dtype, 1, 3, video_frames, height, width))
    return tracker.peak


def _largest_neighbour_pair(sizes: list[int]) -> int:
    """The most parameters two consecutive groups hold: the running one and the one prefetched after it."""
    if len(sizes) < 2:
        return sum(sizes)
    return max(a + b for a, b in zip(sizes, sizes[1:], strict=False))


def group_block_resident_fraction(denoiser: torch.nn.Module) -> float:
    """Weights on the device under block-level group offload, one block per group, with streams.

    diffusers groups each top-level ModuleList's blocks, in order; every other top-level module forms one
    "unmatched" group that stays for the whole call. At the peak the running block and the next one, being
    prefetched, are there too.
    """
    total = sum(p.numel() for p in denoiser.parameters())
    unmatched = sum(p.numel() for p in denoiser.parameters(recurse=False))
    blocks: list[int] = []
    for child in denoiser.children():
        if isinstance(child, torch.nn.ModuleList | torch.nn.Sequential):
            blocks.extend(sum(p.numel() for p in block.parameters()) for block in child)
        else:
            unmatched += sum(p.numel() for p in child.parameters())
    return (unmatched + _largest_neighbour_pair(blocks)) / total


def leaf_pair_params(module: torch.nn.Module) -> int:
    """Parameters of the largest pair of consecutive leaf layers (leaf-level offload: running + prefetched).

    A tied weight counts once (T5's ``shared`` and ``encoder.embed_tokens`` are one embedding).
    """
    seen: set[int] = set()
    sizes = []
    for leaf in module.modules():
        if list(leaf.children()):
            continue
        params = [p for p in leaf.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            sizes.append(sum(p.numel() for p in params))
    return _largest_neighbour_pair(sizes)


# Each family's native shape (height, width, frames): the coefficients below are measured there.
REFERENCE_SHAPES: dict[str, tuple[int, int, int]] = {
    "i2vgen-xl": (512, 512, 16),
    "wan2.1-i2v-14b": (480, 832, 81),
    "wan2.2-ti2v-5b": (704, 1280, 121),
    "svd-xt": (576, 1024, 25),
    "ltx-video": (512, 704, 121),
}
ASSUMED_MFU = 0.4  # PRIOR for unmeasured families: the fraction of PEAK_TFLOPS one step reaches


def _slope(peak_a: int, peak_b: int, count_a: int, count_b: int, pixels: int) -> tuple[float, float]:
    """(fixed, per count) GiB per pixel of a peak that is linear in a count (frames decoded or encoded)."""
    per = (peak_b - peak_a) / (count_b - count_a) / GIB / pixels
    return peak_a / GIB / pixels - per * count_a, per


def family_coefficients(spec: ModelSpec) -> dict[str, float]:
    """The simulator's memory (and FLOP-based speed) coefficients of ``spec`` at its reference shape.

    Activations are for the spec's 16-bit dtype; docs/memory.md explains each line.
    """
    from stillmotion.memory.chunking import disable_ff_chunking, enable_ff_chunking
    from stillmotion.memory.estimate import latent_tokens
    from stillmotion.memory.types import Shape
    from stillmotion.models.adapters import family_of
    from stillmotion.models.memory_facts import DecodeChunking

    dtype = getattr(torch, spec.half_dtype)
    networks = meta_networks(spec, dtype)
    roles = family_of(spec).roles
    denoiser, vae = networks[roles.denoiser], networks["vae"]
    assert spec.config_name is not None
    height, width, frames = REFERENCE_SHAPES[spec.config_name]
    pixels = height * width
    units = latent_tokens(spec, Shape(height, width, frames), 1)
    out: dict[str, float] = {"units": units}

    full = denoiser_peak_bytes(spec, denoiser, height, width, frames, 1)
    batched = denoiser_peak_bytes(spec, denoiser, height, width, frames, 2)
    # Per latent element of the larger of one and two rows per call (SVD's batch of 2 is 4% above linear).
    out["denoiser_act_gib_per_unit"] = max(full, batched / 2) / GIB / units
    enable_ff_chunking(denoiser, 1)  # 1 MiB chunks: every feed-forward as small as it gets
    out["denoiser_ff_floor_fraction"] = denoiser_peak_bytes(spec, denoiser, height, width, frames, 1) / full
    disable_ff_chunking(denoiser)

    step = spec.architecture.temporal_compression
    short = 1 + step * max(1, (frames - 1) // step // 2) if step > 1 else max(2, frames // 2)
    if spec.memory.decode_chunking is DecodeChunking.EXACT:
        short, frames_b = 2, 8
    else:
        frames_b = frames
    decode_a = family_vae_decode_peak_bytes(spec, vae, height, width, short)
    decode_b = family_vae_decode_peak_bytes(spec, vae, height, width, frames_b)
    fixed, per_frame = _slope(decode_a, decode_b, short, frames_b, pixels)
    out["vae_decode_fixed_gib_per_pixel"] = fixed
    out["vae_decode_gib_per_pixel_frame"] = per_frame
    out["vae_decode_single_gib_per_pixel"] = (
        family_vae_decode_peak_bytes(spec, vae, height, width, 1) / GIB / pixels
    )
    encode_a = family_vae_encode_peak_bytes(spec, vae, height, width, short)
    encode_b = family_vae_encode_peak_bytes(spec, vae, height, width, frames)
    fixed, per_frame = _slope(encode_a, encode_b, short, frames, pixels)
    out["vae_encode_gib_per_pixel"] = fixed
    out["vae_encode_gib_per_pixel_frame"] = per_frame

    bytes_per_param = torch.empty((), dtype=dtype).element_size()
    out["group_block_resident_fraction"] = group_block_resident_fraction(denoiser)
    leaf = max(leaf_pair_params(networks[name]) for name in networks if name not in roles.encoders)
    out["group_leaf_resident_gib"] = leaf * bytes_per_param / GIB
    encoders = [leaf_pair_params(networks[name]) for name in roles.encoders if name in networks]
    out["encoder_leaf_resident_gib"] = max(encoders, default=0) * bytes_per_param / GIB

    tflop = call_flops(denoiser, denoiser_inputs(spec, denoiser, height, width, frames, 2)) / 1e12
    out["tflop_per_guided_step"] = tflop
    out["step_s_per_unit"] = tflop / (ASSUMED_MFU * PEAK_TFLOPS) / (2 * units)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m stillmotion.bench.simulate MODEL [MODEL ...]``: print each model's coefficients as JSON."""
    import sys

    from stillmotion.models.registry import get_spec

    names = sys.argv[1:] if argv is None else argv
    for name in names:
        sys.stdout.write(json.dumps({name: family_coefficients(get_spec(name))}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
