"""Measure what the embedding cache saves: encoder time of a first vs a repeated generation.

Builds I2VGen-XL's full-size CLIP text and vision towers (ViT-H/14, from the shipped configs, random
weights, no download), then encodes a prompt, the default negative prompt and an image twice through
stillmotion's EmbeddingCache on the chosen device. Prints one JSON line and appends it to
bench/results/embedding-cache-<device>.jsonl.

    python scripts/measure_embedding_cache.py [--device cpu|cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from stillmotion.engine.cache import EmbeddingCache
from stillmotion.models.i2vgen_xl import I2VGenXLComponents, encode_image, encode_text
from stillmotion.models.registry import I2VGENXL_NEGATIVE_PROMPT
from stillmotion.models.tiny import build_tiny_tokenizer

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "stillmotion" / "models" / "configs" / "i2vgen-xl"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32

    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig.from_json_file(CONFIGS / "text_encoder" / "config.json"))
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig.from_json_file(CONFIGS / "image_encoder" / "config.json")
    )
    components = I2VGenXLComponents(
        # Only the encoders run here; the VAE stand-in just answers vae_scale_factor (8, four blocks).
        unet=None,
        vae=SimpleNamespace(config=SimpleNamespace(block_out_channels=[1, 1, 1, 1])),
        text_encoder=text_encoder.to(device, dtype).eval(),
        image_encoder=image_encoder.to(device, dtype).eval(),
        tokenizer=build_tiny_tokenizer(),  # token ids, not vocabulary, decide the cost: 77 tokens either way
        feature_extractor=CLIPImageProcessor.from_pretrained(str(CONFIGS / "feature_extractor")),
        scheduler=None,
    )
    from PIL import Image

    image = Image.new("RGB", (768, 512), (120, 90, 200))

    def one_generation(cache: EmbeddingCache) -> float:
        started = time.perf_counter()
        for text in ("gentle waves roll in under a setting sun", I2VGENXL_NEGATIVE_PROMPT):
            cache.get_or_compute(
                ("m", "text", text), lambda t=text: encode_text(components, t, device), device
            )
        cache.get_or_compute(
            ("m", "image", "sha", 512), lambda: encode_image(components, image, 512, device), device
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    misses, hits = [], []
    for _ in range(args.repeats):
        cache = EmbeddingCache(capacity=8)
        misses.append(one_generation(cache))
        hits.append(one_generation(cache))
    row = {
        "measurement": "embedding_cache",
        "command": "python scripts/measure_embedding_cache.py " + " ".join(sys.argv[1:]),
        "device": str(device),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "dtype": str(dtype),
        "encoders": "CLIP ViT-H/14 text (353M params) + vision (632M params), random weights",
        "first_generation_encode_s": round(statistics.median(misses), 4),
        "repeat_generation_encode_s": round(statistics.median(hits), 4),
        "saved_s": round(statistics.median(misses) - statistics.median(hits), 4),
        "repeats": args.repeats,
    }
    line = json.dumps(row)
    sys.stdout.write(line + "\n")
    results = (
        Path(__file__).resolve().parents[1] / "bench" / "results" / f"embedding-cache-{device.type}.jsonl"
    )
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a") as handle:
        handle.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
