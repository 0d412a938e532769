"""Resolve a request once, where it enters: the model's spec, its LoRA files, then
``GenerationRequest.resolve``.

The engine takes a ``ResolvedRequest`` and resolves nothing (engine/engine.py); its callers resolve first:
the CLI (generate, plan, batches), the worker, the service's plan and the benchmark. ``model_spec`` is the one
lookup of a model name under the deployment's settings (an unregistered repo id's family is read from the
repo itself, so it is planned and run as what it is); the engine uses it too, to find the model it runs.
``resolve_loras`` finds each LoRA file (models/lora_refs.py) and checks that it fits the model
(models/lora.py), so a job is never queued with a LoRA that cannot load.
"""

from __future__ import annotations

from pathlib import Path

from stillmotion.config import Settings
from stillmotion.engine.request import GenerationRequest, ResolvedRequest
from stillmotion.errors import InvalidRequest
from stillmotion.models.gguf import GgufWeights
from stillmotion.models.lora_refs import LoraChoice, ResolvedLora, resolve_lora
from stillmotion.models.registry import ModelSpec
from stillmotion.models.repo_spec import find_spec


def model_spec(name: str, settings: Settings, *, folders: bool = True) -> ModelSpec:
    """The spec of the model ``name`` (a registered name, a repo id or, with ``folders``, a local folder)."""
    return find_spec(name, cache_dir=settings.models_dir, offline=settings.offline, folders=folders)


def lora_folders(settings: Settings) -> list[Path]:
    """Where a LoRA named by a relative path is looked for: ``<data_dir>/loras``, then the models folder."""
    folders = [settings.data_dir / "loras"]
    if settings.models_dir is not None:
        folders.append(settings.models_dir)
    return folders


def resolve_loras(
    request: GenerationRequest, spec: ModelSpec, settings: Settings, *, any_local_path: bool = False
) -> tuple[ResolvedLora, ...]:
    """The request's LoRAs, then the fast choice's, each found, hashed and checked against the model.

    ``any_local_path``: a file anywhere on this machine is taken (the CLI); the service takes files under
    ``lora_folders`` only, so a client cannot make the server read an arbitrary file."""
    choices = list(request.loras or ())
    if request.fast and spec.fast is not None:
        choices += [LoraChoice(ref=ref, expert=expert) for ref, expert in spec.fast.loras]
    if not choices:
        return ()
    if spec.family != "wan":
        raise InvalidRequest(
            f"loras cannot be used with {spec.name}: LoRAs are supported for the Wan models.", field="loras"
        )
    from stillmotion.models.adapters import family_of
    from stillmotion.models.lora import check_fit, meta_components

    resolved = tuple(
        resolve_lora(
            choice,
            index,
            folders=lora_folders(settings),
            any_local_path=any_local_path,
            cache_dir=settings.models_dir,
            offline=settings.offline,
        )
        for index, choice in enumerate(choices)
    )
    family = family_of(spec)
    model = meta_components(family, spec)
    for index, lora in enumerate(resolved):
        check_fit(family, model, lora, index, spec.name)
    return resolved


def resolve_transformer_gguf(
    request: GenerationRequest,
    spec: ModelSpec,
    settings: Settings,
    *,
    any_local_path: bool = False,
    expert: str = "transformer",
) -> GgufWeights | None:
    """The request's GGUF file for ``expert`` ("transformer", or a two-expert model's "transformer_2"),
    found, read and checked against that transformer of the model (names and sizes), so a job is never
    queued with a file that cannot load; None when it names none. A model that takes none is refused by
    ``GenerationRequest.resolve``, before any file is read."""
    field = f"{expert}_gguf"
    ref = (getattr(request, field) or "").strip()
    usable = spec.accepts_gguf and (expert == "transformer" or spec.experts is not None)
    if not ref or not usable:
        return None
    from stillmotion.models.adapters import family_of
    from stillmotion.models.gguf import check_fit, gguf_folders, resolve_gguf
    from stillmotion.models.lora import meta_components

    family = family_of(spec)
    weights = resolve_gguf(
        ref,
        family,
        folders=gguf_folders(settings.data_dir, settings.models_dir),
        any_local_path=any_local_path,
        cache_dir=settings.models_dir,
        offline=settings.offline,
        field=field,
    )
    check_fit(weights, family, getattr(meta_components(family, spec), expert), spec.name)
    return weights


def resolve_gguf_files(
    request: GenerationRequest, spec: ModelSpec, settings: Settings, *, any_local_path: bool
) -> tuple[GgufWeights | None, GgufWeights | None]:
    """The request's GGUF files: ``transformer_gguf``'s and ``transformer_2_gguf``'s (None where unnamed)."""
    return (
        resolve_transformer_gguf(request, spec, settings, any_local_path=any_local_path),
        resolve_transformer_gguf(
            request, spec, settings, any_local_path=any_local_path, expert="transformer_2"
        ),
    )


def resolve(
    request: GenerationRequest,
    settings: Settings,
    image_size: tuple[int, int] | None,
    *,
    need_prompt: bool = True,
    any_local_path: bool = True,
    last_image_sha256: str | None = None,
) -> ResolvedRequest:
    """``request`` checked against its model (the settings' default when it names none) and completed;
    ``image_size`` is the input's (width, height). ``need_prompt=False`` (planning only) takes an empty
    prompt: memory does not depend on the words. ``any_local_path``: LoRA files anywhere on this machine
    (the CLI's own); ``last_image_sha256``: the content hash of the ``last_image`` the caller loaded."""
    spec = model_spec(request.model or settings.default_model, settings)
    loras = resolve_loras(request, spec, settings, any_local_path=any_local_path)
    gguf, gguf_2 = resolve_gguf_files(request, spec, settings, any_local_path=any_local_path)
    return request.resolve(
        spec,
        image_size,
        need_prompt=need_prompt,
        loras=loras,
        last_image_sha256=last_image_sha256,
        transformer_gguf=gguf,
        transformer_2_gguf=gguf_2,
    )
