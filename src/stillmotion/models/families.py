"""Which adapter runs a model: ``family_of(spec)`` maps ``ModelSpec.family`` to its ``ModelFamily``."""

from __future__ import annotations

from typing import Any

from stillmotion.models import i2vgen_xl, ltx, svd, wan
from stillmotion.models.family import Components, ModelFamily
from stillmotion.models.registry import ModelSpec

__all__ = ["FAMILIES", "Components", "family_of"]

FAMILIES: dict[str, ModelFamily[Any, Any]] = {
    family.name: family for family in (i2vgen_xl.FAMILY, wan.FAMILY, svd.FAMILY, ltx.FAMILY)
}


def family_of(spec: ModelSpec) -> ModelFamily[Any, Any]:
    """The adapter of ``spec``'s family (every registered spec has one: tests/models keep it so)."""
    return FAMILIES[spec.family]
