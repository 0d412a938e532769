"""Fixtures for engine tests: a tiny-model engine, a small photo-like input image."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stillmotion.config import Settings
from stillmotion.engine.engine import Engine
from stillmotion.media.image_input import InputImage, load_image_bytes


def make_png(width: int = 96, height: int = 80, seed: int = 0) -> bytes:
    """A smooth gradient with noise: decodes like a photo, no binary fixture in the repo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 200
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def input_image() -> InputImage:
    return load_image_bytes(make_png())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", default_model="tiny-i2vgen-xl", device="cpu")


@pytest.fixture
def engine(settings: Settings) -> Engine:
    return Engine(settings)
