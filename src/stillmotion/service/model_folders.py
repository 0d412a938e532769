"""What the API and the web UI may name as a model, and how answers name server files.

A REST client must not choose server folders: a request's ``model`` is a registered name, a Hugging Face repo
id, or a folder under one of the configured model roots (``STILLMOTION_MODEL_DIRS``, none by default), named
by its path relative to that root (``api_model_spec``). Anything else gets one answer, whether or not such a
folder exists, so a caller learns nothing about the server's disk. The CLI, run by the machine's own user,
takes any folder (engine/resolve.py).

``public_text`` rewrites a message for a client: paths under a model root relative to it, Hugging Face cache
paths as the repo id and the file in it, the data folder as ``<data>``, the models folder (``models_dir``) as
``<models>``, the home folder as ``~``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from stillmotion.config import Settings
from stillmotion.engine.resolve import model_spec
from stillmotion.models.registry import ModelSpec

# .../models--owner--name/snapshots/<hash>/file -> owner/name/file (the hub forbids "--" inside either part)
_HUB_CACHE_PATH = re.compile(
    r"(?:/[^/\s'\"]+)*/models--([A-Za-z0-9_.-]+?)--([A-Za-z0-9_.-]+)(?:/(?:snapshots|blobs|refs)/[^/\s'\"]+)?"
)


def model_folder(name: str, roots: tuple[Path, ...]) -> Path | None:
    """The folder ``name`` names under one of ``roots`` (relative to it, or absolute inside it), or None."""
    if not name or "\x00" in name:
        return None
    for root in roots:
        candidate = Path(name) if os.path.isabs(name) else root / name
        try:
            folder = candidate.resolve()
            inside = os.path.commonpath([root, folder]) == str(root)
            if inside and folder.is_dir():
                return folder
        except (OSError, ValueError):  # a name the OS cannot look up (too long, bad bytes)
            continue
    return None


def api_model_spec(name: str, settings: Settings) -> ModelSpec:
    """The spec of a model a client named: registered, a repo id, or a folder under the model roots."""
    folder = model_folder(name.strip(), settings.model_roots)
    if folder is not None:
        return model_spec(str(folder), settings)
    return model_spec(name, settings, folders=False)


def public_text(text: str, settings: Settings) -> str:
    """``text`` without the server's file layout (module docstring)."""
    text = _HUB_CACHE_PATH.sub(lambda m: f"{m.group(1)}/{m.group(2)}", text)
    places = [(root, "") for root in settings.model_roots]
    places.append((settings.data_dir.resolve(), "<data>"))
    if settings.models_dir is not None:  # the hub cache (paths in it are repo ids by now) and LoRA folder
        places.append((settings.models_dir.expanduser().resolve(), "<models>"))
    places.append((Path.home(), "~"))
    for folder, shown in sorted(places, key=lambda place: -len(str(place[0]))):
        prefix = str(folder)
        if len(prefix) > 1:
            text = text.replace(prefix + "/", f"{shown}/" if shown else "").replace(prefix, shown or ".")
    return text
