"""Where a worker reads a job's input and how it hands over the finished video: ``JobFiles``.

A local worker shares the API's data folder: ``LocalJobFiles`` reads the input in place and publishes the
video by renaming it into the job folder. A Ray actor on another machine has no such folder; its
``JobFiles`` (``jobs/workers/ray_pool.py``) fetches the input from the API node and sends the video back
there, where it is published the same way (``publish_output``).

Each run writes its video and its checkpoints under names of its own (``run_output_path``,
``run_checkpoint_path``) and only the job's current lease holder renames them to the job's names, inside a
transaction that checks the lease (``JobStore.finish_succeeded(publish=...)``, ``run_while_held``): a run
that lost its lease never touches the job's files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from stillmotion.errors import BadOutput
from stillmotion.jobs.store.job_store import Job, JobStore, file_sha256
from stillmotion.media.video_output import sidecar_path_for

LAST_IMAGE_STEM = "last_image"  # a job's last frame: last_image.<format> beside its input image


def input_files(job_dir: Path, job: Job) -> list[Path]:
    """The files a run reads: the input image, and the last frame where the job has one."""
    return [job_dir / job.input_filename, *sorted(job_dir.glob(f"{LAST_IMAGE_STEM}.*"))]


def output_filename(job_id: str) -> str:
    """The video's name: the same in the job folder, the API's download and the UI's download button."""
    return f"stillmotion-{job_id}.mp4"


def _run_tag(job: Job) -> str:
    """What names one run's files: its lease (unique per claim), else its attempt."""
    return (job.lease_token or f"attempt{job.attempts}")[:12]


def run_output_path(job_dir: Path, job: Job) -> Path:
    """Where this run of ``job`` writes its video (and sidecar) before it is published."""
    return job_dir / f"stillmotion-{job.id}.run-{_run_tag(job)}.mp4"


def run_checkpoint_path(job_dir: Path, job: Job) -> Path:
    """Where this run of ``job`` writes its checkpoint before the lease holder makes it the job's."""
    return job_dir / f"checkpoint.run-{_run_tag(job)}.pt"


class JobFiles(Protocol):
    """A worker's access to a job's files."""

    def input_path(self, job: Job) -> Path:
        """A local path of the job's input image (its last frame, if any, beside it: ``input_files``)."""
        ...

    def publish(self, job: Job, video: Path, sha256: str, result: dict[str, Any]) -> Job:
        """Store ``video`` (with its sidecar) as the job's output and record the success; the finished job."""
        ...


class LocalJobFiles:
    """The job folder is on this machine (the worker shares the API's data folder)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def input_path(self, job: Job) -> Path:
        return self.store.job_dir(job.id) / job.input_filename

    def publish(self, job: Job, video: Path, sha256: str, result: dict[str, Any]) -> Job:
        return publish_output(self.store, job, video, sha256, result)


def publish_output(store: JobStore, job: Job, video: Path, sha256: str, result: dict[str, Any]) -> Job:
    """Rename ``video`` (a run's file in the job folder) to the job's output and record the success, under
    ``job``'s lease: ``LeaseLost`` (and no rename) when another run holds the job now."""
    final = store.job_dir(job.id) / output_filename(job.id)
    recorded = {**result, "video_path": str(final), "sidecar_path": str(sidecar_path_for(final))}
    return store.finish_succeeded(
        job.id,
        final.name,
        sha256,
        recorded,
        lease=job.lease_token,
        publish=lambda: _move_into_place(video, final, sha256),
    )


def _move_into_place(video: Path, final: Path, sha256: str) -> None:
    """Rename the run's video and sidecar to their final names, durably. Idempotent: a retried commit finds
    them already moved (checked by checksum, never assumed)."""
    if video.exists():
        sidecar = sidecar_path_for(video)
        if sidecar.exists():
            os.replace(sidecar, sidecar_path_for(final))
        os.replace(video, final)
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the renames survive a power cut before the row says "succeeded"
        finally:
            os.close(fd)
    elif not (final.exists() and file_sha256(final) == sha256):
        raise BadOutput(f"the finished video {video.name} vanished before it could be published.")
