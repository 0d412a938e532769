"""LoRAs in a loaded model, through diffusers' own loaders: load, weigh, fuse, and take them out again.

``LoraState.apply(family, components, loras, fuse)`` makes the model carry exactly ``loras`` (resolved by
models/lora_refs.py) and nothing else:

- each LoRA is read by the family's pipeline class (``ModelFamily.lora_host``: for Wan, WanLoraLoaderMixin's
  ``load_lora_weights``, whose converters take diffusers-native files and the kohya/ComfyUI-style files most
  Wan LoRAs are published in), into the expert(s) its ``expert`` names: "high" -> ``transformer``, "low" ->
  ``transformer_2``, "both" -> each one the model has;
- ``set_adapters`` gets the whole set with per-expert strengths every time (diffusers switches off any adapter
  left out of the call);
- with ``fuse`` the set is merged into the weights (``fuse_lora``: no extra work per step); a changed set is
  unfused and unloaded first, so nothing of one job's LoRAs reaches the next job. The same set with the same
  strengths is kept as it is between jobs.

``check_fit`` reads a file through the same converters before a job is queued and compares every layer it
names with the model's denoiser (built on the meta device: no weights), so a LoRA of another model or size is
refused with its name and the reason.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stillmotion.errors import InvalidRequest, ModelUnavailable
from stillmotion.models.lora_refs import ResolvedLora, _sha256

logger = logging.getLogger(__name__)

EXPERT_MODULES = {
    "high": ("transformer",),
    "low": ("transformer_2",),
    "both": ("transformer", "transformer_2"),
}


@dataclass(frozen=True)
class AppliedLoras:
    """What a model carries now: (adapter name, expert, strength) per LoRA, and whether they are fused."""

    adapters: tuple[tuple[str, str, float], ...] = ()
    fused: bool = False

    @property
    def names(self) -> tuple[tuple[str, str], ...]:
        return tuple((name, expert) for name, expert, _ in self.adapters)


def targets(expert: str, has_second: bool) -> tuple[str, ...]:
    """The denoisers a LoRA goes into: a one-denoiser model has ``transformer`` only."""
    return EXPERT_MODULES[expert] if has_second else ("transformer",)


class LoraState:
    """The LoRAs one loaded model carries; ``apply`` changes them to a job's set (module docstring)."""

    def __init__(self) -> None:
        self.applied = AppliedLoras()

    def apply(self, family: Any, components: Any, loras: tuple[ResolvedLora, ...], *, fuse: bool) -> bool:
        """Make ``components`` carry ``loras`` (fused or not); True when anything changed."""
        wanted = AppliedLoras(
            tuple((lora.adapter_name, lora.expert, lora.strength) for lora in loras), fuse and bool(loras)
        )
        if wanted == self.applied:
            return False
        host = family.lora_host(components)
        if host is None:
            raise InvalidRequest(f"loras: the {family.name} family takes no LoRAs.", field="loras")
        modules = self._denoisers(components)
        if self.applied.fused:
            host.unfuse_lora(components=modules)
        if wanted.names != self.applied.names:
            if self.applied.adapters:
                host.unload_lora_weights()  # every adapter out: the plain weights again
            for lora in loras:
                self._load(host, components, lora)
        self.applied = AppliedLoras(wanted.adapters, False)
        if loras:
            has_second = getattr(components, "transformer_2", None) is not None
            host.set_adapters(
                [lora.adapter_name for lora in loras],
                [{module: lora.strength for module in targets(lora.expert, has_second)} for lora in loras],
            )
            if wanted.fused:
                host.fuse_lora(components=modules, adapter_names=[lora.adapter_name for lora in loras])
                self.applied = wanted
        return True

    def clear(self, family: Any, components: Any) -> None:
        """Take every LoRA out (before the model is unloaded or replaced)."""
        with contextlib.suppress(Exception):  # a model being thrown away: nothing to keep consistent
            self.apply(family, components, (), fuse=False)
        self.applied = AppliedLoras()

    @staticmethod
    def _denoisers(components: Any) -> list[str]:
        return [
            name for name in ("transformer", "transformer_2") if getattr(components, name, None) is not None
        ]

    @staticmethod
    def _load(host: Any, components: Any, lora: ResolvedLora) -> None:
        path = Path(lora.path)
        digest = _sha256(path)[0] if path.is_file() else None
        if digest != lora.sha256:
            raise ModelUnavailable(
                f"the LoRA {lora.reference} changed or vanished since the job was accepted (its sha256 was "
                f"{lora.sha256[:12]}..., now {digest[:12] + '...' if digest else 'no file'}); submit it "
                "again.",
                field="loras",
            )
        has_second = getattr(components, "transformer_2", None) is not None
        for module in targets(lora.expert, has_second):
            host.load_lora_weights(
                str(path.parent),
                weight_name=path.name,
                adapter_name=lora.adapter_name,
                load_into_transformer_2=module == "transformer_2",
                local_files_only=True,
            )


