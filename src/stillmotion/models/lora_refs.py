"""LoRA references: what a request names (``LoraChoice``) and the file it resolves to (``ResolvedLora``).

A reference is either

- a file under the configured LoRA folders (``lora_folders``: ``<data_dir>/loras`` and the models folder),
  named by its path relative to one of them (the CLI also takes any path on its own machine), or
- a file of a Hugging Face repo: ``owner/repo/path/in/repo.safetensors``, optionally ``@revision``.

``resolve_lora`` finds the file (a hub file from the local cache, downloaded when online), checks that it is a
safetensors file (a pickle file is refused: loading one can run code) and records what makes the video
reproducible: the revision, the sha256 of the file, its size, the strength and the expert. Whether it fits
the model (names and shapes) is models/lora.py's ``check_fit``. A file that cannot be had here gets the same
offline advice as a missing model (the command that downloads it). The CLI's ``REF[:STRENGTH[:EXPERT]]`` and
the API's JSON objects are read by ``parse_loras``.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stillmotion import bounded_json
from stillmotion.errors import InvalidRequest, ModelUnavailable

# Which expert of a two-expert model a LoRA goes into: the high-noise one (``transformer``), the low-noise one
# (``transformer_2``) or both. A one-denoiser model takes "both" only (its one denoiser).
EXPERTS = ("both", "high", "low")
MAX_LORAS = 8
MIN_STRENGTH, MAX_STRENGTH = -4.0, 4.0
SAFETENSORS_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
MAX_HEADER_BYTES = 100 * 2**20  # a safetensors header larger than this is not a LoRA
LORAS_MAX_DEPTH = 4  # a list of flat objects: 2 levels (bounded_json: never a RecursionError)
_HUB_REF = re.compile(
    r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*)/(?P<file>[^@]+?)(?:@(?P<rev>[^@/]+))?$"
)


@dataclass(frozen=True)
class LoraChoice:
    """A LoRA as a request names it: a reference, a strength (1 = as trained) and, for two experts, which."""

    ref: str
    strength: float = 1.0
    expert: str = "both"


@dataclass(frozen=True)
class ResolvedLora:
    """A LoRA as it runs and as the recipe records it."""

    reference: str  # as given (the hub form without "@revision")
    source: str  # "file" or "hub"
    path: str  # the local file (the hub file's place in the cache)
    revision: str | None  # the hub commit; None for a local file
    sha256: str
    size_bytes: int
    strength: float
    expert: str

    @property
    def adapter_name(self) -> str:
        """A stable name for diffusers' adapter: the file's content and the expert it goes into."""
        return f"sm_{self.sha256[:16]}_{self.expert}"


def parse_lora_text(text: str) -> LoraChoice:
    """The CLI's ``REF[:STRENGTH[:EXPERT]]`` (read from the right, so a path may hold colons)."""
    parts = text.rsplit(":", 2)
    expert = "both"
    if len(parts) >= 2 and parts[-1] in EXPERTS:
        expert = parts.pop()
    strength = 1.0
    if len(parts) >= 2:
        try:
            strength = float(parts[-1])
            parts.pop()
        except ValueError:
            pass
    ref = ":".join(parts)
    if not ref:
        raise ValueError(f"{text!r} names no LoRA file; write REF[:STRENGTH[:EXPERT]]")
    return LoraChoice(ref=ref, strength=strength, expert=expert)


def parse_loras(value: object) -> tuple[LoraChoice, ...]:
    """A request's ``loras``: a list of objects ``{"ref", "strength", "expert"}`` or CLI-style strings (or a
    JSON text of that list); each checked (``InvalidRequest`` naming ``loras[i]``)."""
    if isinstance(value, str):
        try:
            value = bounded_json.loads(value, max_depth=LORAS_MAX_DEPTH) if value.strip() else []
        except ValueError as exc:
            raise InvalidRequest(f"loras: not valid JSON ({exc}).", field="loras") from None
    if not isinstance(value, list | tuple):
        raise InvalidRequest(
            'loras must be a list of objects like {"ref": "owner/repo/file.safetensors", "strength": 0.8}.',
            field="loras",
        )
    if len(value) > MAX_LORAS:
        raise InvalidRequest(f"loras has {len(value)} entries; at most {MAX_LORAS}.", field="loras")
    return tuple(_one_choice(item, index) for index, item in enumerate(value))


