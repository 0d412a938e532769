"""The job database backends every store test runs on: ``pytestmark = ON_EVERY_BACKEND``."""

from __future__ import annotations

import pytest

BACKENDS = ("sqlite", "postgresql")
ON_EVERY_BACKEND = pytest.mark.parametrize("backend", BACKENDS, indirect=True)
