"""The plan ladder: pick the fastest plan whose estimated peak fits the device budget. Pure: no torch.cuda.

Fastest = the lowest expected time in the estimator's speed model (estimate.expected_time).

The rungs, fastest first; each keeps every saver of the rungs above it and adds one:

    resident          every weight on the device, guidance halves batched, VAE decode chunk as large as fits
    release_encoders  + text and image encoders leave the device right after encoding
    ff_chunks         + every feed-forward of the denoiser runs in a few large token chunks (exact)
    split_guidance    + the unconditional and conditional denoiser halves run one after the other (exact)
    model_offload     + one whole model on the device at a time (accelerate hooks; encode phase shrinks)
    group_offload     + the denoiser's blocks stream in with CUDA streams (diffusers block-level offload)
    group_offload_leaf+ every layer streams in with CUDA streams (leaf-level)
    sequential_offload+ every layer copied in synchronously on use (accelerate cpu_offload): the floor

In every rung the VAE decode chunk is the largest power of two (<= MAX_DECODE_CHUNK) that keeps the decode
phase from raising the plan's peak and inside the budget: for a per-frame decoder smaller decode chunks are
exact and nearly free, so they are not a rung of their own. A temporal decoder (SVD) decodes every frame at
once in exact rungs, since its chunks change the output; a whole-video VAE (Wan, LTX) has no chunk to choose.
Approximate rungs (``fp8_weights``: denoiser weights stored in float8; ``tiled_decode``: block-level group
offload with a spatially tiled VAE decode, for the whole-video VAEs of Wan and LTX whose decode can outgrow
the denoiser; ``vae_tiling``: tiled decode with fp8 and sequential offload) join the ladder only with
``allow_approximate=True`` and are labelled in the plan; the tiled rungs only for a VAE that tiles.
``strategy=`` forces a rung by name (RUNG_NAMES), with ``+int8`` for int8 storage (``group_offload+int8``).

Weight formats, least lossy first: 16-bit (with the fp8 rungs above where approximate is allowed), then int8
storage (``int8_weights``: torchao int8 weight-only denoiser(s) and text encoder, quantized while they load;
weight_formats.py). The planner takes the first format in which some rung fits, then the fastest rung of it:
int8 is chosen only where no 16-bit plan fits, typically where host memory is short (fp8 storage casts after
a 16-bit load; int8 never holds the 16-bit weights). On the tiny Wan build fp8 storage and int8 measured
about the same loss (PSNR 57.0 and 55.6 dB of one transformer output against 16-bit, weights N(0, 0.02)),
so fp8 keeps its place beside the 16-bit rungs. int8 combines with every exact rung but sequential offload
(accelerate's per-tensor hooks are not known to carry torchao's tensors), never with fp8, a GGUF file or
LoRAs (they cannot merge into quantized weights), and only where torchao is installed (the ``quant``
extra).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from stillmotion.errors import CannotFit, InvalidRequest
from stillmotion.memory.device import DeviceBudget
from stillmotion.memory.estimate import estimate_memory, ff_chunk_mib_for, guidance_batch, quantized_files
from stillmotion.memory.host_refusal import NominalQuantized, host_memory_refusal, host_need_gib
from stillmotion.memory.types import (
    ESTIMATE_MARGIN,
    GIB,
    GroupOffloadType,
    MemoryEstimate,
    MemoryPlan,
    Placement,
    RequestShape,
    Shape,
)
from stillmotion.memory.weight_formats import INT8_LABEL, int8_available
from stillmotion.models.memory_facts import DecodeChunking
from stillmotion.models.registry import RESOLUTION_PRESETS, ModelSpec

__all__ = [
    "ESTIMATE_MARGIN",
    "MemoryPlan",
    "Placement",
    "RUNG_NAMES",
    "RequestShape",
    "Rung",
    "build_plan",
    "fits",
    "ladder",
    "plan_memory",
    "usable_rungs",
]

# Largest VAE decode chunk: beyond 8 frames the decode is no faster on an H100 and only costs memory.
MAX_DECODE_CHUNK = 8
# Feed-forward chunking is used only where it can bring the peak below this fraction of the unchunked one.
FF_CHUNKING_MIN_GAIN = 0.98
# Expected-time differences below this are noise in the speed model: the earlier, simpler rung wins.
SPEED_TIE = 0.005
# Devices that run a model in its 16-bit dtype (ModelSpec.half_dtype); CPUs run float32 (16-bit matmuls are
# slow or missing there).
HALF_PRECISION_DEVICES = ("cuda", "mps")


def plan_dtype(spec: ModelSpec, device_type: str) -> str:
    """The dtype a model runs in on this kind of device."""
    return spec.half_dtype if device_type in HALF_PRECISION_DEVICES else "float32"


def plan_vae_dtype(spec: ModelSpec, dtype: str) -> str | None:
    """The VAE's own dtype beside a 16-bit plan (Wan's float32 VAE), or None: the plan's dtype."""
    vae_dtype = spec.memory.vae_dtype
    return vae_dtype if vae_dtype is not None and vae_dtype != dtype else None


