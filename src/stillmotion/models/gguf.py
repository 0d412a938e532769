"""GGUF transformers: a quantized denoiser file, as users download them (Q8_0, Q6_K, Q5_K, Q4_K...).

A request names the file in ``transformer_gguf`` (engine/request.py): a ``.gguf`` file under the model
folders (``gguf_folders``: ``<data_dir>/models`` and the models folder; the CLI also takes any path on its own
machine) or a Hugging Face file ``owner/repo/path/file.gguf[@revision]``, found the way a LoRA file is
(models/lora_refs.py). The model the request names gives every other component and the transformer's config;
only the transformer's weights come from the file. Start at ``resolve_gguf``:

1. ``resolve_gguf`` finds the file, checks it is GGUF by its content and reads its tensor table (no weights):
   which quantization types it holds and how many bytes the loaded transformer will take (``GgufWeights``,
   the planner's weight bytes; memory/weight_formats.py);
2. ``check_fit`` renames the tensors with diffusers' own single-file converter and compares them with the
   model's transformer (names and sizes), so the file of another model or size is refused before a job runs;
3. ``load_gguf_transformer`` loads it through diffusers (``from_single_file``, ``GGUFQuantizationConfig``):
   the quantized linear weights stay quantized in memory and are dequantized layer by layer as they run.

The output is APPROXIMATE (the weights were rounded): the request's ``approximations`` say so with the format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stillmotion.errors import InvalidRequest, ModelUnavailable
from stillmotion.models.lora_refs import _HUB_REF, _commit_of, _local_file, _sha256, hub_file

GGUF_SUFFIX = ".gguf"
GGUF_MAGIC = b"GGUF"
FLOAT_TYPES = ("F32", "F16")  # diffusers loads these as plain tensors (cast to the run's dtype)
# The transformer classes diffusers' single-file loader converts GGUF files into, per family.
TRANSFORMER_CLASSES = {"wan": "WanTransformer3DModel", "ltx": "LTXVideoTransformer3DModel"}
FIELD = "transformer_gguf"
# Wan 2.2 A14B's low-noise expert (transformer_2) takes a file of its own.
FIELD_2 = "transformer_2_gguf"


@dataclass(frozen=True)
class GgufWeights:
    """A GGUF transformer file as it runs and as the recipe records it."""

    reference: str  # as given (the hub form without "@revision")
    source: str  # "file" or "hub"
    path: str
    revision: str | None
    sha256: str
    size_bytes: int
    quant: str  # the type holding most of the weights, e.g. "Q8_0": the format's name
    types: dict[str, int]  # tensors per GGML type in the file
    # Loaded bytes (diffusers' rules): quantized tensors stay as in the file; float tensors take the run's
    # dtype; the modules the transformer keeps in float32 (norms, time embedding) are float32, dequantized.
    quantized_bytes: int
    float_params: int
    fp32_params: int
    # The request field that named it: FIELD, or FIELD_2 for a two-expert model's low-noise expert.
    field: str = FIELD

    @property
    def label(self) -> str:
        return f"GGUF {self.quant}"

    def weight_bytes(self, dtype: str) -> int:
        """The transformer's weight bytes in memory when it runs in ``dtype`` (float32, bfloat16, float16)."""
        per_param = 4 if dtype == "float32" else 2
        return self.quantized_bytes + self.float_params * per_param + self.fp32_params * 4


def gguf_from_dict(data: dict[str, Any]) -> GgufWeights:
    """A ``GgufWeights`` read back from a stored request (its ``asdict`` form)."""
    return GgufWeights(**data)


def gguf_folders(data_dir: Path, models_dir: Path | None) -> list[Path]:
    """Where a GGUF file named by a relative path is looked for: ``<data_dir>/models``, the models folder."""
    return [data_dir / "models", *([models_dir] if models_dir is not None else [])]


def resolve_gguf(
    ref: str,
    family: Any,
    *,
    folders: list[Path],
    any_local_path: bool,
    cache_dir: Path | None,
    offline: bool,
    field: str = FIELD,
) -> GgufWeights:
    """Find ``ref``'s file and read its tensor table (module docstring); ``InvalidRequest`` names ``field``
    (the request field that named it)."""
    ref = ref.strip()
    if not ref.split("@")[0].lower().endswith(GGUF_SUFFIX):
        raise InvalidRequest(
            f"{field}={ref!r} is not a .gguf file; name a GGUF transformer file under the model folders or "
            "a Hugging Face file owner/repo/path/file.gguf[@revision].",
            field=field,
        )
    local = _local_file(ref, folders, any_local_path)
    if local is not None:
        path, revision, source, reference = local, None, "file", ref
    else:
        hub = _HUB_REF.match(ref)
        if hub is None:
            searched = ", ".join(str(folder) for folder in folders) or "no model folder"
            raise InvalidRequest(
                f"{field}={ref!r} is neither a .gguf file under the model folders ({searched}) nor a Hugging "
                "Face file reference owner/repo/path/file.gguf[@revision].",
                field=field,
            )
        path = hub_file(
            hub["repo"], hub["file"], hub["rev"], cache_dir, offline, field, what="GGUF file", folder="models"
        )
        revision, source, reference = _commit_of(path), "hub", f"{hub['repo']}/{hub['file']}"
    tensors = read_tensor_table(path, ref, field)
    keep_fp32 = tuple(getattr(_transformer_class(family), "_keep_in_fp32_modules", None) or ())
    facts = _loaded_facts(tensors, family, keep_fp32)
    digest, size = _sha256(path)
    return GgufWeights(
        reference=reference,
        source=source,
        path=str(path),
        revision=revision,
        sha256=digest,
        size_bytes=size,
        field=field,
        **facts,
    )


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a GGUF file: its name, GGML type, element count, byte count and (logical) shape."""

    name: str
    type: str
    elements: int
    bytes: int
    shape: tuple[int, ...]


def read_tensor_table(path: Path, ref: str, field: str = FIELD) -> list[TensorInfo]:
    """The file's tensors (names, types, sizes; the weights stay on disk); not GGUF: ``InvalidRequest``."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelUnavailable(f"{field}={ref!r}: {path} cannot be read ({exc}).", field=field) from None
    if magic != GGUF_MAGIC:
        raise InvalidRequest(
            f"{field}={ref!r}: {path.name} is not a GGUF file (it does not start with the GGUF magic).",
            field=field,
        )
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError, IndexError) as exc:
        raise InvalidRequest(
            f"{field}={ref!r}: {path.name} is not a readable GGUF file ({exc}).", field=field
        ) from None
    return [
        TensorInfo(
            name=tensor.name,
            type=tensor.tensor_type.name,
            elements=int(tensor.n_elements),
            bytes=int(tensor.n_bytes),
            # GGUF stores the dimensions innermost first; torch's order is the reverse.
            shape=tuple(int(n) for n in reversed(tensor.shape.tolist())),
        )
        for tensor in reader.tensors
    ]


