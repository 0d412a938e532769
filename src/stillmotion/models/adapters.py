"""Every family's adapter: ``family_of(spec)`` maps ``ModelSpec.family`` to the ``ModelFamily`` that runs it.

The interface the adapters implement is models/family.py; the adapters are models/i2vgen_xl.py, wan.py, svd.py
and ltx.py. A new family adds its adapter to ``FAMILIES`` here.
"""

from __future__ import annotations

from typing import Any

from stillmotion.models import i2vgen_xl, ltx, svd, wan
from stillmotion.models.family import ModelFamily
from stillmotion.models.registry import ModelSpec

FAMILIES: dict[str, ModelFamily[Any, Any]] = {
    family.name: family for family in (i2vgen_xl.FAMILY, wan.FAMILY, svd.FAMILY, ltx.FAMILY)
}


def family_of(spec: ModelSpec) -> ModelFamily[Any, Any]:
    """The adapter of ``spec``'s family (every registered spec has one: tests/models keep it so)."""
    return FAMILIES[spec.family]
