"""The Gradio web UI: a thin shell over the same job store and submission path as the REST API.

``build_ui(service)`` returns the Blocks that ``server/app.py`` mounts at ``/``, over the app's one
``JobService``: submitting goes through ``JobService.submit`` (so UI and API jobs are the same rows, and a
shutting-down service refuses both), progress is read back from the store
(a generator that waits 0.5 s between reads, never a busy loop), and errors are shown with ``gr.Error``
(``_shown_errors`` is the one place that maps them). Nothing here imports diffusers.
"""

from __future__ import annotations

import functools
import html
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
from pydantic import ValidationError

from stillmotion.engine.request import MAX_SEED
from stillmotion.errors import InvalidRequest, StillmotionError
from stillmotion.jobs.store import Job, JobStatus
from stillmotion.models.registry import ModelSpec, get_spec, list_specs
from stillmotion.service.job_service import TERMINAL_STATUSES, JobService
from stillmotion.service.schemas import GenerationFields
from stillmotion.service.validation import validation_message

logger = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.5  # how often the progress view re-reads its job
HISTORY_REFRESH_S = 5.0
HISTORY_ROWS = 50
CUSTOM = "Custom"
PRESETS = ["512p", "768p", "1024p", CUSTOM]
HISTORY_HEADERS = [
    "id",
    "status",
    "created",
    "prompt",
    "model",
    "size",
    "frames",
    "steps",
    "cfg",
    "fps",
    "seed",
]

CSS = """
#sm-progress .bar { height: 10px; border-radius: 5px; background: var(--neutral-200); overflow: hidden; }
#sm-progress .fill { height: 100%; background: var(--color-accent); transition: width .4s; }
#sm-plan { font-size: 0.9em; }
"""

F = TypeVar("F", bound=Callable[..., Any])


def ui_theme() -> Any:
    """A theme whose fonts ship with Gradio (no request to a font CDN)."""
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="slate")


