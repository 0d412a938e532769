"""GGUF transformers (models/gguf.py): files written with the ``gguf`` package from the tiny Wan 2.1 I2V and
LTX-Video transformers (their engine weights), loaded as a user's file loads, run end to end offline.

The PSNR of each quantized run against the 16-bit-weights run of the same weights is printed (``-s``) and
asserted above a floor for Q8_0 (4-bit is reported, and must stay below Q8_0's); the planner's weight bytes
must equal the loaded transformer's.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from stillmotion.config import Settings
from stillmotion.engine.engine import Engine
from stillmotion.engine.resolve import resolve
from stillmotion.errors import InvalidRequest
from stillmotion.media.image_input import InputImage
from stillmotion.memory.estimate import estimate_memory
from stillmotion.memory.plan import plan_memory
from stillmotion.memory.types import GIB
from stillmotion.models import tiny
from stillmotion.models.adapters import family_of
from stillmotion.models.gguf import load_gguf_transformer
from stillmotion.models.registry import get_spec
from tests.support.engine_calls import render
from tests.support.gguf_files import write_gguf
from tests.support.quantized_runs import MODEL, psnr, wan_request

Q8_PSNR_FLOOR_DB = 30.0  # 8-bit blocks of 32 weights: far above this on the tiny build


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gguf")
    transformer = tiny.build_tiny_wan_components(0)["transformer"]  # the engine's tiny-wan2.1-i2v weights
    for quant in ("Q8_0", "Q4_0"):
        write_gguf(transformer, folder / f"tiny-wan-{quant}.gguf", quant)
    ti2v = tiny.build_tiny_wan_components(0, ti2v=True)["transformer"]  # another model's transformer
    write_gguf(ti2v, folder / "tiny-ti2v-Q8_0.gguf", "Q8_0")
    ltx = tiny.build_tiny_ltx_components(0)["transformer"]  # the engine's tiny-ltx-video weights
    write_gguf(ltx, folder / "tiny-ltx-Q8_0.gguf", "Q8_0", family="ltx")
    experts = tiny.build_tiny_wan_components(0, experts=True)  # tiny-wan2.2-i2v-a14b's two experts
    write_gguf(experts["transformer"], folder / "tiny-a14b-high-Q8_0.gguf", "Q8_0")
    write_gguf(experts["transformer_2"], folder / "tiny-a14b-low-Q8_0.gguf", "Q8_0")
    return folder


def test_a_gguf_job_runs_offline_end_to_end_labelled_with_its_format_and_psnr(
    engine: Engine, input_image: InputImage, gguf_dir: Path
) -> None:
    reference = render(engine, wan_request(), input_image)
    results = {}
    for quant in ("Q8_0", "Q4_0"):
        rendered = render(
            engine, wan_request(transformer_gguf=str(gguf_dir / f"tiny-wan-{quant}.gguf")), input_image
        )
        results[quant] = psnr(rendered.frames, reference.frames)
        recipe = rendered.result.metadata
        assert recipe["transformer_gguf"]["quant"] == quant
        assert any(f"GGUF {quant}" in label for label in recipe["runtime"]["approximations"])
        assert recipe["runtime"]["approximate"] is True
        assert rendered.plan.weight_format == f"GGUF {quant}"
        print(f"{quant}: PSNR {results[quant]:.2f} dB against the 16-bit-weights run")  # noqa: T201
    assert results["Q8_0"] > Q8_PSNR_FLOOR_DB
    assert results["Q4_0"] < results["Q8_0"]
    # The plain run again: the quantized transformer left nothing behind.
    again = render(engine, wan_request(), input_image)
    assert torch.equal(again.frames, reference.frames)
    assert not again.result.metadata["runtime"]["approximate"]


def test_an_ltx_video_gguf_job_runs_labelled_and_close_to_its_16_bit_run(
    engine: Engine, input_image: InputImage, gguf_dir: Path
) -> None:
    """LTX-Video GGUF files (original LTX tensor names) load through diffusers' LTX single-file converter."""
    ltx = {"model": "tiny-ltx-video", "height": 64, "width": 96, "num_frames": 9, "num_inference_steps": 2}
    reference = render(engine, wan_request(**ltx), input_image)
    rendered = render(
        engine, wan_request(**ltx, transformer_gguf=str(gguf_dir / "tiny-ltx-Q8_0.gguf")), input_image
    )
    value = psnr(rendered.frames, reference.frames)
    print(f"LTX-Video Q8_0: PSNR {value:.2f} dB against the 16-bit-weights run")  # noqa: T201
    assert rendered.plan.weight_format == "GGUF Q8_0"
    assert rendered.result.metadata["transformer_gguf"]["quant"] == "Q8_0"
    assert Q8_PSNR_FLOOR_DB < value < math.inf  # close, and not the 16-bit weights themselves


