"""Regional compilation against the eager reference on the tiny UNet, composed with feed-forward chunking,
and the persistent compile cache read back by a fresh process.

Compiling is slow on the CPU, so one module-scoped compile serves every test here: only the transformer
blocks are compiled (they hold the chunked feed-forwards and the attention), at batch 2 (guidance batched).
Split guidance (batch 1) compiles the same blocks at another shape; it was checked here too until the suite
outgrew its 30 minutes (its inductor compile took 80-100 s of the 2 CI cores).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from stillmotion.memory import chunking
from stillmotion.memory.chunking import disable_ff_chunking, enable_ff_chunking
from stillmotion.models.i2vgen_xl import Conditioning, I2VGenXLComponents, predict_noise
from stillmotion.models.tiny import build_tiny_components
from stillmotion.speed.compile import CompileCache, apply_speed, cache_key, compile_counters, undo_speed
from stillmotion.speed.options import CompileScope, SpeedOptions

TOL = 1e-4  # fp32: inductor reorders reductions, nothing else
BLOCKS = ("BasicTransformerBlock",)
FRAMES, LATENT = 4, 8
GUIDANCE = 9.0


def _conditioning() -> Conditioning:
    gen = torch.Generator().manual_seed(3)
    return Conditioning(
        prompt_embeds=torch.randn(1, 77, 32, generator=gen),
        negative_prompt_embeds=torch.randn(1, 77, 32, generator=gen),
        image_embeds=torch.randn(1, 1, 32, generator=gen),
        image_latents=torch.randn(1, 4, FRAMES, LATENT, LATENT, generator=gen),
        fps=8,
    )


def _latents() -> torch.Tensor:
    return torch.randn(1, 4, FRAMES, LATENT, LATENT, generator=torch.Generator().manual_seed(4))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Eager references, then the same UNet regionally compiled under ff chunking (one compile per module)."""
    cache_dir = tmp_path_factory.mktemp("compile-cache")
    components = I2VGenXLComponents(**build_tiny_components(seed=0))
    unet = components.unet.eval()
    cond, latents, timestep = _conditioning(), _latents(), torch.tensor(500)

    def step(split: bool) -> torch.Tensor:
        return predict_noise(components, latents, timestep, cond, GUIDANCE, split)

    ref = step(split=False)
    with pytest.MonkeyPatch.context() as mp:
        # Chunk caps of a few KiB instead of MiB, so the tiny model's feed-forwards really split (2-4 chunks).
        mp.setattr(chunking, "MIB", 32 * 1024)
        assert enable_ff_chunking(unet, 1) > 0
        chunked_eager = step(split=False)
        # apply_speed points TORCHINDUCTOR_CACHE_DIR / TRITON_CACHE_DIR at the cache: undone after the module.
        mp.setenv("TORCHINDUCTOR_CACHE_DIR", "")
        mp.setenv("TRITON_CACHE_DIR", "")
        torch._dynamo.reset()
        options = SpeedOptions(compile=CompileScope.REGIONAL)
        applied = apply_speed({"unet": unet}, options, torch.device("cpu"), cache_dir, blocks=BLOCKS)
        batched = step(split=False)
        saved = CompileCache(cache_dir).save(cache_key(torch.device("cpu"), torch.float32, latents.shape))
        counters = compile_counters()
        undo_speed({"unet": unet})
        disable_ff_chunking(unet)
        yield {
            "unet": unet,
            "step": step,
            "ref": ref,
            "chunked_eager": chunked_eager,
            "batched": batched,
            "applied": applied,
            "saved": saved,
            "cache_dir": cache_dir,
            "counters": counters,
        }
        torch._dynamo.reset()


def test_chunking_alone_is_exact(compiled: dict[str, Any]) -> None:
    torch.testing.assert_close(compiled["chunked_eager"], compiled["ref"], atol=TOL, rtol=TOL)


def test_regional_compile_with_ff_chunking_matches_eager(compiled: dict[str, Any]) -> None:
    applied = compiled["applied"]
    assert applied["compile"] == "regional" and applied["compiled_modules"] == 9  # 9 transformer blocks
    assert applied["approximate"] is False
    assert compiled["counters"]["fxgraph_cache_miss"] > 0  # inductor really compiled something
    torch.testing.assert_close(compiled["batched"], compiled["ref"], atol=TOL, rtol=TOL)


def test_undo_restores_the_eager_unet(compiled: dict[str, Any]) -> None:
    unet = compiled["unet"]
    assert all(getattr(m, "_compiled_call_impl", None) is None for m in unet.modules())
    torch.testing.assert_close(compiled["step"](split=False), compiled["ref"], atol=0, rtol=0)


def test_cache_dir_is_populated(compiled: dict[str, Any]) -> None:
    cache = CompileCache(compiled["cache_dir"])
    assert compiled["saved"] is not None and compiled["saved"].stat().st_size > 0
    assert any(p.is_relative_to(cache.inductor_dir) for p in cache.files())


SECOND_PROCESS = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    from stillmotion.memory import chunking
    from stillmotion.memory.chunking import enable_ff_chunking
    from stillmotion.models.i2vgen_xl import I2VGenXLComponents, predict_noise
    from stillmotion.models.tiny import build_tiny_components
    from stillmotion.speed.compile import apply_speed, compile_counters
    from stillmotion.speed.options import CompileScope, SpeedOptions
    from tests.speed.test_compile import BLOCKS, GUIDANCE, _conditioning, _latents

    components = I2VGenXLComponents(**build_tiny_components(seed=0))
    chunking.MIB = 32 * 1024
    enable_ff_chunking(components.unet.eval(), 1)
    applied = apply_speed({"unet": components.unet}, SpeedOptions(compile=CompileScope.REGIONAL),
                          torch.device("cpu"), Path(sys.argv[1]), blocks=BLOCKS)
    predict_noise(components, _latents(), torch.tensor(500), _conditioning(), GUIDANCE, False)
    loaded = applied["compile_cache"]["artifacts_loaded"]
    sys.stdout.write(json.dumps({**compile_counters(), "loaded": loaded}))
    """
)


def test_a_fresh_process_compiles_from_the_cache(compiled: dict[str, Any]) -> None:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", SECOND_PROCESS, str(compiled["cache_dir"])],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    counters = json.loads(result.stdout.strip().splitlines()[-1])
    assert counters["loaded"] == 1  # the mega-cache artifact saved by the first process
    assert counters["fxgraph_cache_hit"] > 0
    assert counters["fxgraph_cache_miss"] == 0  # nothing compiled from scratch
