"""Test LoRAs for the tiny Wan builds, made with peft and diffusers' own save function.

``make_lora`` adds a peft LoRA (random, not zero: ``init_lora_weights=False``) to a tiny transformer of the
right architecture and saves it with ``WanImageToVideoPipeline.save_lora_weights``, adapter metadata kept
(without it diffusers falls back to alpha = rank). ``to_kohya`` writes the same weights in the
kohya/ComfyUI-style names most Wan LoRAs are published in; no library writes that format, so the names are
renamed here, and loading still goes through diffusers' converters.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import WanImageToVideoPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

from stillmotion.models import tiny

RANK, ALPHA = 4, 8
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]
# diffusers' Wan layer names -> the original Wan names the kohya/ComfyUI files use.
KOHYA_NAMES = {
    "attn1": "self_attn",
    "attn2": "cross_attn",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "o",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}


def make_lora(folder: Path, *, seed: int = 11, experts: bool = True, name: str = "lora.safetensors") -> Path:
    """A diffusers-native LoRA file for the tiny Wan transformer (A14B's when ``experts``, else 2.1 I2V's)."""
    transformer = tiny.build_tiny_wan_components(0, experts=experts)["transformer"]
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, init_lora_weights=False)
    torch.manual_seed(seed)
    transformer.add_adapter(config)
    layers = get_peft_model_state_dict(transformer)
    WanImageToVideoPipeline.save_lora_weights(
        str(folder),
        transformer_lora_layers=layers,
        transformer_lora_adapter_metadata=config.to_dict(),
        weight_name=name,
    )
    return folder / name


def to_kohya(native: Path, out: Path) -> Path:
    """The same LoRA in kohya/ComfyUI names (diffusion_model.blocks.N.self_attn.q.lora_down.weight)."""
    state = load_file(str(native))
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        name = key.removeprefix("transformer.")
        layer, _, kind = name.partition(".lora_")
        for ours, theirs in KOHYA_NAMES.items():
            layer = layer.replace(f".{ours}", f".{theirs}")
        down = kind.startswith("A.")
        converted[f"diffusion_model.{layer}.{'lora_down' if down else 'lora_up'}.weight"] = tensor
        if down:
            converted[f"diffusion_model.{layer}.alpha"] = torch.tensor(float(ALPHA))
    save_file(converted, str(out))
    return out
