"""Carry a MemoryPlan out on the loaded modules: effects only, no decisions, diffusers/accelerate APIs only.

``modules`` maps a model's network names ("unet" or "transformer", "vae", "text_encoder", "image_encoder")
to modules whose weights are on the CPU; ``roles`` (from the model's family) says which one denoises, which
ones encode and the order they run in. ``apply_plan`` casts them to the plan's dtype (the VAE to the plan's
``vae_dtype`` where it has one), stores the denoiser in float8 if the plan says so, hooks the feed-forward
chunking, then places the weights:

- RESIDENT: ``module.to(device)``; with ``release_encoders`` the encoders instead get accelerate
  ``cpu_offload_with_hook`` hooks, so they visit the device only while they run.
- MODEL_OFFLOAD: accelerate ``cpu_offload_with_hook`` chained in ``roles.offload_order``, the order of
  diffusers' ``enable_model_cpu_offload`` for the family (e.g. text_encoder -> image_encoder -> unet -> vae).
- GROUP_OFFLOAD: diffusers ``apply_group_offloading`` (block level for the denoiser, leaf level for the rest,
  ``use_stream=True`` on CUDA) on every model; weights pinned up front, or on the fly (``low_cpu_mem_usage``)
  when the plan says so (host memory short: memory/host.py).
- SEQUENTIAL_OFFLOAD: accelerate ``cpu_offload`` on every model.

``reset_placement`` undoes all of it (hooks removed, weights back on the CPU, cache emptied) so a new plan
can be applied after an out-of-memory error; the device's memory is back at its baseline afterwards.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from stillmotion.memory.chunking import disable_ff_chunking, enable_ff_chunking
from stillmotion.memory.types import GroupOffloadType, MemoryPlan, Placement
from stillmotion.models.family import ModuleRoles

logger = logging.getLogger(__name__)

_OFFLOAD_HOOK_ATTR = "_stillmotion_offload_hook"
_GROUP_HOOK_NAMES = ("group_offloading", "layer_execution_tracker", "lazy_prefetch_group_offloading")
_LAYERWISE_CASTING_HOOK = "layerwise_casting"
FP8_STORAGE_DTYPE = "float8_e4m3fn"


def torch_dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name)
    assert isinstance(dtype, torch.dtype), name
    return dtype


def apply_plan(
    modules: Mapping[str, torch.nn.Module], plan: MemoryPlan, device: torch.device, roles: ModuleRoles
) -> None:
    """Cast, chunk, store in fp8 and place ``modules`` as ``plan`` says (the engine does the rest)."""
    dtype = torch_dtype(plan.dtype)
    for name, module in modules.items():
        # A quantized model (a GGUF transformer) was loaded computing in the plan's dtype and cannot be cast.
        if getattr(module, "is_quantized", False):
            continue
        # The VAE may keep its own dtype (Wan's float32 VAE beside a bfloat16 transformer).
        wanted = torch_dtype(plan.effective_vae_dtype) if name == "vae" else dtype
        if _dtype_of(module) != wanted:  # a no-op cast still makes diffusers warn about fp32 modules
            module.to(dtype=wanted)
    denoisers = roles.denoisers(modules)  # the denoiser, and a two-expert model's second expert
    for name in denoisers:
        denoiser: Any = modules[name]  # a diffusers ModelMixin
        if plan.fp8_weights and not has_fp8_storage(denoiser):
            denoiser.enable_layerwise_casting(
                storage_dtype=torch_dtype(FP8_STORAGE_DTYPE), compute_dtype=dtype
            )
        if plan.ff_chunk_size is not None:
            enable_ff_chunking(denoiser, plan.ff_chunk_size)

    encoders = [name for name in roles.encoders if name in modules]
    if plan.placement is Placement.RESIDENT:
        for name, module in modules.items():
            if plan.release_encoders and name in encoders:
                continue
            module.to(device)
        if plan.release_encoders:
            _model_offload_chain([modules[name] for name in encoders], device)
    elif plan.placement is Placement.MODEL_OFFLOAD:
        _model_offload_chain([modules[name] for name in roles.offload_order if name in modules], device)
    elif plan.placement is Placement.GROUP_OFFLOAD:
        from diffusers.hooks import apply_group_offloading

        use_stream = device.type == "cuda"
        for name, module in modules.items():
            offload_type = plan.group_offload_type or GroupOffloadType.LEAF_LEVEL
            if name not in denoisers:
                offload_type = GroupOffloadType.LEAF_LEVEL  # small models: the finest grain costs nothing
            kwargs: dict[str, Any] = {}
            if offload_type is GroupOffloadType.BLOCK_LEVEL:
                kwargs["num_blocks_per_group"] = 1
            apply_group_offloading(
                module,
                onload_device=device,
                offload_device=torch.device("cpu"),
                offload_type=offload_type.value,
                use_stream=use_stream,
                low_cpu_mem_usage=plan.pin_on_the_fly,  # one host copy, pinned per group as it loads
                **kwargs,
            )
    elif plan.placement is Placement.SEQUENTIAL_OFFLOAD:
        from accelerate import cpu_offload

        for module in modules.values():
            cpu_offload(module, execution_device=device)
    else:  # pragma: no cover - exhaustive
        raise ValueError(f"unknown placement {plan.placement!r}")


def held_host_bytes(modules: Iterable[torch.nn.Module]) -> int:
    """Bytes of the modules' weights and buffers in host memory now (each storage counted once)."""
    seen: set[int] = set()
    total = 0
    for module in modules:
        for tensor in (t for held in (*module.parameters(), *module.buffers()) for t in _plain_tensors(held)):
            if tensor.device.type != "cpu" or tensor.is_meta:
                continue
            storage = tensor.untyped_storage()
            if storage.data_ptr() in seen:
                continue
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def _plain_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The tensors holding ``tensor``'s memory: itself, or a wrapper subclass's inner tensors (torchao's int8
    weights: int8 data and scales), which own the storage the wrapper has none of."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    if not is_traceable_wrapper_subclass(tensor):
        return [tensor]
    names, _ = tensor.__tensor_flatten__()
    return [plain for name in names for plain in _plain_tensors(getattr(tensor, name))]


