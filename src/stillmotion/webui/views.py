"""What the web UI shows, as pure functions of the data: the plan readout, a job's or a group's status,
history rows, the workers table, the model's rules and the errors, in the form's words.

No Gradio and no I/O here, so every wording is testable as a plain function (tests/server/test_webui.py).
Sizes are always width x height, in pixels, as image tools print them; fields are named by the form's labels
(the field list's, engine/request.py), never by their API names.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from stillmotion.engine.request import describe_rules, request_fields
from stillmotion.errors import InvalidImage, StillmotionError, advice
from stillmotion.models.registry import ModelSpec
from stillmotion.service.expected_time import format_duration
from stillmotion.service.job_service import TERMINAL, Job, JobStatus

# The API's field names and the labels the form shows for them (the field list's, plus the form's own
# inputs): errors name the field a user sees.
FIELD_LABELS = {
    **{declared.name: declared.info.label for declared in request_fields()},
    "image": "Input image",
    "variations": "Variations",
}

HISTORY_HEADERS = ["", "Job", "Status", "Created", "Prompt", "Model", "Size (px)", "Frames", "Steps", "Seed"]
# The Job cell of a variation: its place in its group, so a group reads as one ("(1/3)", "(2/3)"...).
GROUP_MARK = "{job} ({place}/{count})"
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
# Wide enough for what they hold (a 10-digit seed, "cancelled", a 16-character model name, a variation's
# "(2/3)"), 1198 px in all, within the 1216 px of a 1366 px screen: the prompt gives.
HISTORY_WIDTHS: list[str | int] = [
    "72px", "150px", "104px", "120px", "240px", "160px", "96px", "72px", "64px", "120px"
]  # fmt: skip
# What the input image may be, in a user's words (media/image_input.py reads these by content).
IMAGE_FORMATS = "PNG, JPEG or WebP"
# Image errors that mean "this is not a picture we can decode", whatever the file's name says.
UNREADABLE_IMAGE = frozenset({"unsupported_format", "image_corrupt", "image_truncated", "empty_file"})


def error_text(exc: StillmotionError) -> str:
    """The error as the UI shows it: the form's label for the field first, then the rule."""
    label = FIELD_LABELS.get(exc.field or "")
    if not label:
        return exc.message
    message = exc.message.removeprefix(f"{exc.field}: ")  # image errors already start with "image: "
    return f"{label}: {message}"


def image_error_text(exc: InvalidImage) -> str:
    """An unusable input image in plain words: a file that is no picture we can read says so and names the
    formats (no error code, no bytes); the other rules (too large, too small...) name the limit."""
    if exc.code in UNREADABLE_IMAGE:
        return f"This file is not an image we can read. Use a {IMAGE_FORMATS} picture."
    message = exc.message.removeprefix("image: ")
    return message[:1].upper() + message[1:]


_LABELS = {declared.name: declared.info.label for declared in request_fields()}
_API_NAME = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _LABELS), key=len, reverse=True)) + r")\b")


def labelled(text: str) -> str:
    """``text`` with every request field's API name replaced by the form's label (num_frames -> Frames)."""
    return _API_NAME.sub(lambda match: _LABELS[match[1]], text)


def rules_markdown(spec: ModelSpec) -> str:
    """The model's rules (``describe_rules``, what ``resolve`` checks) in the form's words."""
    return "**Rules:** " + "; ".join(labelled(rule) for rule in describe_rules(spec))


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
    host = estimate.get("host") or {}
    host_free = budget.get("host_free_bytes")
    if isinstance(host.get("peak_gib"), int | float) and budget.get("device_type") != "cpu":
        of = f" of {host_free / 2**30:.1f} GiB" if isinstance(host_free, int | float) and host_free else ""
        parts.append(f"host memory about {host['peak_gib']:.1f} GiB{of}")
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


def status_markdown(
    job: Job, queue_position: int | None, queue_wait_s: float | None = None, time_left_s: float | None = None
) -> str:
    """One line on where the job is (queue position, step and time left, outcome), then the seed.

    ``time_left_s`` is the service's estimate, the decode counted (``JobService.time_left``); without one the
    engine's ETA is shown while it denoises and nothing after (it would stand still through the decode)."""
    status = JobStatus(job.status)
    short = f"`{job.id[:8]}`"
    if status == JobStatus.QUEUED:
        where = f"number {queue_position} in the queue" if queue_position else "waiting for the worker"
        text = f"**Queued** · job {short} · {where}"
        if queue_wait_s is not None:
            text += f" · starts in about {format_duration(queue_wait_s)} or less"
        if job.cancel_requested:
            text += " · cancel requested"
    elif status == JobStatus.RUNNING:
        text = _running_text(job, short, time_left_s)
    elif status == JobStatus.SUCCEEDED:
        text = _succeeded_text(job, short)
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


