"""The bounds the API states for each generation field, derived from the model registry and nowhere else.

``api_bounds()`` folds every registered model's ``Limits`` into one ``FieldBounds``. Where models differ the
widest bound wins (the smallest minimum, the largest maximum, the greatest common divisor of the size
multiples), so the schema never refuses what some model accepts; the model a request names is then held to
its own rule by ``GenerationRequest.resolve`` (a narrower range, the pixel limit, a frame rule such as 4k+1
that a JSON Schema cannot state). ``service/schemas.py`` puts these bounds into the request models, which
both validate submissions and generate the OpenAPI document, so the spec and the server cannot disagree.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from stillmotion.engine.request import MAX_SEED, MIN_INFERENCE_STEPS
from stillmotion.models.registry import ModelSpec, list_specs

# Characters a prompt may not contain: Unicode category Cc (C0 and C1 controls, DEL) except tab, newline and
# carriage return; the same rule as engine/request.py's _check_text, as a pattern every regex dialect reads.
PROMPT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"


@dataclass(frozen=True)
class FieldBounds:
    """The widest value range of each generation field over the registered models."""

    max_prompt_chars: int
    min_side: int
    max_side: int
    size_multiple: int
    min_frames: int
    max_frames: int
    min_inference_steps: int
    max_inference_steps: int
    min_guidance_scale: float
    max_guidance_scale: float
    min_fps: int
    max_fps: int
    min_seed: int
    max_seed: int


def widest_bounds(specs: Sequence[ModelSpec]) -> FieldBounds:
    """Fold ``specs``' limits into the widest bound per field (see the module docstring)."""
    limits = [spec.limits for spec in specs]
    if not limits:
        raise ValueError("no registered models: the API cannot state any field bound")
    return FieldBounds(
        max_prompt_chars=max(lim.max_prompt_chars for lim in limits),
        min_side=min(lim.min_side for lim in limits),
        max_side=max(lim.max_side for lim in limits),
        size_multiple=math.gcd(*(lim.size_multiple for lim in limits)),
        min_frames=min(lim.min_frames for lim in limits),
        max_frames=max(lim.max_frames for lim in limits),
        min_inference_steps=MIN_INFERENCE_STEPS,
        max_inference_steps=max(lim.max_inference_steps for lim in limits),
        min_guidance_scale=min(lim.min_guidance_scale for lim in limits),
        max_guidance_scale=max(lim.max_guidance_scale for lim in limits),
        min_fps=min(lim.min_fps for lim in limits),
        max_fps=max(lim.max_fps for lim in limits),
        min_seed=0,
        max_seed=MAX_SEED,
    )


@functools.cache
def api_bounds() -> FieldBounds:
    """The bounds over every model in the registry (computed once: the registry is fixed at import)."""
    return widest_bounds(list_specs())