def _shown_errors(fn: F) -> F:
    """The UI's error mapping: expected errors become ``gr.Error`` with their message, nothing else leaks."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StillmotionError as exc:
            code, message = exc.code, exc.message
        except ValidationError as exc:
            code, message = "invalid_request", validation_message(list(exc.errors()))[0]
        # An answer, not a fault: one log line with its code, and no traceback (Gradio prints one for every
        # gr.Error unless told not to).
        logger.info("UI %s refused: %s: %s", fn.__name__, code, message)
        raise gr.Error(message, title=code, print_exception=False)

    return wrapper  # type: ignore[return-value]


def _none_if_blank(value: Any) -> Any:
    return None if value is None or (isinstance(value, str) and not value.strip()) else value


def _as_int(value: Any) -> int | None:
    value = _none_if_blank(value)
    return None if value is None else int(value)


def _fields(
    prompt: str,
    negative: str,
    model: str,
    size_mode: str,
    height: Any,
    width: Any,
    frames: Any,
    steps: Any,
    guidance: Any,
    fps: Any,
    seed: Any,
) -> GenerationFields:
    custom = size_mode == CUSTOM
    return GenerationFields(
        prompt=prompt or "",
        negative_prompt=_none_if_blank(negative),
        model=_none_if_blank(model),
        resolution=None if custom else size_mode,
        height=_as_int(height) if custom else None,
        width=_as_int(width) if custom else None,
        num_frames=_as_int(frames),
        num_inference_steps=_as_int(steps),
        guidance_scale=None if _none_if_blank(guidance) is None else float(guidance),
        fps=_as_int(fps),
        seed=None if _as_int(seed) in (None, -1) else _as_int(seed),  # -1: the UI's "random"
    )


def _gib(value: Any) -> str:
    return f"{value / 2**30:.2f} GiB" if isinstance(value, int | float) and value > 1e6 else str(value)


def plan_markdown(out: dict[str, Any]) -> str:
    """The plan readout: size, steps, and what the planner chose with its memory estimate."""
    req = out["request"]
    head = (
        f"**{req['width']}×{req['height']}**, {req['num_frames']} frames, "
        f"{req['num_inference_steps']} steps, model `{req['model']}`"
    )
    if not out["fits"]:
        return f"**Does not fit this device:** {head}. {out.get('message') or ''}"
    plan = out.get("plan") or {}
    budget = out.get("budget") or {}
    parts = [f"**Plan:** {head}"]
    chosen = list(dict.fromkeys(str(plan[k]) for k in ("rung", "placement", "dtype") if plan.get(k)))
    if chosen:
        parts.append(" / ".join(chosen))
    estimate = plan.get("estimate") or {}
    peak = estimate.get("peak_reserved_gib")
    if isinstance(peak, int | float):
        parts.append(f"estimated peak {peak:.2f} GiB")
    device = budget.get("name") or budget.get("device_type")
    if device:
        budget_bytes = budget.get("budget_bytes")
        parts.append(f"on {device}" + (f" (budget {_gib(budget_bytes)})" if budget_bytes else ""))
    text = " · ".join(parts)
    if plan.get("reason"):
        text += f"\n\n_{plan['reason']}_"
    return text


def progress_view(job: Job) -> tuple[str, str]:
    """(status markdown, progress bar html) for a job."""
    status = JobStatus(job.status)
    progress = job.progress or {}
    step, total = int(progress.get("step") or 0), int(progress.get("total_steps") or 0)
    short = job.id[:8]
    if status == JobStatus.QUEUED:
        text = f"Job `{short}` is **queued**" + (" (cancel requested)" if job.cancel_requested else "")
    elif status == JobStatus.RUNNING:
        eta = progress.get("eta_s")
        eta_text = f", ETA {eta:.0f} s" if isinstance(eta, int | float) else ""
        stage = progress.get("stage") or "starting"
        text = f"Job `{short}` **running**: {stage}, step {step}/{total}{eta_text}"
        if job.cancel_requested:
            text += " (cancelling…)"
    elif status == JobStatus.SUCCEEDED:
        text = f"Job `{short}` **succeeded**"
        step = total = max(total, 1)
        downgrades = (job.result or {}).get("downgrades") or []
        if downgrades:
            rungs = " → ".join([str(downgrades[0].get("from")), *(str(d.get("to")) for d in downgrades)])
            text += (
                f"\n\nRan out of memory {len(downgrades)}× and was downgraded ({rungs}); "
                "the output is the same request, produced more slowly."
            )
    elif status == JobStatus.CANCELLED:
        text = f"Job `{short}` **cancelled**"
    else:
        text = f"Job `{short}` **failed** ({job.error_code}): {job.error_message or ''}"
    fraction = step / total if total else 0.0
    bar = (
        f"<div class='bar' title='{step}/{total}'><div class='fill' style='width:{fraction * 100:.0f}%'>"
        f"</div></div>"
    )
    return text, bar


def history_rows(jobs: list[Job]) -> list[list[Any]]:
    rows = []
    for job in jobs:
        spec = _spec_or_none(job.model)
        r = dict(job.request)
        if spec is not None:  # fields left out took the model's defaults
            for name in ("num_frames", "num_inference_steps", "guidance_scale", "fps"):
                if r.get(name) is None:
                    r[name] = getattr(spec.defaults, name)
        size = f"{r['width']}×{r['height']}" if r.get("height") else (r.get("resolution") or "")
        created = job.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        prompt = str(r.get("prompt") or "")
        rows.append(
            [
                job.id[:8],
                job.status.value,
                created,
                prompt[:60] + ("…" if len(prompt) > 60 else ""),
                job.model,
                size,
                r.get("num_frames") or "",
                r.get("num_inference_steps") or "",
                r.get("guidance_scale") or "",
                r.get("fps") or "",
                r.get("seed"),
            ]
        )
    return rows


def build_ui(service: JobService) -> gr.Blocks:
    """The Blocks for ``/``: generate (with plan and live progress) and history (with reuse and download)."""
    settings, store = service.settings, service.store
    specs = list_specs()
    model_choices = [spec.name for spec in specs]
    if settings.default_model not in model_choices:
        model_choices.insert(0, settings.default_model)
    default_spec = _spec_or_none(settings.default_model) or specs[0]

    # -- handlers ----------------------------------------------------------------------------------------

    def output_path(job: Job) -> str | None:
        if job.status != JobStatus.SUCCEEDED or not job.output_filename:
            return None
        path = store.job_dir(job.id) / job.output_filename
        return str(path) if path.is_file() else None

    @_shown_errors
    def submit(image: str | None, *values: Any) -> str:
        if not image:
            raise InvalidRequest("image: add an input image first.", field="image")
        fields = _fields(*values)
        # The service consumes its upload; give it a copy so Gradio's cached file stays for a re-submit.
        service.upload_tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=service.upload_tmp_dir, prefix="ui-", suffix=".part", delete=False
        ) as tmp:
            with open(image, "rb") as src:
                shutil.copyfileobj(src, tmp)
        job, _ = service.submit(fields, Path(tmp.name))
        gr.Info(f"Job {job.id[:8]} queued.")
        return job.id

    def watch(job_id: str | None) -> Iterator[tuple[Any, ...]]:
        if not job_id:
            return
        last: tuple[Any, ...] | None = None
        while True:
            job = store.get(job_id)
            text, bar = progress_view(job)
            video = output_path(job)
            key = (text, bar, video)
            if key != last:
                last = key
                yield (text, bar, gr.update(value=video), gr.update(value=video, visible=video is not None))
            if job.status in TERMINAL_STATUSES:
                if job.status == JobStatus.FAILED:
                    gr.Warning(f"Job {job.id[:8]} failed: {job.error_message}")
                return
            time.sleep(WATCH_INTERVAL_S)

    @_shown_errors
    def cancel(job_id: str | None) -> None:
        if not job_id:
            raise InvalidRequest("No job to cancel.", field="job")
        store.request_cancel(job_id)
        gr.Info(f"Cancel requested for job {job_id[:8]}.")

    def plan(image: str | None, *values: Any) -> str:
        try:
            size = None
            if image:
                loaded = service.load_image(Path(image))
                size = (loaded.width, loaded.height)
            out = service.plan(_fields(*values), size)  # an empty prompt is fine: memory does not use it
        except StillmotionError as exc:
            return f"**Cannot plan:** {exc.message}"
        except ValidationError as exc:
            return f"**Cannot plan:** {validation_message(list(exc.errors()))[0]}"
        return plan_markdown(out.model_dump(mode="json"))

    def on_model(name: str) -> tuple[Any, ...]:
        spec = _spec_or_none(name)
        if spec is None:
            return (gr.update(),) * 4
        d, lim = spec.defaults, spec.limits
        return (
            gr.update(minimum=lim.min_frames, maximum=lim.max_frames, value=d.num_frames),
            gr.update(maximum=min(lim.max_inference_steps, 150), value=d.num_inference_steps),
            gr.update(minimum=lim.min_guidance_scale, maximum=lim.max_guidance_scale, value=d.guidance_scale),
            gr.update(minimum=lim.min_fps, maximum=lim.max_fps, value=d.fps),
        )

    def refresh_history() -> tuple[Any, list[str]]:
        jobs, _ = store.list(limit=HISTORY_ROWS)
        return gr.update(value=history_rows(jobs)), [job.id for job in jobs]

    def select_job(ids: list[str], evt: gr.SelectData) -> tuple[Any, ...]:
        row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
        if not isinstance(row, int) or not 0 <= row < len(ids):
            return None, "", gr.update(value=None), gr.update(visible=False)
        job = store.get(ids[row])
        text, _ = progress_view(job)
        r = job.request
        details = (
            f"{text}\n\n**Prompt:** {html.escape(str(r.get('prompt', '')))}\n\n"
            f"`{job.id}` · seed {r.get('seed')} · created {job.created_at.astimezone():%Y-%m-%d %H:%M}"
        )
        video = output_path(job)
        return job.id, details, gr.update(value=video), gr.update(value=video, visible=video is not None)

    @_shown_errors
    def reuse(job_id: str | None) -> tuple[Any, ...]:
        if not job_id:
            raise InvalidRequest("Select a job in the table first.", field="job")
        job = store.get(job_id)
        r = job.request
        spec = _spec_or_none(job.model)
        d = spec.defaults if spec is not None else default_spec.defaults
        custom = r.get("height") is not None
        input_path = store.job_dir(job.id) / job.input_filename
        return (
            gr.update(value=str(input_path) if input_path.is_file() else None),
            r.get("prompt", ""),
            r.get("negative_prompt") or "",
            job.model,
            CUSTOM if custom else (r.get("resolution") or d.resolution),
            gr.update(value=r.get("height") or 512),
            gr.update(value=r.get("width") or 512),
            gr.update(visible=custom),
            r.get("num_frames") or d.num_frames,
            r.get("num_inference_steps") or d.num_inference_steps,
            r.get("guidance_scale") or d.guidance_scale,
            r.get("fps") or d.fps,
            r.get("seed"),
            gr.Tabs(selected="generate"),
        )

    # -- layout ------------------------------------------------------------------------------------------

    d, lim = default_spec.defaults, default_spec.limits
    with gr.Blocks(title="stillmotion", analytics_enabled=False) as demo:
        gr.HTML(f"<style>{CSS}</style>", padding=False)
        gr.Markdown("## stillmotion · one still image and a sentence in, a short video out")
        job_state = gr.State(None)
        history_ids = gr.State([])
        selected = gr.State(None)
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5):
                        image = gr.Image(
                            type="filepath",
                            label="Input image",
                            sources=["upload", "clipboard"],
                            height=260,
                            elem_id="sm-image",
                        )
                        prompt = gr.Textbox(
                            label="Prompt",
                            lines=2,
                            elem_id="sm-prompt",
                            placeholder="e.g. waves rolling onto the beach, gentle camera pan",
                        )
                        negative = gr.Textbox(
                            label="Negative prompt",
                            lines=1,
                            elem_id="sm-negative",
                            placeholder="default: the model's",
                        )
                        model = gr.Dropdown(
                            model_choices,
                            value=settings.default_model,
                            label="Model",
                            allow_custom_value=True,
                            elem_id="sm-model",
                            info="A registered model, a Hugging Face repo id or a local folder",
                        )
                        size_mode = gr.Radio(
                            PRESETS,
                            value=d.resolution,
                            label="Size",
                            elem_id="sm-size",
                            info="Presets keep the image's aspect ratio",
                        )
                        with gr.Row(visible=False) as custom_row:
                            height = gr.Number(
                                value=512,
                                precision=0,
                                label="Height",
                                elem_id="sm-height",
                                minimum=lim.min_side,
                                step=8,
                            )
                            width = gr.Number(
                                value=512,
                                precision=0,
                                label="Width",
                                elem_id="sm-width",
                                minimum=lim.min_side,
                                step=8,
                            )
                        with gr.Row():
                            frames = gr.Slider(
                                lim.min_frames,
                                lim.max_frames,
                                value=d.num_frames,
                                step=1,
                                label="Frames",
                                elem_id="sm-frames",
                            )
                            steps = gr.Slider(
                                1,
                                min(lim.max_inference_steps, 150),
                                value=d.num_inference_steps,
                                step=1,
                                label="Steps",
                                elem_id="sm-steps",
                            )
                        with gr.Row():
                            guidance = gr.Slider(
                                lim.min_guidance_scale,
                                lim.max_guidance_scale,
                                step=0.5,
                                value=d.guidance_scale,
                                label="Guidance",
                                elem_id="sm-guidance",
                            )
                            fps = gr.Slider(
                                lim.min_fps, lim.max_fps, value=d.fps, step=1, label="FPS", elem_id="sm-fps"
                            )
                        with gr.Row(equal_height=True):
                            seed = gr.Number(
                                value=-1,
                                precision=0,
                                label="Seed (-1 = random)",
                                elem_id="sm-seed",
                                minimum=-1,
                                maximum=MAX_SEED,
                                scale=3,
                            )
                            dice = gr.Button("Random seed", elem_id="sm-dice", scale=1)
                        plan_md = gr.Markdown("_The plan for this device appears here._", elem_id="sm-plan")
                        with gr.Row():
                            plan_btn = gr.Button("Plan", elem_id="sm-plan-btn", scale=1)
                            submit_btn = gr.Button(
                                "Generate", variant="primary", elem_id="sm-submit", scale=2
                            )
                            cancel_btn = gr.Button("Cancel", variant="stop", elem_id="sm-cancel", scale=1)
                    with gr.Column(scale=6):
                        status_md = gr.Markdown("No job yet.", elem_id="sm-status")
                        progress_html = gr.HTML("", elem_id="sm-progress")
                        video = gr.Video(
                            label="Video",
                            autoplay=True,
                            loop=True,
                            interactive=False,
                            elem_id="sm-video",
                            height=420,
                        )
                        download = gr.DownloadButton("Download video", visible=False, elem_id="sm-download")
            with gr.Tab("History", id="history"):
                with gr.Row():
                    refresh_btn = gr.Button("Refresh", elem_id="sm-refresh", scale=0)
                    reuse_btn = gr.Button("Reuse settings", variant="primary", elem_id="sm-reuse", scale=0)
                history = gr.Dataframe(
                    headers=HISTORY_HEADERS,
                    value=[],
                    interactive=False,
                    wrap=True,
                    elem_id="sm-history",
                    max_height=360,
                )
                with gr.Row(equal_height=False):
                    detail_md = gr.Markdown("Select a job to see it here.", elem_id="sm-detail")
                    detail_video = gr.Video(
                        label="Selected job", interactive=False, elem_id="sm-detail-video", height=300
                    )
                detail_download = gr.DownloadButton(
                    "Download video", visible=False, elem_id="sm-detail-download"
                )

        form = [prompt, negative, model, size_mode, height, width, frames, steps, guidance, fps, seed]

        # -- events -----------------------------------------------------------------------------------------
        size_mode.change(lambda m: gr.update(visible=m == CUSTOM), size_mode, custom_row, queue=False)
        dice.click(lambda: secrets.randbelow(MAX_SEED + 1), None, seed, queue=False)
        model.change(on_model, model, [frames, steps, guidance, fps], queue=False)
        plan_inputs = [image, *form]
        # One plan at a time, in order: a slow early plan must never overwrite the answer to a later edit.
        plan_opts: dict[str, Any] = {
            "concurrency_limit": 1,
            "concurrency_id": "plan",
            "show_progress": "minimal",
        }
        plan_btn.click(plan, plan_inputs, plan_md, **plan_opts)
        for component in (image, model, size_mode, height, width, frames):
            component.change(plan, plan_inputs, plan_md, trigger_mode="always_last", **plan_opts)
        submit_btn.click(
            submit,
            plan_inputs,
            job_state,
        ).success(
            watch,
            job_state,
            [status_md, progress_html, video, download],
        ).then(refresh_history, None, [history, history_ids])
        cancel_btn.click(cancel, job_state, None)
        refresh_btn.click(refresh_history, None, [history, history_ids])
        history.select(select_job, history_ids, [selected, detail_md, detail_video, detail_download])
        reuse_btn.click(reuse, selected, [image, *form[:6], custom_row, *form[6:], tabs])
        timer = gr.Timer(HISTORY_REFRESH_S)
        timer.tick(refresh_history, None, [history, history_ids], show_progress="hidden")
        demo.load(refresh_history, None, [history, history_ids])
        demo.load(plan, plan_inputs, plan_md, **plan_opts)
    # Watchers wait most of the time: let many run side by side (Gradio's default is one per event).
    demo.queue(default_concurrency_limit=16)
    blocks: gr.Blocks = demo
    return blocks


def _spec_or_none(name: str | None) -> ModelSpec | None:
    if not name:
        return None
    try:
        return get_spec(name)
    except StillmotionError:
        return None