# -- fitting the model ----------------------------------------------------------------------------------


def check_fit(family: Any, components_or_meta: Any, lora: ResolvedLora, index: int, model_name: str) -> None:
    """Refuse (``InvalidRequest`` naming the LoRA and the reason) a file whose layers are not the model's.

    ``components_or_meta``: the model's components, or ones built on the meta device (``meta_denoisers``).
    """
    where = f"loras[{index}]"
    host = family.lora_host(components_or_meta)
    if host is None:
        raise InvalidRequest(f"{where}: {model_name} takes no LoRAs (Wan models do).", field=where)
    try:
        state = host.lora_state_dict(str(Path(lora.path).parent), weight_name=Path(lora.path).name)
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise InvalidRequest(
            f"{where}: {lora.reference} is not a LoRA of a Wan model that diffusers can read "
            f"({type(exc).__name__}: {str(exc)[:200]}).",
            field=where,
        ) from None
    state_dict = state[0] if isinstance(state, tuple) else state
    denoiser = components_or_meta.transformer
    modules = dict(denoiser.named_modules())
    problems: list[str] = []
    matched = 0
    for key, tensor in state_dict.items():
        if not key.startswith("transformer.") or not (".lora_A." in key or ".lora_B." in key):
            if key.startswith("transformer.") and key.endswith(
                (".alpha", ".diff", ".diff_b", ".lora_magnitude_vector")
            ):
                continue
            problems.append(f"{key} (not a layer of the denoiser)")
            continue
        path, _, rest = key[len("transformer.") :].partition(".lora_")
        module = modules.get(path)
        if module is None:
            problems.append(f"{path} (no such layer)")
            continue
        shape = tuple(tensor.shape)
        if rest.startswith("A.") and isinstance(module, torch.nn.Linear) and shape[1] != module.in_features:
            problems.append(f"{path} takes {module.in_features} inputs, the LoRA {shape[1]}")
        elif (
            rest.startswith("B.") and isinstance(module, torch.nn.Linear) and shape[0] != module.out_features
        ):
            problems.append(f"{path} gives {module.out_features} outputs, the LoRA {shape[0]}")
        else:
            matched += 1
    if problems or not matched:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise InvalidRequest(
            f"{where}: {lora.reference} does not fit {model_name}: "
            f"{shown or 'it names no layer of the model'}. "
            "It is probably a LoRA of another model or size.",
            field=where,
        )


def meta_components(family: Any, spec: Any) -> Any:
    """The model's networks without weights (meta device), enough for ``check_fit`` before anything loads;
    a tiny model is simply built."""
    if spec.tiny:
        return family.build_tiny(spec, seed=0)
    from accelerate import init_empty_weights

    from stillmotion.models.random_full import config_dir

    folder = spec.local_path if spec.local_path is not None else config_dir(spec)
    builders = family.network_builders(folder)
    with init_empty_weights():
        networks = {name: builders[name]() for name in ("transformer", "transformer_2") if name in builders}
    return _MetaDenoisers(networks.get("transformer"), networks.get("transformer_2"))


@dataclass
class _MetaDenoisers:
    """Just the denoisers, for ``family.lora_host`` of a model that is not loaded."""

    transformer: Any
    transformer_2: Any = None
