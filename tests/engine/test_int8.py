"""int8 weight storage (models/int8.py): torchao's int8 weight-only denoiser and text encoder, run end to end
offline on the tiny Wan 2.1 I2V build, loaded from a saved folder as a user's model loads.

The PSNR of the int8 run against the 16-bit-weights run of the same weights is printed (``-s``) and asserted
above a floor; the planner's weight bytes must equal what the loaders hold.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import WanImageToVideoPipeline

from stillmotion.config import Settings
from stillmotion.engine.engine import Engine
from stillmotion.media.image_input import InputImage
from stillmotion.memory.apply import held_host_bytes
from stillmotion.memory.weight_formats import BYTES_PER_PARAM, weight_bytes
from stillmotion.models import int8, tiny
from stillmotion.models.loader import load_components
from stillmotion.models.registry import get_spec
from tests.support.engine_calls import render
from tests.support.quantized_runs import MODEL, psnr, wan_request

INT8_PSNR_FLOOR_DB = 30.0  # per-row int8 weights: far above this on the tiny build


@pytest.fixture
def approximate_engine(tmp_path: Path) -> Engine:
    return Engine(Settings(data_dir=tmp_path / "data", device="cpu", allow_approximate=True))


def test_an_int8_job_runs_offline_labelled_and_close_to_its_16_bit_run(
    approximate_engine: Engine, input_image: InputImage
) -> None:
    engine = approximate_engine
    reference = render(engine, wan_request(), input_image)
    rendered = render(engine, wan_request(), input_image, strategy="resident+int8")
    value = psnr(rendered.frames, reference.frames)
    print(f"int8 weight-only (torchao): PSNR {value:.2f} dB against the 16-bit-weights run")  # noqa: T201
    assert INT8_PSNR_FLOOR_DB < value < math.inf  # close, and not the 16-bit weights themselves
    recipe = rendered.result.metadata
    assert rendered.plan.int8_weights and rendered.plan.rung == "resident+int8"
    assert "int8_weights" in recipe["runtime"]["approximations"] and recipe["runtime"]["approximate"]
    assert "int8 weight-only (torchao)" in rendered.plan.reason
    # The 16-bit run again: the int8 weights were a load of their own and left nothing behind.
    again = render(engine, wan_request(), input_image)
    assert torch.equal(again.frames, reference.frames)
    assert not again.result.metadata["runtime"]["approximate"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_folder_loads_in_int8_as_the_planner_counts_it(tmp_path: Path, dtype: torch.dtype) -> None:
    """diffusers' and transformers' loaders quantize while loading (TorchAoConfig); the built networks are
    quantized the same way, to the same weights; the plan's bytes for the quantized roles are the loaded
    ones."""
    parts = tiny.build_tiny_wan_components(0)
    expand = parts.pop("expand_timesteps")
    WanImageToVideoPipeline(**parts, expand_timesteps=expand).save_pretrained(tmp_path)
    spec = replace(get_spec("wan2.1-i2v-14b-480p"), local_path=tmp_path)  # its folder: the tiny build
    loaded: Any = load_components(spec, dtype, int8=True)
    built: Any = load_components(get_spec(MODEL), dtype, int8=True)
    name = str(dtype).removeprefix("torch.")
    for role in ("transformer", "text_encoder"):
        module = getattr(loaded, role)
        converted = int8.quantized_weights(module)
        assert converted == int8.convertible_weights(parts[role])  # what ComponentParams.linear counts
        assert converted == int8.quantized_weights(getattr(built, role))  # the built path converts the same
        twins = dict(getattr(built, role).named_modules())
        for key, layer in module.named_modules():
            if _is_int8(layer):  # the same int8 weights and scales, loaded or built
                assert torch.equal(layer.weight.dequantize(), twins[key].weight.dequantize()), key
        params = sum(p.numel() for p in parts[role].parameters())
        planned = weight_bytes(params, name, int8_linear=converted)
        held = held_host_bytes([module]) - sum(b.numel() * b.element_size() for b in module.buffers())
        kept_fp32 = (
            sum(  # float32-kept modules (Wan's time embedder) hold 4 bytes where a 16-bit plan says 2
                p.numel() * (4 - BYTES_PER_PARAM[name])
                for p in module.parameters()
                if p.dtype == torch.float32
            )
            if dtype != torch.float32
            else 0
        )
        # torchao keeps a float32 scale and an int8 zero point per output row beside the int8 weights (5 bytes
        # a row: 0.1% of a 5120-wide layer, more at these tiny widths), which the plan does not count.
        rows = sum(layer.weight.shape[0] for layer in module.modules() if _is_int8(layer))
        assert held == planned + kept_fp32 + 5 * rows, role
    assert int8.quantized_weights(loaded.vae) == 0 and int8.quantized_weights(loaded.image_encoder) == 0


def _is_int8(layer: torch.nn.Module) -> bool:
    return isinstance(layer, torch.nn.Linear) and int8.quantized_weights(layer) > 0
