"""Engine.generate: one image and a prompt in, one video file out, within the device's memory budget.

Read ``generate`` top to bottom: it is the whole product in numbered steps. The model math lives behind one
interface, models/family.py (one adapter per family: I2VGen-XL, Wan, SVD, LTX-Video), memory decisions in
memory/, file formats in media/.
"""

from __future__ import annotations

import copy
import functools
import gc
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import stillmotion
from stillmotion import faults as fault_switches
from stillmotion.config import Settings
from stillmotion.engine import checkpoint
from stillmotion.engine.cache import EmbeddingCache
from stillmotion.engine.checkpoint import Checkpoint, CheckpointCallback
from stillmotion.engine.interpolate import Interpolators
from stillmotion.engine.progress import CancelToken, ProgressCallback, ProgressEvent, Stage
from stillmotion.engine.request import GenerationRequest, ResolvedRequest
from stillmotion.engine.result import GenerationResult, PlanReport
from stillmotion.errors import InvalidRequest, OutOfMemory
from stillmotion.media.checks import check_frames, to_uint8
from stillmotion.media.image_input import InputImage
from stillmotion.media.interpolation import Interpolator, output_fps_problem
from stillmotion.media.video_output import format_for_path, write_video
from stillmotion.memory.apply import apply_plan, needs_reload, release_encoders, reset_placement
from stillmotion.memory.device import DeviceBudget, configure_allocator
from stillmotion.memory.interpolation import InterpolationPlan, plan_interpolation
from stillmotion.memory.plan import MemoryPlan, plan_memory
from stillmotion.memory.recovery import next_plan
from stillmotion.models.adapters import family_of
from stillmotion.models.family import Components, ModelFamily
from stillmotion.models.loader import load_components
from stillmotion.models.registry import ModelSpec
from stillmotion.models.repo_spec import find_spec
from stillmotion.models.rife_loader import RifeWeights
from stillmotion.speed.compile import apply_speed, mark_step_begin, undo_speed
from stillmotion.speed.options import SpeedOptions, choose_speed

logger = logging.getLogger(__name__)

MAX_OOM_RECOVERIES = 8  # more than the ladder has rungs: the ladder, not this, normally ends the retries


def select_device(name: str) -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU; anything else must be usable as named."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InvalidRequest(
            f"device={name!r} is not a device name (auto, cuda, cuda:N, mps, cpu).", field="device"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidRequest(f"device={name!r}: CUDA is not available on this machine.", field="device")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidRequest(f"device={name!r}: Apple MPS is not available on this machine.", field="device")
    if device.type not in ("cuda", "mps", "cpu"):
        raise InvalidRequest(f"device={name!r} is not supported; use auto, cuda, mps or cpu.", field="device")
    return device


@dataclass
class DenoiseState:
    """The latest finished denoising step, kept so an OOM retry resumes instead of restarting, and handed
    out through ``on_checkpoint`` so a restarted job does too (engine/checkpoint.py).

    ``scheduler`` is a snapshot taken with ``latents`` after the same step: multistep solvers (Wan's UniPC)
    keep past model outputs and every scheduler keeps its step index, so the pair resumes exactly. A state
    read back from a checkpoint file has ``saved_scheduler`` instead, applied to a fresh scheduler.
    """

    latents: torch.Tensor | None = None
    scheduler: Any = None
    steps_done: int = 0
    phase: str = "plan"  # the phase running now, named in an OOM report
    saved_scheduler: dict[str, Any] | None = None
    checkpoint_id: str = ""  # checkpoint.fingerprint of this generation
    on_checkpoint: CheckpointCallback | None = None


def _checkpoint_of(state: DenoiseState, scheduler: Any) -> Checkpoint:
    """The checkpoint of the step ``state`` holds now (a copy to the host: made only when it will be kept)."""
    assert state.latents is not None
    return Checkpoint(
        fingerprint=state.checkpoint_id,
        steps_done=state.steps_done,
        latents=state.latents.detach().cpu(),
        scheduler_state=checkpoint.scheduler_state(scheduler),
    )


