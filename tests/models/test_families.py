"""Every family loads the real way: diffusers-format folders through from_pretrained (local files only), and
from the hub only the weight files its dtype needs, at a pinned revision where one is known."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import LTXImageToVideoPipeline, StableVideoDiffusionPipeline, WanImageToVideoPipeline

from stillmotion.errors import UnknownModel
from stillmotion.models import loader, tiny
from stillmotion.models.adapters import FAMILIES, family_of
from stillmotion.models.registry import get_spec, list_specs


def _wan_pipeline(ti2v: bool) -> Any:
    parts = tiny.build_tiny_wan_components(0, ti2v=ti2v)
    expand = parts.pop("expand_timesteps")
    return WanImageToVideoPipeline(
        **{k: v for k, v in parts.items() if v is not None}, expand_timesteps=expand
    )


PIPELINES = {
    "wan2.1-i2v": (lambda: _wan_pipeline(False), "wan2.1-i2v-14b-480p"),
    "wan2.2-ti2v": (lambda: _wan_pipeline(True), "wan2.2-ti2v-5b"),
    "svd-xt": (lambda: StableVideoDiffusionPipeline(**tiny.build_tiny_svd_components(0)), "svd-xt"),
    "ltx-video": (lambda: LTXImageToVideoPipeline(**tiny.build_tiny_ltx_components(0)), "ltx-video"),
}


@pytest.mark.parametrize("kind", list(PIPELINES))
def test_a_saved_pipeline_folder_loads_back_through_its_family(tmp_path: Path, kind: str) -> None:
    """diffusers' own save_pretrained writes the folder; the family's from_pretrained reads it back."""
    build, like = PIPELINES[kind]
    pipe = build()
    pipe.save_pretrained(tmp_path)
    spec = get_spec(str(tmp_path))
    assert (spec.family, spec.limits, spec.defaults) == (
        get_spec(like).family,
        get_spec(like).limits,
        get_spec(like).defaults,
    )
    components = loader.load_components(spec, torch.float32)
    for name, module in components.modules().items():
        original, loaded = getattr(pipe, name).state_dict(), module.state_dict()
        assert original.keys() == loaded.keys(), name
        assert all(torch.equal(original[k], loaded[k]) for k in original), name
    assert type(components.scheduler) is type(pipe.scheduler)
    assert not loader.missing_weights(spec, tmp_path)


def test_a_wan_text_to_video_folder_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    with pytest.raises(UnknownModel, match="not an image-to-video model"):
        get_spec(str(tmp_path))


def test_each_family_fetches_only_the_weights_its_dtype_needs() -> None:
    wan = loader.hub_patterns(get_spec("wan2.1-i2v-14b-480p"), torch.bfloat16)
    # One precision per network in the Wan repos, sharded: no fp16 variant is asked for.
    assert "transformer/diffusion_pytorch_model-*-of-*.safetensors" in wan
    assert "text_encoder/model-*-of-*.safetensors" in wan and "image_encoder/model.safetensors" in wan
    assert not any(".fp16" in pattern for pattern in wan)
    svd = loader.hub_patterns(get_spec("svd-xt"), torch.float16)
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in svd
    assert not any(p.endswith("model.safetensors") and ".fp16" not in p for p in svd)
    assert not any(p.startswith("text_encoder/") for p in svd)  # SVD has no text encoder
    ltx = loader.hub_patterns(get_spec("ltx-video"), torch.bfloat16)
    assert "text_encoder/model-*-of-*.safetensors" in ltx and not any("image_encoder" in p for p in ltx)


def test_every_registered_model_has_an_adapter_and_a_source() -> None:
    assert set(FAMILIES) == {"i2vgen-xl", "wan", "svd", "ltx"}
    for spec in list_specs():
        family = family_of(spec)
        assert family.roles.denoiser in family.roles.offload_order
        if not (spec.tiny or spec.random_weights):
            assert spec.repo_id and spec.repo_id in spec.aliases
            # A pinned revision is a full commit hash; None means "main" until one can be read (see registry).
            assert spec.revision is None or len(spec.revision) == 40
        if spec.random_weights:
            assert spec.config_name and loader.is_cached(spec, torch.float16)


def test_a_random_build_with_a_tied_t5_embedding_is_cached_and_reloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The full-size random path (models/random_full.py) on small LTX-Video configs: T5's tied embedding is
    written once and tied again on load, the reload equals the build, and the engine's components come out."""
    from stillmotion.models import random_full
    from stillmotion.models.registry import RANDOM_LTX_VIDEO

    parts = tiny.build_tiny_ltx_components(0)
    folder = tmp_path / "configs" / "ltx-video"
    for name in ("transformer", "vae"):
        parts[name].save_config(folder / name)
    (folder / "text_encoder").mkdir(parents=True)
    parts["text_encoder"].config.to_json_file(folder / "text_encoder" / "config.json")
    parts["scheduler"].save_config(folder / "scheduler")
    monkeypatch.setattr(random_full, "CONFIGS_ROOT", folder.parent)

    cache = tmp_path / "models"
    built = random_full.build_random_components(RANDOM_LTX_VIDEO, dtype=torch.float32, cache_dir=cache)
    again = random_full.build_random_components(RANDOM_LTX_VIDEO, dtype=torch.float32, cache_dir=cache)
    assert random_full.weights_path(RANDOM_LTX_VIDEO, cache, 0, torch.float32).is_file()
    text = again.text_encoder
    assert text.encoder.embed_tokens.weight is text.shared.weight  # tied again after the load
    for name, module in built.modules().items():
        first, second = module.state_dict(), again.modules()[name].state_dict()
        assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first), name
    assert again.tokenizer.model_max_length == 128
