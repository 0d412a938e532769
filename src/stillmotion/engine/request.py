"""The one field list: what a user may ask for (``GenerationRequest``) and what runs (``ResolvedRequest``).

Every user-facing generation field is declared once, below, with its type, default, label, help text and
the model limits that bound it (``RequestField``). The surfaces derive their forms from this declaration:
the API's form schema (service/schemas.py), the CLI's flags (cli.py), the web UI's form and its "reuse"
(webui/), batch entries (service/batch.py, batch_cli.py) and the recipe written into every video
(``ResolvedRequest.to_dict``). Adding a field: declare it here, in both classes, resolve it in
``GenerationRequest.resolve``, and use it where it matters (a model family, the planner).

A request is resolved once: ``resolve()`` fills the model's defaults, turns a resolution preset into a size
that keeps the input image's aspect ratio, draws the seed when none was given (``draw_seed``: the only place
a seed is drawn), and raises ``InvalidRequest`` for the first broken rule (naming the field, the value, the
rule and, where there is one, the nearest value that works). The only adjustment it makes on its own is the
documented preset snapping; explicit values are never changed. The service stores the resolved request with
the job and the worker runs it as stored; the CLI resolves at its start.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import typing
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from typing import Any, Literal

from stillmotion.errors import InvalidRequest
from stillmotion.media.interpolation import FACTORS, MAX_OUTPUT_FPS, Interpolator, resolve_interpolation
from stillmotion.models.experts import high_noise_steps
from stillmotion.models.gguf import GgufWeights, gguf_from_dict
from stillmotion.models.lora_refs import LoraChoice, ResolvedLora, parse_lora_text, parse_loras
from stillmotion.models.lora_refs import resolved_from_dict as lora_from_dict
from stillmotion.models.registry import RESOLUTION_PRESETS, Limits, ModelSpec

MAX_SEED = 2**32 - 1  # 32-bit seeds: the common convention, and exact in every JSON client
MAX_MODEL_CHARS = 1024  # a registered name, a Hugging Face repo id or a local folder path
FIELD = "transformer_gguf"
FIELD_2 = "transformer_2_gguf"

# How a field is asked for: free text, a model reference, one of a few choices, a number, an on/off flag, a
# list of LoRAs (the API: a JSON text field; the CLI: a repeatable --lora REF[:STRENGTH[:EXPERT]]), or a
# second image (the API: an optional file part; the CLI: a path).
FieldKind = Literal["text", "model", "choice", "int", "float", "flag", "loras", "image"]
Bounds = Callable[[Limits], tuple[float, float]]
_DECLARATION = "stillmotion"  # the dataclass metadata key that holds a field's RequestField


@dataclass(frozen=True)
class RequestField:
    """How one request field is named, explained and bounded, for every surface that asks for it."""

    label: str  # what the web UI calls it; messages to UI users name the field by it
    help: str  # one or two sentences: the API description, the CLI --help, the UI's info line
    kind: FieldKind
    bounds: Bounds | None = None  # a number's (low, high) for one model's limits
    bounds_rule: Callable[[Limits], str] | None = None  # why a model's low bound is raised ("": it is not)
    multiple_of: Callable[[Limits], int] | None = None  # explicit values must be multiples of this
    # The spacing of the valid values from the low bound (Wan's frames: 5, 9, 13...), where it is not 1 or
    # ``multiple_of``: the web UI's arrows step by it.
    step: Callable[[Limits], int] | None = None
    max_chars: Callable[[Limits], int] | None = None  # text: the longest value
    choices: tuple[str, ...] = ()  # kind "choice": the allowed values
    affects_plan: bool = True  # False: changes neither the memory plan nor the time (the UI re-plans less)
    # Left out, the field takes this other field's value (guidance_scale_2: guidance_scale); only models that
    # take the field at all ask for it (the web UI hides it for the others).
    same_as: str | None = None
    cli_parse: Callable[[str], Any] | None = None  # the CLI's reading of a value, when not the type's own
    cli_metavar: str | None = None


def declared(info: RequestField, default: Any = None) -> Any:
    """A dataclass field carrying its ``RequestField`` declaration."""
    return field(default=default, metadata={_DECLARATION: info})


def _factor(text: str) -> int:
    """'2x' or '2' -> 2 (the CLI's --interpolate); the allowed factors are checked by resolve()."""
    try:
        return int(text.lower().removesuffix("x"))
    except ValueError:
        raise ValueError(f"{text!r} is not a factor like 2x or 4x") from None


def _sides(lim: Limits) -> tuple[float, float]:
    return lim.min_side, lim.max_side


def _prompt_chars(lim: Limits) -> int:
    return lim.max_prompt_chars


@dataclass(frozen=True)
class GenerationRequest:
    """A request as received: every field may be left out (None) and then takes the model's default.

    A model without a text encoder (``Limits.accepts_prompt`` False, e.g. svd-xt) refuses a prompt; the
    others require one (``resolve``)."""

    prompt: str = declared(
        RequestField(
            "Prompt",
            "What should move, and how. Required by models that take a prompt; left empty for models that "
            "animate the image alone (svd-xt).",
            "text",
            max_chars=_prompt_chars,
            affects_plan=False,
        ),
        default="",
    )
    negative_prompt: str | None = declared(
        RequestField(
            "Negative prompt", "What to avoid; default: the model's.", "text", max_chars=_prompt_chars
        )
    )
    model: str | None = declared(
        RequestField(
            "Model",
            "A registered model (see the model list), a Hugging Face repo id or a local folder; default: the "
            "server's default model.",
            "model",
            max_chars=lambda _: MAX_MODEL_CHARS,
        )
    )
    resolution: str | None = declared(
        RequestField(
            "Size",
            "Preset output area (512p/768p/1024p: that side squared; 480p/720p: a 16:9 frame of that "
            "height); the input's aspect ratio is kept, each side snapped to the preset multiple. Or give "
            "height and width.",
            "choice",
            choices=tuple(RESOLUTION_PRESETS),
        )
    )
    height: int | None = declared(
        RequestField(
            "Height",
            "Explicit output height in pixels (with width), a multiple of the model's size step.",
            "int",
            bounds=_sides,
            multiple_of=lambda lim: lim.size_multiple,
        )
    )
    width: int | None = declared(
        RequestField(
            "Width",
            "Explicit output width in pixels (with height), a multiple of the model's size step.",
            "int",
            bounds=_sides,
            multiple_of=lambda lim: lim.size_multiple,
        )
    )
    num_frames: int | None = declared(
        RequestField(
            "Frames",
            "Frames to generate (some models take 4k+1 or 8k+1 only).",
            "int",
            bounds=lambda lim: (lim.min_frames, lim.max_frames),
            step=lambda lim: lim.frame_step,
        )
    )
    num_inference_steps: int | None = declared(
        RequestField(
            "Steps",
            "Denoising steps; more is slower.",
            "int",
            bounds=lambda lim: (lim.min_inference_steps, lim.max_inference_steps),
            bounds_rule=lambda lim: lim.steps_rule,
        )
    )
    guidance_scale: float | None = declared(
        RequestField(
            "Guidance",
            "How strongly the prompt steers the video (classifier-free guidance; 1 = off).",
            "float",
            bounds=lambda lim: (lim.min_guidance_scale, lim.max_guidance_scale),
        )
    )
    guidance_scale_2: float | None = declared(
        RequestField(
            "Guidance (low noise)",
            "Two-expert models (wan2.2-i2v-a14b): the guidance of the low-noise expert's steps; default: "
            "guidance_scale.",
            "float",
            bounds=lambda lim: (lim.min_guidance_scale, lim.max_guidance_scale),
            same_as="guidance_scale",
        )
    )
    fps: int | None = declared(
        RequestField(
            "FPS",
            "Frames per second of the video (models conditioned on it see the same value).",
            "int",
            bounds=lambda lim: (lim.min_fps, lim.max_fps),
        )
    )
    seed: int | None = declared(
        RequestField(
            "Seed",
            "The random seed; leave it out for a random one (always recorded).",
            "int",
            bounds=lambda _: (0, MAX_SEED),
            affects_plan=False,
        )
    )
    fast: bool | None = declared(
        RequestField(
            "Fast (approximate)",
            "Use the model's step-distilled LoRA (its steps, guidance 1 and scheduler shift, as its model "
            "card says): minutes become seconds, but the video is the distilled LoRA's, not the base model's "
            "(APPROXIMATE; recorded in the recipe). Only for models that have one (GET /models: fast).",
            "flag",
        )
    )
    loras: tuple[LoraChoice, ...] | None = declared(
        RequestField(
            "LoRAs",
            "LoRAs to apply, each {ref, strength, expert}: ref is a .safetensors file under the LoRA folders "
            "or a Hugging Face file owner/repo/path/file.safetensors[@revision]; strength (default 1) scales "
            "it; expert (two-expert models) is high, low or both (default). Wan models only; safetensors "
            "only.",
            "loras",
            cli_parse=parse_lora_text,
            cli_metavar="REF[:STRENGTH[:EXPERT]]",
        )
    )
    transformer_gguf: str | None = declared(
        RequestField(
            "Transformer (GGUF)",
            "A quantized transformer to run instead of the model's 16-bit one (APPROXIMATE; recorded in the "
            "recipe): a .gguf file under the model folders or a Hugging Face file "
            "owner/repo/path/file.gguf[@revision], made from this model (Q8_0 is closest to 16-bit; Q4 "
            "types use a quarter of its memory). The other parts come from the model. Wan 2.1 I2V, Wan 2.2 "
            "TI2V and LTX-Video models; for Wan 2.2 A14B the high-noise expert.",
            "text",
            max_chars=lambda _: MAX_MODEL_CHARS,
        )
    )
    transformer_2_gguf: str | None = declared(
        RequestField(
            "Low-noise expert (GGUF)",
            "Wan 2.2 A14B: a quantized low-noise expert (transformer_2) to run instead of its 16-bit one "
            "(APPROXIMATE; recorded in the recipe), a .gguf file or hub file as for the transformer. Give it "
            "with the high-noise expert's file, or alone.",
            "text",
            max_chars=lambda _: MAX_MODEL_CHARS,
        )
    )
    last_image: str | None = declared(
        RequestField(
            "Last frame",
            "An image for the video to end on (first and last frame), for models that take one "
            "(wan2.2-i2v-a14b); the same image as the input makes a loop.",
            "image",
        )
    )
    # Frame interpolation, an opt-in post-step (media/interpolation.py).
    interpolate: int | None = declared(
        RequestField(
            "Interpolate",
            "Frame interpolation after generation: 2, 3 or 4 times the frames and the fps (N frames become "
            "N x k, the duration stays). Changes the video; recorded in its recipe.",
            "int",
            bounds=lambda _: (min(FACTORS), max(FACTORS)),
            cli_parse=_factor,
            cli_metavar="2x|3x|4x",
        )
    )
    interpolate_fps: int | None = declared(
        RequestField(
            "Interpolated FPS",
            "Instead of interpolate: the output fps, fps times 2, 3 or 4.",
            "int",
            bounds=lambda lim: (2 * lim.min_fps, MAX_OUTPUT_FPS),
        )
    )
    interpolator: str | None = declared(
        RequestField(
            "Interpolator",
            "minterpolate (ffmpeg, CPU, no download; the default) or rife (the learned RIFE 4.6 network, "
            "weights from the Hugging Face hub).",
            "choice",
            choices=tuple(i.value for i in Interpolator),
        )
    )

    # LTX-Video's decode options (models/ltx.py), for VAEs that decode at a timestep (0.9.1 and later).
    decode_timestep: float | None = declared(
        RequestField(
            "Decode timestep",
            "LTX-Video 0.9.1 and later (a timestep-conditioned VAE): the timestep the VAE decodes at; "
            "default: the model's (0.03). Other models have no such option.",
            "float",
            bounds=lambda _: (0.0, 1.0),
        )
    )
    decode_noise_scale: float | None = declared(
        RequestField(
            "Decode noise scale",
            "LTX-Video 0.9.1 and later: how much noise is mixed into the latents before the VAE decodes "
            "them (0 to 1); default: the model's (0.025). Other models have no such option.",
            "float",
            bounds=lambda _: (0.0, 1.0),
        )
    )

    def __post_init__(self) -> None:
        # LoRAs arrive as CLI strings, JSON objects or a JSON text; one form from here on (checked).
        if self.loras is not None:
            object.__setattr__(self, "loras", parse_loras(self.loras))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def given(self) -> dict[str, Any]:
        """The fields that were given (not None, and not an empty prompt)."""
        return {key: value for key, value in self.to_dict().items() if value not in (None, "")}

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
        self,
        spec: ModelSpec,
        image_size: tuple[int, int] | None,
        *,
        need_prompt: bool = True,
        seed_key: str | None = None,
        loras: tuple[ResolvedLora, ...] = (),
        last_image_sha256: str | None = None,
        transformer_gguf: GgufWeights | None = None,
        transformer_2_gguf: GgufWeights | None = None,
    ) -> ResolvedRequest:
        """Validate against ``spec`` and fill every default; ``image_size`` is the input's (width, height).

        ``need_prompt=False`` (planning only: memory does not depend on the words) accepts an empty prompt.
        ``seed_key``: where no seed is given, derive it from this key (an idempotency key, so a retried
        submission stores the same request) instead of drawing a random one. ``loras``: this request's LoRAs
        and the fast choice's, found and checked by the caller (engine/resolve.py ``resolve_loras``), in that
        order; ``last_image_sha256``: the content hash of the ``last_image`` the caller loaded;
        ``transformer_gguf`` and ``transformer_2_gguf``: the files the fields of those names name, found and
        read by the caller (engine/resolve.py ``resolve_transformer_gguf``).
        """
        prompt, negative = self._resolve_prompts(spec, need_prompt)
        height, width, resolution = self._resolve_size(spec, image_size)
        num_frames = _check_number("num_frames", self.num_frames, spec.defaults.num_frames, spec)
        _check_frame_rule(num_frames, spec)
        fast = self._resolve_fast(spec)
        defaults = spec.defaults_for(fast is not None)
        steps = _check_number(
            "num_inference_steps", self.num_inference_steps, defaults.num_inference_steps, spec
        )
        guidance = _check_number("guidance_scale", self.guidance_scale, defaults.guidance_scale, spec)
        guidance_2 = self._resolve_guidance_2(spec, fast is not None)
        self._check_loras(spec, loras)
        self._check_gguf(spec, transformer_gguf, bool(loras))
        self._check_gguf_2(spec, transformer_2_gguf, bool(loras))
        if self.last_image is not None and not spec.accepts_last_image:
            raise InvalidRequest(
                f"last_image cannot be used with {spec.name}: it was not trained to end on a given frame; "
                "use wan2.2-i2v-a14b, or leave last_image out.",
                field="last_image",
            )
        fps = _check_number("fps", self.fps, spec.defaults.fps, spec)
        seed = _check_number("seed", self.seed, draw_seed(seed_key), spec)
        factor, interpolator = resolve_interpolation(
            self.interpolate, self.interpolate_fps, self.interpolator, int(fps)
        )
        decode_timestep = _check_decode_option("decode_timestep", self.decode_timestep, spec)
        decode_noise_scale = _check_decode_option("decode_noise_scale", self.decode_noise_scale, spec)
        return ResolvedRequest(
            prompt=prompt,
            negative_prompt=negative,
            model=spec.name,
            resolution=resolution,
            height=height,
            width=width,
            num_frames=int(num_frames),
            num_inference_steps=int(steps),
            guidance_scale=float(guidance),
            fps=int(fps),
            seed=int(seed),
            interpolate=factor,
            interpolator=None if interpolator is None else interpolator.value,
            decode_timestep=decode_timestep,
            decode_noise_scale=decode_noise_scale,
            guidance_scale_2=guidance_2,
            fast=fast is not None,
            flow_shift=fast.flow_shift if fast else None,
            loras=loras,
            last_image=last_image_sha256 if self.last_image is not None else None,
            experts=_expert_note(spec, int(steps), fast.flow_shift if fast else None),
            transformer_gguf=transformer_gguf,
            transformer_2_gguf=transformer_2_gguf,
        )

    def _resolve_fast(self, spec: ModelSpec) -> Any:
        """The model's fast choice when asked for (``FastChoice``), or None; refused where there is none."""
        if not self.fast:
            return None
        if spec.fast is None:
            raise InvalidRequest(
                f"fast cannot be used with {spec.name}: it has no step-distilled LoRA; the models with one "
                "say so in the model list (fast).",
                field="fast",
            )
        return spec.fast

    def _resolve_guidance_2(self, spec: ModelSpec, fast: bool) -> float | None:
        if self.guidance_scale_2 is None:
            return 1.0 if fast and spec.experts is not None else None
        if spec.experts is None:
            raise InvalidRequest(
                f"guidance_scale_2={self.guidance_scale_2} cannot be used with {spec.name}: it has one "
                "denoiser; guidance_scale_2 is the low-noise expert's guidance of a two-expert model.",
                field="guidance_scale_2",
            )
        return float(_check_number("guidance_scale_2", self.guidance_scale_2, 1.0, spec))

    def _check_loras(self, spec: ModelSpec, loras: tuple[ResolvedLora, ...]) -> None:
        """LoRAs fit the family and the expert rule; the files themselves were checked by the caller."""
        if loras and not spec.accepts_loras:
            raise InvalidRequest(
                f"loras cannot be used with {spec.name}: LoRAs are supported for the Wan models.",
                field="loras",
            )
        for index, lora in enumerate(loras):
            if spec.experts is None and lora.expert != "both":
                raise InvalidRequest(
                    f"loras[{index}].expert={lora.expert!r}: {spec.name} has one denoiser; leave expert out "
                    "(or 'both').",
                    field=f"loras[{index}].expert",
                )

    def _check_gguf(self, spec: ModelSpec, weights: GgufWeights | None, has_loras: bool) -> None:
        """A GGUF transformer: for a Wan model (A14B: its high-noise expert) or LTX-Video, without LoRAs
        (they cannot merge into quantized weights), and the file the caller resolved from this very field."""
        if self.transformer_gguf and self.transformer_gguf.strip() and not spec.accepts_gguf:
            raise InvalidRequest(
                f"transformer_gguf cannot be used with {spec.name}: GGUF transformers are supported for the "
                "Wan and LTX-Video models.",
                field=FIELD,
            )
        _check_gguf_field(FIELD, self.transformer_gguf, weights, has_loras)

    def _check_gguf_2(self, spec: ModelSpec, weights: GgufWeights | None, has_loras: bool) -> None:
        """A GGUF low-noise expert: for a two-expert model (Wan 2.2 A14B) only."""
        if self.transformer_2_gguf and self.transformer_2_gguf.strip() and spec.experts is None:
            raise InvalidRequest(
                f"transformer_2_gguf cannot be used with {spec.name}: it has one transformer (use "
                "transformer_gguf); a low-noise expert file is for Wan 2.2 A14B.",
                field=FIELD_2,
            )
        _check_gguf_field(FIELD_2, self.transformer_2_gguf, weights, has_loras)

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
            height = int(_check_number("height", self.height, 0, spec))
            width = int(_check_number("width", self.width, 0, spec))
            if height * width > limits.max_pixels:
                raise InvalidRequest(
                    f"width x height = {width}x{height} = {height * width} pixels exceeds {spec.name}'s "
                    f"limit of {limits.max_pixels} pixels per frame.",
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
    """A complete, validated request: exactly what runs, what the job stores and the output's recipe holds."""

    prompt: str
    negative_prompt: str
    model: str
    resolution: str | None  # the preset the size came from (None: an explicit height and width)
    height: int
    width: int
    num_frames: int
    num_inference_steps: int
    guidance_scale: float
    fps: int  # the generator's frame rate (the UNet is conditioned on it)
    seed: int
    interpolate: int = 1  # frames and fps are multiplied by this after decode; 1 = no interpolation
    interpolator: str | None = None  # media.interpolation.Interpolator value when interpolate > 1
    decode_timestep: float | None = None  # LTX-Video's decode options; None: the model has none
    decode_noise_scale: float | None = None
    guidance_scale_2: float | None = (
        None  # two experts: the low-noise expert's guidance (None: guidance_scale)
    )
    fast: bool = False  # APPROXIMATE: the model's step-distilled LoRA and its settings (the recipe says so)
    flow_shift: float | None = None  # the scheduler shift when not the model's (the fast choice's)
    loras: tuple[ResolvedLora, ...] = ()  # reference, revision, sha256, strength, expert of each
    last_image: str | None = None  # the sha256 of the image the video ends on (stored with the job)
    # Two experts: which runs which steps and where the switch falls (for the recipe and the plan).
    experts: dict[str, Any] | None = None
    # APPROXIMATE: the transformer's weights from this GGUF file (reference, sha256, format, loaded bytes).
    transformer_gguf: GgufWeights | None = None
    # APPROXIMATE: a two-expert model's low-noise expert (transformer_2) from this GGUF file.
    transformer_2_gguf: GgufWeights | None = None

    def __post_init__(self) -> None:
        # Read back from JSON (a stored job): the LoRAs and the GGUF file as records again.
        loras = tuple(lora if isinstance(lora, ResolvedLora) else lora_from_dict(lora) for lora in self.loras)
        object.__setattr__(self, "loras", loras)
        for name in (FIELD, FIELD_2):
            if isinstance(getattr(self, name), dict):
                object.__setattr__(self, name, gguf_from_dict(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape a job row stores (tuples as lists), so a stored request equals a new one's."""
        shaped: dict[str, Any] = json.loads(json.dumps(asdict(self)))
        return shaped

    @property
    def lora_bytes(self) -> int:
        """The LoRA files together (the planner counts their weights)."""
        return sum(lora.size_bytes for lora in self.loras)

    @property
    def quantized_denoiser(self) -> GgufWeights | None:
        """The transformer's quantized file, whose own weight bytes the planner counts."""
        return self.transformer_gguf

    @property
    def quantized_denoiser_2(self) -> GgufWeights | None:
        """The low-noise expert's quantized file (two experts), whose own weight bytes the planner counts."""
        return self.transformer_2_gguf

    def notes(self) -> list[str]:
        """What a user should know before it runs, one line each: the experts, the fast choice, the LoRAs."""
        lines = []
        if self.experts is not None:
            switch = self.experts["switch_after_step"]
            guidance_2 = self.guidance_scale if self.guidance_scale_2 is None else self.guidance_scale_2
            lines.append(
                f"experts: transformer (high noise) for steps 1-{self.experts['high_noise_steps']}, "
                f"transformer_2 (low noise) for the other {self.experts['low_noise_steps']} (guidance "
                f"{guidance_2:g}); boundary_ratio {self.experts['boundary_ratio']:g}"
                + (f"; switch after step {switch}" if switch else "; no switch at this step count")
            )
        if self.fast:
            lines.append(
                "fast: APPROXIMATE, a step-distilled LoRA's video, not the base model's "
                f"({self.num_inference_steps} steps, guidance {self.guidance_scale:g}, "
                f"shift {self.flow_shift:g})"
            )
        for lora in self.loras:
            where = f"@{lora.revision[:12]}" if lora.revision else ""
            lines.append(
                f"lora: {lora.reference}{where} strength {lora.strength:g}, expert {lora.expert} "
                f"(sha256 {lora.sha256[:12]})"
            )
        for name, gguf in (
            ("transformer", self.transformer_gguf),
            ("transformer_2", self.transformer_2_gguf),
        ):
            if gguf is not None:
                where = f"@{gguf.revision[:12]}" if gguf.revision else ""
                gib = gguf.weight_bytes("bfloat16") / 2**30
                lines.append(
                    f"{name}: {gguf.label}, APPROXIMATE, from {gguf.reference}{where} "
                    f"({gib:.2f} GiB in 16-bit runs; sha256 {gguf.sha256[:12]})"
                )
        return lines

    @property
    def approximations(self) -> list[str]:
        """What makes this request's video not the base model's (labelled in the recipe)."""
        labels = ["fast: step-distilled LoRA, not the base model's output"] if self.fast else []
        for name in (FIELD, FIELD_2):
            gguf = getattr(self, name)
            if gguf is not None:
                labels.append(f"{name}: {gguf.label} weights from a GGUF file, not the model's 16-bit ones")
        return labels

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResolvedRequest:
        """The request a job stored (``to_dict``); ``InvalidRequest`` names what is missing or unknown."""
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if _has_no_default(f)}
        unknown, missing = sorted(set(data) - names), sorted(required - set(data))
        if unknown or missing:
            raise InvalidRequest(
                f"not a resolved request: unknown {unknown or 'none'}, missing {missing or 'none'}.",
                field=(unknown or missing)[0],
            )
        return cls(**data)

    @property
    def output_fps(self) -> int:
        return self.fps * self.interpolate

    @property
    def output_num_frames(self) -> int:
        return self.num_frames * self.interpolate

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self.guidance_scale > 1.0


def check_stored(data: dict[str, Any]) -> None:
    """A job row's request: resolved (``ResolvedRequest.to_dict``, every row since 0.2) or as given (an
    older row, resolved once by the worker); ``InvalidRequest`` names an unknown field (never stored and
    ignored)."""
    try:
        ResolvedRequest.from_dict(data)
    except InvalidRequest:
        GenerationRequest.from_dict(data)


def _expert_note(spec: ModelSpec, steps: int, flow_shift: float | None) -> dict[str, Any] | None:
    """Two experts: which network runs which steps, where the switch falls (None for one denoiser)."""
    if spec.experts is None:
        return None
    high = high_noise_steps(spec.experts, steps, flow_shift)
    return {
        "high_noise": "transformer",
        "low_noise": "transformer_2",
        "boundary_ratio": spec.experts.boundary_ratio,
        "high_noise_steps": high,
        "low_noise_steps": steps - high,
        "switch_after_step": high if 0 < high < steps else None,
    }


def _has_no_default(f: Field[Any]) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


# -- the declaration, read by the surfaces ------------------------------------------------------------------


@dataclass(frozen=True)
class DeclaredField:
    """One request field as the surfaces see it: its name, Python type (without None) and declaration."""

    name: str
    type: type
    info: RequestField
    default: Any


def request_fields() -> Iterator[DeclaredField]:
    """Every user-facing request field, in declaration order."""
    hints = typing.get_type_hints(GenerationRequest)
    for f in fields(GenerationRequest):
        info = f.metadata[_DECLARATION]
        yield DeclaredField(f.name, _without_none(hints[f.name]), info, f.default)


def declaration(name: str) -> RequestField:
    """The declaration of the field ``name`` (KeyError for a name that is not a request field)."""
    for declared_field in request_fields():
        if declared_field.name == name:
            return declared_field.info
    raise KeyError(name)


def _without_none(hint: Any) -> type:
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    result: type = args[0] if args else hint
    return result


def draw_seed(key: str | None = None) -> int:
    """The one place a seed is drawn: random, or derived from ``key`` (the same key, the same seed)."""
    if key is None:
        return secrets.randbelow(MAX_SEED + 1)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")


def variation_seeds(seed: int | None, count: int) -> list[int | None]:
    """The seeds of ``count`` variations: seed, seed + 1, ... (wrapping at MAX_SEED), or each drawn later
    (None) when no seed was given. The one rule for "variations", used by API and CLI batches."""
    if seed is None:
        return [None] * count
    return [(seed + i) % (MAX_SEED + 1) for i in range(count)]


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
        f"num_inference_steps: {limits.min_inference_steps} to {limits.max_inference_steps}"
        + (f" ({limits.steps_rule})" if limits.steps_rule else ""),
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


# -- the checks ---------------------------------------------------------------------------------------------


def _check_gguf_field(
    field: str, reference: str | None, weights: GgufWeights | None, has_loras: bool
) -> None:
    """What both GGUF fields share: no LoRAs beside a quantized file, and the caller resolved the file the
    field names (or none for no reference)."""
    if reference is None or not reference.strip():
        if weights is not None:
            raise InvalidRequest(f"{field}: a file was resolved for no reference.", field=field)
        return
    if has_loras:
        raise InvalidRequest(
            f"{field} cannot be combined with loras or fast (their LoRAs cannot be merged into quantized "
            "weights); leave one out.",
            field=field,
        )
    if weights is None:
        raise InvalidRequest(f"{field}={reference!r} was not resolved (engine/resolve.py).", field=field)


def _check_number(name: str, value: object, default: float, spec: ModelSpec) -> float:
    """``value`` (or ``default`` when None) checked against the declaration of ``name`` for ``spec``."""
    if value is None:
        return default
    info = declaration(name)
    whole = info.kind == "int"
    if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
        kind = "a whole number" if whole else "a number"
        raise InvalidRequest(f"{name}={value!r} must be {kind}.", field=name)
    assert info.bounds is not None, f"{name} is declared without bounds"
    low, high = info.bounds(spec.limits)
    if not math.isfinite(value) or not low <= value <= high:
        rule = info.bounds_rule(spec.limits) if info.bounds_rule is not None else ""
        if rule and value < low:  # a model's own, higher low bound: say why, and what works
            raise InvalidRequest(
                f"{name}={value} is out of range for {spec.name} ({rule}); allowed: {_plain(low)} to "
                f"{_plain(high)}; try {_plain(low)}.",
                field=name,
            )
        raise InvalidRequest(
            f"{name}={value} is out of range; allowed: {_plain(low)} to {_plain(high)}.", field=name
        )
    multiple = info.multiple_of(spec.limits) if info.multiple_of is not None else 1
    if whole and int(value) % multiple:
        raise InvalidRequest(
            f"{name}={value} is not a multiple of {multiple} for {spec.name} ({spec.limits.size_rule}); try "
            f"{_nearest_multiple(int(value), multiple)}.",
            field=name,
        )
    return value


def _check_decode_option(name: str, value: object, spec: ModelSpec) -> float | None:
    """LTX-Video's decode options: the model's default where it has them (a number in ``spec.defaults``);
    refused by name for a model without them (default None), rather than ignored."""
    default: float | None = getattr(spec.defaults, name)
    if default is None:
        if value is not None:
            raise InvalidRequest(
                f"{name}={value} is not an option of {spec.name}: only LTX-Video decodes at a timestep; "
                "leave it out.",
                field=name,
            )
        return None
    return float(_check_number(name, value, default, spec))


def _plain(number: float) -> str:
    """8 as "8" and 7.5 as "7.5" (``:g`` would write a 32-bit seed bound as 4.29497e+09)."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _check_frame_rule(num_frames: float, spec: ModelSpec) -> None:
    """A causal video VAE takes frame_step x k + 1 frames; name the nearest count that works."""
    step = spec.limits.frame_step
    count = int(num_frames)
    if step == 1 or (count - 1) % step == 0:
        return
    low = (count - 1) // step * step + 1
    candidates = [n for n in (low, low + step) if spec.limits.min_frames <= n <= spec.limits.max_frames]
    nearest = min(candidates, key=lambda n: (abs(n - count), n))
    raise InvalidRequest(
        f"num_frames={count} is not {step}k+1 for {spec.name}; try {nearest} (its VAE packs {step} "
        "frames into each latent frame after the first).",
        field="num_frames",
    )


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


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ceil_multiple(value: int, step: int) -> int:
    return -(-value // step) * step


def _nearest_multiple(value: int, step: int) -> int:
    return max(step, int(round(value / step)) * step)