def snapshot_scheduler(scheduler: Any) -> Any:
    """A copy of ``scheduler`` that later steps cannot change.

    Hand-written because diffusers has no scheduler state API. A shallow copy suffices: schedulers replace
    their tensors rather than write into them, and keep step history in lists (UniPC's ``model_outputs``),
    which are copied here.
    """
    copied = copy.copy(scheduler)
    for name, value in vars(scheduler).items():
        if isinstance(value, list):
            setattr(copied, name, list(value))
    return copied


class _Clock:
    """Sends progress events and computes the ETA from the measured step times."""

    def __init__(self, on_progress: ProgressCallback | None, total_steps: int) -> None:
        self.on_progress = on_progress
        self.total_steps = total_steps
        self.start = time.perf_counter()
        self.step_times: list[float] = []
        self.gpu_step_times: list[float] = []  # CUDA-event times, read once the loop is over

    def stage(self, stage: Stage, step: int = 0, message: str = "") -> None:
        eta = None if stage is Stage.DONE else self._eta(step)  # nothing is left once it is done
        self._emit(ProgressEvent(stage, step, self.total_steps, self.elapsed, eta, message))

    def step_done(self, step: int, duration_s: float) -> None:
        self.step_times.append(duration_s)
        self._emit(ProgressEvent(Stage.DENOISE, step, self.total_steps, self.elapsed, self._eta(step)))

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def per_step_s(self) -> float | None:
        # Skip the first step when there are others: it carries lazy initialisation. On CUDA the host's
        # clock only sees kernel launches, so the GPU's own event times are preferred once available.
        measured = self.gpu_step_times or self.step_times
        times = measured[1:] or measured
        return sum(times) / len(times) if times else None

    def _eta(self, steps_done: int) -> float | None:
        per_step = self.per_step_s
        if per_step is None:
            return None
        return per_step * (self.total_steps - steps_done + 1)  # +1: the decode costs about one step

    def _emit(self, event: ProgressEvent) -> None:
        if self.on_progress is not None:
            self.on_progress(event)


class _GpuStepTimer:
    """CUDA events at step boundaries, read after the loop: true GPU step times with no sync per step."""

    def __init__(self, device: torch.device) -> None:
        self._events: list[Any] = []
        if device.type == "cuda":
            self._events.append(torch.cuda.Event(enable_timing=True))  # type: ignore[no-untyped-call]
            self._events[0].record()

    def step_done(self) -> None:
        if self._events:
            event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            event.record()
            self._events.append(event)

    def durations_s(self) -> list[float]:
        if len(self._events) < 2:
            return []
        self._events[-1].synchronize()  # once, after the last step
        return [a.elapsed_time(b) / 1000 for a, b in zip(self._events, self._events[1:], strict=False)]


@dataclass
class Rendered:
    """Decoded frames and how they were made (steps 1-5 of a generation)."""

    frames: torch.Tensor
    spec: ModelSpec
    request: ResolvedRequest
    family: ModelFamily[Any, Any]
    plan: MemoryPlan
    downgrades: list[dict[str, Any]]
    warnings: list[str]
    timings: dict[str, float]
    clock: _Clock
    cancel: CancelToken
    faults: fault_switches.FaultRun
    interpolation: InterpolationPlan | None = None  # the opt-in post-step's plan (step 2), run in generate()


