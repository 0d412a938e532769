"""How long frame interpolation adds: ``python -m stillmotion.bench.interpolation`` (one JSON line per run).

Runs the engine's own post-step (``Interpolators.run`` with the plan ``plan_interpolation`` makes for this
device) on a clip with real texture and real motion: the example photo panned a few pixels per frame. RIFE
runs with seeded random weights of the real 4.6 network: its time depends on the architecture and the frame
size, not on the weight values, and it needs no download. Defaults: 512x512, 16 -> 64 frames (4x), on the
CPU, both interpolators, one warm-up and three timed runs each (median, min, max).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from stillmotion.engine.interpolate import Interpolators
from stillmotion.engine.progress import CancelToken
from stillmotion.media.interpolation import Interpolator
from stillmotion.memory.device import DeviceBudget
from stillmotion.memory.interpolation import plan_interpolation
from stillmotion.models.rife import IFNet
from stillmotion.models.rife_loader import LoadedRife, RifeWeights

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "seaside.jpg"
PAN_PX_PER_FRAME = 6


def panning_clip(height: int, width: int, num_frames: int, image: Path = EXAMPLE) -> npt.NDArray[np.uint8]:
    """``num_frames`` crops of the photo, each PAN_PX_PER_FRAME further right: texture that really moves."""
    wide = width + PAN_PX_PER_FRAME * num_frames
    with Image.open(image) as photo:
        scaled = np.asarray(photo.convert("RGB").resize((wide, height)))
    return np.stack(
        [scaled[:, i * PAN_PX_PER_FRAME : i * PAN_PX_PER_FRAME + width] for i in range(num_frames)]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stillmotion.bench.interpolation", description=__doc__)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--interpolator", nargs="+", default=[i.value for i in Interpolator])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    torch.manual_seed(0)
    rife = LoadedRife(IFNet().eval(), RifeWeights(), commit="random-weights", path=Path("random-weights"))
    interpolators = Interpolators(RifeWeights(), rife=rife)
    frames = panning_clip(args.height, args.width, args.num_frames)
    budget = DeviceBudget.measure(device)
    for name in args.interpolator:
        plan = plan_interpolation(
            Interpolator(name), args.factor, args.height, args.width, args.num_frames, budget
        )
        interpolators.run(frames, args.fps, plan, device, CancelToken())  # warm-up
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            out, _ = interpolators.run(frames, args.fps, plan, device, CancelToken())
            times.append(time.perf_counter() - started)
        row = {
            "interpolator": name,
            "size": f"{args.width}x{args.height}",
            "frames_in": args.num_frames,
            "frames_out": int(out.shape[0]),
            "in_between_frames": int(out.shape[0]) - args.num_frames,
            "device": str(device),
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "plan": plan.to_dict(),
            "median_s": round(statistics.median(times), 3),
            "min_s": round(min(times), 3),
            "max_s": round(max(times), 3),
            "per_output_frame_ms": round(1000 * statistics.median(times) / int(out.shape[0]), 1),
            "torch": torch.__version__,
        }
        sys.stdout.write(json.dumps(row) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