@dataclass(frozen=True)
class Rung:
    """One named step of the ladder: the knobs it sets (the decode chunk is chosen per request)."""

    name: str
    placement: Placement
    release_encoders: bool = False
    ff_chunks: bool = False
    split_guidance: bool = False
    group_offload_type: GroupOffloadType | None = None
    fp8_weights: bool = False
    vae_tiling: bool = False
    summary: str = ""

    @property
    def approximate(self) -> bool:
        return self.fp8_weights or self.vae_tiling


_R = Placement
_EXACT = (
    Rung("resident", _R.RESIDENT, summary="everything resident on the device"),
    Rung("release_encoders", _R.RESIDENT, release_encoders=True, summary="encoders released after encoding"),
    Rung("ff_chunks", _R.RESIDENT, True, True, summary="feed-forwards in a few large chunks"),
    Rung("split_guidance", _R.RESIDENT, True, True, True, summary="guidance halves one after the other"),
    Rung("model_offload", _R.MODEL_OFFLOAD, True, True, True, summary="one model on the device at a time"),
    Rung(
        "group_offload",
        _R.GROUP_OFFLOAD,
        True,
        True,
        True,
        GroupOffloadType.BLOCK_LEVEL,
        summary="denoiser blocks streamed in (block-level group offload, CUDA streams)",
    ),
    Rung(
        "group_offload_leaf",
        _R.GROUP_OFFLOAD,
        True,
        True,
        True,
        GroupOffloadType.LEAF_LEVEL,
        summary="every layer streamed in (leaf-level group offload, CUDA streams)",
    ),
    Rung(
        "sequential_offload",
        _R.SEQUENTIAL_OFFLOAD,
        True,
        True,
        True,
        summary="every layer copied in on use (sequential offload)",
    ),
)
_APPROXIMATE = {
    # inserted after this exact rung
    "split_guidance": Rung(
        "fp8_weights",
        _R.RESIDENT,
        True,
        True,
        True,
        fp8_weights=True,
        summary="APPROXIMATE: denoiser weights stored in float8",
    ),
    "group_offload": Rung(
        "tiled_decode",
        _R.GROUP_OFFLOAD,
        True,
        True,
        True,
        GroupOffloadType.BLOCK_LEVEL,
        vae_tiling=True,
        summary="APPROXIMATE: block-level group offload and tiled VAE decode",
    ),
    "sequential_offload": Rung(
        "vae_tiling",
        _R.SEQUENTIAL_OFFLOAD,
        True,
        True,
        True,
        fp8_weights=True,
        vae_tiling=True,
        summary="APPROXIMATE: float8 weights and tiled VAE decode",
    ),
}