class Engine:
    """Turns one GenerationRequest into one video, within the device's memory budget.

    Weights stay loaded between generations (one model at a time); ``unload()`` frees them.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        configure_allocator()  # before CUDA starts: expandable segments keep reserved close to allocated
        self.device = select_device(settings.device)
        self.cache = EmbeddingCache(settings.embedding_cache_size)
        self._loaded: tuple[str, torch.dtype, Components] | None = None
        self._family: ModelFamily[Any, Any] | None = None  # the loaded model's adapter
        self._placed: MemoryPlan | None = None
        self._speed: tuple[MemoryPlan, SpeedOptions, dict[str, Any]] | None = None
        self.interpolators = Interpolators(
            RifeWeights(settings.rife_repo_id, settings.rife_revision),
            cache_dir=settings.models_dir,
            offline=settings.offline,
        )

    # -- public API ------------------------------------------------------------------------------------

    def plan(
        self,
        request: GenerationRequest,
        image_size: tuple[int, int] | None = None,
        strategy: str | None = None,
        budget: DeviceBudget | None = None,
    ) -> PlanReport:
        """The plan ``generate`` would use now (or on ``budget``, e.g. another card); loads no weights.

        The prompt may be empty: memory does not depend on it.
        """
        spec = self._spec(request)
        resolved = request.resolve(spec, image_size, need_prompt=False)
        budget = budget or self._measure_budget()
        plan = plan_memory(
            spec, resolved, budget, allow_approximate=self.settings.allow_approximate, strategy=strategy
        )
        interpolation = _plan_interpolation(resolved, budget)
        return PlanReport(request=resolved, budget=budget, plan=plan, interpolation=interpolation)

    def generate(
        self,
        request: GenerationRequest,
        image: InputImage,
        output_path: Path,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        strategy: str | None = None,
        *,
        resume: Checkpoint | None = None,
        on_checkpoint: CheckpointCallback | None = None,
    ) -> GenerationResult:
        """Generate one video from ``image`` and ``request`` and write it atomically to ``output_path``.

        ``resume``: a checkpoint of this same request (engine/checkpoint.py) to continue from instead of
        step 1; ``on_checkpoint`` is offered one after every step (the caller decides what to keep)."""
        fmt = format_for_path(output_path)  # an unsupported output format fails before any work

        # 1-5. Validate, plan, load, encode, denoise and decode (with OOM recovery): see render().
        rendered = self.render(
            request,
            image,
            on_progress,
            cancel,
            strategy,
            output_format=fmt,
            resume=resume,
            on_checkpoint=on_checkpoint,
        )
        req, clock = rendered.request, rendered.clock

        # 6. Check the frames: NaN fails the job; black or frozen output is flagged.
        rendered.cancel.raise_if_cancelled()
        frames = rendered.frames.numpy()
        warnings = [*rendered.warnings, *check_frames(frames).warnings]
        metadata = self._recipe(rendered.spec, req, image, rendered.plan, rendered.downgrades, warnings)
        video_frames = to_uint8(frames)

        # 7. Interpolate (opt-in): N x k frames at k x fps, recorded in the recipe (engine/interpolate.py).
        if rendered.interpolation is not None:
            video_frames, metadata["interpolation"] = self._interpolate(rendered, video_frames)
            rendered.timings["interpolate_s"] = metadata["interpolation"]["time_s"]

        # 8. Write the video atomically, with its recipe in the file and in a JSON sidecar.
        clock.stage(Stage.WRITE, req.num_inference_steps, f"writing {output_path.name}")
        started = time.perf_counter()
        with rendered.faults.phase("write"):
            video = write_video(video_frames, output_path, fps=req.output_fps, metadata=metadata)
        timings = {**rendered.timings, "write_s": time.perf_counter() - started, "total_s": clock.elapsed}
        clock.stage(Stage.DONE, req.num_inference_steps, "done")
        return GenerationResult(
            video_path=video.path,
            sidecar_path=video.sidecar_path,
            sha256=video.sha256,
            request=req,
            plan=rendered.plan,
            downgrades=tuple(rendered.downgrades),
            warnings=tuple(warnings),
            timings={k: round(v, 4) for k, v in timings.items()},
            metadata=metadata,
        )

    def render(
        self,
        request: GenerationRequest,
        image: InputImage,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        strategy: str | None = None,
        *,
        output_format: str | None = None,
        resume: Checkpoint | None = None,
        on_checkpoint: CheckpointCallback | None = None,
    ) -> Rendered:
        """Steps 1-5 of a generation: the decoded frames as float32 (frames, height, width, 3) in [0, 1].

        ``output_format`` (mp4, gif, webp), when given, is checked against the output fps up front."""
        cancel = cancel or CancelToken()
        faults = fault_switches.active().for_run()  # test-only switches (faults.py); usually none

        # 1. Validate against the model's limits (one clear error per broken rule; nothing runs before).
        spec = self._spec(request)
        resolved = request.resolve(spec, (image.width, image.height))
        family = family_of(spec)
        problem = output_format and output_fps_problem(output_format, resolved.output_fps)
        if problem:
            raise InvalidRequest(f"fps={resolved.output_fps}: {problem}.", field="output")
        clock = _Clock(on_progress, resolved.num_inference_steps)
        clock.stage(Stage.PLAN, 0, "planning memory")

        # 2. Plan memory from what the device has free right now; refuses up front if nothing fits.
        budget = self._measure_budget()
        plan = plan_memory(
            spec, resolved, budget, allow_approximate=self.settings.allow_approximate, strategy=strategy
        )
        logger.info("plan %s: %s", plan.rung, plan.reason)
        # Opt-in interpolation is a phase too: planned now, refused up front; missing RIFE weights fail here.
        interpolation = _plan_interpolation(resolved, budget)
        if interpolation is not None:
            self.interpolators.prepare(interpolation)

        # 3-5. Load, encode, denoise, decode; on out-of-memory step down one rung and resume. A checkpoint of
        # this same request (saved before a restart) resumes after its last step, as an OOM retry does.
        checkpoint_id = checkpoint.fingerprint(resolved.to_dict(), plan.dtype)
        state = DenoiseState(checkpoint_id=checkpoint_id, on_checkpoint=on_checkpoint)
        downgrades: list[dict[str, Any]] = []
        timings: dict[str, float] = {}
        warnings: list[str] = []
        if resume is not None:
            if resume.fingerprint == checkpoint_id and 0 < resume.steps_done < resolved.num_inference_steps:
                state.latents, state.steps_done = resume.latents, resume.steps_done
                state.saved_scheduler = resume.scheduler_state
                warnings.append(f"resumed after denoising step {resume.steps_done}, saved before a restart")
                logger.info("resuming from the checkpoint after step %d", resume.steps_done)
            else:
                logger.warning("not resuming: the checkpoint belongs to another request or step count")
        frames: torch.Tensor | None = None
        while frames is None:
            failure: dict[str, Any] | None = None
            try:
                frames = self._attempt(
                    spec, family, resolved, image, plan, state, clock, cancel, faults, timings, warnings
                )
            except torch.OutOfMemoryError as exc:
                failure = {"phase": state.phase, "error": str(exc).splitlines()[0]}
            if failure is not None:
                # Outside the except block: the exception's traceback no longer pins the failed tensors.
                plan = self._recover(spec, resolved, plan, budget, state, failure, downgrades)
        self._free_transients()
        return Rendered(
            frames=frames,
            spec=spec,
            request=resolved,
            family=family,
            plan=plan,
            downgrades=downgrades,
            warnings=warnings,
            timings=timings,
            clock=clock,
            cancel=cancel,
            faults=faults,
            interpolation=interpolation,
        )

    def unload(self) -> None:
        """Free every loaded model and cached embedding; memory goes back to the process baseline."""
        if self._loaded is not None:
            self._reset(self._loaded[2])
        self._loaded = None
        self._family = None
        self.cache.clear()
        self._free_transients()

    # -- the steps -------------------------------------------------------------------------------------

    def _attempt(
        self,
        spec: ModelSpec,
        family: ModelFamily[Any, Any],
        req: ResolvedRequest,
        image: InputImage,
        plan: MemoryPlan,
        state: DenoiseState,
        clock: _Clock,
        cancel: CancelToken,
        faults: fault_switches.FaultRun,
        timings: dict[str, float],
        warnings: list[str],
    ) -> torch.Tensor:
        """One try at steps 3-5 under ``plan``; resumes the denoising loop from ``state``."""
        dtype = getattr(torch, plan.dtype)

        # 3. Load (or reuse) the components and place them as the plan says (one model resident at a time).
        state.phase = "load"
        clock.stage(Stage.LOAD, state.steps_done, f"loading {spec.name}")
        started = time.perf_counter()
        if self._loaded is not None and self._family is not None:
            if needs_reload(self._loaded[2].modules(), plan, self._family.roles):
                self.unload()  # fp8 storage cannot be undone in place: an exact plan needs fresh weights
        with faults.phase("load"):
            components = self._components(spec, family, dtype)
        if self._placed != plan:  # placed once per plan: offload hooks bring released models back themselves
            self._reset(components)
            apply_plan(components.modules(), plan, self.device, family.roles)
            self._placed = plan
        self._apply_speed(family, components, plan)
        timings["load_s"] = timings.get("load_s", 0.0) + time.perf_counter() - started

        # 4a. Encode prompt and image (embeddings cached), then release the encoders if the plan says so.
        #     Every attempt draws from a generator seeded the same way, so a retry gets the same conditioning.
        state.phase = "encode"
        cancel.raise_if_cancelled()
        clock.stage(Stage.ENCODE, state.steps_done, "encoding prompt and image")
        started = time.perf_counter()
        generator = torch.Generator(device="cpu").manual_seed(req.seed)
        with faults.phase("encode"):
            cond = self._conditioning(spec, family, components, req, image, dtype, generator, warnings)
        release_encoders(components.modules(), plan, family.roles)
        timings["encode_s"] = timings.get("encode_s", 0.0) + time.perf_counter() - started

        # 4b. Denoise, one progress event and one cancel check per step, from the last finished step.
        state.phase = "denoise"
        started = time.perf_counter()
        latents = self._denoise(
            family, components, req, plan, cond, state, generator, clock, cancel, faults, dtype
        )
        timings["denoise_s"] = timings.get("denoise_s", 0.0) + time.perf_counter() - started
        if clock.per_step_s is not None:
            timings["per_step_s"] = clock.per_step_s

        # 5. Decode the latents (``decode_chunk_size`` frames at a time where the family's VAE allows it).
        state.phase = "decode"
        cancel.raise_if_cancelled()
        clock.stage(Stage.DECODE, req.num_inference_steps, "decoding frames")
        started = time.perf_counter()
        with faults.phase("decode"):
            frames = family.decode(components, latents, cond, req, plan.decode_chunk_size, plan.vae_tiling)
        timings["decode_s"] = time.perf_counter() - started
        return frames[: req.num_frames]

    def _denoise(
        self,
        family: ModelFamily[Any, Any],
        components: Components,
        req: ResolvedRequest,
        plan: MemoryPlan,
        cond: Any,
        state: DenoiseState,
        generator: torch.Generator,
        clock: _Clock,
        cancel: CancelToken,
        faults: fault_switches.FaultRun,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        if state.latents is None:
            # A fresh scheduler per generation (schedulers keep per-run state); the noise is drawn after the
            # encoders' draws, from the same generator, as the family's pipeline does.
            scheduler = family.new_scheduler(components, req, self.device)
            state.latents = family.initial_latents(
                components, req, cond, scheduler, generator, self.device, dtype
            )
            state.scheduler = snapshot_scheduler(scheduler)
        elif state.scheduler is None:
            # Read back from a checkpoint file: a fresh scheduler for this request, with its per-run state.
            scheduler = family.new_scheduler(components, req, self.device)
            checkpoint.restore_scheduler(scheduler, state.saved_scheduler or {})
            state.scheduler = snapshot_scheduler(scheduler)
        scheduler = snapshot_scheduler(state.scheduler)  # the stored snapshot stays as it was, for a retry
        latents = state.latents.to(device=self.device)
        gpu_timer = _GpuStepTimer(self.device)
        for index in range(state.steps_done, len(scheduler.timesteps)):
            cancel.raise_if_cancelled()
            faults.step(index + 1)
            started = time.perf_counter()
            timestep = scheduler.timesteps[index]
            if self._speed is not None:
                mark_step_begin(self._speed[2])
            noise_pred = family.predict_noise(
                components, scheduler, latents, timestep, cond, req, plan.split_guidance
            )
            latents = family.scheduler_step(scheduler, noise_pred, timestep, latents, cond)
            state.latents, state.steps_done = latents, index + 1
            state.scheduler = snapshot_scheduler(scheduler)
            gpu_timer.step_done()
            clock.step_done(index + 1, time.perf_counter() - started)
            if state.on_checkpoint is not None:
                state.on_checkpoint(index + 1, functools.partial(_checkpoint_of, state, scheduler))
        clock.gpu_step_times.extend(gpu_timer.durations_s())
        return latents

    def _conditioning(
        self,
        spec: ModelSpec,
        family: ModelFamily[Any, Any],
        components: Components,
        req: ResolvedRequest,
        image: InputImage,
        dtype: torch.dtype,
        generator: torch.Generator,
        warnings: list[str],
    ) -> Any:
        """The family's conditioning, with text and image embeddings through the embedding cache."""
        device = self.device
        base = (spec.name, str(dtype), device.type)
        hits: list[bool] = []

        def cached(key: tuple[Any, ...], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
            # Image embeddings are keyed by the image's content, never by its (reused) PIL object.
            if key[:1] == ("image",):
                key = (*key, image.sha256)
            value, hit = self.cache.get_or_compute((*base, *key), compute, device)
            hits.append(hit)
            return value

        for warning in cut_prompts(spec, family, components, req):
            if warning not in warnings:  # once per generation, however many tries OOM recovery makes
                logger.warning("%s", warning)
                warnings.append(warning)
        cond = family.encode(components, req, image.image, device, dtype, generator, cached)
        if hits and all(hits):
            warnings.append("embedding cache hit: text and image encoders skipped")
        return cond

    def _recover(
        self,
        spec: ModelSpec,
        req: ResolvedRequest,
        failed: MemoryPlan,
        budget: DeviceBudget,
        state: DenoiseState,
        failure: dict[str, Any],
        downgrades: list[dict[str, Any]],
    ) -> MemoryPlan:
        """Free the failed attempt's memory and return the next cheaper plan (or raise OutOfMemory)."""
        if self._loaded is not None:
            self._reset(self._loaded[2])
        if state.latents is not None:
            state.latents = state.latents.to("cpu")  # small; keeps the finished steps through the reset
        self._free_transients()
        cheaper = next_plan(spec, req, failed, budget, allow_approximate=self.settings.allow_approximate)
        if cheaper is None or len(downgrades) >= MAX_OOM_RECOVERIES:
            raise OutOfMemory(
                f"out of memory in {failure['phase']} with plan {failed.rung!r} and no cheaper plan is left. "
                f"Try a smaller size or fewer frames (now {req.width}x{req.height}, {req.num_frames} "
                "frames), "
                "or free GPU memory used by other programs.",
                details={"downgrades": downgrades, "failure": failure},
            )
        if cheaper.dtype != failed.dtype:
            self._loaded = None  # reload in the new dtype
        downgrade = {
            "from": failed.rung,
            "to": cheaper.rung,
            "phase": failure["phase"],
            "resumed_at_step": state.steps_done,
            "error": failure["error"],
        }
        downgrades.append(downgrade)
        logger.warning(
            "out of memory in %s with plan %s; retrying with %s from step %d",
            failure["phase"],
            failed.rung,
            cheaper.rung,
            state.steps_done,
        )
        return cheaper

    def _interpolate(self, rendered: Rendered, frames: Any) -> tuple[Any, dict[str, Any]]:
        """Step 7: the generator leaves the device first when the interpolator runs there (so planned)."""
        plan, req, clock = rendered.interpolation, rendered.request, rendered.clock
        assert plan is not None
        what = f"interpolating {plan.factor}x with {plan.interpolator.value}"
        clock.stage(Stage.INTERPOLATE, req.num_inference_steps, what)
        if plan.device_type == self.device.type != "cpu" and self._loaded is not None:
            self._reset(self._loaded[2])
            self._free_transients()

        def on_frame(done: int, total: int) -> None:
            clock.stage(Stage.INTERPOLATE, req.num_inference_steps, f"{what}: {done}/{total}")

        return self.interpolators.run(frames, req.fps, plan, self.device, rendered.cancel, on_frame)

    # -- helpers ---------------------------------------------------------------------------------------

    def _components(self, spec: ModelSpec, family: ModelFamily[Any, Any], dtype: torch.dtype) -> Components:
        if self._loaded is not None and self._loaded[:2] == (spec.name, dtype):
            return self._loaded[2]
        if self._loaded is not None:  # one model at a time: free before loading another (any family)
            self.unload()
        components = load_components(
            spec, dtype, cache_dir=self.settings.models_dir, offline=self.settings.offline
        )
        self._loaded = (spec.name, dtype, components)
        self._family = family
        return components

    def _apply_speed(self, family: ModelFamily[Any, Any], components: Components, plan: MemoryPlan) -> None:
        """Exact speed-ups that suit this plan and device (speed/options.py decides; off on the CPU)."""
        options = choose_speed(plan, self.device.type, allow_compile=self.settings.compile_unet)
        if self._speed is not None and self._speed[:2] == (plan, options):
            return  # keep the compiled code
        denoiser = family.roles.denoiser
        undo_speed(components.modules(), denoiser=denoiser)
        applied = apply_speed(
            components.modules(),
            options,
            self.device,
            self.settings.data_dir / "compile-cache",
            blocks=family.compile_blocks,
            denoiser=denoiser,
        )
        self._speed = (plan, options, applied)

    def _reset(self, components: Components) -> None:
        """Undo speed-ups and placement so another plan can be applied; memory back to the weights alone."""
        if self._family is not None:
            undo_speed(components.modules(), denoiser=self._family.roles.denoiser)
        self._speed = None
        reset_placement(components.modules())
        self._placed = None

    def _spec(self, request: GenerationRequest) -> ModelSpec:
        """The request's model (the default when it names none); an unregistered repo id's family is read
        from the repo itself, so it is planned and run as what it is."""
        return find_spec(
            request.model or self.settings.default_model,
            cache_dir=self.settings.models_dir,
            offline=self.settings.offline,
        )

    def _measure_budget(self) -> DeviceBudget:
        return DeviceBudget.measure(
            self.device,
            vram_budget_gb=self.settings.vram_budget_gb,
            reserve_vram_gb=self.settings.reserve_vram_gb,
        )

    def _free_transients(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _recipe(
        self,
        spec: ModelSpec,
        req: ResolvedRequest,
        image: InputImage,
        plan: MemoryPlan,
        downgrades: list[dict[str, Any]],
        warnings: list[str],
    ) -> dict[str, Any]:
        """Everything needed to make this video again, stored in the file and its sidecar."""
        import diffusers
        import transformers

        return {
            "generator": f"stillmotion {stillmotion.__version__}",
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **req.to_dict(),
            "model_source": spec.source,
            "model_revision": spec.revision,
            "input_image_sha256": image.sha256,
            "input_image_size": [image.width, image.height],
            "input_notes": list(image.notes),
            "runtime": {
                "device": str(self.device),
                "device_name": _device_name(self.device),
                "plan": plan.to_dict(),
                "downgrades": downgrades,
                "approximate": plan.approximate,
                "speed": self._speed[2] if self._speed is not None else None,
            },
            "warnings": list(warnings),
            "versions": {
                "stillmotion": stillmotion.__version__,
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
                "transformers": transformers.__version__,
                "python": platform.python_version(),
            },
        }


def _plan_interpolation(req: ResolvedRequest, budget: DeviceBudget) -> InterpolationPlan | None:
    if req.interpolate == 1 or req.interpolator is None:
        return None
    return plan_interpolation(
        Interpolator(req.interpolator), req.interpolate, req.height, req.width, req.num_frames, budget
    )


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    return platform.processor() or platform.machine()


def cut_prompts(
    spec: ModelSpec, family: ModelFamily[Any, Any], components: Components, req: ResolvedRequest
) -> list[str]:
    """A warning for each prompt the user wrote that the text encoder cuts short, naming which one.

    The model's own default negative prompt is not the user's (and the reference pipelines cut it the same
    way), so it never warns.
    """
    limit = family.text_token_limit
    if limit is None:
        return []
    written = [("prompt", req.prompt)]
    if req.do_classifier_free_guidance and req.negative_prompt != spec.defaults.negative_prompt:
        written.append(("negative_prompt", req.negative_prompt))
    warnings = []
    for name, text in written:
        tokens = family.prompt_tokens(components, text)
        if tokens > limit:
            warnings.append(
                f"{name} is {tokens} tokens long and {spec.name} reads only the first {limit}: "
                "the rest of it is ignored; shorten it to keep all of it."
            )
    return warnings
