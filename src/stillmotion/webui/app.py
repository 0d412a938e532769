"""The Gradio web UI: a thin shell over the same job service as the REST API.

``build_ui(service)`` returns the Blocks that ``server/app.py`` mounts at ``/``, over the app's one
``JobService``: submitting goes through ``JobService.submit`` (so UI and API jobs are the same rows, and a
shutting-down service refuses both), progress is read back from the store (a generator that waits 0.5 s
between reads, never a busy loop), and errors are shown with ``gr.Error`` (``_shown_errors`` is the one place
that maps them, naming the form's field). What is shown is worded in ``views.py``; the components that let
stillmotion's own validation speak are in ``components.py``. Nothing here imports diffusers.

Layout: what a user needs every time (image, prompt, Generate, the status and the plan readout) fits one
1366x768 screen; the settings are in an accordion; the video sits beside (below, on a phone).
"""

from __future__ import annotations

import functools
import html
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
from pydantic import ValidationError

from stillmotion.engine.request import (
    MAX_SEED,
    GenerationRequest,
    declaration,
    describe_rules,
    draw_seed,
    preset_size,
)
from stillmotion.errors import InvalidImage, InvalidRequest, StillmotionError
from stillmotion.jobs.store.job_store import Job, JobStatus
from stillmotion.media.interpolation import DEFAULT_INTERPOLATOR, FACTORS, Interpolator
from stillmotion.media.poster import ensure_poster
from stillmotion.models.registry import RESOLUTION_PRESETS, ModelSpec, get_spec, list_specs
from stillmotion.service.batch import MAX_BATCH_JOBS, variation_items
from stillmotion.service.job_service import TERMINAL_STATUSES, JobService
from stillmotion.service.validation import validation_message
from stillmotion.webui.components import field_number, uploaded_image
from stillmotion.webui.views import (
    FIELD_LABELS,
    HISTORY_DATATYPES,
    HISTORY_HEADERS,
    HISTORY_WIDTHS,
    error_text,
    history_row,
    plan_markdown,
    progress_bar,
    status_markdown,
    workers_markdown,
)

logger = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.5  # how often the progress view re-reads its job
HISTORY_REFRESH_S = 5.0
HISTORY_ROWS = 50
CUSTOM = "Custom"
PRESETS = [*RESOLUTION_PRESETS, CUSTOM]
INTERPOLATE_OFF = "Off"
INTERPOLATE_CHOICES = [INTERPOLATE_OFF, *(f"{factor}x" for factor in FACTORS)]

CSS = """
#sm-progress .bar { height: 8px; border-radius: 4px; background: var(--neutral-200); overflow: hidden; }
#sm-progress .fill { height: 100%; background: var(--color-accent); transition: width .4s; }
#sm-plan { font-size: 0.88em; line-height: 1.35; }
#sm-plan small { opacity: .75; }
#sm-title h3 { margin: 0; }
#sm-status p { margin: 0; }
"""

F = TypeVar("F", bound=Callable[..., Any])


def ui_theme() -> Any:
    """A theme whose fonts ship with Gradio (no request to a font CDN)."""
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="slate")


