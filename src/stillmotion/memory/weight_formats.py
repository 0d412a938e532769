"""Weight formats: how many bytes a network's weights take in memory, per format. Pure: no torch.

- 16-bit and float32: the parameter count x 2 or 4 bytes (``BYTES_PER_PARAM``);
- fp8 storage (the plan's ``fp8_weights``, a denoiser only): 1 byte per parameter;
- a quantized file (a GGUF transformer, models/gguf.py): the file's own count, read from its tensor types
  (``QuantizedWeights.weight_bytes``): quantized tensors as stored, float tensors at the run's dtype;
- int8 storage (the plan's ``int8_weights``: torchao's int8 weight-only quantization of the denoiser(s) and
  the text encoder, applied while they load, models/int8.py): 1 byte per weight of their ``nn.Linear``
  layers (``ComponentParams.linear``), the rest of the role in the run's dtype. torchao adds one scale per
  output row (under 0.1% of a layer's bytes at these widths): not counted, inside the estimate's margin.

``weight_bytes`` is the one place the estimator (memory/estimate.py) asks; a request that runs a quantized
denoiser carries it (``RequestShape.quantized_denoiser``).
"""

from __future__ import annotations

import importlib.util
from typing import Protocol

BYTES_PER_PARAM = {"float32": 4, "float16": 2, "bfloat16": 2}
FP8_BYTES_PER_PARAM = 1
INT8_BYTES_PER_PARAM = 1
# The roles int8 storage quantizes (INT8_ROLES, models/registry.py): the networks that hold most of the
# weights. The VAE (convolutions) and the image encoder (CLIP vision, 0.6B) stay in the run's dtype.
# ASSUMED (no GPU lent to measure it): a denoising step with int8 weight-only linears, eager, against 16-bit.
# torchao dequantizes each weight as its matmul runs; at video token counts the matmul dominates.
INT8_STEP_FACTOR = 1.15
INT8_LABEL = "int8 weight-only (torchao)"


class QuantizedWeights(Protocol):
    """A quantized denoiser file (models/gguf.py's ``GgufWeights`` satisfies it)."""

    @property
    def label(self) -> str: ...  # the format, e.g. "GGUF Q8_0"

    def weight_bytes(self, dtype: str) -> int: ...  # in memory, when it computes in ``dtype``


def weight_bytes(
    params: int,
    dtype: str,
    *,
    fp8: bool = False,
    quantized: QuantizedWeights | None = None,
    int8_linear: int | None = None,
) -> int:
    """Bytes of ``params`` weights in ``dtype``, stored in fp8, as the ``quantized`` file holds them, or in
    int8 storage where ``int8_linear`` of them are linear-layer weights."""
    if quantized is not None:
        return quantized.weight_bytes(dtype)
    if int8_linear is not None:
        return int8_linear * INT8_BYTES_PER_PARAM + (params - int8_linear) * BYTES_PER_PARAM[dtype]
    return params * (FP8_BYTES_PER_PARAM if fp8 else BYTES_PER_PARAM[dtype])


def int8_available() -> bool:
    """Whether torchao is installed (the ``quant`` extra): int8 storage is planned only then. Looks the
    package up without importing it."""
    return importlib.util.find_spec("torchao") is not None
