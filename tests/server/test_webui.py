"""The web UI's words as pure functions (webui/views.py, service/expected_time.py): what a user reads.

The browser test (tests/browser) checks that these reach the page; here every wording case is a table.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from stillmotion.errors import InvalidImage, InvalidRequest
from stillmotion.jobs.store.job_store import Job, JobStatus
from stillmotion.service.expected_time import expected_time, format_duration
from stillmotion.webui.views import error_text, history_row, plan_markdown, status_markdown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, ""), (0.4, "0 s"), (45, "45 s"), (59.6, "1 min"), (65, "1 min 5 s"), (1138, "18 min 58 s"),
     (3600, "1 h"), (3725, "1 h 2 min")],
)  # fmt: skip
def test_durations_read_as_minutes_and_seconds(seconds: float | None, shown: str) -> None:
    assert format_duration(seconds) == shown


def job(status: JobStatus, **values: Any) -> Job:
    now = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    fields: dict[str, Any] = {
        "id": "0123456789abcdef",
        "status": status,
        "request": {"prompt": "waves", "seed": 42, "num_frames": None, "num_inference_steps": None},
        "model": "tiny-i2vgen-xl",
        "created_at": now,
        "updated_at": now,
        "started_at": None,
        "finished_at": None,
        "attempts": 1,
        "cancel_requested": False,
        "progress": None,
        "plan": None,
        "result": None,
        "error_code": None,
        "error_message": None,
        "input_filename": "input.png",
        "output_filename": None,
        "output_sha256": None,
        "idempotency_key": None,
        "worker_id": None,
        "heartbeat_at": None,
    }
    fields.update(values)
    return Job(**fields)


@pytest.mark.parametrize(
    ("the_job", "position", "expected", "absent"),
    [
        (job(JobStatus.QUEUED), 3, ["**Queued**", "number 3 in the queue", "Seed **42**"], ["ETA"]),
        (
            job(JobStatus.RUNNING,
                progress={"stage": "denoise", "step": 12, "total_steps": 50, "eta_s": 1138}),
            None,
            ["**Running**", "step 12 of 50", "about 18 min 58 s left"],
            ["1138"],
        ),
        (
            job(JobStatus.SUCCEEDED, progress={"stage": "done", "step": 50, "total_steps": 50, "eta_s": 0.77},
                result={"timings": {"total_s": 92.4}}),
            None,
            ["**Done**", "took 1 min 32 s", "Seed **42**"],
            ["left", "0.77"],
        ),
        (
            job(JobStatus.FAILED, error_code="oom", error_message="out of memory in denoise"),
            None,
            ["**Failed**", "oom: out of memory in denoise"],
            [],
        ),
    ],
)  # fmt: skip
def test_status_says_where_the_job_is(
    the_job: Job, position: int | None, expected: list[str], absent: list[str]
) -> None:
    text = status_markdown(the_job, position)
    for part in expected:
        assert part in text, (part, text)
    for part in absent:
        assert part not in text, (part, text)


def test_errors_name_the_field_the_form_shows() -> None:
    frames = InvalidRequest("num_frames=99 is out of range; allowed: 8 to 32.", field="num_frames")
    assert error_text(frames) == "Frames: num_frames=99 is out of range; allowed: 8 to 32."
    image = InvalidImage(
        "image: unsupported format; only PNG, JPEG and WebP", code="unsupported_format", field="image"
    )
    assert error_text(image) == "Input image: unsupported format; only PNG, JPEG and WebP"
    assert error_text(InvalidRequest("no field here")) == "no field here"


def plan_out(**extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "fits": True,
        "request": {"width": 576, "height": 448, "num_frames": 16, "num_inference_steps": 50, "model": "m"},
        "plan": {
            "rung": "resident",
            "dtype": "float16",
            "estimate": {"peak_reserved_gib": 7.4},
            "reason": "r",
        },
        "budget": {"name": "NVIDIA RTX 4090", "budget_bytes": 22 * 2**30},
    }
    out.update(extra)
    return out


def test_the_plan_readout_prints_width_by_height_the_peak_and_the_time() -> None:
    text = plan_markdown(
        plan_out(expected_time_s=95.0, expected_time_basis="measured on this machine from 2")
    )
    assert "576×448 px" in text and "16 frames, 50 steps" in text
    assert "peak about 7.4 GiB of 22.0 GiB on NVIDIA RTX 4090" in text
    assert "about **1 min 35 s**" in text
    assert "known after a first job here" in plan_markdown(plan_out())
    refused = plan_markdown(plan_out(fits=False, message="Largest that fits: 384x384"))
    assert refused.startswith("**Does not fit this device:**") and "Largest that fits" in refused


def result(
    model: str, h: int, w: int, frames: int, steps: int, denoise: float, decode: float, total: float
) -> Any:
    return {
        "request": {"model": model, "height": h, "width": w, "num_frames": frames,
                    "num_inference_steps": steps, "guidance_scale": 9.0},
        "timings": {"denoise_s": denoise, "decode_s": decode, "total_s": total},
        "downgrades": [],
    }  # fmt: skip


def test_expected_time_scales_this_machines_measurements_to_the_request() -> None:
    request = {"model": "m", "height": 512, "width": 512, "num_frames": 16, "num_inference_steps": 50,
               "guidance_scale": 9.0}  # fmt: skip
    assert expected_time(request, []) is None  # nothing measured here yet
    same = result("m", 512, 512, 16, 25, denoise=10.0, decode=1.0, total=13.0)
    estimate = expected_time(request, [same])
    assert estimate is not None and estimate.jobs == 1
    assert estimate.seconds == pytest.approx(2 * 10.0 + 1.0 + 2.0)  # twice the steps; same decode; the rest
    bigger = expected_time({**request, "height": 1024, "width": 1024}, [same])
    assert bigger is not None and bigger.seconds == pytest.approx(4 * 20.0 + 4 * 1.0 + 2.0)
    other_model = result("other", 512, 512, 16, 25, denoise=1.0, decode=0.1, total=2.0)
    recovered = {**same, "downgrades": [{"from": "resident"}]}  # an OOM recovery's time is not typical
    assert expected_time(request, [other_model, recovered]) is None
    assert "1 earlier job" in estimate.basis


def test_history_rows_show_pixels_and_the_whole_seed() -> None:
    row = history_row(
        job(JobStatus.SUCCEEDED, request={"prompt": "waves", "seed": 4294967295}),
        {"width": 576, "height": 448, "num_frames": 16, "num_inference_steps": 50},
        "/gradio_api/file=/data/jobs/x/poster.jpg",
    )
    assert row[0] == "![first frame](/gradio_api/file=/data/jobs/x/poster.jpg)"
    assert row[6] == "576×448" and row[7:] == [16, 50, "4294967295"]


def test_the_interpolate_toggle_maps_to_the_api_fields() -> None:
    from stillmotion.webui.widgets import InterpolationField, SeedField

    interpolation = InterpolationField()
    off = interpolation.read(["Off", "rife"])
    assert off["interpolate"] is None and off["interpolator"] is None  # the radio means nothing while off
    on = interpolation.read(["4x", "rife"])
    assert (on["interpolate"], on["interpolator"]) == (4, "rife")
    assert SeedField().read([-1]) == SeedField().read([None]) == {"seed": None}  # both mean "random"


def test_the_plan_readout_shows_the_interpolated_frames_and_fps() -> None:
    out = {
        "fits": True,
        "request": {
            "width": 512,
            "height": 320,
            "num_frames": 16,
            "num_inference_steps": 50,
            "model": "m",
            "fps": 8,
        },
        "plan": {"rung": "resident"},
        "interpolation": {"factor": 4, "interpolator": "rife", "reason": "RIFE on the cuda"},
    }
    assert "**Interpolation 4x** (rife): 64 frames at 32 fps" in plan_markdown(out)


def test_the_plan_readout_shows_host_memory_on_a_gpu_and_not_on_a_cpu() -> None:
    out = {
        "fits": True,
        "request": {"width": 832, "height": 480, "num_frames": 81, "num_inference_steps": 50, "model": "m"},
        "plan": {"rung": "group_offload", "estimate": {"peak_reserved_gib": 9.1, "host": {"peak_gib": 46.2}}},
        "budget": {"device_type": "cuda", "budget_bytes": 12 * 2**30, "host_free_bytes": 64 * 2**30},
    }
    assert "host memory about 46.2 GiB of 64.0 GiB" in plan_markdown(out)
    on_cpu = {**out, "budget": {"device_type": "cpu", "budget_bytes": 20 * 2**30}}
    assert "host memory" not in plan_markdown(on_cpu)  # the device figure is the host's there


def test_a_model_that_cannot_be_had_says_how_to_choose_one_in_the_ui() -> None:
    failed = job(
        JobStatus.FAILED,
        error_code="model_unavailable",
        error_message="model='x/y@main' is not downloaded yet ... use it as the model.",
    )
    text = status_markdown(failed, None)
    assert "Model list" in text and "--model" not in text


def test_a_running_job_counts_the_decode_in_the_time_left() -> None:
    from stillmotion.service.expected_time import ExpectedTime, time_left

    measured = ExpectedTime(seconds=60.0, jobs=1, decode_s=27.0)
    denoising = {
        "stage": "denoise",
        "step": 40,
        "total_steps": 50,
        "eta_s": 11.0,
    }  # 1 s a step, +1 for decode
    assert time_left(denoising, measured, 0.0) == pytest.approx(10.0 + 27.0)
    assert time_left(denoising, None, 0.0) == 11.0  # nothing measured here yet: the engine's own figure
    decoding = {"stage": "decode", "step": 50, "total_steps": 50, "eta_s": 1.0}
    assert time_left(decoding, measured, 20.0) == pytest.approx(7.0)  # counts down through the decode
    assert time_left(decoding, measured, 30.0) is None  # slower than measured: no promise, no stale figure
    assert time_left(decoding, None, 5.0) is None
    running = job(JobStatus.RUNNING, progress=decoding)
    assert "left" not in status_markdown(running, None)  # never the engine's stale "about 1 s left"
    assert "about 7 s left" in status_markdown(running, None, time_left_s=7.0)


def test_variations_read_as_one_group() -> None:
    from stillmotion.webui.views import group_markdown, history_order

    created = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    group = [
        job(JobStatus.SUCCEEDED, id=f"g{i}", batch_id="b", created_at=created, request={"seed": 7 + i})
        for i in range(3)
    ]
    group[1] = job(JobStatus.RUNNING, id="g1", batch_id="b", created_at=created, request={"seed": 8})
    group[2] = job(JobStatus.CANCELLED, id="g2", batch_id="b", created_at=created, request={"seed": 9})
    text = group_markdown(group, "the running one")
    assert (
        text.startswith("**Variations: 2 of 3 done** · 1 cancelled · seeds 7, 8, 9")
        and "the running one" in text
    )
    single = job(JobStatus.SUCCEEDED, id="s", created_at=created)
    listed = [group[2], single, group[1], group[0]]  # newest first, as the store lists them
    order = [(j.id, place) for j, place in history_order(listed)]
    assert order == [("g0", (1, 3)), ("g1", (2, 3)), ("g2", (3, 3)), ("s", None)]
    assert history_row(group[1], {}, None, (2, 3))[1] == "g1 (2/3)"


def test_the_workers_table_names_the_device_and_the_running_job() -> None:
    from stillmotion.webui.views import workers_markdown

    workers = [
        {"worker_id": "worker-0", "alive": True, "ready": True, "current_job_id": "0123456789ab",
         "device": "auto", "device_name": "CPU", "node": "box"},
        {"worker_id": "worker-1", "alive": True, "ready": True, "current_job_id": None, "device": "auto",
         "device_name": "NVIDIA H100 80GB HBM3", "node": "box"},
        {"worker_id": "worker-2", "alive": True, "ready": False, "device": "auto"},
    ]  # fmt: skip
    text = workers_markdown(workers)
    assert "| worker-0 | CPU on box | running `01234567` |" in text
    assert "| worker-1 | NVIDIA H100 80GB HBM3 on box | idle |" in text and "| starting |" in text
    assert "auto" not in text and "2 of 3 ready, 1 running a job" in text


def test_an_unreadable_image_is_said_in_plain_words() -> None:
    from stillmotion.webui.shown_errors import shown_text

    garbage = InvalidImage(
        "image: unsupported format (the file starts with b'i\\x063\\xcb'); only PNG, JPEG and WebP",
        code="unsupported_format",
        field="image",
    )
    assert (
        shown_text(garbage)
        == "Input image: this file is not an image we can read. Use a PNG, JPEG or WebP picture."
    )
    small = InvalidImage(
        "image: 32x32 is too small; each side must be at least 64 pixels", code="image_too_small"
    )
    assert shown_text(small) == "Input image: 32x32 is too small; each side must be at least 64 pixels"


def test_the_rules_use_the_forms_words() -> None:
    from stillmotion.models.registry import get_spec
    from stillmotion.webui.views import rules_markdown

    rules = rules_markdown(get_spec("wan2.1-i2v-14b-480p"))
    assert (
        "Frames: 5 to 81, 4k+1" in rules
        and "Guidance: 1 to 30" in rules
        and "Negative prompt optional" in rules
    )
    assert "num_frames" not in rules and "guidance_scale" not in rules and "negative_prompt" not in rules
