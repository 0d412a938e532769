"""Weight formats: how many bytes a network's weights take in memory, per format. Pure: no torch.

- 16-bit and float32: the parameter count x 2 or 4 bytes (``BYTES_PER_PARAM``);
- fp8 storage (the plan's ``fp8_weights``, a denoiser only): 1 byte per parameter;
- a quantized file (a GGUF transformer, models/gguf.py): the file's own count, read from its tensor types
  (``QuantizedWeights.weight_bytes``): quantized tensors as stored, float tensors at the run's dtype.

``weight_bytes`` is the one place the estimator (memory/estimate.py) asks; a request that runs a quantized
denoiser carries it (``RequestShape.quantized_denoiser``).
"""

from __future__ import annotations

from typing import Protocol

BYTES_PER_PARAM = {"float32": 4, "float16": 2, "bfloat16": 2}
FP8_BYTES_PER_PARAM = 1


class QuantizedWeights(Protocol):
    """A quantized denoiser file (models/gguf.py's ``GgufWeights`` satisfies it)."""

    @property
    def label(self) -> str: ...  # the format, e.g. "GGUF Q8_0"

    def weight_bytes(self, dtype: str) -> int: ...  # in memory, when it computes in ``dtype``


def weight_bytes(
    params: int, dtype: str, *, fp8: bool = False, quantized: QuantizedWeights | None = None
) -> int:
    """Bytes of ``params`` weights in ``dtype``, stored in fp8, or as the ``quantized`` file holds them."""
    if quantized is not None:
        return quantized.weight_bytes(dtype)
    return params * (FP8_BYTES_PER_PARAM if fp8 else BYTES_PER_PARAM[dtype])
