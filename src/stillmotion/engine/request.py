"""GenerationRequest: what a user asked for, with diffusers' parameter names.

``resolve()`` fills the model's defaults, turns a resolution preset into a size that keeps the input image's
aspect ratio, draws a seed when none was given, and raises ``InvalidRequest`` for the first broken rule
(naming the field, the value and the rule). The only adjustment it makes on its own is the documented
preset snapping; explicit values are never changed.
"""

from __future__ import annotations

import math
import secrets
import unicodedata
from dataclasses import asdict, dataclass, fields
from typing import Any

from stillmotion.errors import InvalidRequest
from stillmotion.media.interpolation import resolve_interpolation
from stillmotion.models.registry import RESOLUTION_PRESETS, Limits, ModelSpec

MAX_SEED = 2**32 - 1  # 32-bit seeds: the common convention, and exact in every JSON client
MIN_INFERENCE_STEPS = 1


@dataclass(frozen=True)
class GenerationRequest:
    """A request as received: everything may be left out but the prompt, which a model without a text
    encoder (``Limits.accepts_prompt`` False, e.g. svd-xt) refuses instead."""

    prompt: str = ""
    negative_prompt: str | None = None
    model: str | None = None
    resolution: str | None = None
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    fps: int | None = None
    seed: int | None = None
    # Frame interpolation, an opt-in post-step (media/interpolation.py): a factor, or a target fps, and which
    # interpolator (default: minterpolate, which needs no download).
    interpolate: int | None = None
    interpolate_fps: int | None = None
    interpolator: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        """Build from a JSON object; unknown keys are an error, not silently dropped."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InvalidRequest(
                f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}.",
                field=unknown[0],
            )
        return cls(**data)

    def resolve(
        self, spec: ModelSpec, image_size: tuple[int, int] | None, *, need_prompt: bool = True
    ) -> ResolvedRequest:
        """Validate against ``spec`` and fill every default; ``image_size`` is the input's (width, height).

        ``need_prompt=False`` (planning only: memory does not depend on the words) accepts an empty prompt.
        """
        limits = spec.limits
        prompt, negative = self._resolve_prompts(spec, need_prompt)
        height, width, resolution = self._resolve_size(spec, image_size)

        num_frames = _check_int(
            "num_frames", self.num_frames, spec.defaults.num_frames, limits.min_frames, limits.max_frames
        )
        _check_frame_rule(num_frames, spec)
        steps = _check_int(
            "num_inference_steps",
            self.num_inference_steps,
            spec.defaults.num_inference_steps,
            MIN_INFERENCE_STEPS,
            limits.max_inference_steps,
        )
        guidance = _check_float(
            "guidance_scale",
            self.guidance_scale,
            spec.defaults.guidance_scale,
            limits.min_guidance_scale,
            limits.max_guidance_scale,
        )
        fps = _check_int("fps", self.fps, spec.defaults.fps, limits.min_fps, limits.max_fps)
        seed = _check_int("seed", self.seed, secrets.randbelow(MAX_SEED + 1), 0, MAX_SEED)
        factor, interpolator = resolve_interpolation(
            self.interpolate, self.interpolate_fps, self.interpolator, fps
        )
        return ResolvedRequest(
            prompt=prompt,
            negative_prompt=negative,
            model=spec.name,
            resolution=resolution,
            height=height,
            width=width,
            num_frames=num_frames,
            num_inference_steps=steps,
            guidance_scale=guidance,
            fps=fps,
            seed=seed,
            interpolate=factor,
            interpolator=None if interpolator is None else interpolator.value,
        )

    def _resolve_prompts(self, spec: ModelSpec, need_prompt: bool) -> tuple[str, str]:
        """(prompt, negative prompt); a model without a text encoder refuses either rather than ignore it."""
        limits = spec.limits
        if not limits.accepts_prompt:
            for name, value in (("prompt", self.prompt), ("negative_prompt", self.negative_prompt)):
                text = _check_text(name, value or "", limits, allow_empty=True)
                if text:
                    raise InvalidRequest(
                        f"{name}={_shorten(text)!r} cannot be used: {spec.name} has no text encoder and "
                        f"animates the image alone; leave {name} empty.",
                        field=name,
                    )
            return "", ""
        prompt = _check_text("prompt", self.prompt, limits, allow_empty=not need_prompt)
        negative = self.negative_prompt if self.negative_prompt is not None else spec.defaults.negative_prompt
        return prompt, _check_text("negative_prompt", negative, limits, allow_empty=True)

    def _resolve_size(
        self, spec: ModelSpec, image_size: tuple[int, int] | None
    ) -> tuple[int, int, str | None]:
        limits = spec.limits
        if (self.height is None) != (self.width is None):
            missing = "width" if self.width is None else "height"
            raise InvalidRequest(
                f"{missing} is missing: give both height and width, or neither.", field=missing
            )
        if self.height is not None and self.width is not None:
            if self.resolution is not None:
                raise InvalidRequest(
                    f"resolution={self.resolution!r} and height/width given; one or the other.",
                    field="resolution",
                )
            height = _check_int("height", self.height, 0, limits.min_side, limits.max_side)
            width = _check_int("width", self.width, 0, limits.min_side, limits.max_side)
            for name, value in (("height", height), ("width", width)):
                if value % limits.size_multiple:
                    raise InvalidRequest(
                        f"{name}={value} is not a multiple of {limits.size_multiple} for {spec.name} "
                        f"({limits.size_rule}); try {_nearest_multiple(value, limits.size_multiple)}.",
                        field=name,
                    )
            if height * width > limits.max_pixels:
                raise InvalidRequest(
                    f"width x height = {width}x{height} = {height * width} pixels exceeds {spec.name}'s "
                    "limit of "
                    f"{limits.max_pixels} pixels per frame.",
                    field="height",
                )
            return height, width, None
        preset = self.resolution or spec.defaults.resolution
        if preset not in RESOLUTION_PRESETS:
            raise InvalidRequest(
                f"resolution={preset!r} is not a preset; choose one of {', '.join(RESOLUTION_PRESETS)} "
                "or give height and width.",
                field="resolution",
            )
        height, width = preset_size(RESOLUTION_PRESETS[preset], image_size, limits)
        return height, width, preset


@dataclass(frozen=True)
class ResolvedRequest:
    """A complete, validated request: exactly what runs, and what the output's metadata records."""

    prompt: str
    negative_prompt: str
    model: str
    resolution: str | None
    height: int
    width: int
    num_frames: int
    num_inference_steps: int
    guidance_scale: float
    fps: int  # the generator's frame rate (the UNet is conditioned on it)
    seed: int
    interpolate: int = 1  # frames and fps are multiplied by this after decode; 1 = no interpolation
    interpolator: str | None = None  # media.interpolation.Interpolator value when interpolate > 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def output_fps(self) -> int:
        return self.fps * self.interpolate

    @property
    def output_num_frames(self) -> int:
        return self.num_frames * self.interpolate

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self.guidance_scale > 1.0