# On a CPU every weight lives in host memory whatever the placement, so only the savers that shrink the
# activations apply: feed-forward chunks and split guidance (exact). fp8 storage is not offered there.
HOST_MEMORY_RUNGS = ("resident", "ff_chunks", "split_guidance")


def ladder(*, allow_approximate: bool = False, device_type: str = "cuda") -> tuple[Rung, ...]:
    """The rungs in order, fastest first; approximate ones only if allowed; on a CPU the host-memory ones."""
    if device_type == "cpu":
        return tuple(rung for rung in _EXACT if rung.name in HOST_MEMORY_RUNGS)
    rungs: list[Rung] = []
    for rung in _EXACT:
        rungs.append(rung)
        if allow_approximate and rung.name in _APPROXIMATE:
            rungs.append(_APPROXIMATE[rung.name])
    return tuple(rungs)


RUNG_NAMES: tuple[str, ...] = tuple(r.name for r in ladder(allow_approximate=True))
# A plan with int8 storage is named after its rung with this suffix; ``strategy=`` takes the same form.
INT8_SUFFIX = "+int8"


def usable_rungs(
    spec: ModelSpec, *, allow_approximate: bool, device_type: str = "cuda", quantized: bool = False
) -> tuple[Rung, ...]:
    """The ladder for ``spec`` on ``device_type``: tiled-decode rungs only where the VAE can tile; no fp8
    storage for a ``quantized`` denoiser (a GGUF file's weights are already quantized)."""
    rungs = ladder(allow_approximate=allow_approximate, device_type=device_type)
    return tuple(
        rung
        for rung in rungs
        if (not rung.vae_tiling or spec.memory.vae_tile_side) and not (quantized and rung.fp8_weights)
    )


def weight_format_label(request: RequestShape) -> str | None:
    """The quantized files' format for the plan ("GGUF Q8_0"; two experts' files: "GGUF Q8_0 / GGUF Q4_0",
    the high-noise expert's first, "16-bit" for an expert without one); None without a file."""
    files = quantized_files(request)
    if not files:
        return None
    if request.quantized_denoiser_2 is None and "denoiser" in files:
        return files["denoiser"].label
    labels = [files[role].label if role in files else "16-bit" for role in ("denoiser", "denoiser_2")]
    return " / ".join(labels)


def int8_rungs(spec: ModelSpec, request: RequestShape, device_type: str = "cuda") -> tuple[Rung, ...]:
    """The rungs int8 storage can join for this request (module docstring); none where it does not apply."""
    if not int8_available() or quantized_files(request) or request.lora_bytes > 0:
        return ()
    return tuple(
        rung
        for rung in usable_rungs(spec, allow_approximate=True, device_type=device_type)
        if not rung.fp8_weights and rung.placement is not Placement.SEQUENTIAL_OFFLOAD
    )


def int8_refusal(spec: ModelSpec, request: RequestShape, rung: Rung) -> str | None:
    """Why ``rung`` cannot take int8 storage for this request (for a forced strategy), or None."""
    if not int8_available():
        return "int8 storage needs torchao, which is not installed here (pip install 'stillmotion[quant]')"
    if quantized_files(request):
        return "the transformer's weights come from a GGUF file (already quantized)"
    if request.lora_bytes > 0:
        return "LoRAs cannot be merged into int8 weights"
    if rung.fp8_weights:
        return "a plan stores its weights in fp8 or in int8, not both"
    if rung.placement is Placement.SEQUENTIAL_OFFLOAD:
        return "sequential offload's per-tensor hooks are not known to carry torchao's int8 tensors"
    if rung.vae_tiling and not spec.memory.vae_tile_side:
        return f"{spec.name}'s VAE does not tile"
    return None


def expandable_memory(budget: DeviceBudget) -> bool:
    """Whether reserved memory tracks allocated: expandable segments on a GPU, and always in host memory (no
    caching allocator holds freed blocks there)."""
    return budget.expandable_segments or budget.device_type == "cpu"


