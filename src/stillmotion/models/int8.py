"""int8 weight storage: torchao's int8 weight-only quantization, applied while the weights load.

The planner chooses it (memory/plan.py, ``MemoryPlan.int8_weights``) where no 16-bit plan fits and approximate
savings are allowed; it quantizes the networks that hold most of the weights (``INT8_ROLES``: the denoiser(s)
and the text encoder), about halving their memory on the host and on the device. torchao is well kept
(PyTorch's own quantization library) and both diffusers and transformers load through it
(``TorchAoConfig``), quantizing each layer as its weights arrive, so the 16-bit weights are never all in
memory at once; diffusers' group offloading moves torchao's tensors (hooks/group_offloading.py).

Three ways in, one result: a folder or hub snapshot loads with ``quantization_config`` (``diffusers_kwargs``,
``transformers_kwargs``); a built network (the tiny and full-size random builds) is quantized in place with
torchao's ``quantize_`` and the same config (``quantize_built``), skipping the layers the loaders skip.

torchao is the ``quant`` extra; without it the planner never chooses int8 (``int8_available``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import torch

from stillmotion.models.registry import INT8_ROLES

__all__ = [
    "INT8_ROLES",
    "convertible_weights",
    "diffusers_kwargs",
    "quantize_built",
    "quantized_weights",
    "transformers_kwargs",
]


def _int8_config() -> Any:
    """torchao's int8 weight-only config (one int8 weight per element, one scale per output row)."""
    # torchao logs that its CUDA-only kernels cannot load on a CPU build, and warns about configs it plans to
    # retire; neither concerns int8 weight-only here.
    logging.getLogger("torchao").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchao.quantization import Int8WeightOnlyConfig

        return Int8WeightOnlyConfig()


def diffusers_kwargs() -> dict[str, Any]:
    """``from_pretrained`` arguments that load a diffusers model (a UNet, a transformer) in int8."""
    from diffusers import TorchAoConfig

    return {"quantization_config": TorchAoConfig(_int8_config())}


def transformers_kwargs() -> dict[str, Any]:
    """``from_pretrained`` arguments that load a transformers model (the text encoder) in int8."""
    from transformers import TorchAoConfig

    return {"quantization_config": TorchAoConfig(quant_type=_int8_config())}


def _to_convert(module: torch.nn.Module) -> Callable[[torch.nn.Module, str], bool]:
    """The layers the loaders convert: every ``nn.Linear``, except, in a diffusers model, those under the
    modules it keeps in float32 (``_keep_in_fp32_modules``: Wan's time embedder). transformers' loader
    converts a text encoder's every linear layer (T5's ``wo`` too)."""
    from diffusers import ModelMixin

    keep = (
        tuple(getattr(module, "_keep_in_fp32_modules", None) or ()) if isinstance(module, ModelMixin) else ()
    )

    def linear_to_convert(layer: torch.nn.Module, name: str) -> bool:
        return isinstance(layer, torch.nn.Linear) and not any(part in keep for part in name.split("."))

    return linear_to_convert


def convertible_weights(module: torch.nn.Module) -> int:
    """How many of ``module``'s weights int8 storage converts (works on the meta device):
    ``ComponentParams.linear``'s count."""
    convert = _to_convert(module)
    return sum(layer.weight.numel() for name, layer in module.named_modules() if convert(layer, name))


def loading_kwargs(enabled: bool, library: str) -> dict[str, Any]:
    """``from_pretrained``'s int8 arguments for a "diffusers" or "transformers" model; none when not
    ``enabled`` (a 16-bit load)."""
    if not enabled:
        return {}
    return diffusers_kwargs() if library == "diffusers" else transformers_kwargs()


def quantize_built(module: torch.nn.Module) -> None:
    """Quantize a built network's layers in place, the layers the loaders convert (``_to_convert``)."""
    from torchao.quantization import quantize_

    quantize_(module, _int8_config(), filter_fn=_to_convert(module))


def quantized_weights(module: torch.nn.Module) -> int:
    """How many weights of ``module`` are stored in int8 (torchao tensors): what a plan's estimate counts."""
    from torchao.utils import TorchAOBaseTensor

    return sum(
        layer.weight.numel()
        for layer in module.modules()
        if isinstance(layer, torch.nn.Linear) and isinstance(layer.weight, TorchAOBaseTensor)
    )
