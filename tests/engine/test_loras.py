"""LoRAs through diffusers' own loaders: equal to the pipeline with the same LoRA, in both file formats and
either expert; strength 0 is the plain model; fused equals unfused; nothing of one job reaches the next; a
LoRA that cannot load is refused before anything runs, with its name and the reason.

Test LoRAs come from peft and diffusers' save function (tests/support/lora_files.py). The tiny A14B build
(two experts, fp32, CPU) is the model; diffusers' WanImageToVideoPipeline with ``load_lora_weights`` is the
reference.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import WanImageToVideoPipeline

from stillmotion.engine.engine import Engine
from stillmotion.engine.request import GenerationRequest
from stillmotion.engine.resolve import resolve
from stillmotion.errors import InvalidRequest, ModelUnavailable
from stillmotion.media.image_input import InputImage
from stillmotion.models import tiny, wan
from stillmotion.models.lora import LoraState
from stillmotion.models.lora_refs import LoraChoice, resolve_lora
from stillmotion.models.registry import get_spec
from tests.support.engine_calls import render
from tests.support.lora_files import make_lora, to_kohya

MODEL = "tiny-wan2.2-i2v-a14b"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("loras")
    native = make_lora(folder, name="native.safetensors")
    to_kohya(native, folder / "kohya.safetensors")
    return folder


def _request(**changes: Any) -> GenerationRequest:
    fields: dict[str, Any] = {
        "prompt": "a red kite over the dunes",
        "negative_prompt": "blurry",
        "model": MODEL,
        "height": 48,
        "width": 80,
        "num_frames": 9,
        "num_inference_steps": 4,
        "guidance_scale": 4.0,
        "seed": 21,
    }
    return GenerationRequest(**(fields | changes))


def _pipeline_frames(image: InputImage, lora: Path | None, strength: float, expert: str) -> np.ndarray:
    parts = tiny.build_tiny_wan_components(0, experts=True)
    parts.pop("expand_timesteps")
    pipe = WanImageToVideoPipeline(**{name: part for name, part in parts.items() if part is not None})
    pipe.set_progress_bar_config(disable=True)
    if lora is not None:
        modules = {
            "high": ["transformer"],
            "low": ["transformer_2"],
            "both": ["transformer", "transformer_2"],
        }
        for module in modules[expert]:
            pipe.load_lora_weights(
                str(lora.parent),
                weight_name=lora.name,
                adapter_name="x",
                load_into_transformer_2=module == "transformer_2",
            )
        pipe.set_adapters(["x"], [{module: strength for module in modules[expert]}])
    out = pipe(
        image=image.image,
        prompt="a red kite over the dunes",
        negative_prompt="blurry",
        height=48,
        width=80,
        num_frames=9,
        num_inference_steps=4,
        guidance_scale=4.0,
        generator=torch.Generator().manual_seed(21),
        output_type="np",
    )
    return np.asarray(out.frames[0])


@pytest.mark.parametrize(
    ("file", "expert"),
    [("native.safetensors", "both"), ("kohya.safetensors", "both"), ("native.safetensors", "low")],
)
def test_lora_frames_match_the_pipeline_with_the_same_lora(
    engine: Engine, input_image: InputImage, lora_dir: Path, file: str, expert: str
) -> None:
    lora = lora_dir / file
    rendered = render(engine, _request(loras=[f"{lora}:0.8:{expert}"]), input_image)
    reference = _pipeline_frames(input_image, lora, 0.8, expert)
    without = _pipeline_frames(input_image, None, 0.0, "both")
    ours = rendered.frames.numpy()
    assert float(np.abs(ours - without).max()) > 1e-3  # the LoRA changes the video
    assert float(np.abs(ours - reference).max()) <= TOLERANCE
    (applied,) = rendered.request.loras
    assert (applied.strength, applied.expert, applied.source) == (0.8, expert, "file")


def test_strength_zero_gives_exactly_the_video_without_the_lora(
    settings: Any, input_image: InputImage, lora_dir: Path
) -> None:
    plain = render(Engine(settings), _request(), input_image)
    zero = render(Engine(settings), _request(loras=[f"{lora_dir / 'native.safetensors'}:0"]), input_image)
    assert torch.equal(plain.frames, zero.frames)


def test_fused_equals_unfused_and_unloading_restores_the_model(lora_dir: Path) -> None:
    spec = get_spec(MODEL)
    components = wan.FAMILY.build_tiny(spec, seed=0)
    lora = resolve_lora(
        LoraChoice(str(lora_dir / "native.safetensors"), 0.7, "both"),
        0,
        folders=[],
        any_local_path=True,
        cache_dir=None,
        offline=True,
    )
    torch.manual_seed(0)
    inputs = (torch.randn(1, 36, 3, 4, 4), torch.tensor([500]), torch.randn(1, 8, 32))

    def run() -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = components.transformer_2(*inputs, return_dict=False)[0]
        return out

    base = run()
    state = LoraState()
    assert state.apply(wan.FAMILY, components, (lora,), fuse=False)
    unfused = run()
    assert state.apply(wan.FAMILY, components, (lora,), fuse=True)
    fused = run()
    assert not state.apply(wan.FAMILY, components, (lora,), fuse=True)  # the same set is kept as it is
    assert float((unfused - base).abs().max()) > 1e-2
    assert float((fused - unfused).abs().max()) <= 1e-5
    state.apply(wan.FAMILY, components, (), fuse=True)
    assert float((run() - base).abs().max()) <= 1e-5
    assert not any("lora" in name for name, _ in components.transformer_2.named_modules())


def test_one_jobs_loras_never_reach_the_next_job(
    engine: Engine, settings: Any, input_image: InputImage, lora_dir: Path
) -> None:
    render(engine, _request(loras=[str(lora_dir / "native.safetensors")]), input_image)
    after = render(engine, _request(), input_image)
    fresh = render(Engine(settings), _request(), input_image)
    assert float((after.frames - fresh.frames).abs().max()) <= 1e-5


def test_the_recipe_records_each_lora_and_both_experts(
    engine: Engine, input_image: InputImage, lora_dir: Path
) -> None:
    rendered = render(engine, _request(loras=[f"{lora_dir / 'kohya.safetensors'}:0.5:high"]), input_image)
    sidecar = rendered.result.metadata  # the recipe written into the video and its sidecar
    (lora,) = sidecar["loras"]
    assert lora["reference"].endswith("kohya.safetensors") and len(lora["sha256"]) == 64
    assert (lora["strength"], lora["expert"], lora["revision"]) == (0.5, "high", None)
    assert sidecar["experts"]["high_noise"] == "transformer"
    assert sidecar["experts"]["low_noise"] == "transformer_2"
    assert sidecar["experts"]["boundary_ratio"] == 0.9


def test_a_lora_of_another_size_is_refused_before_anything_runs(settings: Any, lora_dir: Path) -> None:
    request = _request(
        model="wan2.2-i2v-a14b", height=None, width=None, loras=[str(lora_dir / "native.safetensors")]
    )
    with pytest.raises(
        InvalidRequest, match=r"loras\[0\]: .*native.safetensors does not fit wan2.2-i2v-a14b: "
    ):
        resolve(request, settings, (96, 80))


def test_loras_are_refused_for_a_family_without_them(settings: Any, lora_dir: Path) -> None:
    request = _request(model="tiny-ltx-video", loras=[str(lora_dir / "native.safetensors")])
    with pytest.raises(InvalidRequest, match="LoRAs are supported for the Wan models"):
        resolve(request, settings, (96, 80))


def test_pickle_files_are_refused(settings: Any, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="is a pickle file; only .safetensors"):
        resolve(_request(loras=["style.ckpt:0.8"]), settings, (96, 80))
    disguised = tmp_path / "disguised.safetensors"
    torch.save({"x": torch.zeros(1)}, disguised)  # a pickle under a safetensors name
    with pytest.raises(InvalidRequest, match="is not a safetensors file"):
        resolve(_request(loras=[str(disguised)]), settings, (96, 80))


def test_a_missing_hub_lora_gets_the_offline_advice(settings: Any) -> None:
    offline = settings.model_copy(update={"offline": True})
    request = _request(loras=["someone/wan-loras/style.safetensors@abc123"])
    with pytest.raises(
        ModelUnavailable,
        match=r"offline mode is on.*hf download someone/wan-loras style.safetensors --revision abc123",
    ):
        resolve(request, offline, (96, 80))


def test_the_service_takes_lora_files_under_the_lora_folders_only(settings: Any, lora_dir: Path) -> None:
    from stillmotion.engine.resolve import lora_folders, resolve_loras

    outside = _request(loras=[str(lora_dir / "native.safetensors")])
    with pytest.raises(InvalidRequest, match="neither a .safetensors file under the LoRA folders"):
        resolve_loras(outside, get_spec(MODEL), settings, any_local_path=False)
    folder = lora_folders(settings)[0]
    folder.mkdir(parents=True)
    (folder / "style.safetensors").write_bytes((lora_dir / "native.safetensors").read_bytes())
    (found,) = resolve_loras(_request(loras=["style.safetensors:0.5"]), get_spec(MODEL), settings)
    assert found.reference == "style.safetensors" and found.strength == 0.5
    escape = _request(loras=["../../../" + str(lora_dir / "native.safetensors")])
    with pytest.raises(InvalidRequest):
        resolve_loras(escape, get_spec(MODEL), settings, any_local_path=False)


def test_a_changed_lora_file_fails_the_job_instead_of_running_another_lora(
    engine: Engine, input_image: InputImage, lora_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "changing.safetensors"
    copy.write_bytes((lora_dir / "native.safetensors").read_bytes())
    request = resolve(_request(loras=[str(copy)]), engine.settings, (96, 80))
    make_lora(tmp_path, seed=99, name="changing.safetensors")  # replaced after it was accepted
    with pytest.raises(ModelUnavailable, match="changed or vanished since the job was accepted"):
        engine.generate(replace(request), input_image, tmp_path / "out.mp4")
