"""Resolve a request once, where it enters: the model's spec, then ``GenerationRequest.resolve``.

The engine takes a ``ResolvedRequest`` and resolves nothing (engine/engine.py); its callers resolve first:
the CLI (generate, plan, batches), the worker, the service's plan and the benchmark. ``model_spec`` is the one
lookup of a model name under the deployment's settings (an unregistered repo id's family is read from the
repo itself, so it is planned and run as what it is); the engine uses it too, to find the model it runs.
"""

from __future__ import annotations

from stillmotion.config import Settings
from stillmotion.engine.request import GenerationRequest, ResolvedRequest
from stillmotion.models.registry import ModelSpec
from stillmotion.models.repo_spec import find_spec


def model_spec(name: str, settings: Settings, *, folders: bool = True) -> ModelSpec:
    """The spec of the model ``name`` (a registered name, a repo id or, with ``folders``, a local folder)."""
    return find_spec(name, cache_dir=settings.models_dir, offline=settings.offline, folders=folders)


def resolve(
    request: GenerationRequest,
    settings: Settings,
    image_size: tuple[int, int] | None,
    *,
    need_prompt: bool = True,
) -> ResolvedRequest:
    """``request`` checked against its model (the settings' default when it names none) and completed;
    ``image_size`` is the input's (width, height). ``need_prompt=False`` (planning only) takes an empty
    prompt: memory does not depend on the words."""
    spec = model_spec(request.model or settings.default_model, settings)
    return request.resolve(spec, image_size, need_prompt=need_prompt)
