"""i2vgen-xl-random: the full-size architecture (checked on the meta device, never materialised here) and
the build / cache / load path, exercised end to end on a scaled-down set of configs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from diffusers import I2VGenXLUNet

from stillmotion.bench.run import bench_image
from stillmotion.config import Settings
from stillmotion.engine.engine import Engine
from stillmotion.engine.request import GenerationRequest
from stillmotion.models import random_full
from stillmotion.models.loader import is_cached, load_components
from stillmotion.models.registry import I2VGENXL, RANDOM_I2VGENXL, get_spec
from stillmotion.models.tiny import build_tiny_components
from tests.support.engine_calls import render


def test_full_size_parameter_counts_equal_the_real_spec_without_allocating() -> None:
    modules = random_full.empty_modules(RANDOM_I2VGENXL)
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in modules.items()}
    assert all(p.device.type == "meta" for m in modules.values() for p in m.parameters())
    assert counts == {
        "unet": I2VGENXL.params.denoiser,
        "vae": I2VGENXL.params.vae,
        "text_encoder": I2VGENXL.params.text_encoder,
        "image_encoder": I2VGENXL.params.image_encoder,
    }
    assert isinstance(modules["unet"], I2VGenXLUNet)


def test_registered_with_the_real_memory_facts_and_no_download() -> None:
    spec = get_spec("i2vgen-xl-random")
    assert spec is RANDOM_I2VGENXL and spec.random_weights and not spec.tiny
    assert spec.params == I2VGENXL.params and spec.memory == I2VGENXL.memory
    assert spec.architecture == I2VGENXL.architecture and spec.limits == I2VGENXL.limits
    assert spec.repo_id is None and "noise" in spec.description and "memory" in spec.description
    assert is_cached(spec, torch.float16)
    assert get_spec("i2vgen-xl").random_weights is False


@pytest.fixture
def small_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny build's configs written in the shipped layout, in place of the full-size ones."""
    parts = build_tiny_components(seed=0)
    folder = tmp_path / "configs" / "i2vgen-xl"
    for name in ("unet", "vae"):
        parts[name].save_config(folder / name)
    for name in ("text_encoder", "image_encoder"):
        (folder / name).mkdir(parents=True)
        parts[name].config.to_json_file(folder / name / "config.json")
    parts["scheduler"].save_config(folder / "scheduler")
    parts["feature_extractor"].save_pretrained(folder / "feature_extractor")
    monkeypatch.setattr(random_full, "CONFIGS_ROOT", folder.parent)
    return folder


def _states(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v for n, m in modules.items() for k, v in m.state_dict().items()}


def test_seeded_scaled_cached_and_reloaded(small_configs: Path, tmp_path: Path) -> None:
    cache = tmp_path / "models"
    built = load_components(RANDOM_I2VGENXL, torch.float16, cache_dir=cache)
    files = list((cache / random_full.cache_subdir(RANDOM_I2VGENXL)).iterdir())
    assert [f.name for f in files] == [
        random_full.weights_path(RANDOM_I2VGENXL, cache, 0, torch.float16).name
    ]
    assert all(p.dtype == torch.float16 for m in built.modules().values() for p in m.parameters())
    # The same seed gives the same weights without the cache, and they are the class's init scaled by 0.5.
    fresh = random_full._build(RANDOM_I2VGENXL, 0, torch.float32)
    torch.manual_seed(0)
    unscaled = random_full.module_builders(RANDOM_I2VGENXL)["unet"]()
    key = next(k for k, v in unscaled.state_dict().items() if v.abs().sum() > 0)
    assert torch.equal(fresh["unet"].state_dict()[key], unscaled.state_dict()[key] * 0.5)
    # A second load reads the file: identical tensors, nothing left on the meta device.
    again = load_components(RANDOM_I2VGENXL, torch.float16, cache_dir=cache)
    first, second = _states(built.modules()), _states(again.modules())
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    expected = {k: v.to(torch.float16) for k, v in _states(fresh).items()}
    assert all(torch.equal(second[k], expected[k]) for k in second)
    assert again.scheduler.config.prediction_type == "v_prediction"
    assert again.tokenizer.model_max_length == 77


def test_a_corrupt_cache_file_is_rebuilt(
    small_configs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "models"
    path = random_full.weights_path(RANDOM_I2VGENXL, cache, 0, torch.float32)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a safetensors file")
    with caplog.at_level(logging.WARNING):
        networks = random_full.build_random_networks(RANDOM_I2VGENXL, dtype=torch.float32, cache_dir=cache)
    assert "ignoring unreadable" in caplog.text
    reloaded = random_full.build_random_networks(RANDOM_I2VGENXL, dtype=torch.float32, cache_dir=cache)
    a, b = _states(networks), _states(reloaded)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(path.parent.glob("*.tmp"))


def test_the_engine_generates_with_it(small_configs: Path, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "models", device="cpu")
    engine = Engine(settings)
    image = bench_image(256, 256)
    request = GenerationRequest(
        prompt="noise",
        model="i2vgen-xl-random",
        height=256,
        width=256,
        num_frames=8,
        num_inference_steps=2,
        seed=3,
    )
    rendered = render(engine, request, image)
    assert tuple(rendered.frames.shape) == (8, 256, 256, 3)
    assert torch.isfinite(rendered.frames).all()
    assert (tmp_path / "models" / random_full.cache_subdir(RANDOM_I2VGENXL)).is_dir()
