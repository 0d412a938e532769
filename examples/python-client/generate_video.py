"""One video through the generated Python client (openapi-python-client): plan a request, submit it with every
numeric field set, poll the job to its end, download the video; then a two-expert job with a last frame and
the second guidance.

    python generate_video.py BASE_URL IMAGE OUTPUT.mp4      # STILLMOTION_API_TOKEN: the bearer token, if any

Prints the finished job as JSON. The event stream (GET /jobs/{id}/events) is not generated as a method; poll
GET /jobs/{id} as here, or read the stream with any SSE client (docs/api.md).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from stillmotion_client import AuthenticatedClient
from stillmotion_client.api.jobs import get_job, get_job_video, submit_job
from stillmotion_client.api.plan import plan_job
from stillmotion_client.models import Interpolator, JobForm, JobOut, JobStatus, PlanForm, PlanOut
from stillmotion_client.types import File

MODEL = "tiny-i2vgen-xl"  # built in, no download (its video is noise)
TWO_EXPERTS = "tiny-wan2.2-i2v-a14b"  # the same, with two experts and a last frame
NUMBERS = {"height": 64, "width": 96, "num_frames": 8, "num_inference_steps": 2, "guidance_scale": 7.5}


def check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"expected: {what}")


def follow(client: AuthenticatedClient, job: object) -> JobOut:
    """Poll the job to its end (or read GET /jobs/{id}/events with an SSE client: docs/api.md)."""
    check(isinstance(job, JobOut), f"the job was accepted: {job}")
    assert isinstance(job, JobOut)
    while job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        time.sleep(0.5)
        polled = get_job.sync(job.id, client=client)
        assert isinstance(polled, JobOut)
        job = polled
    check(job.status == JobStatus.SUCCEEDED, f"the job succeeded: {job.error}")
    return job


def main(base: str, image_path: str, output: str) -> None:
    # An empty token is sent as no header: a server without a token accepts that.
    client = AuthenticatedClient(
        base_url=base, token=os.environ.get("STILLMOTION_API_TOKEN", ""), raise_on_unexpected_status=True
    )
    with client:
        plan = plan_job.sync(
            client=client,
            body=PlanForm(
                prompt="waves", model=MODEL, fps=6, seed=4_000_000_000, interpolate_fps=12, **NUMBERS
            ),
        )
        check(isinstance(plan, PlanOut) and plan.fits, f"the plan fits: {plan}")
        image = File(payload=Path(image_path).read_bytes(), file_name="image.png", mime_type="image/png")
        form = JobForm(
            image=image,
            prompt="waves roll in",
            model=MODEL,
            fps=6,
            seed=4_000_000_000,
            interpolate=2,
            interpolator=Interpolator.MINTERPOLATE,
            **NUMBERS,
        )
        job = follow(client, submit_job.sync(client=client, body=form))
        ran = job.request
        assert ran is not None
        for name, value in {**NUMBERS, "fps": 6, "seed": 4_000_000_000, "interpolate": 2}.items():
            check(getattr(ran, name) == value, f"{name}={value} as asked, got {getattr(ran, name)}")
        video = get_job_video.sync(job.id, client=client)
        check(isinstance(video, File), f"a video: {video}")
        assert isinstance(video, File)
        Path(output).write_bytes(video.payload.read())
        # A two-expert model's own fields: the second guidance, the last frame (a second file part), the fast
        # choice off, LoRAs as JSON text (none here).
        experts = JobForm(
            image=image,
            last_image=image,
            prompt="waves roll in",
            model=TWO_EXPERTS,
            height=48,
            width=80,
            num_frames=9,
            num_inference_steps=2,
            guidance_scale_2=2.5,
            fast=False,
            loras="[]",
            seed=7,
        )
        second = follow(client, submit_job.sync(client=client, body=experts)).request
        assert second is not None
        check(second.guidance_scale_2 == 2.5, f"guidance_scale_2 as asked, got {second.guidance_scale_2}")
        check(isinstance(second.last_image, str) and second.fast is False, "the last frame taken, fast off")
    sys.stdout.write(json.dumps(job.to_dict()) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])