def diffusers_names(tensors: list[TensorInfo], family: Any) -> dict[str, TensorInfo]:
    """The tensors under the names of diffusers' transformer, renamed by diffusers' single-file converter."""
    import torch
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    convert = SINGLE_FILE_LOADABLE_CLASSES[TRANSFORMER_CLASSES[family.name]]["checkpoint_mapping_fn"]
    # The converter renames (and for a few models splits) tensors; meta tensors carry the names through it.
    placeholders = {t.name: torch.empty(t.shape or (1,), device="meta") for t in tensors}
    by_id = {id(tensor): info for info, tensor in zip(tensors, placeholders.values(), strict=True)}
    converted = convert(dict(placeholders))
    return {name: by_id[id(tensor)] for name, tensor in converted.items() if id(tensor) in by_id}


def _loaded_facts(tensors: list[TensorInfo], family: Any, keep_fp32: tuple[str, ...]) -> dict[str, Any]:
    """The format's name, the type counts and the loaded byte counts (``GgufWeights``)."""
    types: dict[str, int] = {}
    per_type_elements: dict[str, int] = {}
    quantized_bytes = float_params = fp32_params = 0
    for name, tensor in diffusers_names(tensors, family).items():
        types[tensor.type] = types.get(tensor.type, 0) + 1
        per_type_elements[tensor.type] = per_type_elements.get(tensor.type, 0) + tensor.elements
        if any(module in name.split(".") for module in keep_fp32):
            fp32_params += tensor.elements
        elif tensor.type in FLOAT_TYPES:
            float_params += tensor.elements
        else:
            quantized_bytes += tensor.bytes
    quantized = {k: v for k, v in per_type_elements.items() if k not in FLOAT_TYPES}
    quant = max(quantized, key=lambda k: quantized[k]) if quantized else "F16"
    return {
        "quant": quant,
        "types": types,
        "quantized_bytes": quantized_bytes,
        "float_params": float_params,
        "fp32_params": fp32_params,
    }


def check_fit(weights: GgufWeights, family: Any, transformer: Any, model_name: str) -> None:
    """Refuse a file whose tensors are not ``transformer``'s (a meta or real model): every name the model
    has, each with the model's number of elements."""
    tensors = diffusers_names(read_tensor_table(Path(weights.path), weights.reference, weights.field), family)
    expected = {name: param.numel() for name, param in transformer.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unknown = sorted(set(tensors) - set(expected))
    wrong = sorted(name for name in set(expected) & set(tensors) if tensors[name].elements != expected[name])
    if missing or unknown or wrong:
        examples = ", ".join((missing + unknown + wrong)[:3])
        raise InvalidRequest(
            f"{weights.field}={weights.reference!r} is not a transformer of {model_name}: {len(missing)} of "
            f"its tensors missing, {len(unknown)} unknown, {len(wrong)} of another size (e.g. {examples}). "
            "Use the GGUF file made from this model (same size and version).",
            field=weights.field,
        )


def _transformer_class(family: Any) -> Any:
    import diffusers

    return getattr(diffusers, TRANSFORMER_CLASSES[family.name])


def load_gguf_transformer(
    weights: GgufWeights, family: Any, config_folder: Path, dtype: Any, *, subfolder: str = "transformer"
) -> Any:
    """The transformer from ``weights``'s file, its config from ``config_folder``/``subfolder`` (a second
    expert's: transformer_2), computing in ``dtype`` (diffusers' GGUF support: quantized linear layers,
    dequantized as they run)."""
    from diffusers import GGUFQuantizationConfig

    path = Path(weights.path)
    digest = _sha256(path)[0] if path.is_file() else None
    if digest != weights.sha256:
        raise ModelUnavailable(
            f"the GGUF file {weights.reference} changed or vanished since the job was accepted (its sha256 "
            f"was {weights.sha256[:12]}..., now {digest[:12] + '...' if digest else 'no file'}); submit it "
            "again.",
            field=weights.field,
        )
    model = _transformer_class(family).from_single_file(
        str(path),
        config=str(config_folder),
        subfolder=subfolder,
        quantization_config=GGUFQuantizationConfig(compute_dtype=dtype),
        torch_dtype=dtype,
        local_files_only=True,
    )
    return model.eval()
