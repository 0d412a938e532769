"""Engine.generate: one image and a resolved request in, one video file out, within the memory budget.

Read ``generate`` top to bottom: it is the whole product in numbered steps, as a diffusers pipeline's
``__call__`` reads, with the out-of-memory recovery loop in plain sight. Each step is a short method below it
that takes the generation's ``RunState`` (engine/run_state.py: clock, cancel, timings, warnings, the latest
step for resume). The caller resolves the request first (engine/resolve.py) and listens through hooks
(engine/hooks.py: phases, steps, progress, checkpoints, the decoded frames). The model math lives behind one
interface, models/family.py (one adapter per family: I2VGen-XL, Wan, SVD, LTX-Video), memory decisions in
memory/, file formats in media/.
"""

from __future__ import annotations

import gc
import logging
import platform
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import stillmotion
from stillmotion.config import Settings
from stillmotion.engine import checkpoint
from stillmotion.engine.cache import EmbeddingCache
from stillmotion.engine.checkpoint import Checkpoint
from stillmotion.engine.hooks import EngineHooks
from stillmotion.engine.interpolate import Interpolators
from stillmotion.engine.progress import CancelToken, Stage
from stillmotion.engine.request import ResolvedRequest
from stillmotion.engine.resolve import model_spec
from stillmotion.engine.result import GenerationResult, PlanReport
from stillmotion.engine.run_state import GpuStepTimer, RunState, snapshot_scheduler
from stillmotion.errors import InvalidRequest, OutOfMemory
from stillmotion.media.checks import check_frames, to_uint8
from stillmotion.media.image_input import InputImage
from stillmotion.media.interpolation import Interpolator, output_fps_problem
from stillmotion.media.video_output import format_for_path, write_video
from stillmotion.memory.apply import (
    apply_plan,
    held_host_bytes,
    needs_reload,
    release_encoders,
    reset_placement,
    torch_dtype,
)
from stillmotion.memory.device import DeviceBudget, configure_allocator, measure_budget
from stillmotion.memory.host import HOST_RUNTIME_GIB
from stillmotion.memory.interpolation import InterpolationPlan, plan_interpolation
from stillmotion.memory.plan import MemoryPlan, plan_memory
from stillmotion.memory.recovery import next_plan
from stillmotion.memory.types import GIB
from stillmotion.models.adapters import family_of
from stillmotion.models.family import Components, ModelFamily
from stillmotion.models.loader import load_components
from stillmotion.models.lora import LoraState
from stillmotion.models.registry import ModelSpec
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


