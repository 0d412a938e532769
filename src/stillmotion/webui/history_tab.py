"""The History tab: the newest jobs with their first frame, each group of variations together; a selected job
(its video, prompt and seed); "Reuse settings", which sets the Generate tab as that job asked.

Reads go through the one ``JobService`` (``list_jobs``, ``get``, ``finished_video``, ``input_image``); the
table is re-read every few seconds by the app's timer and when the page loads.
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from stillmotion.errors import InvalidRequest
from stillmotion.media.poster import ensure_poster
from stillmotion.service.job_service import Job, JobService
from stillmotion.webui.form import Form
from stillmotion.webui.generate_tab import GenerateTab
from stillmotion.webui.shown_errors import shown_errors
from stillmotion.webui.views import (
    HISTORY_DATATYPES,
    HISTORY_HEADERS,
    HISTORY_WIDTHS,
    history_order,
    history_row,
)

HISTORY_ROWS = 50


class HistoryTab:
    """The tab's components (``build``) and what its clicks do."""

    def __init__(self, service: JobService, form: Form, generate: GenerateTab) -> None:
        self.service, self.form, self.generate = service, form, generate

    def build(self, demo: gr.Blocks, tabs: gr.Tabs, timer: gr.Timer) -> None:
        with gr.Row():
            refresh_btn = gr.Button("Refresh", elem_id="sm-refresh", scale=0, size="sm")
            reuse_btn = gr.Button("Reuse settings", variant="primary", elem_id="sm-reuse", scale=0, size="sm")
        history = gr.Dataframe(
            headers=HISTORY_HEADERS,
            datatype=HISTORY_DATATYPES,
            column_widths=HISTORY_WIDTHS,
            value=[],
            interactive=False,
            wrap=False,
            elem_id="sm-history",
            max_height=420,
        )
        with gr.Row(equal_height=False):
            detail_md = gr.Markdown("Select a job to see it here.", elem_id="sm-detail")
            detail_video = gr.Video(
                label="Selected job", interactive=False, elem_id="sm-detail-video", height=300
            )
        detail_download = gr.DownloadButton("Download video", visible=False, elem_id="sm-detail-download")
        ids = gr.State([])
        selected = gr.State(None)

        table = [history, ids]
        refresh_btn.click(self.refresh, None, table)
        timer.tick(self.refresh, None, table, show_progress="hidden")
        demo.load(self.refresh, None, table)
        history.select(self.select, ids, [selected, detail_md, detail_video, detail_download])
        reuse_outputs = [self.generate.image, self.generate.variations, *self.form.outputs, tabs]
        reuse_btn.click(self.reuse, selected, reuse_outputs)

    def refresh(self) -> tuple[Any, list[str]]:
        jobs, _ = self.service.list_jobs(limit=HISTORY_ROWS)
        ordered = history_order(jobs)
        rows = [history_row(job, _ran(job), self.poster_url(job), place) for job, place in ordered]
        return gr.update(value=rows), [job.id for job, _ in ordered]

    def poster_url(self, job: Job) -> str | None:
        video = self.service.finished_video(job)
        poster = ensure_poster(video) if video is not None else None
        return None if poster is None else f"/gradio_api/file={poster.resolve()}"

    def select(self, ids: list[str], evt: gr.SelectData) -> tuple[Any, ...]:
        row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
        if not isinstance(row, int) or not 0 <= row < len(ids):
            return None, "", gr.update(value=None), gr.update(visible=False)
        job = self.service.get(ids[row])
        prompt = html.escape(str(job.request.get("prompt", "")))
        details = f"{self.generate.status_text(job)}\n\n**Prompt:** {prompt}\n\n`{job.id}`"
        video = self.generate.video_of(job)
        return job.id, details, gr.update(value=video), gr.update(value=video, visible=video is not None)

    @shown_errors
    def reuse(self, job_id: str | None) -> tuple[Any, ...]:
        """The Generate tab as the job asked: its image and its stored (resolved) request, a preset kept as
        the preset; one job, not a group (its own seed)."""
        if not job_id:
            raise InvalidRequest("Select a job in the table first.", field="job")
        job = self.service.get(job_id)
        image = self.service.input_image(job)
        last = self.service.last_image(job)  # the stored request holds its hash; the form takes the file
        request = {"model": job.model, **job.request, "last_image": None if last is None else str(last)}
        return (
            None if image is None else str(image),
            1,
            *self.form.reuse(request),
            gr.Tabs(selected="generate"),
        )


def _ran(job: Job) -> dict[str, Any]:
    """The size, frames and steps the job ran with: its result's request, else the stored (resolved) one."""
    ran = (job.result or {}).get("request")
    return ran if isinstance(ran, dict) else job.request
