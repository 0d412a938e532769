"""The activation facts of models/registry.py, derived from the CPU measurements.

``python -m stillmotion.bench.activations`` writes one row per measured call
(bench/results/activations-cpu.jsonl); ``derive_facts`` turns them into each family's MemoryFacts
coefficients, and tests/memory holds the registry to them. I2VGen-XL's facts stay the H100 fits
(memory/calibrate.py): its CPU rows validate the method instead (``validate_on_h100``). docs/memory.md,
"Activation facts measured on the CPU", walks through each rule:

- denoiser: peak / latent elements of the largest measured call, times the batch-2 excess where a batch of 2
  was measured beside a batch of 1; the chunked floor is the peak with every feed-forward chunked over it;
- VAE decode: at the pixel count measured most, a single frame, and a line (fixed + per frame) through the
  multi-frame rows; for 2-D convolution decoders, times the GPU's convolution workspace ratio
  (``ConvWorkspace``, fitted on I2VGen-XL's VAE), which a CPU cannot show;
- every value per 16-bit activations (float32 rows halved), as the estimator expects.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]
GIB = 1024**3
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
HALF_DTYPES = ("float16", "bfloat16")


def gib16(row: Row) -> float:
    """The row's activation peak in GiB, scaled to 16-bit activations."""
    return float(row["act_peak_bytes"]) / GIB * 2 / BYTES[row["dtype"]]


def _same_call(a: Row, b: Row, *fields: str) -> bool:
    return all(a[f] == b[f] for f in ("model", "component", "height", "width", "num_frames", *fields))


def kernel_pairs(rows: list[Row]) -> list[tuple[Row, Row]]:
    """(real kernels, output-only kernels) rows of the same call: the check that skipping the heavy
    kernels' arithmetic changes no memory."""
    real = [r for r in rows if r["kernels"] == "real"]
    return [
        (r, o)
        for r in real
        for o in rows
        if o["kernels"] == "output-only" and _same_call(r, o, "batch", "dtype", "ff_chunk_mib")
    ]


def fact_rows(rows: list[Row], model: str, component: str) -> list[Row]:
    """The output-only rows the facts come from (not the kernel checks, which have a real twin)."""
    checks = {id(o) for _, o in kernel_pairs(rows)}
    return [
        r
        for r in rows
        if r["model"] == model
        and r["component"] == component
        and r["kernels"] == "output-only"
        and id(r) not in checks
    ]


# -- Denoiser --------------------------------------------------------------------------------------------


def denoiser_facts(rows: list[Row], model: str) -> dict[str, float]:
    """``denoiser_act_gib_per_unit`` and, where measured, ``denoiser_ff_floor_fraction`` of ``model``."""
    plain = [r for r in fact_rows(rows, model, "denoiser") if r["ff_chunk_mib"] is None]
    singles = [r for r in plain if r["batch"] == 1]
    if not singles:
        raise ValueError(f"no batch-1 denoiser rows of {model}")
    largest = max(singles, key=lambda r: r["units"])
    per_unit = gib16(largest) / largest["units"]
    # A guidance batch of 2 can hold more than twice one row (SVD's UNet): its excess, where both were run.
    excess = 1.0
    for pair in plain:
        if pair["batch"] == 2:
            for one in singles:
                if _same_call(pair, one, "dtype"):
                    excess = max(excess, (gib16(pair) / pair["units"]) / (gib16(one) / one["units"]))
    facts = {"denoiser_act_gib_per_unit": per_unit * excess}
    for chunked in fact_rows(rows, model, "denoiser"):
        if chunked["ff_chunk_mib"] is None:
            continue
        for base in plain:
            if _same_call(chunked, base, "batch", "dtype"):
                facts["denoiser_ff_floor_fraction"] = min(1.0, gib16(chunked) / gib16(base))
    return facts


