"""The Generate tab: image, prompt, Generate and Cancel, the status and the plan readout on the first screen;
the video beside them (below them on a phone, before the settings); Settings (webui/form.py) and Variations
below.

``GenerateTab`` holds the handlers, over the one ``JobService`` (submitting goes through
``JobService.submit``, so UI and API jobs are the same rows): ``submit`` queues a job, or a group of
variations (one batch); ``watch`` follows it, or the whole group (n of N done), re-reading every 0.5 s (a
generator that waits between reads, never a busy loop); ``cancel`` cancels it, or the whole group; ``plan``
is the readout for the form as it is now. Every handler gets the form's raw values (``preprocess=False``).
"""

from __future__ import annotations

import html
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from stillmotion.errors import InvalidImage, InvalidRequest, StillmotionError
from stillmotion.models.registry import ModelSpec
from stillmotion.service.batch import MAX_BATCH_JOBS, variation_items
from stillmotion.service.job_service import TERMINAL, Job, JobService, JobStatus
from stillmotion.webui.form import Form
from stillmotion.webui.shown_errors import shown_errors
from stillmotion.webui.views import (
    error_text,
    group_markdown,
    image_error_text,
    plan_markdown,
    progress_bar,
    progress_fraction,
    status_markdown,
)
from stillmotion.webui.widgets import as_number, upload_path

WATCH_INTERVAL_S = 0.5  # how often the status re-reads its jobs
# One plan at a time, in order: a slow early plan must never overwrite the answer to a later edit.
PLAN_OPTIONS: dict[str, Any] = {
    "concurrency_limit": 1,
    "concurrency_id": "plan",
    "show_progress": "hidden",
    "trigger_mode": "always_last",
    "preprocess": False,
}
Target = dict[str, Any]  # what the status follows: {"batch": id or None, "jobs": [job ids]}


