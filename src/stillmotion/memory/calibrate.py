"""Fit the estimator's memory coefficients (``MemoryFacts``) to GPU measurements. Pure arithmetic, no torch.

Input rows have the schema of ../shared/measurements:

- activation rows (``h100-i2vgenxl-activation-memory.jsonl``): one call of a component (``unet``,
  ``vae_decode``, ``vae_encode``) at ``res`` x ``res`` pixels, ``frames``, ``batch``, with its activation peak
  (``act_peak_gib``), the process's peak reserved memory and the weights resident before the call;
- pipeline rows (``h100-stock-diffusers-i2vgenxl.jsonl``): a whole stock diffusers run (``recipe``) with its
  peak allocated and reserved memory.

``fit_memory_facts(base, spec_params, activation_rows, pipeline_rows)`` returns ``base`` with every
coefficient the rows can decide replaced by its least-squares fit; the others (speed, offload residency,
priors) are kept. The registry's numbers are what this gives on all rows (tests/memory checks they agree),
and the test fits on some rows and checks the estimate on the rows it did not see.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from stillmotion.memory.types import GIB
from stillmotion.models.memory_facts import MemoryFacts

Row = Mapping[str, Any]
LATENT_FACTOR = 8  # the VAE's downsampling: latent side = pixel side / 8


def _through_origin(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Slope of y = a * x as the median of the per-row ratios y / x.

    The median, not least squares: least squares through the origin is ruled by the largest rows, and one
    large call that the allocator caps (VAE decode of 16 frames at 1024p: 28 GiB where 8 frames take 16)
    would pull the slope 9% below every other row, and an estimate below the truth is an OOM.
    """
    if not xs:
        raise ValueError("no rows to fit")
    return statistics.median(y / x for x, y in zip(xs, ys, strict=True))


def _least_squares(features: Sequence[Sequence[float]], ys: Sequence[float]) -> list[float]:
    """Ordinary least squares by the normal equations (small, well-conditioned systems only).

    Written by hand because the package keeps numpy out of its pure planning code's imports; three unknowns
    solved by Gaussian elimination with partial pivoting.
    """
    n = len(features[0])
    a = [[sum(f[i] * f[j] for f in features) for j in range(n)] for i in range(n)]
    b = [sum(f[i] * y for f, y in zip(features, ys, strict=True)) for i in range(n)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) < 1e-12:
            raise ValueError("the rows do not determine every coefficient")
        a[col], a[pivot] = a[pivot], a[col]
        b[col], b[pivot] = b[pivot], b[col]
        for row in range(col + 1, n):
            factor = a[row][col] / a[col][col]
            for k in range(col, n):
                a[row][k] -= factor * a[col][k]
            b[row] -= factor * b[col]
    solution = [0.0] * n
    for row in reversed(range(n)):
        solution[row] = (b[row] - sum(a[row][k] * solution[k] for k in range(row + 1, n))) / a[row][row]
    return solution


def unet_tokens(row: Row) -> int:
    """Latent tokens of one UNet call: batch x frames x latent height x latent width."""
    side = int(row["res"]) // LATENT_FACTOR
    return int(row["batch"]) * int(row["frames"]) * side * side


def pixels(row: Row) -> int:
    return int(row["res"]) ** 2


def _of(rows: Iterable[Row], component: str) -> list[Row]:
    return [r for r in rows if r.get("ok", True) and r["component"] == component]


def fit_memory_facts(
    base: MemoryFacts,
    weights_gib: float,
    activation_rows: Sequence[Row],
    pipeline_rows: Sequence[Row] = (),
) -> MemoryFacts:
    """``base`` with the coefficients the rows decide fitted to them.

    ``weights_gib``: the parameter bytes resident during the activation rows (UNet + VAE in fp16), so the
    allocator's constant workspace can be told apart from the weights.
    """
    unet = _of(activation_rows, "unet")
    decode = _of(activation_rows, "vae_decode")
    encode = _of(activation_rows, "vae_encode")
    fitted: dict[str, Any] = {}

    # Activations: linear in latent tokens (UNet), in pixels x frames decoded at once (VAE), in pixels.
    fitted["denoiser_act_gib_per_unit"] = _through_origin(
        [unet_tokens(r) for r in unet], [r["act_peak_gib"] for r in unet]
    )
    many = [r for r in decode if int(r["frames"]) >= 2]
    single = [r for r in decode if int(r["frames"]) == 1]
    fitted["vae_decode_gib_per_pixel_frame"] = _through_origin(
        [pixels(r) * int(r["frames"]) for r in many], [r["act_peak_gib"] for r in many]
    )
    fitted["vae_decode_single_gib_per_pixel"] = _through_origin(
        [pixels(r) for r in single], [r["act_peak_gib"] for r in single]
    )
    fitted["vae_encode_gib_per_pixel"] = _through_origin(
        [pixels(r) for r in encode], [r["act_peak_gib"] for r in encode]
    )

    # Resident memory above the parameter bytes: cuBLAS workspace and other allocator-owned constants.
    calls = [*unet, *decode]
    fitted["workspace_gib"] = sum(r["resident_gib"] for r in calls) / len(calls) - weights_gib

    # Without expandable segments the allocator reserves more than it hands out: reserved - resident =
    # ratio_unet x UNet activations + ratio_vae x VAE activations + a constant. Fitted on relative error
    # (each row divided by its reserved peak), so a 60 GiB call does not outweigh twenty 5 GiB ones: the
    # planner needs every size right to within a few percent, not the largest one to the byte.
    features = [
        [
            (r["act_peak_gib"] if r["component"] == "unet" else 0.0) / r["reserved_gib"],
            (r["act_peak_gib"] if r["component"] == "vae_decode" else 0.0) / r["reserved_gib"],
            1.0 / r["reserved_gib"],
        ]
        for r in calls
    ]
    ratio_unet, ratio_vae, extra = _least_squares(
        features, [(r["reserved_gib"] - r["resident_gib"]) / r["reserved_gib"] for r in calls]
    )
    fitted["reserved_act_ratio_denoiser"] = ratio_unet
    fitted["reserved_act_ratio_vae"] = ratio_vae
    fitted["reserved_extra_gib"] = extra

    # With expandable segments reserved tracks allocated: their ratio over whole pipeline runs.
    expandable = [r for r in pipeline_rows if r.get("ok", True) and r["recipe"].endswith("-exp")]
    if expandable:
        ratios = [r["peak_reserved_gib"] / r["peak_alloc_gib"] for r in expandable]
        fitted["reserved_ratio_expandable"] = max(
            ratios
        )  # the worst run: reserved must not be underestimated
    return replace(base, **fitted)


def weights_gib_of(unet_params: int, vae_params: int, bytes_per_param: int = 2) -> float:
    """UNet + VAE parameter bytes in GiB (what the activation rows had resident)."""
    return (unet_params + vae_params) * bytes_per_param / GIB
