"""In-between frames from ffmpeg's motion-compensated ``minterpolate`` filter, through PyAV's filter graph.

Always available: it ships inside PyAV's ffmpeg, runs on the CPU and needs no weights. The frames go in as
yuv444p (the filter takes no RGB; 4:4:4 keeps full colour resolution) at ``fps`` and come out at fps x factor;
ffmpeg stamps each output frame with its time, so output pts j is the moment j / factor in source frames.
The filter holds back its last frames until it sees what follows, so the last source frame is pushed twice
more (a held frame: the rule in media/interpolation.py) and the graph is flushed. Only the in-between slots
are taken from ffmpeg; the source frames are kept as they were (the YUV round trip would change them by a
level or two).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt

from stillmotion.media.interpolation import in_between_slots

# mci: motion-compensated interpolation; aobmc: overlapped blocks, adaptive; bidir: motion estimated both
# ways; vsbmc: variable-size blocks. ffmpeg's documentation recommends these for the best quality.
FILTER_OPTIONS = "mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1"
FLUSH_FRAMES = 2
PIXEL_FORMAT = "yuv444p"


def filter_description(fps: int, factor: int) -> str:
    """The ffmpeg filter as run, for the recipe."""
    return f"minterpolate=fps={fps * factor}:{FILTER_OPTIONS}"


def minterpolate(
    frames: npt.NDArray[np.uint8],
    fps: int,
    factor: int,
    on_frame: Callable[[int, int], None] | None = None,
) -> dict[int, npt.NDArray[np.uint8]]:
    """The in-between frames of uint8 ``frames`` (F, H, W, 3), keyed by output index (see ``assemble``).

    ``on_frame(done, total)`` is called after each source frame is pushed (progress, and the cancel check).
    """
    count, height, width, _ = frames.shape
    wanted = {slot.index for slot in in_between_slots(count, factor)}
    graph = av.filter.Graph()
    source = graph.add_buffer(
        width=width, height=height, format=av.VideoFormat(PIXEL_FORMAT), time_base=Fraction(1, fps)
    )
    interpolate = graph.add("minterpolate", f"fps={fps * factor}:{FILTER_OPTIONS}")
    sink = graph.add("buffersink")
    source.link_to(interpolate)
    interpolate.link_to(sink)
    graph.configure()

    found: dict[int, npt.NDArray[np.uint8]] = {}

    def drain() -> None:
        while True:
            try:
                frame = graph.vpull()
            except (av.BlockingIOError, av.EOFError):
                return
            if frame.pts in wanted:
                found[int(frame.pts)] = np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)

    pushed = [*frames, *([frames[-1]] * FLUSH_FRAMES)]
    for pts, pixels in enumerate(pushed):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24").reformat(
            format=PIXEL_FORMAT
        )
        frame.pts = pts
        frame.time_base = Fraction(1, fps)
        graph.vpush(frame)
        drain()
        if on_frame is not None and pts < count:
            on_frame(pts + 1, count)
    graph.vpush(None)
    drain()
    missing = sorted(wanted - set(found))
    if missing:  # pragma: no cover - the flush above makes ffmpeg emit every slot
        raise RuntimeError(f"minterpolate returned no frame for output slots {missing[:5]}")
    return found