# -- VAE decode ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvWorkspace:
    """How much more a GPU holds than the CPU measurement of a VAE decode: cuDNN's convolution workspaces,
    allocated from PyTorch's caching allocator and so counted by ``max_memory_allocated``. Fitted on
    I2VGen-XL's VAE (the H100 rows against the CPU rows of the same calls)."""

    frames: float  # two or more frames at once
    single: float  # one frame (cuDNN picks other algorithms, with larger workspaces per frame)


def _h100_pairs(cpu: list[Row], h100: list[Row], component: str) -> list[tuple[Row, Row]]:
    """(H100 row, CPU fact row) of the same call of I2VGen-XL's ``component``."""
    rows = fact_rows(cpu, "i2vgen-xl", component)
    return [
        (g, c)
        for g in h100
        if g["component"] == component and g.get("ok", True)
        for c in rows
        if c["ff_chunk_mib"] is None
        and (c["height"], c["width"], c["num_frames"], c["batch"])
        == (g["res"], g["res"], g["frames"], g["batch"])
    ]


def conv_workspace(cpu: list[Row], h100: list[Row], resolutions: tuple[int, ...] = ()) -> ConvWorkspace:
    """The median H100 / CPU ratio of I2VGen-XL's VAE decode, multi-frame and single-frame calls apart
    (on the rows at ``resolutions``; all rows when empty)."""
    pairs = [
        (g, c) for g, c in _h100_pairs(cpu, h100, "vae_decode") if not resolutions or g["res"] in resolutions
    ]
    frames = [g["act_peak_gib"] / gib16(c) for g, c in pairs if g["frames"] > 1]
    single = [g["act_peak_gib"] / gib16(c) for g, c in pairs if g["frames"] == 1]
    if not frames or not single:
        raise ValueError(f"no VAE decode rows measured both on the H100 and here at {resolutions}")
    return ConvWorkspace(frames=statistics.median(frames), single=statistics.median(single))


def _line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through ``points``."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    return mean_y - slope * mean_x, slope


def vae_decode_facts(rows: list[Row], model: str, workspace: ConvWorkspace | None) -> dict[str, float]:
    """``vae_decode_{single,fixed}_gib_per_pixel`` and ``vae_decode_gib_per_pixel_frame`` of ``model``.

    Frames are those decoded at once: a chunk for a per-frame or temporal decoder, the whole video for a
    causal 3-D VAE. ``workspace`` None: the CPU's own numbers (for the validation on I2VGen-XL).
    """
    decode = fact_rows(rows, model, "vae_decode")
    by_pixels: dict[int, list[Row]] = {}
    for row in decode:
        by_pixels.setdefault(row["height"] * row["width"], []).append(row)
    pixels = max(by_pixels, key=lambda p: (len(by_pixels[p]), p))
    at = by_pixels[pixels]
    single = [gib16(r) / pixels for r in at if r["num_frames"] == 1]
    multi = [(float(r["num_frames"]), gib16(r) / pixels) for r in at if r["num_frames"] > 1]
    if len(single) != 1 or len({f for f, _ in multi}) < 2:
        raise ValueError(f"{model}: need one single-frame and two frame counts at {pixels} pixels")
    fixed, per_frame = _line(multi)
    ratio = workspace or ConvWorkspace(frames=1.0, single=1.0)
    return {
        "vae_decode_single_gib_per_pixel": single[0] * ratio.single,
        "vae_decode_fixed_gib_per_pixel": max(fixed, 0.0) * ratio.frames,
        "vae_decode_gib_per_pixel_frame": per_frame * ratio.frames,
    }


def vae_decode_gib(facts: dict[str, float], pixels: int, frames: int) -> float:
    """The estimator's decode activation term (memory/estimate.py, without tiling and gathered frames)."""
    single = facts["vae_decode_single_gib_per_pixel"] * pixels
    chunk = (
        facts["vae_decode_fixed_gib_per_pixel"] + facts["vae_decode_gib_per_pixel_frame"] * frames
    ) * pixels
    return max(single, chunk)


