"""The benchmark's FLOP and MFU fields for the other families' full-size random builds (counted on meta)."""

from __future__ import annotations

import pytest

from stillmotion.bench.run import flop_fields
from stillmotion.bench.scenarios import Scenario


def test_flop_fields_count_each_full_size_family_and_skip_tiny_builds() -> None:
    ltx = flop_fields(Scenario("704x512x121", 512, 704, 121, 4, model="ltx-video-random"), 0.5)
    # LTX-Video 2B at its native 704x512 x 121 frames, guidance batch of 2: about 53 TFLOP a step.
    assert ltx["tflop_per_step"] == pytest.approx(52.7, rel=0.02)
    assert ltx["mfu"] == pytest.approx(ltx["tflop_per_step"] / 0.5 / 790, rel=1e-3)
    unguided = flop_fields(
        Scenario("704x512x121-cfg1", 512, 704, 121, 4, model="ltx-video-random", guidance_scale=1.0), 0.5
    )
    assert unguided["tflop_per_step"] == pytest.approx(ltx["tflop_per_step"] / 2, rel=0.01)
    tiny = flop_fields(Scenario("64x64x9", 64, 64, 9, 2, model="tiny-ltx-video"), 0.1)
    assert tiny == {"tflop_per_step": None, "mfu": None}
