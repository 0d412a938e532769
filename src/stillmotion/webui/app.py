"""The Gradio web UI: a thin shell over the same job service as the REST API. Start here.

``build_ui(service)`` returns the Blocks that ``server/app.py`` mounts at ``/``, over the app's one
``JobService``; it assembles the tabs, each a module of its own: webui/generate_tab.py (image, prompt,
Generate, status, plan readout, video; the Settings form of webui/form.py, derived from the field list in
engine/request.py, with its widgets in webui/widgets.py), webui/history_tab.py (past jobs, groups of
variations together, "Reuse settings") and webui/workers.py (the workers table). What is shown is worded in
webui/views.py; errors are mapped in webui/shown_errors.py. Nothing here imports diffusers, and nothing here
reads the job store or a job folder itself: every read and change goes through ``JobService``.

Layout: what a user needs every time (image, prompt, Generate, the status and the plan readout) fits one
1366x768 screen; the video sits beside it (right after it on a phone); the settings follow in an accordion.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from stillmotion.models.registry import list_specs
from stillmotion.service.job_service import JobService
from stillmotion.webui.form import Form, spec_or_none
from stillmotion.webui.generate_tab import GenerateTab
from stillmotion.webui.history_tab import HistoryTab
from stillmotion.webui.workers import build_workers

REFRESH_S = 5.0  # how often the history and the workers table are re-read

CSS = """
#sm-progress .bar { height: 8px; border-radius: 4px; background: var(--neutral-200); overflow: hidden; }
#sm-progress .fill { height: 100%; background: var(--color-accent); transition: width .4s; }
#sm-plan { font-size: 0.88em; line-height: 1.35; }
#sm-plan small { opacity: .75; }
#sm-title h3 { margin: 0; }
#sm-status p { margin: 0; }
#sm-model-note p { margin: 0; font-size: 0.88em; }
#sm-seed-row { align-items: flex-end; }
#sm-dice { margin-bottom: var(--spacing-lg); }
#sm-workers td, #sm-workers th { overflow-wrap: normal; word-break: normal; }
#sm-workers td:first-child, #sm-workers td:last-child { white-space: nowrap; }
"""

# A file that is no image leaves no broken-picture icon behind: its preview is hidden, the readout says why.
HIDE_BROKEN_PREVIEW = """
const preview = (event) => event.target instanceof HTMLImageElement && event.target.closest('#sm-image');
document.addEventListener('error', (e) => { if (preview(e)) e.target.style.visibility = 'hidden'; }, true);
document.addEventListener('load', (e) => { if (preview(e)) e.target.style.visibility = ''; }, true);
"""


def ui_theme() -> Any:
    """A theme whose fonts ship with Gradio (no request to a font CDN)."""
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="slate")


def build_ui(service: JobService) -> gr.Blocks:
    """The Blocks for ``/``: Generate (with a live plan readout and progress) and History (with reuse)."""
    default_model = service.settings.default_model
    model_choices = [spec.name for spec in list_specs()]
    if default_model not in model_choices:
        model_choices.insert(0, default_model)
    spec = spec_or_none(default_model) or list_specs()[0]
    form = Form(model_choices, default_model)
    generate = GenerateTab(service, form)
    history = HistoryTab(service, form, generate)
    with gr.Blocks(title="stillmotion", analytics_enabled=False) as demo:
        gr.HTML(f"<style>{CSS}</style>", padding=False, js_on_load=HIDE_BROKEN_PREVIEW)
        gr.Markdown(
            "### stillmotion · one still image and a sentence in, a short video out", elem_id="sm-title"
        )
        timer = gr.Timer(REFRESH_S)
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate"):
                generate.build(demo, spec)
            with gr.Tab("History", id="history"):
                history.build(demo, tabs, timer)
                build_workers(service, demo, timer)
    # Watchers wait most of the time: let many run side by side (Gradio's default is one per event).
    demo.queue(default_concurrency_limit=16)
    blocks: gr.Blocks = demo
    return blocks