def _one_choice(item: object, index: int) -> LoraChoice:
    where = f"loras[{index}]"
    if isinstance(item, LoraChoice):
        choice = item
    elif isinstance(item, str):
        try:
            choice = parse_lora_text(item)
        except ValueError as exc:
            raise InvalidRequest(f"{where}: {exc}.", field=where) from None
    elif isinstance(item, dict):
        unknown = sorted(set(item) - {"ref", "strength", "expert"})
        if unknown:
            raise InvalidRequest(
                f"{where}: unknown key(s) {', '.join(unknown)}; allowed: ref, strength, expert.", field=where
            )
        # The values are checked below, whatever their types.
        choice = LoraChoice(
            ref=item.get("ref", ""), strength=item.get("strength", 1.0), expert=item.get("expert") or "both"
        )
    else:
        raise InvalidRequest(f"{where} must be an object with ref, strength and expert.", field=where)
    if not isinstance(choice.ref, str) or not choice.ref.strip():
        raise InvalidRequest(f"{where}.ref must name a .safetensors file.", field=f"{where}.ref")
    strength = choice.strength
    if isinstance(strength, bool) or not isinstance(strength, int | float) or not math.isfinite(strength):
        raise InvalidRequest(f"{where}.strength={strength!r} must be a number.", field=f"{where}.strength")
    if not MIN_STRENGTH <= strength <= MAX_STRENGTH:
        raise InvalidRequest(
            f"{where}.strength={strength} is out of range; allowed: {MIN_STRENGTH:g} to {MAX_STRENGTH:g}.",
            field=f"{where}.strength",
        )
    if choice.expert not in EXPERTS:
        raise InvalidRequest(
            f"{where}.expert={choice.expert!r} is not one of {', '.join(EXPERTS)}.", field=f"{where}.expert"
        )
    return LoraChoice(ref=choice.ref.strip(), strength=float(strength), expert=choice.expert)


def resolved_from_dict(data: dict[str, Any]) -> ResolvedLora:
    """A ``ResolvedLora`` read back from a stored request (its ``asdict`` form)."""
    return ResolvedLora(**data)


# -- finding the file -----------------------------------------------------------------------------------


def resolve_lora(
    choice: LoraChoice,
    index: int,
    *,
    folders: list[Path],
    any_local_path: bool,
    cache_dir: Path | None,
    offline: bool,
) -> ResolvedLora:
    """Find ``choice``'s file and record it (module docstring). ``any_local_path``: a path outside
    ``folders`` is taken too (the CLI, on the user's own machine; never the service)."""
    where = f"loras[{index}]"
    ref = choice.ref
    _refuse_pickle(ref, where)
    local = _local_file(ref, folders, any_local_path)
    if local is not None:
        path, revision, source, reference = local, None, "file", ref
    else:
        hub = _HUB_REF.match(ref)
        if hub is None or not hub["file"].endswith(SAFETENSORS_SUFFIX):
            searched = ", ".join(str(folder) for folder in folders) or "no LoRA folder"
            raise InvalidRequest(
                f"{where}.ref={ref!r} is neither a .safetensors file under the LoRA folders ({searched}) nor "
                "a Hugging Face file reference owner/repo/path/file.safetensors[@revision].",
                field=f"{where}.ref",
            )
        path = hub_file(hub["repo"], hub["file"], hub["rev"], cache_dir, offline, f"{where}.ref")
        revision = _commit_of(path)
        source, reference = "hub", f"{hub['repo']}/{hub['file']}"
    _check_safetensors(path, where, ref)
    digest, size = _sha256(path)
    return ResolvedLora(
        reference=reference,
        source=source,
        path=str(path),
        revision=revision,
        sha256=digest,
        size_bytes=size,
        strength=choice.strength,
        expert=choice.expert,
    )