def _shown_errors(fn: F) -> F:
    """The UI's error mapping: expected errors become ``gr.Error`` naming the field, nothing else leaks."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StillmotionError as exc:
            code, message = exc.code, error_text(exc)
        except ValidationError as exc:
            code, message = "invalid_request", _validation_text(exc)
        # An answer, not a fault: one log line with its code, and no traceback (Gradio prints one for every
        # gr.Error unless told not to).
        logger.info("UI %s refused: %s: %s", fn.__name__, code, message)
        raise gr.Error(message, title=code, print_exception=False)

    return wrapper  # type: ignore[return-value]


def _validation_text(exc: ValidationError) -> str:
    message, field = validation_message(list(exc.errors()))
    label = FIELD_LABELS.get(field or "")
    return f"{label} ({message})" if label else message


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
    interpolate: str = INTERPOLATE_OFF,
    interpolator: str | None = None,
    variations: Any = 1,  # not a generation field: read by submit()
) -> GenerationRequest:
    """The form's values as a request: blanks, "Off", "Custom" and seed -1 mean "not given"; the request's
    own check (``resolve``) then names any broken rule with the nearest value that works."""
    custom = size_mode == CUSTOM
    factor = None if interpolate in (None, INTERPOLATE_OFF) else int(str(interpolate).rstrip("x"))
    return GenerationRequest(
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
        interpolate=factor,
        interpolator=interpolator if factor is not None else None,
    )


# The number boxes whose range and default follow the chosen model: name -> how far an arrow click moves.
MODEL_NUMBERS: dict[str, float] = {"num_frames": 1, "num_inference_steps": 1, "guidance_scale": 0.5, "fps": 1}


def model_range(name: str, spec: ModelSpec) -> tuple[float, float]:
    """The model's allowed range of a number field: the field list's bounds, as ``resolve`` checks them."""
    bounds = declaration(name).bounds
    assert bounds is not None, f"{name} has no bounds"
    return bounds(spec.limits)


def _model_number(name: str, spec: ModelSpec) -> dict[str, Any]:
    """Label, range, step, default and the range stated under the label, of one model number box."""
    info = declaration(name)
    step = MODEL_NUMBERS[name]
    if name == "num_frames":
        step = spec.limits.frame_step  # e.g. Wan takes 4k+1 frames: the arrows step by 4 from 5
    low, high = model_range(name, spec)
    return {
        "label": info.label,
        "minimum": low,
        "maximum": high,
        "step": step,
        "precision": 0 if info.kind == "int" else None,
        "value": getattr(spec.defaults, name),
        "info": f"{low:g} to {high:g} for this model",
        "elem_id": f"sm-{info.label.lower()}",
    }


NO_PROMPT = "{model} takes no prompt: it animates the image alone"


def model_form(spec: ModelSpec) -> dict[str, dict[str, Any]]:
    """What the rest of the form shows for ``spec`` (``gr.update`` kwargs): the size boxes' range and step,
    the default size, the prompt boxes (emptied and locked with a note for a model that takes no prompt,
    instead of silently ignoring it) and the model's rules in words. The number boxes: ``_model_number``."""
    lim = spec.limits
    size = {"minimum": lim.min_side, "maximum": lim.max_side, "step": lim.size_multiple}
    prompt: dict[str, Any] = {"interactive": True, "placeholder": "e.g. waves rolling onto the beach"}
    negative: dict[str, Any] = {"interactive": True, "placeholder": "default: the model's"}
    if not lim.accepts_prompt:
        note = NO_PROMPT.format(model=spec.name)
        prompt = {"interactive": False, "value": "", "placeholder": note}
        negative = {"interactive": False, "value": "", "placeholder": note}
    return {
        "prompt": prompt,
        "negative_prompt": negative,
        "size_mode": {"value": spec.defaults.resolution},
        "width": size,
        "height": size,
        "rules": {"value": "**Rules:** " + "; ".join(describe_rules(spec))},
    }


def model_fields(spec: ModelSpec) -> dict[str, dict[str, Any]]:
    """Every field a model switch sets, by name (``gr.update`` kwargs): the form and the number boxes."""
    return {**model_form(spec), **{name: _model_number(name, spec) for name in MODEL_NUMBERS}}


# The outputs of a model switch, in order.
MODEL_FIELD_ORDER = ("prompt", "negative_prompt", "size_mode", "width", "height", "rules", *MODEL_NUMBERS)


def _spec_or_none(name: str | None) -> ModelSpec | None:
    if not name:
        return None
    try:
        return get_spec(name)
    except StillmotionError:
        return None