class GenerateTab:
    """The tab's components (``build``) and what its buttons do."""

    def __init__(self, service: JobService, form: Form) -> None:
        self.service, self.form = service, form

    # -- layout ----------------------------------------------------------------------------------------------

    def build(self, demo: gr.Blocks, spec: ModelSpec) -> None:
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=320):
                self.image = gr.Image(
                    type="filepath",
                    label="Input image",
                    sources=["upload", "clipboard"],
                    height=210,
                    elem_id="sm-image",
                )
                self.form.build_main(spec)
                with gr.Row():
                    self.submit_btn = gr.Button("Generate", variant="primary", elem_id="sm-submit", scale=3)
                    self.cancel_btn = gr.Button("Cancel", variant="stop", elem_id="sm-cancel", scale=1)
                self.status_md = gr.Markdown("No job yet.", elem_id="sm-status")
                self.progress_html = gr.HTML("", elem_id="sm-progress", padding=False, visible=False)
                self.plan_md = gr.Markdown("_The plan for this device appears here._", elem_id="sm-plan")
            with gr.Column(scale=6, min_width=320):
                self.video = gr.Video(
                    label="Video", autoplay=True, loop=True, interactive=False, elem_id="sm-video", height=400
                )
                with gr.Row():
                    self.download = gr.DownloadButton(
                        "Download video", visible=False, elem_id="sm-download", scale=2
                    )
                    self.keep_seed_btn = gr.Button(
                        "Keep seed", visible=False, elem_id="sm-keep-seed", size="sm", scale=1
                    )
        # Below the video, so on a phone the video comes right after the status, not after every setting.
        with gr.Accordion("Settings", open=False, elem_id="sm-settings"):
            self.form.build_settings(spec)
            self.variations = gr.Number(
                value=1,
                precision=0,
                minimum=1,
                maximum=MAX_BATCH_JOBS,
                label="Variations",
                elem_id="sm-variations",
                info="More than 1: a group of jobs with seeds seed, seed+1, ... (random seeds without one)",
            )
        self.target = gr.State(None)
        self.shown_job = gr.State(None)  # the job whose video and seed are on screen
        self._wire(demo)

    def _wire(self, demo: gr.Blocks) -> None:
        plan_inputs = [self.image, *self.form.inputs]
        plan_outputs = [self.plan_md, self.form_size_planned]
        for component in [self.image, *self.form.replans]:
            component.change(self.plan, plan_inputs, plan_outputs, **PLAN_OPTIONS)
        self.form.switched.then(self.plan, plan_inputs, plan_outputs, **PLAN_OPTIONS)
        watched = [self.status_md, self.progress_html, self.video, self.download, self.keep_seed_btn]
        self.submit_btn.click(
            self.submit, [self.image, self.variations, *self.form.inputs], self.target, preprocess=False
        ).success(self.watch, self.target, [*watched, self.shown_job]).then(
            self.plan,
            plan_inputs,
            plan_outputs,
            **PLAN_OPTIONS,  # a finished job teaches the time: say it
        )
        self.cancel_btn.click(self.cancel, self.target, None)
        self.keep_seed_btn.click(self.keep_seed, self.shown_job, self.form.component("seed"))
        first_plan = {k: v for k, v in PLAN_OPTIONS.items() if k != "trigger_mode"}
        demo.load(self.plan, plan_inputs, plan_outputs, **first_plan)

    @property
    def form_size_planned(self) -> Any:
        """The size field's record of the planned size (Custom starts from it)."""
        return next(w.planned for w in self.form.widgets if hasattr(w, "planned"))

    # -- handlers --------------------------------------------------------------------------------------------

    @shown_errors
    def submit(self, image: Any, variations: Any = 1, *values: Any) -> Target:
        path = upload_path(image)
        if path is None:
            raise InvalidRequest("image: add an input image first (PNG, JPEG or WebP).", field="image")
        request = self.form.request(values)
        count = as_number(variations, "int")
        items = None if count in (None, 1) else variation_items(count, request.seed)
        # The last frame, like the input, goes to the service as a copy it consumes.
        last_upload = None if request.last_image is None else self._copy(request.last_image)
        upload = self._copy(path)
        if items is not None:
            batch_id, jobs = self.service.submit_batch(request, items, upload, last_upload)
            seeds = ", ".join(str(job.request["seed"]) for job in jobs)
            gr.Info(f"{len(jobs)} variations queued (seeds {seeds}).")
            return {"batch": batch_id, "jobs": [job.id for job in jobs]}
        job, _ = self.service.submit(request, upload, last_upload=last_upload)
        gr.Info(f"Job {job.id[:8]} queued.")
        return {"batch": None, "jobs": [job.id]}

    def _copy(self, path: str) -> Path:
        """A copy of the upload for the service to consume: Gradio's cached file stays for a re-submit."""
        self.service.upload_tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=self.service.upload_tmp_dir, prefix="ui-", suffix=".part", delete=False
        ) as tmp:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, tmp)
        return Path(tmp.name)

    def watch(self, target: Target | None) -> Iterator[tuple[Any, ...]]:
        if not target:
            return
        last: tuple[Any, ...] | None = None
        while True:
            jobs = self._jobs(target)
            text = self.status_text(_current(jobs))
            if target.get("batch"):
                text = group_markdown(jobs, text)
            bar = progress_bar(sum(progress_fraction(job) for job in jobs) / len(jobs))
            # The newest video stays on screen while the rest of a group runs.
            succeeded = [job for job in jobs if job.status == JobStatus.SUCCEEDED]
            shown = succeeded[-1] if succeeded else _current(jobs)
            video = self.video_of(shown)
            if (text, bar, video) != last:
                last = (text, bar, video)
                seed = shown.request.get("seed")
                yield (
                    text,
                    gr.update(value=bar, visible=True),
                    gr.update(value=video),
                    gr.update(value=video, visible=video is not None),
                    gr.update(visible=isinstance(seed, int), value=f"Keep seed {seed}"),
                    shown.id,
                )
            if all(job.status in TERMINAL for job in jobs):
                for job in jobs:
                    if job.status == JobStatus.FAILED:
                        gr.Warning(f"Job {job.id[:8]} failed: {job.error_message}")
                return
            time.sleep(WATCH_INTERVAL_S)

    def _jobs(self, target: Target) -> list[Job]:
        if target.get("batch"):
            return self.service.batch(str(target["batch"]))
        return [self.service.get(job_id) for job_id in target["jobs"]]

    def status_text(self, job: Job) -> str:
        """The status line of one job: its place in the queue and the wait, or the time it still needs."""
        position = self.service.queue_position(job)
        wait = self.service.queue_wait_s(job, position)
        return status_markdown(job, position, wait, self.service.time_left(job))

    def video_of(self, job: Job) -> str | None:
        video = self.service.finished_video(job)
        return None if video is None else str(video)

    @shown_errors
    def cancel(self, target: Target | None) -> None:
        if not target:
            raise InvalidRequest("No job to cancel.", field="job")
        if target.get("batch"):
            jobs = self.service.cancel_batch(str(target["batch"]))
            gr.Info(f"Cancel requested for the {len(jobs)} variations.")
            return
        job = self.service.request_cancel(target["jobs"][0])
        gr.Info(f"Cancel requested for job {job.id[:8]}.")

    @shown_errors
    def keep_seed(self, job_id: str | None) -> Any:
        if not job_id:
            raise InvalidRequest("seed: no job yet to take the seed from.", field="seed")
        return self.service.get(job_id).request.get("seed")

    def plan(self, image: Any, *values: Any) -> tuple[str, Any]:
        """The readout for the form as it is now, and the planned (width, height); an unusable image or value
        replaces the readout with what is wrong."""
        try:
            size = None
            path = upload_path(image)
            if path:
                loaded = self.service.load_image(Path(path))
                size = (loaded.width, loaded.height)
            out = self.service.plan(self.form.request(values), size)  # the prompt may be empty
        except InvalidImage as exc:
            return f"**Input image:** {html.escape(image_error_text(exc))}", gr.update()
        except StillmotionError as exc:
            return f"**Cannot plan:** {html.escape(error_text(exc))}", gr.update()
        except (TypeError, ValueError):  # a half-typed number box: wait for the next edit
            return "**Cannot plan:** a number field is not a number.", gr.update()
        data = out.model_dump(mode="json")
        return plan_markdown(data), (data["request"]["width"], data["request"]["height"])


def _current(jobs: Sequence[Job]) -> Job:
    """The job the status line is about: the one running, else the next queued one, else the last one."""
    for status in (JobStatus.RUNNING, JobStatus.QUEUED):
        waiting = [job for job in jobs if job.status == status]
        if waiting:
            return waiting[0]
    return jobs[-1]
