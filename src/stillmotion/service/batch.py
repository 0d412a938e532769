"""Batches: one request, several jobs. Pure helpers; ``JobService.submit_batch`` does the accepting.

A batch is a base set of generation fields plus one entry per job with the fields that differ (a seed, a
prompt, an interpolation...). ``variations`` N is the shorthand for N entries that differ only in the seed:
seed, seed + 1, ... when the base has one, a random seed each otherwise. Every entry becomes its own job with
its own row, folder and video; the rows share a ``batch_id`` so the batch is listed and cancelled as a group.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from stillmotion.engine.request import GenerationRequest, request_fields, variation_seeds
from stillmotion.errors import InvalidRequest
from stillmotion.service.schemas import GenerationFields, request_of
from stillmotion.service.validation import validation_message

MAX_BATCH_JOBS = 64  # one request may not fill the queue on its own; larger batches are several requests


def variation_items(count: object, base_seed: int | None) -> list[dict[str, Any]]:
    """``count`` entries differing only in the seed; ``InvalidRequest`` for a count out of range."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_BATCH_JOBS:
        raise InvalidRequest(
            f"variations={count!r} is out of range; allowed: 1 to {MAX_BATCH_JOBS}.", field="variations"
        )
    # Without a seed each job draws its own when it is resolved, and stores it.
    return [{} if seed is None else {"seed": seed} for seed in variation_seeds(base_seed, count)]


def parse_items(text: str) -> list[dict[str, Any]]:
    """The ``items`` form field: a JSON array of objects, one per job."""
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest(f"items: not valid JSON ({exc}).", field="items") from None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise InvalidRequest("items must be a JSON array of objects, one per job.", field="items")
    return items


def expand_batch(base: GenerationRequest, items: Sequence[dict[str, Any]]) -> list[GenerationRequest]:
    """One request per entry: the base with the entry's fields on top, each one validated as a form would be.

    Errors name the entry: ``items[2].seed: ...``.
    """
    if not 1 <= len(items) <= MAX_BATCH_JOBS:
        raise InvalidRequest(
            f"items has {len(items)} entries; a batch holds 1 to {MAX_BATCH_JOBS} jobs.", field="items"
        )
    # An image field (the last frame) is a file the batch shares, not a form field an entry may change.
    images = {d.name for d in request_fields() if d.info.kind == "image"}
    given = {name: value for name, value in base.given().items() if name not in images}
    shared = {name: getattr(base, name) for name in images}
    expanded = []
    for index, item in enumerate(items):
        try:
            fields = GenerationFields.model_validate({**given, **item})
            expanded.append(replace(request_of(fields), **shared))
        except ValidationError as exc:
            message, field = validation_message(list(exc.errors()))
            raise InvalidRequest(f"items[{index}].{message}", field=f"items[{index}].{field}") from None
    return expanded
