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
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812  (the conventional name)
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

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
            query, value = args[0], args[2]
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