def test_wan_2_2_a14b_takes_a_gguf_file_per_expert(
    engine: Engine, settings: Settings, input_image: InputImage, gguf_dir: Path
) -> None:
    """Each expert from its own file (transformer_gguf: high noise, transformer_2_gguf: low noise), or one
    expert from a file and the other 16-bit; the planner counts each file's bytes for its expert."""
    a14b = {"model": "tiny-wan2.2-i2v-a14b", "height": 48, "width": 64, "num_frames": 9}
    high, low = str(gguf_dir / "tiny-a14b-high-Q8_0.gguf"), str(gguf_dir / "tiny-a14b-low-Q8_0.gguf")
    reference = render(engine, wan_request(**a14b), input_image)
    both = render(engine, wan_request(**a14b, transformer_gguf=high, transformer_2_gguf=low), input_image)
    low_only = render(engine, wan_request(**a14b, transformer_2_gguf=low), input_image)
    values = {"both": psnr(both.frames, reference.frames), "low": psnr(low_only.frames, reference.frames)}
    print(f"Wan 2.2 A14B Q8_0 experts: PSNR {values} dB against the 16-bit run")  # noqa: T201
    assert Q8_PSNR_FLOOR_DB < values["both"] < math.inf and Q8_PSNR_FLOOR_DB < values["low"] < math.inf
    assert both.plan.weight_format == "GGUF Q8_0 / GGUF Q8_0"
    assert low_only.plan.weight_format == "16-bit / GGUF Q8_0"
    recipe = both.result.metadata
    assert recipe["transformer_gguf"]["quant"] == recipe["transformer_2_gguf"]["quant"] == "Q8_0"
    assert recipe["transformer_2_gguf"]["field"] == "transformer_2_gguf"
    labels = recipe["runtime"]["approximations"]
    assert any(label.startswith("transformer_2_gguf: GGUF Q8_0") for label in labels)
    # The planner counts the low-noise file's own bytes for the second expert, in place of its 16-bit ones.
    spec = get_spec("tiny-wan2.2-i2v-a14b")
    request = resolve(wan_request(**a14b, transformer_2_gguf=low), settings, (96, 80))
    assert request.transformer_2_gguf is not None and request.transformer_gguf is None
    plan = plan_memory(spec, request, _cpu_budget(), strategy="resident")
    plain = plan_memory(
        spec, resolve(wan_request(**a14b), settings, (96, 80)), _cpu_budget(), strategy="resident"
    )
    assert plan.estimate is not None and plain.estimate is not None and plan.estimate.host is not None
    assert plain.estimate.host is not None
    expected = (spec.params.denoiser_2 * 4 - request.transformer_2_gguf.weight_bytes("float32")) / GIB
    assert plain.estimate.host.load_gib - plan.estimate.host.load_gib == pytest.approx(expected, rel=1e-9)


def test_a_low_noise_expert_file_is_refused_for_a_one_transformer_model(
    settings: Settings, gguf_dir: Path
) -> None:
    low = str(gguf_dir / "tiny-a14b-low-Q8_0.gguf")
    with pytest.raises(
        InvalidRequest, match="transformer_2_gguf cannot be used with tiny-wan2.1-i2v"
    ) as caught:
        resolve(wan_request(transformer_2_gguf=low), settings, (96, 80))
    assert caught.value.field == "transformer_2_gguf"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_planned_weight_bytes_are_the_loaded_transformers(
    settings: Settings, gguf_dir: Path, dtype: torch.dtype
) -> None:
    spec = get_spec(MODEL)
    request = resolve(wan_request(transformer_gguf=str(gguf_dir / "tiny-wan-Q4_0.gguf")), settings, (96, 80))
    weights = request.transformer_gguf
    assert weights is not None
    folder = gguf_dir / "config"
    tiny.build_tiny_wan_components(0)["transformer"].save_config(folder / "transformer")
    loaded = load_gguf_transformer(weights, family_of(spec), folder, dtype)
    in_memory = sum(p.numel() * p.element_size() for p in loaded.parameters())
    name = str(dtype).removeprefix("torch.")
    assert weights.weight_bytes(name) == in_memory
    # The planner counts exactly these bytes for the denoiser, in place of its 16-bit parameters.
    plan = plan_memory(spec, request, _cpu_budget(), strategy="resident")
    plain = plan_memory(spec, resolve(wan_request(), settings, (96, 80)), _cpu_budget(), strategy="resident")
    assert plan.estimate is not None and plain.estimate is not None
    saved = plain.estimate.denoise.weights_gib - plan.estimate.denoise.weights_gib
    expected = (spec.params.denoiser * 4 - weights.weight_bytes("float32")) / GIB
    assert saved == pytest.approx(expected, rel=1e-9)
    assert estimate_memory(spec, request, plan).denoise.weights_gib == plan.estimate.denoise.weights_gib


def _cpu_budget() -> Any:
    from stillmotion.memory.device import DeviceBudget

    return DeviceBudget(
        device_type="cpu",
        name="test",
        total_bytes=64 * GIB,
        free_bytes=64 * GIB,
        budget_bytes=64 * GIB,
        reserve_bytes=0,
    )


def test_bad_gguf_references_are_refused_naming_the_field(
    settings: Settings, gguf_dir: Path, tmp_path: Path
) -> None:
    image = (96, 80)
    with pytest.raises(InvalidRequest, match="is not a .gguf file") as caught:
        resolve(wan_request(transformer_gguf="model.safetensors"), settings, image)
    assert caught.value.field == "transformer_gguf"
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf file at all")
    with pytest.raises(InvalidRequest, match="is not a GGUF file") as caught:
        resolve(wan_request(transformer_gguf=str(fake)), settings, image)
    assert caught.value.field == "transformer_gguf"
    with pytest.raises(InvalidRequest, match="is not a transformer of tiny-wan2.1-i2v") as caught:
        resolve(wan_request(transformer_gguf=str(gguf_dir / "tiny-ti2v-Q8_0.gguf")), settings, image)
    assert caught.value.field == "transformer_gguf"
    with pytest.raises(InvalidRequest, match="neither a .gguf file under the model folders") as caught:
        resolve(wan_request(transformer_gguf="nowhere.gguf"), settings, image)
    with pytest.raises(InvalidRequest, match="cannot be used with tiny-i2vgen-xl") as caught:
        resolve(
            wan_request(
                model="tiny-i2vgen-xl",
                num_frames=None,
                height=None,
                width=None,
                transformer_gguf=str(gguf_dir / "tiny-wan-Q8_0.gguf"),
            ),
            settings,
            image,
        )
    assert caught.value.field == "transformer_gguf"