class Engine:
    """Turns one resolved request into one video, within the device's memory budget.

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
        self._loras = LoraState()  # the LoRAs the loaded model carries (kept while jobs use the same set)
        self.interpolators = Interpolators(
            RifeWeights(settings.rife_repo_id, settings.rife_revision),
            cache_dir=settings.models_dir,
            offline=settings.offline,
        )

    # -- public API ------------------------------------------------------------------------------------

    def plan(
        self, request: ResolvedRequest, strategy: str | None = None, budget: DeviceBudget | None = None
    ) -> PlanReport:
        """The plan ``generate`` would use now (or on ``budget``, e.g. another card); loads no weights."""
        spec = self._spec(request.model)
        budget = budget or self.budget()
        plan = plan_memory(
            spec, request, budget, allow_approximate=self.settings.allow_approximate, strategy=strategy
        )
        interpolation = _plan_interpolation(request, budget)
        return PlanReport(request=request, budget=budget, plan=plan, interpolation=interpolation)

    def budget(self) -> DeviceBudget:
        """What the device and the host give a job now. What this process already holds counts as
        available: its loaded weights (the next job reuses them, or they are unloaded for another model) and,
        once CUDA is up here, the runtime the host estimate includes (memory/host.py)."""
        budget = measure_budget(self.device, self.settings)
        if budget.host_free_bytes <= 0 or self.settings.host_budget_gb is not None:
            return budget  # unknown (not checked), or the deployment's own figure
        held = 0 if self._loaded is None else held_host_bytes(self._loaded[2].modules().values())
        if self.device.type == "cuda" and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            held += int(HOST_RUNTIME_GIB * GIB)
        return budget.with_host(budget.host_free_bytes + held)

    def generate(
        self,
        request: ResolvedRequest,
        image: InputImage,
        output_path: Path,
        hooks: Sequence[EngineHooks] = (),
        *,
        cancel: CancelToken | None = None,
        strategy: str | None = None,
        resume: Checkpoint | None = None,
        last_image: InputImage | None = None,
    ) -> GenerationResult:
        """Generate one video from ``image`` and ``request`` and write it atomically to ``output_path``.

        ``request`` was resolved by the caller (engine/resolve.py); ``hooks`` hear every phase and step
        (engine/hooks.py); ``cancel`` stops it before the next step; ``strategy`` forces a plan rung;
        ``resume`` is a checkpoint of this same request (engine/checkpoint.py) to continue from;
        ``last_image`` is the frame to end on, the one whose sha256 the request holds.
        """
        _check_last_image(request, last_image)
        # 1. Plan. First what only the engine can check (the output format takes this fps, the model is
        #    here), then memory from what the device has free right now: refused up front if nothing fits.
        check_output(output_path, request)
        spec = self._spec(request.model)
        run = RunState.start(request, spec, family_of(spec), hooks, cancel)
        with run.in_phase(Stage.PLAN, "planning memory", timed=False):
            budget = self.budget()
            plan = plan_memory(
                spec, request, budget, allow_approximate=self.settings.allow_approximate, strategy=strategy
            )
            logger.info("plan %s: %s", plan.rung, plan.reason)
            interpolation = self._prepare_interpolation(request, budget)  # missing RIFE weights fail here
            run.resume_from(resume, checkpoint.fingerprint(request.to_dict(), plan.dtype))

        # 2-5. Load and place, encode, denoise, decode. On out-of-memory: free the memory, step down one rung
        #      of the plan and try again, resuming after the last finished denoising step.
        frames: torch.Tensor | None = None
        while frames is None:
            failure: dict[str, Any] | None = None
            try:
                components = self._load_and_place(run, plan)  # 2. one model resident at a time
                cond, generator = self._encode(run, components, image, plan, last_image)  # 3. prompt, images
                latents = self._denoise(run, components, plan, cond, generator)  # 4. from the last step
                frames = self._decode(run, components, plan, cond, latents)  # 5. a chunk of frames at a time
            except torch.OutOfMemoryError as exc:
                failure = {"phase": run.phase.value, "error": str(exc).splitlines()[0]}
            if failure is not None:
                # Outside the except block: the exception's traceback no longer pins the failed tensors.
                plan = self._recover(run, plan, budget, failure)
        self._free_transients()
        run.hooks.frames_decoded(frames)

        # 6. Check the frames: NaN fails the job; black or frozen output is flagged.
        run.cancel.raise_if_cancelled()
        pixels = frames.numpy()
        run.warnings.extend(check_frames(pixels).warnings)
        recipe = self._recipe(run, image, plan)
        video_frames = to_uint8(pixels)

        # 7. Interpolate (opt-in): N x k frames at k x fps, recorded in the recipe (engine/interpolate.py).
        if interpolation is not None:
            video_frames, recipe["interpolation"] = self._interpolate(run, interpolation, video_frames)

        # 8. Write the video atomically, with its recipe in the file and in a JSON sidecar.
        with run.in_phase(Stage.WRITE, f"writing {output_path.name}"):
            video = write_video(video_frames, output_path, fps=request.output_fps, metadata=recipe)
        return run.finish(video, plan, recipe)

    def unload(self) -> None:
        """Free every loaded model and cached embedding; memory goes back to the process baseline."""
        if self._loaded is not None:
            self._reset(self._loaded[2])
            if self._family is not None:
                self._loras.clear(self._family, self._loaded[2])
        self._loaded = None
        self._family = None
        self.cache.clear()
        self._free_transients()

    # -- the steps -------------------------------------------------------------------------------------

    def _load_and_place(self, run: RunState, plan: MemoryPlan) -> Components:
        """Step 2: load (or reuse) the components in the plan's dtype, place them as it says, speed up."""
        family = run.family
        with run.in_phase(Stage.LOAD, f"loading {run.spec.name}"):
            if self._loaded is not None and self._family is not None:
                if needs_reload(self._loaded[2].modules(), plan, self._family.roles):
                    self.unload()  # fp8 storage cannot be undone in place: an exact plan needs fresh weights
            components = self._components(run.spec, family, torch_dtype(plan.dtype), run.request, plan)
            self._apply_loras(run, components, plan)
            if self._placed != plan:  # once per plan: offload hooks bring released models back themselves
                self._reset(components)
                apply_plan(components.modules(), plan, self.device, family.roles)
                self._placed = plan
            self._apply_speed(family, components, plan)
        return components

    def _apply_loras(self, run: RunState, components: Components, plan: MemoryPlan) -> None:
        """Step 2 (LoRAs): the job's set, fused into the weights unless the plan stores them in float8 (which
        cannot take a merge); a changed set comes out first (models/lora.py). Weights are back on the CPU
        while the set changes, then placed anew."""
        loras = run.request.loras
        if self._loras.applied.adapters == tuple((x.adapter_name, x.expert, x.strength) for x in loras):
            if self._loras.applied.fused == (not plan.fp8_weights and bool(loras)):
                return
        self._reset(components)
        self._loras.apply(run.family, components, loras, fuse=not plan.fp8_weights)

    def _encode(
        self,
        run: RunState,
        components: Components,
        image: InputImage,
        plan: MemoryPlan,
        last_image: InputImage | None = None,
    ) -> tuple[Any, torch.Generator]:
        """Step 3: the family's conditioning, text and image embeddings through the embedding cache; then the
        encoders leave the device if the plan says so.

        Every try draws from a generator seeded the same way, so a retry gets the same conditioning; the
        denoising loop draws its noise after the encoders, from the same generator, as the pipelines do."""
        spec, family, device, dtype = run.spec, run.family, self.device, torch_dtype(plan.dtype)
        base = (spec.name, str(dtype), device.type)
        hits: list[bool] = []

        def cached(key: tuple[Any, ...], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
            # Image embeddings are keyed by the image's content, never by its (reused) PIL object.
            if key[:1] == ("image",):
                key = (*key, image.sha256)
            value, hit = self.cache.get_or_compute((*base, *key), compute, device)
            hits.append(hit)
            return value

        run.cancel.raise_if_cancelled()
        with run.in_phase(Stage.ENCODE, "encoding prompt and image"):
            generator = torch.Generator(device="cpu").manual_seed(run.request.seed)
            for warning in cut_prompts(spec, family, components, run.request):
                if warning not in run.warnings:  # once per generation, however many tries OOM recovery makes
                    logger.warning("%s", warning)
                    run.warnings.append(warning)
            cond = family.encode(
                components,
                run.request,
                image.image,
                device,
                dtype,
                generator,
                cached,
                last_image=None if last_image is None else last_image.image,
            )
            if hits and all(hits):
                run.warnings.append("embedding cache hit: text and image encoders skipped")
            release_encoders(components.modules(), plan, family.roles)
        return cond, generator

    def _denoise(
        self, run: RunState, components: Components, plan: MemoryPlan, cond: Any, generator: torch.Generator
    ) -> torch.Tensor:
        """Step 4: the loop, from the last finished step; one cancel check and one event per step, and the
        step kept (latents and a scheduler snapshot) so an out-of-memory retry or a checkpoint resumes."""
        family, req = run.family, run.request
        with run.in_phase(Stage.DENOISE):
            scheduler, latents = self._scheduler_and_latents(run, components, plan, cond, generator)
            gpu_timer = GpuStepTimer(self.device)
            for index in range(run.steps_done, len(scheduler.timesteps)):
                step = index + 1
                run.cancel.raise_if_cancelled()
                run.hooks.step_started(step)
                started = time.perf_counter()
                timestep = scheduler.timesteps[index]
                if self._speed is not None:
                    mark_step_begin(self._speed[2])
                noise_pred = family.predict_noise(
                    components, scheduler, latents, timestep, cond, req, plan.split_guidance
                )
                latents = family.scheduler_step(scheduler, noise_pred, timestep, latents, cond)
                run.keep_step(step, latents, scheduler)
                gpu_timer.step_done()
                run.clock.step_done(step, time.perf_counter() - started)
                run.hooks.step_finished(step, run.checkpoint)
            run.clock.gpu_step_times.extend(gpu_timer.durations_s())
        if run.clock.per_step_s is not None:
            run.timings["per_step_s"] = run.clock.per_step_s
        return latents

    def _scheduler_and_latents(
        self, run: RunState, components: Components, plan: MemoryPlan, cond: Any, generator: torch.Generator
    ) -> tuple[Any, torch.Tensor]:
        """A scheduler and latents to continue from: fresh ones (the noise drawn now), a checkpoint file's
        that fit them, or the kept step's."""
        family, req = run.family, run.request
        if run.scheduler is None:
            # The first try: a fresh scheduler per generation (schedulers keep per-run state) and the noise,
            # drawn also when a checkpoint file resumes the run (the generator then stands where it would).
            scheduler = family.new_scheduler(components, req, self.device)
            latents = family.initial_latents(
                components, req, cond, scheduler, generator, self.device, torch_dtype(plan.dtype)
            )
            run.start_denoising(scheduler, latents)  # or from the checkpoint file, if it fits these
            run.noise_drawn = generator.get_state()  # where the decode's draws start, on every try
        assert run.latents is not None
        # A copy: the kept snapshot stays as it was, for a retry.
        return snapshot_scheduler(run.scheduler), run.latents.to(device=self.device)

    def _decode(
        self, run: RunState, components: Components, plan: MemoryPlan, cond: Any, latents: torch.Tensor
    ) -> torch.Tensor:
        """Step 5: the frames, float32 (frames, height, width, 3) in [0, 1]; ``decode_chunk_size`` frames at a
        time where the family's VAE allows it. A VAE that draws noise (LTX-Video 0.9.1+) draws it where an
        uninterrupted pipeline run would: after the initial latents, whatever try or resume this is."""
        req = run.request
        run.cancel.raise_if_cancelled()
        with run.in_phase(Stage.DECODE, "decoding frames"):
            generator = torch.Generator(device="cpu")
            assert run.noise_drawn is not None, "the denoising keeps it with the initial latents"
            generator.set_state(run.noise_drawn)
            frames = run.family.decode(
                components, latents, cond, req, plan.decode_chunk_size, plan.vae_tiling, generator
            )
        return frames[: req.num_frames]

    def _recover(
        self, run: RunState, failed: MemoryPlan, budget: DeviceBudget, failure: dict[str, Any]
    ) -> MemoryPlan:
        """Free the failed try's memory and return the next cheaper plan (or raise OutOfMemory)."""
        req, downgrades = run.request, run.downgrades
        if self._loaded is not None:
            self._reset(self._loaded[2])
        if run.latents is not None:
            run.latents = run.latents.to("cpu")  # small; keeps the finished steps through the reset
        self._free_transients()
        cheaper = next_plan(run.spec, req, failed, budget, allow_approximate=self.settings.allow_approximate)
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
            "resumed_at_step": run.steps_done,
            "error": failure["error"],
        }
        downgrades.append(downgrade)
        logger.warning(
            "out of memory in %s with plan %s; retrying with %s from step %d",
            failure["phase"],
            failed.rung,
            cheaper.rung,
            run.steps_done,
        )
        return cheaper

    def _prepare_interpolation(self, req: ResolvedRequest, budget: DeviceBudget) -> InterpolationPlan | None:
        """The opt-in post-step is a phase too: planned with the rest, and what it needs loaded now."""
        interpolation = _plan_interpolation(req, budget)
        if interpolation is not None:
            self.interpolators.prepare(interpolation)
        return interpolation

    def _interpolate(self, run: RunState, plan: InterpolationPlan, frames: Any) -> tuple[Any, dict[str, Any]]:
        """Step 7: the generator leaves the device first when the interpolator runs there (so planned)."""
        what = f"interpolating {plan.factor}x with {plan.interpolator.value}"
        with run.in_phase(Stage.INTERPOLATE, what):
            if plan.device_type == self.device.type != "cpu" and self._loaded is not None:
                self._reset(self._loaded[2])
                self._free_transients()

            def on_frame(done: int, total: int) -> None:
                run.stage(Stage.INTERPOLATE, f"{what}: {done}/{total}")

            return self.interpolators.run(frames, run.request.fps, plan, self.device, run.cancel, on_frame)

    # -- helpers ---------------------------------------------------------------------------------------

    def _components(
        self,
        spec: ModelSpec,
        family: ModelFamily[Any, Any],
        dtype: torch.dtype,
        request: ResolvedRequest,
        plan: MemoryPlan,
    ) -> Components:
        gguf, gguf_2 = request.transformer_gguf, request.transformer_2_gguf
        # GGUF transformers and int8 storage are part of what is loaded: another file, or the other format,
        # loads the model again.
        key = spec.name + "".join(
            f"+{name}:{file.sha256}"
            for name, file in (("gguf", gguf), ("gguf_2", gguf_2))
            if file is not None
        )
        key += "+int8" if plan.int8_weights else ""
        if self._loaded is not None and self._loaded[:2] == (key, dtype):
            return self._loaded[2]
        if self._loaded is not None:  # one model at a time: free before loading another (any family)
            self.unload()
        self._loras = LoraState()  # fresh weights carry no LoRA
        components = load_components(
            spec,
            dtype,
            cache_dir=self.settings.models_dir,
            offline=self.settings.offline,
            transformer_gguf=gguf,
            transformer_2_gguf=gguf_2,
            int8=plan.int8_weights,
        )
        self._loaded = (key, dtype, components)
        self._family = family
        return components

    def _apply_speed(self, family: ModelFamily[Any, Any], components: Components, plan: MemoryPlan) -> None:
        """Exact speed-ups that suit this plan and device (speed/options.py decides; off on the CPU)."""
        options = choose_speed(plan, self.device.type, allow_compile=self.settings.compile_unet)
        if self._speed is not None and self._speed[:2] == (plan, options):
            return  # keep the compiled code
        modules = components.modules()
        applied: dict[str, Any] = {}
        # Every denoiser the model has: a two-expert model's low-noise expert runs half the steps too.
        for denoiser in family.roles.denoisers(modules):
            undo_speed(modules, denoiser=denoiser)
            applied[denoiser] = apply_speed(
                modules,
                options,
                self.device,
                self.settings.data_dir / "compile-cache",
                blocks=family.compile_blocks,
                denoiser=denoiser,
            )
        self._speed = (plan, options, applied[family.roles.denoiser])

    def _reset(self, components: Components) -> None:
        """Undo speed-ups and placement so another plan can be applied; memory back to the weights alone."""
        if self._family is not None:
            modules = components.modules()
            for denoiser in self._family.roles.denoisers(modules):
                undo_speed(modules, denoiser=denoiser)
        self._speed = None
        reset_placement(components.modules())
        self._placed = None

    def _spec(self, model: str) -> ModelSpec:
        """The request's model, as its caller resolved it; one that moved or vanished since fails here."""
        return model_spec(model, self.settings)

    def _free_transients(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _recipe(self, run: RunState, image: InputImage, plan: MemoryPlan) -> dict[str, Any]:
        """Everything needed to make this video again, stored in the file and its sidecar."""
        import diffusers
        import transformers

        return {
            "generator": f"stillmotion {stillmotion.__version__}",
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **run.request.to_dict(),
            "model_source": run.spec.source,
            "model_revision": run.spec.revision,
            "input_image_sha256": image.sha256,
            "input_image_size": [image.width, image.height],
            "input_notes": list(image.notes),
            "runtime": {
                "device": str(self.device),
                "device_name": _device_name(self.device),
                "plan": plan.to_dict(),
                "downgrades": run.downgrades,
                "approximate": plan.approximate or bool(run.request.approximations),
                "approximations": [*plan.approximations, *run.request.approximations],
                "speed": self._speed[2] if self._speed is not None else None,
            },
            "warnings": list(run.warnings),
            "versions": {
                "stillmotion": stillmotion.__version__,
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
                "transformers": transformers.__version__,
                "python": platform.python_version(),
            },
        }


def _check_last_image(req: ResolvedRequest, last_image: InputImage | None) -> None:
    """The last image given is the one the request was resolved with (its sha256), or none of either."""
    given = None if last_image is None else last_image.sha256
    if given != req.last_image:
        raise InvalidRequest(
            "last_image: the image given does not match the request's (resolve the request with it).",
            field="last_image",
        )


def check_output(output_path: Path, req: ResolvedRequest) -> None:
    """An unsupported output format, or one that cannot play the output fps, fails before any work (also
    checked for every entry of a batch before the first runs: batch_cli.py)."""
    problem = output_fps_problem(format_for_path(output_path), req.output_fps)
    if problem:
        raise InvalidRequest(f"fps={req.output_fps}: {problem}.", field="output")


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