def pixel_linearity(rows: list[Row], model: str) -> list[tuple[Row, Row, float]]:
    """(smaller, larger, ratio of their peaks per pixel) for decode calls measured at two pixel counts."""
    decode = fact_rows(rows, model, "vae_decode")
    out = []
    for small in decode:
        for large in decode:
            small_px, large_px = small["height"] * small["width"], large["height"] * large["width"]
            if (
                small["num_frames"] == large["num_frames"]
                and small["dtype"] == large["dtype"]
                and small_px < large_px
            ):
                out.append((small, large, (gib16(small) / small_px) / (gib16(large) / large_px)))
    return out


# -- All families ----------------------------------------------------------------------------------------

MEASURED_MODELS = ("wan2.1-i2v-14b-480p", "wan2.2-ti2v-5b", "ltx-video", "svd-xt", "wan2.2-i2v-a14b")
# model -> the model whose VAE rows serve it: the same VAE config (tests/memory/test_activation_facts.py).
SAME_VAE = {"wan2.2-i2v-a14b": "wan2.1-i2v-14b-480p"}
# Decoders built of I2VGen-XL's 2-D convolutions (SVD-XT's temporal decoder adds 3x1x1 temporal mixing): the
# workspace ratio measured on I2VGen-XL's VAE applies. The causal 3-D VAEs of Wan and LTX-Video keep the CPU
# figure: cuDNN's 3-D convolutions were never measured, and with the ratio Wan 2.2 TI2V-5B could not decode
# 1280x704 x 121 frames in float32 on a 24 GB card, which its authors document it doing (docs/memory.md).
WORKSPACE_RATIO_MODELS = ("svd-xt",)


def derive_facts(cpu: list[Row], h100: list[Row]) -> dict[str, dict[str, float]]:
    """model -> the MemoryFacts fields measured on the CPU, as models/registry.py must hold them."""
    workspace = conv_workspace(cpu, h100)
    return {
        model: denoiser_facts(cpu, model)
        | vae_decode_facts(
            cpu, SAME_VAE.get(model, model), workspace if model in WORKSPACE_RATIO_MODELS else None
        )
        for model in MEASURED_MODELS
    }


@dataclass(frozen=True)
class Check:
    """One H100 row against what the CPU measured and what the CPU-derived facts predict."""

    component: str
    res: int
    frames: int
    batch: int
    h100_gib: float
    cpu_gib: float | None  # the same call on the CPU (16-bit), where it was measured
    estimate_gib: float  # from the CPU-derived facts

    @property
    def error(self) -> float:
        return self.estimate_gib / self.h100_gib - 1


def validate_on_h100(cpu: list[Row], h100: list[Row], workspace: ConvWorkspace) -> list[Check]:
    """Every H100 unet and vae_decode row of I2VGen-XL against the facts the CPU rows give."""
    unet = denoiser_facts(cpu, "i2vgen-xl")["denoiser_act_gib_per_unit"]
    vae = vae_decode_facts(cpu, "i2vgen-xl", workspace)
    measured = {
        (c["component"], c["height"], c["num_frames"], c["batch"]): gib16(c)
        for component in ("denoiser", "vae_decode")
        for c in fact_rows(cpu, "i2vgen-xl", component)
        if c["ff_chunk_mib"] is None
    }
    checks = []
    for row in h100:
        res, frames, batch = row["res"], row["frames"], row["batch"]
        if row["component"] == "unet":
            estimate = unet * batch * frames * (res // 8) ** 2
            cpu_gib = measured.get(("denoiser", res, frames, batch))
        elif row["component"] == "vae_decode":
            estimate = vae_decode_gib(vae, res * res, frames)
            cpu_gib = measured.get(("vae_decode", res, frames, batch))
        else:
            continue
        checks.append(Check(row["component"], res, frames, batch, row["act_peak_gib"], cpu_gib, estimate))
    return checks