def build_ui(service: JobService) -> gr.Blocks:
    """The Blocks for ``/``: generate (with a live plan readout and progress) and history (with reuse)."""
    settings, store = service.settings, service.store
    specs = list_specs()
    model_choices = [spec.name for spec in specs]
    if settings.default_model not in model_choices:
        model_choices.insert(0, settings.default_model)
    default_spec = _spec_or_none(settings.default_model) or specs[0]

    # -- reading jobs ------------------------------------------------------------------------------------

    def output_path(job: Job) -> str | None:
        if job.status != JobStatus.SUCCEEDED or not job.output_filename:
            return None
        path = store.job_dir(job.id) / job.output_filename
        return str(path) if path.is_file() else None

    def shown_request(job: Job) -> dict[str, Any]:
        """Size, frames and steps as the job ran (or will run): the result's, else resolved from the row."""
        resolved = (job.result or {}).get("request")
        if isinstance(resolved, dict):
            return resolved
        request = dict(job.request)
        spec = _spec_or_none(job.model)
        if spec is not None:
            for name in ("num_frames", "num_inference_steps"):
                if request.get(name) is None:
                    request[name] = getattr(spec.defaults, name)
            preset = request.get("resolution")
            if request.get("height") is None and preset in RESOLUTION_PRESETS:
                try:  # the preset's size follows the input's aspect ratio: read its header only
                    from PIL import Image

                    with Image.open(store.job_dir(job.id) / job.input_filename) as image:
                        size = image.size
                except OSError:
                    size = None
                request["height"], request["width"] = preset_size(
                    RESOLUTION_PRESETS[preset], size, spec.limits
                )
        return request

    def poster_url(job: Job) -> str | None:
        video = output_path(job)
        poster = ensure_poster(Path(video)) if video else None
        return None if poster is None else f"/gradio_api/file={poster.resolve()}"

    def job_view(job: Job) -> tuple[str, str]:
        position = store.queue_position(job.id) if job.status == JobStatus.QUEUED else None
        return status_markdown(job, position, service.queue_wait_s(job, position)), progress_bar(job)

    # -- generate ----------------------------------------------------------------------------------------

    @_shown_errors
    def submit(image: str | None, *values: Any) -> str:
        if not image:
            raise InvalidRequest("image: add an input image first (PNG, JPEG or WebP).", field="image")
        fields = _fields(*values)
        # The service consumes its upload; give it a copy so Gradio's cached file stays for a re-submit.
        service.upload_tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=service.upload_tmp_dir, prefix="ui-", suffix=".part", delete=False
        ) as tmp:
            with open(image, "rb") as src:
                shutil.copyfileobj(src, tmp)
        count = _as_int(values[-1]) or 1  # "Variations": more than one makes a batch of seeds
        if count > 1:
            batch_id, jobs = service.submit_batch(fields, variation_items(count, fields.seed), Path(tmp.name))
            gr.Info(f"Batch {batch_id[:8]}: {len(jobs)} jobs queued (seeds {jobs[0].request['seed']}...).")
            return jobs[0].id  # followed here; every job of the batch is in the history
        job, _ = service.submit(fields, Path(tmp.name))
        gr.Info(f"Job {job.id[:8]} queued.")
        return job.id

    def watch(job_id: str | None) -> Iterator[tuple[Any, ...]]:
        if not job_id:
            return
        last: tuple[Any, ...] | None = None
        while True:
            job = store.get(job_id)
            text, bar = job_view(job)
            video = output_path(job)
            seed = job.request.get("seed")
            key = (text, bar, video)
            if key != last:
                last = key
                yield (
                    text,
                    gr.update(value=bar, visible=True),
                    gr.update(value=video),
                    gr.update(value=video, visible=video is not None),
                    gr.update(visible=isinstance(seed, int), value=f"Keep seed {seed}"),
                )
            if job.status in TERMINAL_STATUSES:
                if job.status == JobStatus.FAILED:
                    gr.Warning(f"Job {job.id[:8]} failed: {job.error_message}")
                return
            time.sleep(WATCH_INTERVAL_S)

    @_shown_errors
    def keep_seed(job_id: str | None) -> Any:
        if not job_id:
            raise InvalidRequest("seed: no job yet to take the seed from.", field="seed")
        seed = store.get(job_id).request.get("seed")
        return gr.update(value=seed)

    @_shown_errors
    def cancel(job_id: str | None) -> None:
        if not job_id:
            raise InvalidRequest("No job to cancel.", field="job")
        store.request_cancel(job_id)
        gr.Info(f"Cancel requested for job {job_id[:8]}.")

    def plan(image: str | None, *values: Any) -> str:
        """The readout for the form as it is now; an unusable image or value replaces it with the error."""
        try:
            size = None
            if image:
                loaded = service.load_image(Path(image))
                size = (loaded.width, loaded.height)
            out = service.plan(_fields(*values), size)  # the prompt may be empty: memory does not use it
        except InvalidImage as exc:
            return f"**This file cannot be used** ({exc.code}): {html.escape(exc.message)}"
        except StillmotionError as exc:
            return f"**Cannot plan:** {html.escape(error_text(exc))}"
        except ValidationError as exc:
            return f"**Cannot plan:** {html.escape(_validation_text(exc))}"
        except (TypeError, ValueError):  # a half-typed number box: wait for the next edit
            return "**Cannot plan:** a number field is not a number."
        return plan_markdown(out.model_dump(mode="json"))

    def on_model(name: str) -> tuple[Any, ...]:
        spec = _spec_or_none(name)
        if spec is None:
            return (gr.update(),) * len(MODEL_FIELD_ORDER)
        fields = model_fields(spec)  # the same properties the form was built with, for the chosen model
        return tuple(gr.update(**fields[field]) for field in MODEL_FIELD_ORDER)

    # -- history -----------------------------------------------------------------------------------------

    def refresh_workers() -> str:
        return workers_markdown(service.status.latest().workers)

    def refresh_history() -> tuple[Any, list[str]]:
        jobs, _ = store.list(limit=HISTORY_ROWS)
        rows = [history_row(job, shown_request(job), poster_url(job)) for job in jobs]
        return gr.update(value=rows), [job.id for job in jobs]

    def select_job(ids: list[str], evt: gr.SelectData) -> tuple[Any, ...]:
        row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
        if not isinstance(row, int) or not 0 <= row < len(ids):
            return None, "", gr.update(value=None), gr.update(visible=False)
        job = store.get(ids[row])
        text, _ = job_view(job)
        details = f"{text}\n\n**Prompt:** {html.escape(str(job.request.get('prompt', '')))}\n\n`{job.id}`"
        video = output_path(job)
        return job.id, details, gr.update(value=video), gr.update(value=video, visible=video is not None)

    @_shown_errors
    def reuse(job_id: str | None) -> tuple[Any, ...]:
        """The form as the job was asked: its stored (resolved) request, a preset kept as the preset."""
        if not job_id:
            raise InvalidRequest("Select a job in the table first.", field="job")
        job = store.get(job_id)
        r = job.request
        spec = _spec_or_none(job.model)
        d = spec.defaults if spec is not None else default_spec.defaults
        custom = r.get("resolution") is None and r.get("height") is not None
        negative = r.get("negative_prompt") or ""
        if spec is not None and negative == spec.defaults.negative_prompt:
            negative = ""  # the model's default: left blank, as the user left it
        input_path = store.job_dir(job.id) / job.input_filename
        return (
            gr.update(value=str(input_path) if input_path.is_file() else None),
            r.get("prompt", ""),
            negative,
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
            f"{r['interpolate']}x" if (r.get("interpolate") or 1) > 1 else INTERPOLATE_OFF,
            r.get("interpolator") or DEFAULT_INTERPOLATOR.value,
            1,
            gr.Tabs(selected="generate"),
        )

    # -- layout ------------------------------------------------------------------------------------------

    d = default_spec.defaults
    initial = model_fields(default_spec)
    with gr.Blocks(title="stillmotion", analytics_enabled=False) as demo:
        gr.HTML(f"<style>{CSS}</style>", padding=False)
        gr.Markdown(
            "### stillmotion · one still image and a sentence in, a short video out", elem_id="sm-title"
        )
        job_state = gr.State(None)
        history_ids = gr.State([])
        selected = gr.State(None)
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5, min_width=320):
                        image = uploaded_image(
                            label="Input image",
                            sources=["upload", "clipboard"],
                            height=210,
                            elem_id="sm-image",
                        )
                        prompt = gr.Textbox(
                            label="Prompt", lines=2, max_lines=4, elem_id="sm-prompt", **initial["prompt"]
                        )
                        with gr.Row():
                            submit_btn = gr.Button(
                                "Generate", variant="primary", elem_id="sm-submit", scale=3
                            )
                            cancel_btn = gr.Button("Cancel", variant="stop", elem_id="sm-cancel", scale=1)
                        status_md = gr.Markdown("No job yet.", elem_id="sm-status")
                        progress_html = gr.HTML("", elem_id="sm-progress", padding=False, visible=False)
                        plan_md = gr.Markdown("_The plan for this device appears here._", elem_id="sm-plan")
                        with gr.Accordion("Settings", open=False, elem_id="sm-settings"):
                            model = gr.Dropdown(
                                model_choices,
                                value=settings.default_model,
                                label="Model",
                                allow_custom_value=True,
                                elem_id="sm-model",
                                info="A model from the list, a Hugging Face repo id or a local folder",
                            )
                            rules = gr.Markdown(initial["rules"]["value"], elem_id="sm-rules")
                            size_mode = gr.Radio(
                                PRESETS,
                                value=d.resolution,
                                label="Size",
                                elem_id="sm-size",
                                info="Presets keep the image's aspect ratio (each side a multiple of 64)",
                            )
                            with gr.Row(visible=False) as custom_row:
                                width = field_number(
                                    value=512,
                                    precision=0,
                                    label="Width",
                                    elem_id="sm-width",
                                    **initial["width"],
                                )
                                height = field_number(
                                    value=512,
                                    precision=0,
                                    label="Height",
                                    elem_id="sm-height",
                                    **initial["height"],
                                )
                            # Number boxes, not sliders: a slider's box clamps a typed 1000 to its maximum
                            # without a word; these refuse it naming the field and the model's rule.
                            with gr.Row():
                                frames = field_number(**initial["num_frames"])
                                steps = field_number(**initial["num_inference_steps"])
                            with gr.Row():
                                guidance = field_number(**initial["guidance_scale"])
                                fps = field_number(**initial["fps"])
                            negative = gr.Textbox(
                                label="Negative prompt",
                                lines=1,
                                elem_id="sm-negative",
                                **initial["negative_prompt"],
                            )
                            with gr.Row(equal_height=True):
                                seed = field_number(
                                    value=-1,
                                    precision=0,
                                    label="Seed (-1 = random)",
                                    elem_id="sm-seed",
                                    minimum=-1,
                                    maximum=MAX_SEED,
                                    scale=3,
                                )
                                dice = gr.Button("Random seed", elem_id="sm-dice", scale=1)
                            with gr.Row():
                                interpolate = gr.Dropdown(
                                    INTERPOLATE_CHOICES,
                                    value=INTERPOLATE_OFF,
                                    label="Interpolate",
                                    elem_id="sm-interpolate",
                                    info="Smoother playback: k x the frames at k x the fps, same duration",
                                )
                                interpolator = gr.Radio(
                                    [i.value for i in Interpolator],
                                    value=DEFAULT_INTERPOLATOR.value,
                                    label="Interpolator",
                                    elem_id="sm-interpolator",
                                    info="minterpolate: ffmpeg, no download; rife: learned, from the hub",
                                )
                            variations = field_number(
                                value=1,
                                precision=0,
                                minimum=1,
                                maximum=MAX_BATCH_JOBS,
                                label="Variations",
                                elem_id="sm-variations",
                                info="More than 1: a batch of jobs with seeds seed, seed+1, ...",
                            )
                    with gr.Column(scale=6, min_width=320):
                        video = gr.Video(
                            label="Video",
                            autoplay=True,
                            loop=True,
                            interactive=False,
                            elem_id="sm-video",
                            height=400,
                        )
                        with gr.Row():
                            download = gr.DownloadButton(
                                "Download video", visible=False, elem_id="sm-download", scale=2
                            )
                            keep_seed_btn = gr.Button(
                                "Keep seed", visible=False, elem_id="sm-keep-seed", size="sm", scale=1
                            )
            with gr.Tab("History", id="history"):
                with gr.Row():
                    refresh_btn = gr.Button("Refresh", elem_id="sm-refresh", scale=0, size="sm")
                    reuse_btn = gr.Button(
                        "Reuse settings", variant="primary", elem_id="sm-reuse", scale=0, size="sm"
                    )
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
                detail_download = gr.DownloadButton(
                    "Download video", visible=False, elem_id="sm-detail-download"
                )
                workers_md = gr.Markdown("", elem_id="sm-workers")

        form = [
            prompt,
            negative,
            model,
            size_mode,
            height,
            width,
            frames,
            steps,
            guidance,
            fps,
            seed,
            interpolate,
            interpolator,
            variations,
        ]

        # -- events -----------------------------------------------------------------------------------------
        size_mode.change(lambda m: gr.update(visible=m == CUSTOM), size_mode, custom_row, queue=False)
        dice.click(lambda: draw_seed(), None, seed, queue=False)
        model.change(
            on_model,
            model,
            [prompt, negative, size_mode, width, height, rules, frames, steps, guidance, fps],
            queue=False,
        )
        plan_inputs = [image, *form]
        # One plan at a time, in order: a slow early plan must never overwrite the answer to a later edit.
        plan_opts: dict[str, Any] = {
            "concurrency_limit": 1,
            "concurrency_id": "plan",
            "show_progress": "hidden",
            "trigger_mode": "always_last",
        }
        # The readout describes the form as it is now: every field that changes what runs, or how long it
        # takes, re-plans (the prompt and the seed change neither; variations only repeat the job).
        unplanned = (prompt, seed, variations)
        replanned: list[Any] = [image, *(c for c in form if all(c is not u for u in unplanned))]
        for component in replanned:
            component.change(plan, plan_inputs, plan_md, **plan_opts)
        submit_btn.click(
            submit,
            plan_inputs,
            job_state,
        ).success(
            watch,
            job_state,
            [status_md, progress_html, video, download, keep_seed_btn],
        ).then(refresh_history, None, [history, history_ids]).then(
            plan,
            plan_inputs,
            plan_md,
            **plan_opts,  # a finished job teaches the expected time: say it
        )
        cancel_btn.click(cancel, job_state, None)
        keep_seed_btn.click(keep_seed, job_state, seed)
        refresh_btn.click(refresh_history, None, [history, history_ids])
        history.select(select_job, history_ids, [selected, detail_md, detail_video, detail_download])
        reuse_btn.click(reuse, selected, [image, *form[:6], custom_row, *form[6:], tabs])
        timer = gr.Timer(HISTORY_REFRESH_S)
        timer.tick(refresh_history, None, [history, history_ids], show_progress="hidden")
        timer.tick(refresh_workers, None, workers_md, show_progress="hidden")
        demo.load(refresh_history, None, [history, history_ids])
        demo.load(refresh_workers, None, workers_md)
        demo.load(plan, plan_inputs, plan_md, **{k: v for k, v in plan_opts.items() if k != "trigger_mode"})
    # Watchers wait most of the time: let many run side by side (Gradio's default is one per event).
    demo.queue(default_concurrency_limit=16)
    blocks: gr.Blocks = demo
    return blocks
