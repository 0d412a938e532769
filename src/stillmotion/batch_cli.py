"""``stillmotion generate --batch FILE.jsonl|FOLDER [--variations N]``: many videos from one command.

The command-line flags are the shared fields; each batch entry adds what differs:
- a ``.jsonl`` file: one JSON object per line with request fields (``prompt``, ``seed``, ``interpolate``...),
  ``image`` (a path, relative to the file's folder) and optionally ``output`` (a file name);
- a folder: one entry per PNG, JPEG or WebP image in it, in name order;
- ``--variations N``: each entry N times, with seeds seed, seed + 1, ... (random seeds without ``--seed``);
  an entry's ``output`` name gets the variation's number (``clip.mp4``: ``clip-1.mp4``, ``clip-2.mp4``...).

All or nothing up front: every entry is checked (fields, image, model limits, whether its output format
plays its fps, and that no two entries write the same file) before the first video starts, and a bad one
stops the command with exit 2 naming the entry. Then the entries run one after another on one
engine, so the prompt and image embeddings are computed once and shared through its cache; a failure in one
entry is reported and the others still run. Each entry writes its own video into the output folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from stillmotion import bounded_json, faults
from stillmotion.cli_progress import ProgressDisplay
from stillmotion.config import Settings
from stillmotion.engine.engine import Engine, check_output
from stillmotion.engine.progress import CancelToken
from stillmotion.engine.request import GenerationRequest, ResolvedRequest, variation_seeds
from stillmotion.engine.resolve import resolve
from stillmotion.errors import Cancelled, InvalidRequest, StillmotionError
from stillmotion.media.image_input import InputImage, load_image_file
from stillmotion.media.video_output import VIDEO_FORMATS

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
Entries = list[tuple[str, dict[str, Any]]]  # (how messages name it, its fields)


@dataclass(frozen=True)
class BatchEntry:
    """One video to make: its resolved request (seed fixed), its image and where it goes."""

    name: str  # how messages name it: "line 3" or the image's file name
    request: ResolvedRequest
    image: InputImage
    output: Path
    last_image: InputImage | None = None  # the frame to end on (``last_image`` in the entry)


def read_entries(source: Path) -> Entries:
    """(name, fields) per entry of a ``.jsonl`` file or a folder of images."""
    if source.is_dir():
        images = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise InvalidRequest(f"batch={str(source)!r} holds no PNG, JPEG or WebP image.", field="batch")
        return [(p.name, {"image": str(p)}) for p in images]
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"batch={str(source)!r} cannot be read ({exc}).", field="batch") from None
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            fields = bounded_json.loads(line)  # bounded: 100,000 "[" is a refusal, not a crash
        except ValueError as exc:
            raise InvalidRequest(f"batch line {number}: not valid JSON ({exc}).", field="batch") from None
        if not isinstance(fields, dict):
            raise InvalidRequest(f"batch line {number}: must be a JSON object.", field="batch")
        if "image" in fields:
            fields["image"] = str(source.parent / str(fields["image"]))
        entries.append((f"line {number}", fields))
    if not entries:
        raise InvalidRequest(f"batch={str(source)!r} has no entries.", field="batch")
    return entries


def with_variations(entries: Entries, count: int, seed: int | None) -> Entries:
    """Each entry ``count`` times with seeds seed, seed + 1, ... (no seed: each draws its own)."""
    if count < 1:
        raise InvalidRequest(f"variations={count} must be 1 or more.", field="variations")
    out = []
    for name, fields in entries:
        base = fields.get("seed", seed)
        if isinstance(base, bool) or not isinstance(base, int):
            base = (
                None  # each draws its own (a seed that is not a number is refused when the entry is checked)
            )
        for i, varied_seed in enumerate(variation_seeds(base, count)):
            varied = dict(fields) if varied_seed is None else {**fields, "seed": varied_seed}
            if count > 1 and isinstance(fields.get("output"), str):  # one file per variation
                output = PurePath(fields["output"])
                varied["output"] = str(output.with_name(f"{output.stem}-{i + 1}{output.suffix}"))
            out.append((f"{name} #{i + 1}" if count > 1 else name, varied))
    return out


def prepare(
    entries: Entries, shared: GenerationRequest, settings: Settings, folder: Path
) -> list[BatchEntry]:
    """Resolve every entry before any runs; the seed each will use is fixed now (and recorded)."""
    prepared: list[BatchEntry] = []
    writers: dict[str, str] = {}  # output file (case folded: one file on some disks) -> the entry writing it
    for index, (name, fields) in enumerate(entries):
        fields = dict(fields)
        image_path = fields.pop("image", None)
        output_name = fields.pop("output", None)
        try:
            request = GenerationRequest.from_dict({**shared.given(), **fields})
            if image_path is None:
                raise InvalidRequest("no image: give --image or an 'image' per entry.", field="image")
            image = load_image_file(Path(str(image_path)))
            last = None if request.last_image is None else load_image_file(Path(request.last_image))
            resolved = resolve(
                request,
                settings,
                (image.width, image.height),
                last_image_sha256=None if last is None else last.sha256,
            )
            output = folder / str(output_name or f"{index + 1:03d}-{Path(str(image_path)).stem}.mp4")
            if output.suffix.lstrip(".").lower() not in VIDEO_FORMATS or output.parent != folder:
                raise InvalidRequest(
                    f"output={output_name!r}: give a file name ending in .mp4, .gif or .webp."
                )
            check_output(output, resolved)  # the format plays the output fps (GIF: at most 50)
            if output.name.casefold() in writers:
                raise InvalidRequest(
                    f"output={output.name!r} is also {writers[output.name.casefold()]}'s; give each entry "
                    "its own file name (names that differ only in case are one file on some disks).",
                    field="output",
                )
            writers[output.name.casefold()] = name
        except StillmotionError as exc:
            raise InvalidRequest(f"batch {name}: {exc.message}", code=exc.code, field=exc.field) from None
        prepared.append(BatchEntry(name, resolved, image, output, last))
    return prepared


def run_batch(
    entries: list[BatchEntry], engine: Engine, cancel: CancelToken, progress: ProgressDisplay | None = None
) -> list[dict[str, Any]]:
    """Generate each entry; one result per entry: ``{"name", "ok", "video_path" | "error"}``. ``progress``
    shows a bar per entry under the batch's own."""
    results = []
    for entry in entries:
        hooks = [*faults.hooks(), *([progress.job(entry.name)] if progress is not None else [])]
        try:
            result = engine.generate(
                entry.request, entry.image, entry.output, hooks, cancel=cancel, last_image=entry.last_image
            )
        except Cancelled:
            raise
        except StillmotionError as exc:
            logger.warning("batch %s failed: [%s] %s", entry.name, exc.code, exc.message)
            results.append({"name": entry.name, "ok": False, "error": exc.to_dict()})
            continue
        finally:
            if progress is not None:
                progress.job_done()
        path = str(result.video_path)
        results.append({"name": entry.name, "ok": True, "video_path": path, "seed": entry.request.seed})
    return results
