"""What the web UI shows, as pure functions of the data: the plan readout, a job's status, history rows.

No Gradio and no I/O here, so every wording is testable as a plain function (tests/server/test_webui.py).
Sizes are always width x height, in pixels, as image tools print them.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from stillmotion.engine.request import request_fields
from stillmotion.errors import StillmotionError, advice
from stillmotion.jobs.store.job_store import Job, JobStatus
from stillmotion.service.expected_time import format_duration

# The API's field names and the labels the form shows for them (the field list's, plus the form's own
# inputs): errors name the field a user sees.
FIELD_LABELS = {
    **{declared.name: declared.info.label for declared in request_fields()},
    "image": "Input image",
    "variations": "Variations",
}

HISTORY_HEADERS = ["", "Job", "Status", "Created", "Prompt", "Model", "Size (px)", "Frames", "Steps", "Seed"]
Cell = Literal["str", "number", "bool", "date", "markdown", "html"]
# The poster is a markdown image: the table renders markdown cells, and strips <img> from html ones.
HISTORY_DATATYPES: list[Cell] = [
    "markdown",
    "str",
    "str",
    "str",
    "str",
    "str",
    "str",
    "number",
    "number",
    "str",
]
# Wide enough for what they hold (a 10-digit seed, "cancelled", a 16-character model name): the prompt gives.
HISTORY_WIDTHS: list[str | int] = [
    "72px", "96px", "104px", "120px", "300px", "160px", "96px", "72px", "64px", "120px"
]  # fmt: skip


def error_text(exc: StillmotionError) -> str:
    """The error as the UI shows it: the form's label for the field first, then the rule."""
    label = FIELD_LABELS.get(exc.field or "")
    if not label:
        return exc.message
    message = exc.message.removeprefix(f"{exc.field}: ")  # image errors already start with "image: "
    return f"{label}: {message}"


def size_text(width: object, height: object) -> str:
    return f"{width}×{height}"


def plan_markdown(out: Mapping[str, Any]) -> str:
    """The plan readout: what will run (size, frames, steps, model), the plan, its peak, and the time."""
    req = out["request"]
    head = (
        f"**{size_text(req['width'], req['height'])} px**, {req['num_frames']} frames, "
        f"{req['num_inference_steps']} steps · `{req['model']}`"
    )
    if not out["fits"]:
        return f"**Does not fit this device:** {head}\n\n{out.get('message') or ''}"
    plan = out.get("plan") or {}
    budget = out.get("budget") or {}
    parts = []
    if plan.get("rung"):
        parts.append(f"plan **{plan['rung']}** ({plan.get('dtype', '?')})")
    estimate = plan.get("estimate") or {}
    peak = estimate.get("peak_reserved_gib")
    device = budget.get("name") or budget.get("device_type")
    budget_gib = budget.get("budget_bytes")
    if isinstance(peak, int | float):
        of = f" of {budget_gib / 2**30:.1f} GiB" if isinstance(budget_gib, int | float) and budget_gib else ""
        where = f" on {device}" if device else ""
        parts.append(f"peak about {peak:.1f} GiB{of}{where}")
    expected = out.get("expected_time_s")
    if isinstance(expected, int | float):
        parts.append(f"about **{format_duration(expected)}** ({out.get('expected_time_basis')})")
    else:
        parts.append("time: known after a first job here")
    text = head + "\n\n" + " · ".join(parts)
    if plan.get("approximate"):
        text += "\n\n**Approximate:** " + ", ".join(str(a) for a in plan.get("approximations") or [])
    interpolation = out.get("interpolation")
    if isinstance(interpolation, dict):
        factor = interpolation.get("factor")
        text += (
            f"\n\n**Interpolation {factor}x** ({interpolation.get('interpolator')}): "
            f"{req['num_frames'] * int(factor or 1)} frames at {req['fps'] * int(factor or 1)} fps"
            f"\n\n<small>{html.escape(str(interpolation.get('reason', '')))}</small>"
        )
    if plan.get("reason"):  # the planner's full reasoning, folded: one click away, not in the way
        reason = html.escape(str(plan["reason"]))
        text += f"\n\n<details><summary>why this plan</summary><small>{reason}</small></details>"
    return text