def _running_text(job: Job, short: str, time_left_s: float | None) -> str:
    progress = job.progress or {}
    step, total = int(progress.get("step") or 0), int(progress.get("total_steps") or 0)
    stage = progress.get("stage") or "starting"
    text = f"**Running** · job {short} · {stage}"
    if stage == "denoise" and total:
        text += f", step {step} of {total}"
    eta = time_left_s
    if eta is None and stage == "denoise":
        eta = progress.get("eta_s")
    if isinstance(eta, int | float):
        text += f" · about {format_duration(eta)} left"
    if job.cancel_requested:
        text += " · cancelling…"
    return text


def _succeeded_text(job: Job, short: str) -> str:
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
    return text


def group_markdown(jobs: Sequence[Job], current: str) -> str:
    """Variations (one batch) as one: how many of them are done, then ``current``, the status of the one
    running (or the last one that finished)."""
    done = [job for job in jobs if job.status in TERMINAL]
    text = f"**Variations: {len(done)} of {len(jobs)} done**"
    for status in (JobStatus.FAILED, JobStatus.CANCELLED):
        count = sum(1 for job in done if job.status == status)
        if count:
            text += f" · {count} {status.value}"
    seeds = [str(job.request.get("seed")) for job in jobs if isinstance(job.request.get("seed"), int)]
    if seeds:
        text += f" · seeds {', '.join(seeds)}"
    return f"{text}\n\n{current}"


def progress_fraction(job: Job) -> float:
    """How far the job is, 0 to 1: denoising steps done, 1 once it is finished (whatever the outcome)."""
    if job.status in TERMINAL:
        return 1.0
    progress = job.progress or {}
    step, total = int(progress.get("step") or 0), int(progress.get("total_steps") or 0)
    return step / total if total else 0.0


def progress_bar(fraction: float) -> str:
    """A thin progress bar, ``fraction`` (0 to 1) full."""
    percent = f"{fraction * 100:.0f}%"
    return f"<div class='bar' title='{percent}'><div class='fill' style='width:{percent}'></div></div>"


def history_order(jobs: Sequence[Job]) -> list[tuple[Job, tuple[int, int] | None]]:
    """``jobs`` (newest first) with each group of variations together, in the order they were asked for,
    where its newest job was; each job with its place in its group ((1, 3), (2, 3)...) or None."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        if job.batch_id:
            groups.setdefault(job.batch_id, []).append(job)
    ordered: list[tuple[Job, tuple[int, int] | None]] = []
    for job in jobs:
        if not job.batch_id:
            ordered.append((job, None))
        elif job.batch_id in groups:  # the group's first appearance: all of it, oldest first
            newest_first = groups.pop(job.batch_id)  # ties keep the store's order: reversed, oldest first
            members = sorted(reversed(newest_first), key=lambda member: member.created_at)
            ordered.extend((member, (i + 1, len(members))) for i, member in enumerate(members))
    return ordered


def history_row(
    job: Job, shown: Mapping[str, Any], poster_url: str | None, place: tuple[int, int] | None = None
) -> list[Any]:
    """One row of the history table (see HISTORY_HEADERS); ``shown`` holds the size, frames and steps the
    job ran with; ``place`` its place in its group of variations, if it is one."""
    request = job.request
    prompt = str(request.get("prompt") or "")
    thumb = f"![first frame]({poster_url})" if poster_url else ""
    name = job.id[:8]
    if place is not None:
        name = GROUP_MARK.format(job=name, place=place[0], count=place[1])
    return [
        thumb,
        name,
        job.status.value,
        job.created_at.astimezone().strftime("%m-%d %H:%M"),
        prompt,  # whole: the table shortens it to the column, and shows all of it in a selected cell
        job.model,
        size_text(shown["width"], shown["height"]) if shown.get("width") and shown.get("height") else "",
        shown.get("num_frames") or "",
        shown.get("num_inference_steps") or "",
        str(request.get("seed") if request.get("seed") is not None else ""),
    ]


def worker_state_text(worker: Mapping[str, Any]) -> str:
    """down, starting, running <job> or idle."""
    if not worker.get("alive"):
        return "down"
    if not worker.get("ready"):
        return "starting"
    job = worker.get("current_job_id")
    return f"running `{str(job)[:8]}`" if job else "idle"


def workers_markdown(workers: Sequence[Mapping[str, Any]] | None) -> str:
    """Every worker as a table row: its name, its device (the GPU's name or CPU) and machine, and what it
    does now. Three short columns, so the table reads at 400 px."""
    if workers is None:
        return "_This server runs no worker: jobs wait until one runs._"
    if not workers:
        return "_No worker reported yet._"
    rows = ["| Worker | Device | State |", "|---|---|---|"]
    for w in workers:
        device = str(w.get("device_name") or "-")
        if w.get("node"):
            device += f" on {w['node']}"
        name = html.escape(str(w.get("worker_id") or "?"))
        rows.append(f"| {name} | {html.escape(device)} | {worker_state_text(w)} |")
    ready = sum(1 for w in workers if w.get("alive") and w.get("ready"))
    busy = sum(1 for w in workers if w.get("alive") and w.get("ready") and w.get("current_job_id"))
    return f"**Workers:** {ready} of {len(workers)} ready, {busy} running a job\n\n" + "\n".join(rows)
