"""The bounds the API states for each generation field, derived from the model registry and nowhere else.

Each numeric request field declares how a model's ``Limits`` bound it (engine/request.py); ``api_bounds()``
folds that over every registered model. Where models differ the widest bound wins (the smallest minimum, the
largest maximum, the greatest common divisor of the multiples, the longest text), so the schema never refuses
what some model accepts; the model a request names is then held to its own rule by
``GenerationRequest.resolve`` (a narrower range, the pixel limit, a frame rule such as 4k+1 that a JSON Schema
cannot state). ``service/schemas.py`` builds the request models from these bounds, and those models both
validate submissions and generate the OpenAPI document, so the spec and the server cannot disagree.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from stillmotion.engine.request import RequestField, request_fields
from stillmotion.models.registry import ModelSpec, list_specs

# Characters a prompt may not contain: Unicode category Cc (C0 and C1 controls, DEL) except tab, newline and
# carriage return; the same rule as engine/request.py's _check_text, as a pattern every regex dialect reads.
PROMPT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"


@dataclass(frozen=True)
class FieldBounds:
    """The widest bounds of one request field over the registered models (None: not bounded that way)."""

    low: float | None = None
    high: float | None = None
    multiple_of: int | None = None
    max_chars: int | None = None


def widest_bounds(info: RequestField, specs: Sequence[ModelSpec]) -> FieldBounds:
    """Fold the per-model bounds ``info`` declares into the widest over ``specs`` (module docstring)."""
    limits = [spec.limits for spec in specs]
    if not limits:
        raise ValueError("no registered models: the API cannot state any field bound")
    low = high = None
    if info.bounds is not None:
        ranges = [info.bounds(lim) for lim in limits]
        low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    multiple = None
    if info.multiple_of is not None:
        multiple = math.gcd(*(info.multiple_of(lim) for lim in limits))
    max_chars = None if info.max_chars is None else max(info.max_chars(lim) for lim in limits)
    return FieldBounds(low, high, multiple, max_chars)


@functools.cache
def api_bounds() -> dict[str, FieldBounds]:
    """Every request field's widest bounds over the registry (computed once: the registry is fixed)."""
    specs = list_specs()
    return {declared.name: widest_bounds(declared.info, specs) for declared in request_fields()}
