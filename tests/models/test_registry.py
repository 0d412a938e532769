"""Model registry and loading: names, repo ids, local folders, and clear errors when weights are missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stillmotion.errors import ModelUnavailable, UnknownModel
from stillmotion.models import hub_probe, loader
from stillmotion.models.registry import I2VGENXL, get_spec, list_specs


def test_registered_names_and_the_repo_id_resolve() -> None:
    assert get_spec("i2vgen-xl") is I2VGENXL
    assert get_spec("ali-vilab/i2vgen-xl") is I2VGENXL
    assert get_spec("tiny-i2vgen-xl").tiny
    assert [s.name for s in list_specs()][0] == "i2vgen-xl"


def test_another_repo_id_is_taken_as_the_same_family_without_a_pinned_revision() -> None:
    spec = get_spec("someone/i2vgen-xl-finetune")
    assert spec.repo_id == "someone/i2vgen-xl-finetune" and spec.revision is None
    assert spec.family == "i2vgen-xl"


@pytest.mark.parametrize("name", ["nonsense", "../etc/passwd", "/no/such/folder", "a/b/c"])
def test_unknown_names_list_the_choices(name: str) -> None:
    with pytest.raises(UnknownModel) as info:
        get_spec(name)
    assert "tiny-i2vgen-xl" in info.value.message and info.value.field == "model"


def test_a_local_folder_must_hold_a_supported_pipeline(tmp_path: Path) -> None:
    with pytest.raises(UnknownModel, match="without model_index.json"):
        get_spec(str(tmp_path))
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(UnknownModel, match="StableDiffusionPipeline"):
        get_spec(str(tmp_path))
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "I2VGenXLPipeline"}))
    spec = get_spec(str(tmp_path))
    assert spec.local_path == tmp_path.resolve() and spec.repo_id is None and spec.family == "i2vgen-xl"


def test_a_saved_tiny_model_loads_back_from_its_folder(tmp_path: Path) -> None:
    """The real from_pretrained path, on a folder written by diffusers' own save_pretrained."""
    from diffusers import I2VGenXLPipeline

    from stillmotion.models.tiny import build_tiny_components

    parts = build_tiny_components(seed=0)
    I2VGenXLPipeline(**parts).save_pretrained(tmp_path)
    spec = get_spec(str(tmp_path))
    components = loader.load_components(spec, torch.float32)
    for name, module in components.modules().items():
        original = parts[name].state_dict()
        loaded = module.state_dict()
        assert original.keys() == loaded.keys(), name
        assert all(torch.equal(original[k], loaded[k]) for k in original), name


def test_a_broken_local_folder_is_model_unavailable_with_advice(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "I2VGenXLPipeline"}))
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("{not json")
    with pytest.raises(ModelUnavailable) as info:
        loader.load_components(get_spec(str(tmp_path)), torch.float32)
    assert "download again" in info.value.message


def test_an_unreachable_hub_fails_fast_with_the_offline_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(hub_probe, "hub_reachable", lambda timeout_s=5.0: False)
    with pytest.raises(ModelUnavailable) as info:
        loader.load_components(I2VGENXL, torch.float16, cache_dir=tmp_path)
    message = info.value.message
    assert "cannot be reached" in message and "`hf download ali-vilab/i2vgen-xl --revision" in message
    assert "'unet/diffusion_pytorch_model.fp16.safetensors'" in message  # only what a fp16 run needs
    assert "use it as the model" in message  # each surface adds how it takes a folder (CLI, UI)
    assert not loader.is_cached(I2VGENXL, torch.float16, cache_dir=tmp_path)


def test_offline_mode_never_touches_the_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_network(*args: object, **kwargs: object) -> bool:
        raise AssertionError("offline mode probed the network")

    monkeypatch.setattr(hub_probe, "hub_reachable", no_network)
    with pytest.raises(ModelUnavailable, match="offline mode is on"):
        loader.load_components(I2VGENXL, torch.float16, cache_dir=tmp_path, offline=True)


def test_half_precision_fetches_only_the_fp16_weight_files() -> None:
    patterns = loader.hub_patterns(I2VGENXL, torch.float16)
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in patterns
    assert not any(p.endswith("model.safetensors") and ".fp16" not in p for p in patterns)
    assert "unet/diffusion_pytorch_model.safetensors" in loader.hub_patterns(I2VGENXL, torch.float32)