def fits(estimate: MemoryEstimate, budget: DeviceBudget) -> bool:
    """Whether the estimate, with ESTIMATE_MARGIN, fits in the budget: the device, and the host memory."""
    return fits_device(estimate, budget) and fits_host(estimate, budget)


def fits_device(estimate: MemoryEstimate, budget: DeviceBudget) -> bool:
    """Whether the device peak, with ESTIMATE_MARGIN, fits in the device budget."""
    return estimate.peak_reserved_gib * ESTIMATE_MARGIN * GIB <= budget.budget_bytes


def fits_host(estimate: MemoryEstimate, budget: DeviceBudget) -> bool:
    """Whether the host peak, with ESTIMATE_MARGIN, fits in the host memory available. Not checked on a CPU
    (the device estimate is the host's) nor where the host's memory is unknown (``host_free_bytes`` 0)."""
    if budget.device_type == "cpu" or budget.host_free_bytes <= 0 or estimate.host is None:
        return True
    return estimate.host.peak_gib * ESTIMATE_MARGIN * GIB <= budget.host_free_bytes


def build_plan(
    spec: ModelSpec,
    request: RequestShape,
    budget: DeviceBudget,
    rung: Rung,
    *,
    decode_chunk_size: int | None = None,
    allow_approximate: bool = False,
    int8: bool = False,
) -> MemoryPlan:
    """The plan of ``rung`` for this request, with its estimate; the decode chunk chosen unless given.

    ``allow_approximate`` lets a temporal decoder (SVD) decode in chunks on any rung, labelled approximate;
    ``int8`` stores the denoiser(s) and the text encoder in int8 (the plan is named ``<rung>+int8``).
    """
    dtype = plan_dtype(spec, budget.device_type)
    batch = guidance_batch(request, rung.split_guidance)
    host = budget.device_type == "cpu"
    # Where the denoiser's peak is outside its feed-forwards (Wan, LTX), chunking them only costs time.
    chunking_helps = spec.memory.denoiser_ff_floor_fraction < FF_CHUNKING_MIN_GAIN
    plan = MemoryPlan(
        rung=rung.name + (INT8_SUFFIX if int8 else ""),
        placement=rung.placement,
        dtype=dtype,
        release_encoders=rung.release_encoders and not host,  # on a CPU there is nowhere to release them to
        decode_chunk_size=1,
        ff_chunk_size=ff_chunk_mib_for(spec, request, batch=batch)
        if rung.ff_chunks and chunking_helps
        else None,
        split_guidance=rung.split_guidance,
        fp8_weights=rung.fp8_weights,
        int8_weights=int8,
        vae_tiling=rung.vae_tiling,
        group_offload_type=rung.group_offload_type,
        weight_format=weight_format_label(request),
        vae_dtype=plan_vae_dtype(spec, dtype),
    )
    expandable = expandable_memory(budget)
    chunking = spec.memory.decode_chunking
    exact_only = not (rung.approximate or int8 or allow_approximate)
    if chunking is DecodeChunking.WHOLE_VIDEO or (chunking is DecodeChunking.APPROXIMATE and exact_only):
        decode_chunk_size = request.num_frames  # nothing to choose, or only the exact whole-video decode
    elif decode_chunk_size is None:
        decode_chunk_size = _choose_decode_chunk(spec, request, budget, plan)
    approximate_chunks = chunking is DecodeChunking.APPROXIMATE and decode_chunk_size < request.num_frames
    plan = replace(plan, decode_chunk_size=decode_chunk_size, decode_chunk_approximate=approximate_chunks)
    plan = replace(plan, estimate=estimate_memory(spec, request, plan, expandable_segments=expandable))
    assert plan.estimate is not None
    if plan.placement is Placement.GROUP_OFFLOAD and not fits_host(plan.estimate, budget):
        # Short of host memory for two copies while the weights are pinned up front: pin them on the fly
        # (one copy, exact, slower per step; memory/host.py).
        plan = replace(plan, pin_on_the_fly=True)
        plan = replace(plan, estimate=estimate_memory(spec, request, plan, expandable_segments=expandable))
    return plan