def describe_rules(spec: ModelSpec) -> list[str]:
    """The rules ``resolve`` enforces for ``spec``, in words (GET /models, the UI, ``stillmotion models``)."""
    limits = spec.limits
    frames = f"num_frames: {limits.min_frames} to {limits.max_frames}"
    if limits.frame_step > 1:
        first = [limits.min_frames + limits.frame_step * i for i in range(3)]
        frames += f", {limits.frame_step}k+1 ({', '.join(map(str, first))}, ...)"
    prompt = (
        "prompt: required; negative_prompt optional"
        if limits.accepts_prompt
        else f"prompt, negative_prompt: none ({spec.name} animates the image alone); leave them empty"
    )
    return [
        prompt,
        frames,
        f"height, width: multiples of {limits.size_multiple} ({limits.size_rule}), {limits.min_side} to "
        f"{limits.max_side} per side, at most {limits.max_pixels} pixels",
        f"num_inference_steps: 1 to {limits.max_inference_steps}",
        f"guidance_scale: {limits.min_guidance_scale:g} to {limits.max_guidance_scale:g}",
        f"fps: {limits.min_fps} to {limits.max_fps}",
    ]


def preset_size(side: int, image_size: tuple[int, int] | None, limits: Limits) -> tuple[int, int]:
    """(height, width) of about side**2 pixels in the image's aspect ratio, snapped to preset_multiple.

    Documented snapping: each side is rounded to the nearest multiple, then clamped to the model's limits.
    """
    step = limits.preset_multiple
    aspect = 1.0 if image_size is None else image_size[0] / image_size[1]
    width = side * math.sqrt(aspect)
    height = side / math.sqrt(aspect)

    def snap(value: float) -> int:
        snapped = max(step, int(round(value / step)) * step)
        return min(max(snapped, _ceil_multiple(limits.min_side, step)), limits.max_side // step * step)

    h, w = snap(height), snap(width)
    while h * w > limits.max_pixels:  # only for presets near the pixel limit: shrink the longer side
        if h >= w:
            h -= step
        else:
            w -= step
    return h, w


def _check_frame_rule(num_frames: int, spec: ModelSpec) -> None:
    """A causal video VAE takes frame_step x k + 1 frames; name the nearest count that works."""
    step = spec.limits.frame_step
    if step == 1 or (num_frames - 1) % step == 0:
        return
    low = (num_frames - 1) // step * step + 1
    candidates = [n for n in (low, low + step) if spec.limits.min_frames <= n <= spec.limits.max_frames]
    nearest = min(candidates, key=lambda n: (abs(n - num_frames), n))
    raise InvalidRequest(
        f"num_frames={num_frames} is not {step}k+1 for {spec.name}; try {nearest} (its VAE packs {step} "
        "frames into each latent frame after the first).",
        field="num_frames",
    )


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ceil_multiple(value: int, step: int) -> int:
    return -(-value // step) * step


def _nearest_multiple(value: int, step: int) -> int:
    return max(step, int(round(value / step)) * step)


def _check_text(name: str, value: object, limits: Limits, *, allow_empty: bool) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be text, got {type(value).__name__}.", field=name)
    text = value.strip()
    if not text and not allow_empty:
        raise InvalidRequest(
            f"{name} is empty; describe the motion you want, e.g. 'waves roll in'.", field=name
        )
    if len(text) > limits.max_prompt_chars:
        raise InvalidRequest(
            f"{name} has {len(text)} characters; the limit is {limits.max_prompt_chars}.", field=name
        )
    for ch in text:
        # Control characters (NUL, escape codes...) are rejected rather than stripped: they are never meant.
        if unicodedata.category(ch) == "Cc" and ch not in "\n\t\r":
            raise InvalidRequest(
                f"{name} contains the control character U+{ord(ch):04X}; remove it.", field=name
            )
    return text


def _check_int(name: str, value: object, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name}={value!r} must be a whole number.", field=name)
    if not low <= value <= high:
        raise InvalidRequest(f"{name}={value} is out of range; allowed: {low} to {high}.", field=name)
    return value


def _check_float(name: str, value: object, default: float, low: float, high: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{name}={value!r} must be a number.", field=name)
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise InvalidRequest(f"{name}={value} is out of range; allowed: {low:g} to {high:g}.", field=name)
    return number
