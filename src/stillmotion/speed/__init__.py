"""Fast denoising steps: exact speed options (compile, attention backend, CUDA graphs) and a labelled preview.

Start with ``options.choose_speed`` (pure: which options compose with a memory plan), then
``compile.apply_speed`` / ``undo_speed`` (effects on the UNet); ``bench`` is the GPU benchmark of issue 5.
"""

from stillmotion.speed.compile import CompileCache, apply_speed, cache_key, mark_step_begin, undo_speed
from stillmotion.speed.options import (
    EAGER,
    AttentionBackend,
    CompileScope,
    SpeedOptions,
    choose_speed,
    conflicts,
)

__all__ = [
    "EAGER",
    "AttentionBackend",
    "CompileCache",
    "CompileScope",
    "SpeedOptions",
    "apply_speed",
    "cache_key",
    "choose_speed",
    "conflicts",
    "mark_step_begin",
    "undo_speed",
]