def _model_offload_chain(chain: list[torch.nn.Module], device: torch.device) -> None:
    from accelerate import cpu_offload_with_hook

    previous = None
    for module in chain:
        module.to("cpu")
        _, hook = cpu_offload_with_hook(module, execution_device=device, prev_module_hook=previous)
        setattr(module, _OFFLOAD_HOOK_ATTR, hook)
        previous = hook


def _dtype_of(module: torch.nn.Module) -> torch.dtype | None:
    parameter = next(module.parameters(), None)
    return None if parameter is None else parameter.dtype


def release_encoders(modules: Mapping[str, torch.nn.Module], plan: MemoryPlan, roles: ModuleRoles) -> None:
    """Right after prompt and image encoding: move the encoders (and, offloaded, the VAE) off the device."""
    if not plan.release_encoders:
        return
    names = list(roles.encoders)
    if plan.placement is Placement.MODEL_OFFLOAD:
        names.append("vae")  # it reloads itself for the decode
    for name in names:
        module = modules.get(name)
        hook = getattr(module, _OFFLOAD_HOOK_ATTR, None) if module is not None else None
        if hook is not None:
            hook.offload()
        elif module is not None and plan.placement is Placement.RESIDENT:
            module.to("cpu")
    _empty_cache()


def reset_placement(modules: Mapping[str, torch.nn.Module]) -> None:
    """Undo every hook of apply_plan and put all weights back on the CPU; memory returns to its baseline.

    fp8 storage is the exception: diffusers cannot undo layerwise casting (the weights were rounded), so the
    denoiser keeps it; ``needs_reload`` tells the engine to reload the model before an exact plan.
    """
    from accelerate.hooks import remove_hook_from_module

    for module in modules.values():
        if hasattr(module, _OFFLOAD_HOOK_ATTR):
            delattr(module, _OFFLOAD_HOOK_ATTR)
        remove_hook_from_module(module, recurse=True)  # accelerate: model and sequential offload
        _remove_diffusers_hooks(module)
        disable_ff_chunking(module)
    for module in modules.values():
        _to_cpu(module)
    gc.collect()
    _empty_cache()


def has_fp8_storage(denoiser: torch.nn.Module) -> bool:
    """Whether the denoiser's weights are stored in float8 (layerwise casting hooks present)."""
    for sub in denoiser.modules():
        registry = getattr(sub, "_diffusers_hook", None)
        if registry is not None and registry.get_hook(_LAYERWISE_CASTING_HOOK) is not None:
            return True
    return False


def needs_reload(modules: Mapping[str, torch.nn.Module], plan: MemoryPlan, roles: ModuleRoles) -> bool:
    """True when a denoiser holds fp8-rounded weights but ``plan`` is exact: reload it from disk first."""
    return not plan.fp8_weights and any(has_fp8_storage(modules[name]) for name in roles.denoisers(modules))


def _remove_diffusers_hooks(module: torch.nn.Module) -> None:
    registry = getattr(module, "_diffusers_hook", None)
    names = list(_GROUP_HOOK_NAMES)  # fp8 storage (layerwise casting) cannot be undone: see reset_placement
    if registry is not None:
        for name in names:
            registry.remove_hook(name, recurse=True)
    for sub in module.modules():
        sub_registry = getattr(sub, "_diffusers_hook", None)
        if sub_registry is not None:
            for name in names:
                sub_registry.remove_hook(name, recurse=False)


def _to_cpu(module: torch.nn.Module) -> None:
    module.to("cpu")


def _empty_cache() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        torch.cuda.empty_cache()