def _choose_decode_chunk(
    spec: ModelSpec, request: RequestShape, budget: DeviceBudget, plan: MemoryPlan
) -> int:
    """Largest power-of-two chunk that neither raises the plan's peak nor leaves the budget (at least 1).

    A temporal decoder (approximate chunks) starts from the whole video: fewer, longer chunks flicker less.
    """
    if spec.memory.decode_chunking is DecodeChunking.APPROXIMATE:
        return _largest_fitting_temporal_chunk(spec, request, budget, plan)
    base = estimate_memory(spec, request, plan, expandable_segments=expandable_memory(budget))
    other_peak = max(base.encode.reserved_gib, base.denoise.reserved_gib)
    chunk = 1
    candidate = 2
    while candidate <= min(MAX_DECODE_CHUNK, request.num_frames):
        trial = estimate_memory(
            spec,
            request,
            replace(plan, decode_chunk_size=candidate),
            expandable_segments=expandable_memory(budget),
        )
        within_budget = trial.decode.reserved_gib * ESTIMATE_MARGIN * GIB <= budget.budget_bytes
        if trial.decode.reserved_gib > other_peak or not within_budget:
            break
        chunk = candidate
        candidate *= 2
    return chunk


def _largest_fitting_temporal_chunk(
    spec: ModelSpec, request: RequestShape, budget: DeviceBudget, plan: MemoryPlan
) -> int:
    """The longest decode chunk (all frames, then halving) whose decode phase fits the budget; at least 1."""
    chunk = request.num_frames
    while chunk > 1:
        trial = estimate_memory(
            spec,
            request,
            replace(plan, decode_chunk_size=chunk),
            expandable_segments=expandable_memory(budget),
        )
        if trial.decode.reserved_gib * ESTIMATE_MARGIN * GIB <= budget.budget_bytes:
            break
        chunk = -(-chunk // 2)
    return chunk


def split_strategy(name: str) -> tuple[str, bool]:
    """A plan or strategy name as (rung name, int8 storage): ``group_offload+int8`` -> group_offload, True."""
    if name.endswith(INT8_SUFFIX):
        return name.removesuffix(INT8_SUFFIX), True
    return name, False


def _rung_by_name(name: str, allow_approximate: bool) -> Rung:
    base, int8 = split_strategy(name)
    if int8 and not allow_approximate:
        raise InvalidRequest(
            f"strategy={name!r} stores weights in int8 (approximate); allow approximate savings first.",
            field="strategy",
        )
    for rung in ladder(allow_approximate=True):
        if rung.name == base:
            if rung.approximate and not allow_approximate:
                raise InvalidRequest(
                    f"strategy={name!r} changes the output (approximate); allow approximate savings first.",
                    field="strategy",
                )
            return rung
    raise InvalidRequest(
        f"strategy={name!r} is not a plan rung; choose one of {', '.join(RUNG_NAMES)} (any of them but the "
        f"fp8 and sequential ones with {INT8_SUFFIX} for int8 weights).",
        field="strategy",
    )


def _reason(plan: MemoryPlan, rung: Rung, budget: DeviceBudget, *, forced: bool, skipped: int) -> str:
    assert plan.estimate is not None
    est = plan.estimate
    budget_gib = budget.budget_bytes / GIB
    head = f"forced strategy {rung.name}" if forced else f"{rung.name}: {rung.summary}"
    against = (
        f"{budget_gib:.2f} GiB of host memory available (CPU: activations scaled from GPU measurements)"
        if budget.device_type == "cpu"
        else f"budget {budget_gib:.2f} GiB"
    )
    why = (
        f"estimated peak {est.peak_reserved_gib:.2f} GiB ({est.peak_phase}) x {ESTIMATE_MARGIN:.2f} margin "
        f"vs {against}"
    )
    if not forced and skipped:
        why += f"; the {skipped} rung(s) above it do not fit or are expected slower"
    if forced and not fits(est, budget):
        why += " (DOES NOT FIT: may run out of memory)"
    if plan.approximate:
        why += f"; approximate: {', '.join(plan.approximations)}"
    if plan.weight_format is not None:
        why += f"; transformer weights {plan.weight_format} from the request's file (APPROXIMATE)"
    if plan.int8_weights:
        why += f"; denoiser and text encoder weights {INT8_LABEL}, quantized while loading (APPROXIMATE)"
        if not forced:
            why += ": no 16-bit plan fits"
    if est.host is not None and budget.device_type != "cpu":
        why += f"; host memory {est.host.peak_gib:.2f} GiB ({est.host.peak_stage})"
        if budget.host_free_bytes > 0:
            why += f" x {ESTIMATE_MARGIN:.2f} vs {budget.host_free_bytes / GIB:.2f} GiB available"
            if forced and not fits_host(est, budget):
                why += " (DOES NOT FIT IN HOST MEMORY: the system may swap or kill the process)"
        else:
            why += " (not checked: host memory unknown)"
        if plan.pin_on_the_fly:
            why += ", offloaded weights pinned on the fly (one host copy; slower per step)"
    return f"{head}; {why}; expected {est.slowdown:.2f}x the resident time"


def plan_memory(
    spec: ModelSpec,
    request: RequestShape,
    budget: DeviceBudget,
    *,
    allow_approximate: bool = False,
    strategy: str | None = None,
) -> MemoryPlan:
    """Pick the fastest plan whose estimated peak reserved memory x ESTIMATE_MARGIN fits ``budget``.

    Raises ``CannotFit`` (saying the largest frame count and size that would fit) when no rung fits, and
    ``InvalidRequest`` for an unknown or disallowed ``strategy``. On a CPU the plan is float32 in host
    memory, planned against the memory the host has available (HOST_MEMORY_RUNGS).
    """
    quantized = bool(quantized_files(request))
    if strategy is not None:
        return _forced_plan(spec, request, budget, strategy, allow_approximate=allow_approximate)
    rungs = usable_rungs(
        spec, allow_approximate=allow_approximate, device_type=budget.device_type, quantized=quantized
    )
    # Least lossy format first (module docstring): 16-bit, then int8 where approximate is allowed.
    candidates = [
        (rung, build_plan(spec, request, budget, rung, allow_approximate=allow_approximate)) for rung in rungs
    ]
    chosen = fastest_fitting(candidates, budget)
    int8_candidates = _int8_candidates(spec, request, budget) if allow_approximate else []
    if chosen is None:
        chosen = fastest_fitting(int8_candidates, budget)
    if chosen is None:
        plans = [plan for _, plan in candidates + int8_candidates]
        on_device = [plan for plan in plans if plan.estimate and fits_device(plan.estimate, budget)]
        if on_device:  # the device could take it: host memory is what is short
            with_q4 = _quantized_host_need(spec, request, budget, allow_approximate=allow_approximate)
            # Not allowed to be approximate: say what int8 storage would need, where it would fit.
            int8 = (
                None
                if allow_approximate
                else fastest_fitting(_int8_candidates(spec, request, budget), budget)
            )
            raise host_memory_refusal(
                request,
                budget,
                on_device,
                plans,
                quantized_need_gib=with_q4,
                int8_plan=None if int8 is None else int8[1],
            )
        raise cannot_fit(spec, request, budget, allow_approximate=allow_approximate)
    rung, plan = chosen
    skipped = rungs.index(rung) if not plan.int8_weights else len(rungs)
    return replace(plan, reason=_reason(plan, rung, budget, forced=False, skipped=skipped))


def _forced_plan(
    spec: ModelSpec, request: RequestShape, budget: DeviceBudget, strategy: str, *, allow_approximate: bool
) -> MemoryPlan:
    """The plan of a forced ``strategy`` (a rung name, ``+int8`` for int8 storage), fitting or not."""
    rung = _rung_by_name(strategy, allow_approximate)
    int8 = split_strategy(strategy)[1]
    if quantized_files(request) and rung.fp8_weights:
        raise InvalidRequest(
            f"strategy={strategy!r} stores the transformer in float8, but its weights come from a GGUF "
            "file (already quantized); choose another rung.",
            field="strategy",
        )
    why_not = int8_refusal(spec, request, rung) if int8 else None
    if why_not is not None:
        raise InvalidRequest(f"strategy={strategy!r}: {why_not}.", field="strategy")
    plan = build_plan(spec, request, budget, rung, allow_approximate=allow_approximate, int8=int8)
    return replace(plan, reason=_reason(plan, rung, budget, forced=True, skipped=0))


def _int8_candidates(
    spec: ModelSpec, request: RequestShape, budget: DeviceBudget
) -> list[tuple[Rung, MemoryPlan]]:
    """Every int8 plan this request can take on this device (none where int8 does not apply)."""
    return [
        (rung, build_plan(spec, request, budget, rung, allow_approximate=True, int8=True))
        for rung in int8_rungs(spec, request, budget.device_type)
    ]


def _quantized_host_need(
    spec: ModelSpec, request: RequestShape, budget: DeviceBudget, *, allow_approximate: bool
) -> float | None:
    """For a model that takes a GGUF transformer and a request without one: the host memory (GiB, margin
    included) a typical 4-bit file (NominalQuantized) would need on this card; None when that file would not
    fit the card either, or does not apply."""
    if not spec.accepts_gguf or quantized_files(request):
        return None
    shape = Shape(
        request.height,
        request.width,
        request.num_frames,
        request.guidance_scale,
        request.num_inference_steps,
        request.flow_shift,
        quantized_denoiser=NominalQuantized(spec.params.denoiser),
    )
    try:
        return host_need_gib(plan_memory(spec, shape, budget, allow_approximate=allow_approximate))
    except CannotFit as refused:  # short of host memory even so: its own refusal says how much it needs
        need = refused.details.get("needed_host_gib")
        return float(need) if isinstance(need, int | float) else None


def fastest_fitting(
    candidates: list[tuple[Rung, MemoryPlan]], budget: DeviceBudget
) -> tuple[Rung, MemoryPlan] | None:
    """The fitting candidate with the lowest expected time; ties go to the earlier (simpler) rung."""
    best: tuple[Rung, MemoryPlan] | None = None
    for rung, plan in candidates:
        assert plan.estimate is not None
        if not fits(plan.estimate, budget):
            continue
        if best is None or plan.estimate.slowdown < _slowdown(best[1]) - SPEED_TIE:
            best = (rung, plan)
    return best


def _slowdown(plan: MemoryPlan) -> float:
    assert plan.estimate is not None
    return plan.estimate.slowdown


def smallest_estimate_gib(
    spec: ModelSpec, request: RequestShape, budget: DeviceBudget, *, allow_approximate: bool
) -> float:
    """Peak reserved GiB of the cheapest rung (what the request needs at the very least)."""
    values = []
    quantized = bool(quantized_files(request))
    formats = [(False, rung) for rung in usable_rungs(
        spec, allow_approximate=allow_approximate, device_type=budget.device_type, quantized=quantized
    )]  # fmt: skip
    if allow_approximate:
        formats += [(True, rung) for rung in int8_rungs(spec, request, budget.device_type)]
    for int8, rung in formats:
        estimate = build_plan(
            spec, request, budget, rung, decode_chunk_size=1, allow_approximate=allow_approximate, int8=int8
        ).estimate
        assert estimate is not None
        values.append(estimate.peak_reserved_gib)
    return min(values)


def _fits_any(spec: ModelSpec, shape: RequestShape, budget: DeviceBudget, allow_approximate: bool) -> bool:
    need = smallest_estimate_gib(spec, shape, budget, allow_approximate=allow_approximate)
    return need * ESTIMATE_MARGIN * GIB <= budget.budget_bytes


def _largest_fitting_frames(
    spec: ModelSpec, request: RequestShape, budget: DeviceBudget, allow_approximate: bool
) -> int | None:
    """The most frames below the request's, of a count the model takes (frame_step x k + 1 where it has a
    step), that fit at this size; None if not even the fewest do. Memory grows with frames, so a bisection
    over the valid counts finds it."""
    limits = spec.limits
    step = limits.frame_step
    counts = [
        frames
        for frames in range(limits.min_frames, request.num_frames)
        if step == 1 or (frames - 1) % step == 0
    ]
    low, high, best = 0, len(counts) - 1, None
    while low <= high:
        middle = (low + high) // 2
        shape = Shape(request.height, request.width, counts[middle], request.guidance_scale)
        if _fits_any(spec, shape, budget, allow_approximate):
            best, low = counts[middle], middle + 1
        else:
            high = middle - 1
    return best


def cannot_fit(
    spec: ModelSpec, request: RequestShape, budget: DeviceBudget, *, allow_approximate: bool
) -> CannotFit:
    """The refusal, naming the largest frame count at this size and the largest preset at this frame count."""
    need = smallest_estimate_gib(spec, request, budget, allow_approximate=allow_approximate)
    budget_gib = budget.budget_bytes / GIB
    limits = spec.limits
    details: dict[str, object] = {
        "needed_gib": round(need * ESTIMATE_MARGIN, 2),
        "budget_gib": round(budget_gib, 2),
        "largest_num_frames": None,
        "largest_size": None,
    }
    hints = []
    frames = _largest_fitting_frames(spec, request, budget, allow_approximate)
    if frames is not None:
        details["largest_num_frames"] = frames
        hints.append(f"{frames} frames at {request.width}x{request.height}")
    aspect = request.width / request.height
    step = limits.preset_multiple
    for side in sorted({*RESOLUTION_PRESETS.values(), 384, 256}, reverse=True):
        height = max(limits.min_side, int(round(side / aspect**0.5 / step)) * step)
        width = max(limits.min_side, int(round(side * aspect**0.5 / step)) * step)
        if height * width >= request.height * request.width:
            continue
        if _fits_any(
            spec, Shape(height, width, request.num_frames, request.guidance_scale), budget, allow_approximate
        ):
            details["largest_size"] = {"width": width, "height": height}
            hints.append(f"{width}x{height} at {request.num_frames} frames")
            break
    what = " or ".join(hints) if hints else "nothing this model can make"
    extra = "" if allow_approximate else " (approximate savings not allowed)"
    if budget.device_type == "cpu":
        where = f"but this machine has {budget_gib:.2f} GiB of host memory available (running on the CPU)"
    else:
        where = f"but the budget is {budget_gib:.2f} GiB"
    message = (
        f"{request.width}x{request.height} x {request.num_frames} frames needs at least "
        f"{need * ESTIMATE_MARGIN:.2f} GiB with the most memory-saving plan{extra}, {where}. "
        f"Largest that fits: {what}."
    )
    if not allow_approximate and _fits_any(spec, request, budget, True):
        details["fits_with_approximate"] = True
        message += (
            " It would fit with approximate savings (they change the output and are labelled): "
            "--allow-approximate, or STILLMOTION_ALLOW_APPROXIMATE=1 for the service."
        )
    return CannotFit(message, details=details)
