"""The workers table (under History): every worker, its device by name (the GPU's, or CPU) and machine, and
what it does now (idle, or running which job); re-read with the history. Worded in views.workers_markdown."""

from __future__ import annotations

import gradio as gr

from stillmotion.service.job_service import JobService
from stillmotion.webui.views import workers_markdown


def build_workers(service: JobService, demo: gr.Blocks, timer: gr.Timer) -> None:
    """The table, filled when the page loads and on every tick of ``timer``."""
    table = gr.Markdown("", elem_id="sm-workers")

    def refresh() -> str:
        return workers_markdown(service.workers())

    timer.tick(refresh, None, table, show_progress="hidden")
    demo.load(refresh, None, table)
