"""Carry out an InterpolationPlan on decoded frames: the engine's optional post-step after decode.

``Interpolators.run`` fills the in-between slots of media/interpolation.py's rule with ffmpeg's
``minterpolate`` or with RIFE (loaded once per engine from the hub and kept on the CPU in float32 between
runs; a run on another device or in another dtype works on a copy), checks cancel between frames, and returns
the assembled frames with the record that goes into the video's recipe: interpolator, factor, weights and
their commit, frame counts, fps, plan.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from stillmotion.engine.progress import CancelToken
from stillmotion.errors import OutOfMemory
from stillmotion.media.interpolation import Interpolator, Slot, assemble, in_between_slots
from stillmotion.media.minterpolate import filter_description, minterpolate
from stillmotion.memory.apply import torch_dtype
from stillmotion.memory.interpolation import InterpolationPlan
from stillmotion.models.rife_loader import LoadedRife, RifeWeights, load_rife

FrameProgress = Callable[[int, int], None]  # (done, total)


class Interpolators:
    """The interpolators of one engine; RIFE's weights load on first use and stay in host memory."""

    def __init__(
        self,
        weights: RifeWeights,
        *,
        cache_dir: Any = None,
        offline: bool = False,
        rife: LoadedRife | None = None,
    ) -> None:
        self.weights = weights
        self.cache_dir = cache_dir
        self.offline = offline
        self._rife = rife  # given: already loaded (the benchmark's random weights), never fetched

    def prepare(self, plan: InterpolationPlan) -> None:
        """Load what ``plan`` needs now, so missing weights fail the request before the generator runs."""
        if plan.interpolator is Interpolator.RIFE:
            self.rife()

    def rife(self) -> LoadedRife:
        if self._rife is None:
            self._rife = load_rife(self.weights, cache_dir=self.cache_dir, offline=self.offline)
        return self._rife

    def run(
        self,
        frames: npt.NDArray[np.uint8],
        fps: int,
        plan: InterpolationPlan,
        device: torch.device,
        cancel: CancelToken,
        on_frame: FrameProgress | None = None,
    ) -> tuple[npt.NDArray[np.uint8], dict[str, Any]]:
        """(frames x factor, the recipe's record of how) for uint8 frames (F, H, W, 3) at ``fps``."""
        started = time.perf_counter()

        def progress(done: int, total: int) -> None:
            cancel.raise_if_cancelled()
            if on_frame is not None:
                on_frame(done, total)

        record: dict[str, Any] = {"interpolator": plan.interpolator.value, "factor": plan.factor}
        if plan.interpolator is Interpolator.MINTERPOLATE:
            in_between = minterpolate(frames, fps, plan.factor, progress)
            record["ffmpeg_filter"] = filter_description(fps, plan.factor)
        else:
            loaded = self.rife()
            where = device if plan.device_type == device.type else torch.device(plan.device_type)
            in_between = _rife_frames(loaded, frames, plan, where, progress)
            record["weights"] = loaded.to_dict()
        out = assemble(frames, plan.factor, in_between)
        record |= {
            "source_num_frames": int(frames.shape[0]),
            "source_fps": fps,
            "num_frames": int(out.shape[0]),
            "fps": fps * plan.factor,
            "rule": "N frames at f fps -> N*k frames at k*f fps; source frames kept, the last one held",
            "plan": plan.to_dict(),
            "time_s": round(time.perf_counter() - started, 3),
        }
        return out, record


def _rife_frames(
    loaded: LoadedRife,
    frames: npt.NDArray[np.uint8],
    plan: InterpolationPlan,
    device: torch.device,
    progress: FrameProgress,
) -> dict[int, npt.NDArray[np.uint8]]:
    """RIFE on ``plan.batch_size`` slots at a time; the network goes back to the CPU afterwards."""
    slots = in_between_slots(frames.shape[0], plan.factor)
    dtype = torch_dtype(plan.dtype)
    # The loaded float32 weights on the CPU are the master copy: a run elsewhere or in another dtype works on
    # a copy (a round trip through float16 would not give them back).
    on_master = device.type == "cpu" and dtype == torch.float32
    net = loaded.net if on_master else copy.deepcopy(loaded.net).to(device=device, dtype=dtype)
    out: dict[int, npt.NDArray[np.uint8]] = {}
    try:
        with torch.inference_mode():
            for start in range(0, len(slots), plan.batch_size):
                batch = slots[start : start + plan.batch_size]
                for slot, pixels in zip(batch, _rife_batch(net, frames, batch, device, dtype), strict=True):
                    out[slot.index] = pixels
                progress(min(start + plan.batch_size, len(slots)), len(slots))
    except torch.OutOfMemoryError as exc:
        raise OutOfMemory(
            f"out of memory interpolating {len(slots)} frames with RIFE ({plan.batch_size} at once on "
            f"{device}); use interpolator=minterpolate or a smaller size. ({str(exc).splitlines()[0]})",
            code="oom",
        ) from None
    finally:
        del net
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def _rife_batch(
    net: torch.nn.Module,
    frames: npt.NDArray[np.uint8],
    batch: list[Slot],
    device: torch.device,
    dtype: torch.dtype,
) -> list[npt.NDArray[np.uint8]]:
    def tensor(indices: list[int]) -> torch.Tensor:
        pixels = torch.from_numpy(np.stack([frames[i] for i in indices]))
        return pixels.to(device).permute(0, 3, 1, 2).to(dtype) / 255.0

    first = tensor([slot.source for slot in batch])
    second = tensor([slot.source + 1 for slot in batch])
    timesteps = torch.tensor([slot.timestep for slot in batch], device=device, dtype=dtype)
    middle = net(first, second, timesteps)
    pixels = (middle.float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return list(pixels)