def status_markdown(job: Job, queue_position: int | None, queue_wait_s: float | None = None) -> str:
    """One line on where the job is (queue position, step and time left, outcome), then the seed."""
    status = JobStatus(job.status)
    progress = job.progress or {}
    short = f"`{job.id[:8]}`"
    if status == JobStatus.QUEUED:
        where = f"number {queue_position} in the queue" if queue_position else "waiting for the worker"
        text = f"**Queued** · job {short} · {where}"
        if queue_wait_s is not None:
            text += f" · starts in about {format_duration(queue_wait_s)} or less"
        if job.cancel_requested:
            text += " · cancel requested"
    elif status == JobStatus.RUNNING:
        step, total = int(progress.get("step") or 0), int(progress.get("total_steps") or 0)
        stage = progress.get("stage") or "starting"
        text = f"**Running** · job {short} · {stage}"
        if stage == "denoise" and total:
            text += f", step {step} of {total}"
        eta = progress.get("eta_s")
        if isinstance(eta, int | float):
            text += f" · about {format_duration(eta)} left"
        if job.cancel_requested:
            text += " · cancelling…"
    elif status == JobStatus.SUCCEEDED:
        text = f"**Done** · job {short}"
        total_s = ((job.result or {}).get("timings") or {}).get("total_s")
        if isinstance(total_s, int | float):
            text += f" · took {format_duration(total_s)}"
        downgrades = (job.result or {}).get("downgrades") or []
        if downgrades:
            rungs = " → ".join([str(downgrades[0].get("from")), *(str(d.get("to")) for d in downgrades)])
            text += (
                f"\n\nRan out of memory {len(downgrades)}× and was downgraded ({rungs}); "
                "the output is the same request, produced more slowly."
            )
    elif status == JobStatus.CANCELLED:
        text = f"**Cancelled** · job {short}"
    else:
        text = f"**Failed** · job {short} · {job.error_code}: {job.error_message or ''}"
        next_step = advice(job.error_code, "ui")
        if next_step:
            text += f"\n\n{next_step}"
    seed = job.request.get("seed")
    if isinstance(seed, int):
        text += f"\n\nSeed **{seed}**"
    return text


def progress_bar(job: Job) -> str:
    """A thin progress bar: denoising steps done, full once the job is done."""
    progress = job.progress or {}
    step, total = int(progress.get("step") or 0), int(progress.get("total_steps") or 0)
    if job.status == JobStatus.SUCCEEDED:
        step = total = max(total, 1)
    fraction = step / total if total else 0.0
    return (
        f"<div class='bar' title='{step}/{total}'><div class='fill' style='width:{fraction * 100:.0f}%'>"
        "</div></div>"
    )


def history_row(job: Job, shown: Mapping[str, Any], poster_url: str | None) -> list[Any]:
    """One row of the history table (see HISTORY_HEADERS); ``shown`` holds the size, frames and steps the
    job ran with (defaults and presets resolved)."""
    request = job.request
    prompt = str(request.get("prompt") or "")
    thumb = f"![first frame]({poster_url})" if poster_url else ""
    return [
        thumb,
        job.id[:8],
        job.status.value,
        job.created_at.astimezone().strftime("%m-%d %H:%M"),
        prompt[:80] + ("…" if len(prompt) > 80 else ""),
        job.model,
        size_text(shown["width"], shown["height"]) if shown.get("width") and shown.get("height") else "",
        shown.get("num_frames") or "",
        shown.get("num_inference_steps") or "",
        str(request.get("seed") if request.get("seed") is not None else ""),
    ]


def workers_markdown(workers: Sequence[Mapping[str, Any]] | None) -> str:
    """Every worker as a table row: where it runs (machine, GPU), its state and the job it runs now."""
    if workers is None:
        return "_This server runs no worker: jobs wait until one runs._"
    if not workers:
        return "_No worker reported yet._"
    rows = ["| Worker | Machine | GPU | State | Job |", "|---|---|---|---|---|"]
    for w in workers:
        state = "down" if not w.get("alive") else "ready" if w.get("ready") else "starting"
        job = w.get("current_job_id")
        rows.append(
            f"| {html.escape(str(w.get('worker_id') or '?'))} | {html.escape(str(w.get('node') or '-'))} "
            f"| {html.escape(str(w.get('gpu') if w.get('gpu') is not None else w.get('device') or '-'))} "
            f"| {state} | {f'`{str(job)[:8]}`' if job else 'idle'} |"
        )
    ready = sum(1 for w in workers if w.get("alive") and w.get("ready"))
    return f"**Workers:** {ready} of {len(workers)} ready\n\n" + "\n".join(rows)