def _refuse_pickle(ref: str, where: str) -> None:
    name = ref.split("@")[0].lower()
    if name.endswith(PICKLE_SUFFIXES):
        raise InvalidRequest(
            f"{where}.ref={ref!r} is a pickle file; only .safetensors LoRAs are loaded (a pickle file can "
            "run code when it is read). Convert it to safetensors first.",
            field=f"{where}.ref",
        )
    if not name.endswith(SAFETENSORS_SUFFIX):
        raise InvalidRequest(
            f"{where}.ref={ref!r} is not a .safetensors file; only safetensors LoRAs are loaded.",
            field=f"{where}.ref",
        )


def _local_file(ref: str, folders: list[Path], any_local_path: bool) -> Path | None:
    """The file ``ref`` names on this machine, if any: under one of ``folders`` (never outside them through
    ``..`` or a link), or anywhere when ``any_local_path``."""
    candidate = Path(ref).expanduser()
    if any_local_path and candidate.is_file():
        return candidate.resolve()
    for folder in folders:
        root = folder.resolve()
        path = (root / candidate).resolve() if not candidate.is_absolute() else candidate.resolve()
        if path.is_file() and path.is_relative_to(root):
            return path
    return None


def download_command(repo: str, filename: str, revision: str | None, folder: str = "loras") -> str:
    """The one command that fetches a hub file (a LoRA) into a folder (then name it as the reference)."""
    rev = f" --revision {revision}" if revision else ""
    return f"hf download {repo} {filename}{rev} --local-dir {folder}"


def hub_file(
    repo: str,
    filename: str,
    revision: str | None,
    cache_dir: Path | None,
    offline: bool,
    field: str,
    *,
    what: str = "LoRA",
    folder: str = "loras",
) -> Path:
    """One file of a hub repo (a LoRA, a GGUF transformer): from the local cache, else downloaded (online).
    Errors name ``field``; the offline advice downloads it into ``folder`` (<data dir>/``folder`` here)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from stillmotion.models import hub_probe

    cache = str(cache_dir) if cache_dir else None
    where = field.removesuffix(".ref")
    advice = (
        "Download it once on a machine with internet access: "
        f"`{download_command(repo, filename, revision, folder)}`, "
        f"copy {folder}/ into this machine's {what} folder (<data dir>/{folder}) and name the file as the "
        "reference."
    )
    cached = try_to_load_from_cache(repo, filename, cache_dir=cache, revision=revision)
    if isinstance(cached, str):
        return Path(cached)
    if offline or not hub_probe.hub_reachable():
        why = "offline mode is on" if offline else "the Hugging Face hub cannot be reached from this machine"
        raise ModelUnavailable(
            f"{where}: the {what} {repo}/{filename} is not in this machine's cache and {why}. {advice}",
            field=field,
            details={what.split()[0].lower(): f"{repo}/{filename}"},
        )
    try:
        path = Path(hf_hub_download(repo, filename, revision=revision, cache_dir=cache))
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError, EntryNotFoundError) as exc:
        raise InvalidRequest(
            f"{field}: the Hugging Face hub has no file {filename!r} in {repo}"
            f"{'@' + revision if revision else ''} (or the repo is private or gated): {type(exc).__name__}.",
            field=field,
        ) from None
    except (LocalEntryNotFoundError, OSError) as exc:
        raise ModelUnavailable(
            f"{where}: the {what} {repo}/{filename} could not be downloaded ({exc}). {advice}",
            field=field,
        ) from None
    return path


def _commit_of(cached: Path) -> str | None:
    """The commit a hub cache path belongs to (``.../snapshots/<commit>/<file>``)."""
    parts = cached.parts
    if "snapshots" in parts:
        index = parts.index("snapshots")
        if index + 1 < len(parts):
            return parts[index + 1]
    return None


def _check_safetensors(path: Path, where: str, ref: str) -> None:
    """A safetensors file by its content (8-byte header length, then a JSON header), not by its name."""
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            (length,) = struct.unpack("<Q", head) if len(head) == 8 else (0,)
            header = handle.read(length) if 2 <= length <= MAX_HEADER_BYTES else b""
        parsed = bounded_json.loads(header, max_bytes=MAX_HEADER_BYTES) if header else None
    except (OSError, ValueError):
        parsed = None
    if not isinstance(parsed, dict):
        raise InvalidRequest(
            f"{where}.ref={ref!r}: {path.name} is not a safetensors file (its header is not readable).",
            field=f"{where}.ref",
        )


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size
