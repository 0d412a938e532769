"""Feed-forward chunking in a few large chunks, exact, for every diffusers ``FeedForward`` in a model.

Why not diffusers' ``unet.enable_forward_chunking(chunk_size=1)``: it splits the feed-forward input into
slices of ``chunk_size`` along one dimension, and that dimension is the batch x frames (spatial blocks) or
the frames (temporal blocks) axis, so ``chunk_size=1`` runs hundreds of tiny matmuls per layer (10-16x slower
on I2VGen-XL, measurements/); it also requires the axis to divide evenly, and it does not reach
``I2VGenXLTransformerTemporalEncoder`` (whose feed-forward is small anyway).

Here every ``FeedForward`` gets a diffusers ``ModelHook`` that flattens the tokens and runs them in as few
equal chunks as keep the first projection's output (the GEGLU ``proj``, 2 x inner width) under a byte cap,
writing each chunk's result into one preallocated output. Feed-forwards are per token, so only the batching of
the matmuls changes: exact up to reduction order (bitwise on most CPU kernels, fp16 noise on GPU). Layers
whose
whole input is under the cap run unchanged, so a large cap touches only the full-resolution layers.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.models.attention import FeedForward

FF_CHUNK_HOOK = "stillmotion_ff_chunking"
MIB = 1024**2


def _projection_width(ff: Any) -> int:
    """Width of the first projection's output (GEGLU: 2 x inner; GELU: inner)."""
    proj = getattr(ff.net[0], "proj", None)
    if isinstance(proj, torch.nn.Linear):
        return int(proj.out_features)
    return int(max(m.out_features for m in ff.modules() if isinstance(m, torch.nn.Linear)))


def rows_per_chunk(projection_width: int, element_size: int, chunk_bytes: int) -> int:
    """Most tokens one chunk may hold so its projection output stays under ``chunk_bytes``."""
    return max(1, chunk_bytes // (projection_width * element_size))


def chunk_bounds(rows: int, max_rows: int) -> list[tuple[int, int]]:
    """Split ``rows`` into the fewest equal-as-possible chunks of at most ``max_rows`` each."""
    count = max(1, math.ceil(rows / max_rows))
    base, extra = divmod(rows, count)
    bounds, start = [], 0
    for index in range(count):
        size = base + (1 if index < extra else 0)
        bounds.append((start, start + size))
        start += size
    return bounds


class FeedForwardChunkHook(ModelHook):  # type: ignore[misc]  # diffusers is untyped
    """Runs a ``FeedForward`` over its tokens in a few large chunks (see the module docstring)."""

    def __init__(self, chunk_bytes: int) -> None:
        super().__init__()
        self.chunk_bytes = chunk_bytes

    def new_forward(
        self, module: torch.nn.Module, hidden_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> Any:
        original = self.fn_ref.original_forward
        width = _projection_width(module)
        max_rows = rows_per_chunk(width, hidden_states.element_size(), self.chunk_bytes)
        rows = hidden_states.numel() // hidden_states.shape[-1]
        if rows <= max_rows:
            return original(hidden_states, *args, **kwargs)
        flat = hidden_states.reshape(rows, hidden_states.shape[-1])
        out: torch.Tensor | None = None
        for start, stop in chunk_bounds(rows, max_rows):
            piece = original(flat[start:stop], *args, **kwargs)
            if out is None:
                out = piece.new_empty((rows, piece.shape[-1]))
            out[start:stop] = piece
            del piece
        assert out is not None
        return out.reshape(*hidden_states.shape[:-1], out.shape[-1])


def feed_forwards(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Every diffusers ``FeedForward`` inside ``model``."""
    return [m for m in model.modules() if isinstance(m, FeedForward)]


def enable_ff_chunking(model: torch.nn.Module, chunk_mib: int) -> int:
    """Chunk every feed-forward of ``model`` so a chunk's projection output is at most ``chunk_mib`` MiB.

    Returns how many feed-forwards were hooked. Calling it again replaces the cap.
    """
    if chunk_mib < 1:
        raise ValueError(f"chunk_mib={chunk_mib} must be >= 1")
    disable_ff_chunking(model)
    modules = feed_forwards(model)
    for ff in modules:
        registry = HookRegistry.check_if_exists_or_initialize(ff)
        registry.register_hook(FeedForwardChunkHook(chunk_mib * MIB), FF_CHUNK_HOOK)
    return len(modules)


def disable_ff_chunking(model: torch.nn.Module) -> None:
    """Remove the chunking hooks (other diffusers hooks, e.g. group offloading, stay)."""
    for ff in feed_forwards(model):
        registry = getattr(ff, "_diffusers_hook", None)
        if registry is not None and registry.get_hook(FF_CHUNK_HOOK) is not None:
            registry.remove_hook(FF_CHUNK_HOOK, recurse=False)


def ff_chunking_enabled(model: torch.nn.Module) -> bool:
    for ff in feed_forwards(model):
        registry = getattr(ff, "_diffusers_hook", None)
        if registry is not None and registry.get_hook(FF_CHUNK_HOOK) is not None:
            return True
    return False
