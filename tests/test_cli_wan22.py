"""The issue's "done when", from the command line: a two-expert video with a LoRA, offline, whose recipe names
both experts, the boundary and the LoRA; the plan of the full-size model on a 12 GiB card names the switch;
the fast choice, the repeatable --lora flag and --last-image reach the request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stillmotion.cli import build_parser, main
from stillmotion.models.lora_refs import LoraChoice
from tests.engine.conftest import make_png
from tests.support.lora_files import make_lora


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STILLMOTION_DATA_DIR", str(tmp_path / "data"))


def test_generate_a_two_expert_video_with_a_lora_offline(tmp_path: Path) -> None:
    image = tmp_path / "in.png"
    image.write_bytes(make_png())
    lora = make_lora(tmp_path, name="tiny-style.safetensors")
    out = tmp_path / "out.mp4"
    code = main(
        [
            "generate",
            "--model",
            "tiny-wan2.2-i2v-a14b",
            "--lora",
            f"{lora}:0.8",
            "--image",
            str(image),
            "--prompt",
            "a kite over the dunes",
            "--height",
            "48",
            "--width",
            "64",
            "--device",
            "cpu",
            "--offline",
            "--output",
            str(out),
        ]
    )
    assert code == 0 and out.is_file()
    recipe = json.loads(Path(f"{out}.json").read_text())
    assert recipe["experts"]["high_noise"] == "transformer"
    assert recipe["experts"]["low_noise"] == "transformer_2"
    assert recipe["experts"]["boundary_ratio"] == 0.9
    (applied,) = recipe["loras"]
    assert applied["reference"] == str(lora.resolve()) or applied["reference"] == str(lora)
    assert (applied["strength"], applied["expert"]) == (0.8, "both") and len(applied["sha256"]) == 64


def test_plan_of_the_a14b_on_a_12_gib_card_names_the_expert_switch(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plan", "--model", "wan2.2-i2v-a14b", "--gpu-gb", "12", "--host-gb", "128"]) == 0
    text = capsys.readouterr().out
    assert "expert switch after step 11: transformer -> transformer_2" in text
    assert "both experts (53.2 GiB) are kept in host memory" in text
    assert "ESTIMATED" in text
    # Both experts and the text encoder in host memory: more than a 64 GiB machine has.
    assert main(["plan", "--model", "wan2.2-i2v-a14b", "--gpu-gb", "12", "--host-gb", "64"]) == 3
    assert "GiB of host memory (RAM)" in capsys.readouterr().err


def test_the_fast_choice_is_labelled_and_cuts_the_expected_time(capsys: pytest.CaptureFixture[str]) -> None:
    # Planning needs the fast LoRA files here; offline without them, the plan names what to download.
    code = main(
        ["plan", "--model", "wan2.2-i2v-a14b", "--gpu-gb", "12", "--host-gb", "128", "--fast", "--offline"]
    )
    assert code == 1
    assert "hf download lightx2v/Wan2.2-Lightning" in capsys.readouterr().err


def test_lora_and_last_image_flags_reach_the_request() -> None:
    args = build_parser().parse_args(
        [
            "generate",
            "--lora",
            "a.safetensors:0.5",
            "--lora",
            "b.safetensors:1:low",
            "--last-image",
            "end.png",
        ]
    )
    assert args.loras == [LoraChoice("a.safetensors", 0.5), LoraChoice("b.safetensors", 1.0, "low")]
    assert args.last_image == Path("end.png") and args.fast is None
