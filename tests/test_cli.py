"""The command line as a user runs it: outputs, exit codes, --json, and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
from PIL import Image

from stillmotion.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "seaside.jpg"
TINY = [
    "--model",
    "tiny-i2vgen-xl",
    "--image",
    str(EXAMPLE),
    "--prompt",
    "waves roll in",
    "--num-frames",
    "8",
]


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STILLMOTION_DATA_DIR", str(tmp_path / "data"))


def test_generate_writes_the_video_and_prints_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.mp4"
    code = main(
        [
            "generate",
            *TINY,
            "--num-inference-steps",
            "4",
            "--height",
            "256",
            "--width",
            "256",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    assert capsys.readouterr().out.strip() == str(out)
    with av.open(str(out)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 8 and (frames[0].width, frames[0].height) == (256, 256)
    assert json.loads(Path(f"{out}.json").read_text())["num_frames"] == 8


def test_generate_json_reports_the_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.gif"
    code = main(
        [
            "generate",
            *TINY,
            "--num-inference-steps",
            "2",
            "--height",
            "64",
            "--width",
            "64",
            "--seed",
            "9",
            "--output",
            str(out),
            "--json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["ok"] and result["request"]["seed"] == 9
    assert result["video_path"] == str(out) and out.exists()


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--num-frames", "99"], 2, "num_frames=99"),
        (["--height", "100", "--width", "64"], 2, "multiple of 8"),
        (["--model", "no-such-model"], 2, "unknown_model"),
        (["--image", "/no/such.png"], 2, "file_unreadable"),
        (["--prompt", ""], 2, "prompt is empty"),  # i2vgen-xl needs one (svd-xt takes none)
    ],
)
def test_invalid_input_exits_2_with_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int, words: str
) -> None:
    out = tmp_path / "never.mp4"
    assert main(["generate", *TINY, *args, "--output", str(out)]) == code
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not out.exists()


def test_invalid_input_with_json_is_machine_readable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["generate", *TINY, "--fps", "0", "--output", str(tmp_path / "x.mp4"), "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "invalid_request" and error["field"] == "fps"


def test_plan_prints_the_plan_without_loading_weights(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", "--model", "i2vgen-xl", "--prompt", "x", "--resolution", "512p", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["plan"]["rung"]
    assert (report["request"]["height"], report["request"]["width"]) == (512, 512)


def test_models_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    names = [m["name"] for m in json.loads(capsys.readouterr().out)]
    assert names[:2] == ["i2vgen-xl", "tiny-i2vgen-xl"]


def test_doctor_reports_device_encoder_and_weights(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["device"]["selected"] == "cpu"
    assert report["video_encoder"].startswith("ok")
    assert "not downloaded" in report["default_model"]["weights"]
    # No GPU here: the warning says that only the tiny models are practical, and what each real one needs.
    (warning,) = [w for w in report["warnings"] if "NVIDIA" in w]
    assert "no NVIDIA GPU" in warning and "tiny" in warning
    needs = {need["model"]: need for need in report["gpu_needs"]}
    assert {"i2vgen-xl", "wan2.1-i2v-14b-480p", "svd-xt", "ltx-video"} <= set(needs)
    assert all(0 < n["min_gib"] <= n["resident_gib"] for n in needs.values())
    assert f"i2vgen-xl {needs['i2vgen-xl']['min_gib']:g} GiB" in warning
    # Host memory: the 14B Wan models need more RAM than i2vgen-xl; any model this machine's RAM cannot
    # hold is named in a warning of its own, the others are not.
    assert needs["wan2.1-i2v-14b-480p"]["min_host_gib"] > needs["i2vgen-xl"]["min_host_gib"] > 3
    short = {name for name, n in needs.items() if n["min_host_gib"] > report["host_ram_gib"]}
    host_warnings = [w for w in report["warnings"] if w.startswith("host memory")]
    assert bool(host_warnings) == bool(short)
    for name in needs:
        assert all((f"{name} " in w) == (name in short) for w in host_warnings)
    assert "GiB free" in report["models_disk"]["status"]


def test_plan_without_an_image_says_which_aspect_it_assumed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["plan", "--model", "i2vgen-xl", "--resolution", "512p"]) == 0
    assert "no --image: a square 1:1 input assumed" in capsys.readouterr().out
    image = tmp_path / "wide.png"
    Image.new("RGB", (320, 180)).save(image)
    assert (
        main(["plan", "--model", "i2vgen-xl", "--resolution", "512p", "--image", str(image), "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["assumed_aspect"] is None


@pytest.mark.timeout(180)
def test_ctrl_c_stops_within_a_step_and_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "interrupted.mp4"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stillmotion.cli",
            "generate",
            *TINY,
            "--num-inference-steps",
            "200",
            "--height",
            "256",
            "--width",
            "256",
            "--output",
            str(out),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        seen = ""
        deadline = time.monotonic() + 150
        while "denoising" not in seen and time.monotonic() < deadline:  # the first step has run
            seen += proc.stderr.read(1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "cancelled" in err
    assert not out.exists()
    assert not list(tmp_path.glob("*.mp4*")) and not list(tmp_path.glob(".*.tmp"))


def test_plan_for_another_card_steps_down_the_ladder_and_refuses_with_what_fits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = [
        "plan",
        "--model",
        "i2vgen-xl",
        "--prompt",
        "x",
        "--resolution",
        "1024p",
        "--host-gb",
        "64",
        "--json",
    ]
    rungs = []
    for gib in ("24", "6", "4"):
        assert main([*base, "--gpu-gb", gib]) == 0
        rungs.append(json.loads(capsys.readouterr().out)["plan"]["rung"])
    assert rungs[0] == "resident" and rungs[1] != rungs[0] and rungs[2] not in rungs[:2]

    assert main([*base, "--gpu-gb", "2"]) == 3
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "cannot_fit" and "Largest that fits" in error["message"]


def test_plan_needs_no_prompt(capsys: pytest.CaptureFixture[str]) -> None:
    """Memory does not depend on the words: `plan` without --prompt answers the plan."""
    code = main(
        ["plan", "--model", "i2vgen-xl", "--resolution", "768p", "--gpu-gb", "8", "--host-gb", "32", "--json"]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["plan"]["rung"] and report["request"]["prompt"] == ""
    assert main(["plan", "--model", "i2vgen-xl", "--num-frames", "99", "--gpu-gb", "8"]) == 2  # still checked


@pytest.mark.timeout(180)
def test_oom_on_every_rung_exits_3_and_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "never.mp4"
    env = {**os.environ, "STILLMOTION_FAULTS": "oom@step:all", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stillmotion.cli",
            "generate",
            *TINY,
            "--num-inference-steps",
            "3",
            "--height",
            "64",
            "--width",
            "64",
            "--output",
            str(out),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env=env,
        timeout=150,
    )
    assert proc.returncode == 3, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error [oom]: out of memory in denoise") and "no cheaper plan" in last
    assert "Traceback" not in proc.stderr
    # Every rung of the ladder was tried before giving up, each one logged.
    assert proc.stderr.count("out of memory in denoise with plan") >= 3
    assert proc.stdout == "" and list(tmp_path.iterdir()) == []  # no video, no sidecar, no temp file


def test_serve_without_the_server_extra_names_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if `pip install stillmotion` without [server]
    assert main(["serve"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error [missing_extra]:") and "pip install 'stillmotion[server]'" in err
    assert "gradio" in err and "fastapi" not in err and "Traceback" not in err


@pytest.mark.parametrize(("card", "cap", "budget"), [("24", "8", 8.0), ("6", "8", 6.0)])
def test_plan_for_another_card_keeps_the_users_cap(
    card: str, cap: str, budget: float, capsys: pytest.CaptureFixture[str]
) -> None:
    """--gpu-gb replaces the device, not the user's cap: the budget is the smaller, and both are shown."""
    base = [
        "plan",
        "--model",
        "i2vgen-xl",
        "--resolution",
        "1024p",
        "--gpu-gb",
        card,
        "--host-gb",
        "64",
        "--vram-budget-gb",
        cap,
    ]
    assert main([*base, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["budget"]["budget_bytes"] == int(budget * 2**30)
    assert report["budget"]["free_bytes"] == int(float(card) * 2**30)
    assert report["budget"]["user_budget_bytes"] == int(float(cap) * 2**30)
    assert main(base) == 0
    text = capsys.readouterr().out
    assert (
        f"budget {budget:.2f} GiB: the smaller of {float(card):.2f} GiB free and your cap of {float(cap):.2f}"
        in text
    )
    assert "1024x1024, 16 frames" in text  # width x height, as everywhere


def test_models_lists_without_loading_the_model_libraries() -> None:
    """A listing answers at once: no torch, diffusers or transformers import (seconds on a laptop)."""
    code = (
        "import sys\n"
        "from stillmotion.cli import main\n"
        "assert main(['models']) == 0\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules)\n"
        "assert heavy == [], heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "i2vgen-xl" in proc.stdout and "tiny-i2vgen-xl" in proc.stdout


def test_a_model_that_cannot_be_downloaded_says_how_for_that_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The advice names the model asked, today's hub CLI (`hf`), and the CLI's own way to pick a folder."""
    args = ["generate", "--image", str(EXAMPLE), "--prompt", "x", "--device", "cpu", "--offline"]
    code = main([*args, "--model", "ali-vilab/i2vgen-xl", "--output", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and err.startswith("error [model_unavailable]:")
    assert "`hf download ali-vilab/i2vgen-xl --revision 39e1979" in err and "huggingface-cli" not in err
    assert "--model /path/to/folder" in err and "tiny-i2vgen-xl" in err
    other = main([*args, "--model", "someone/their-i2vgen-finetune", "--output", str(tmp_path / "p.mp4")])
    err = capsys.readouterr().err
    assert other == 1 and "hf download someone/their-i2vgen-finetune" in err and "ali-vilab" not in err
