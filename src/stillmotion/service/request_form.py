"""The REST API's request forms (``POST /jobs``, ``/plan``, ``/batches``), derived from the one field list.

Start at ``GenerationFields``: one form field per ``request_fields()`` entry (engine/request.py), built by
the builder of its kind (``_FORM_KINDS``). Every field may be left out and then takes the model's default.

What the form checks and what it leaves to ``GenerationRequest.resolve``: the form reads each value as its
type (a number written plainly in ASCII digits, a choice of the list, text within its length and characters);
the numeric rules (ranges, multiples, the frame rule) are checked by ``resolve`` against the model the request
names, so an API request words a broken rule exactly as the CLI and the UI do, with the nearest value that
works ("height=383 is not a multiple of 8 for tiny-i2vgen-xl (...); try 384"). The schema still states each
number's widest bounds over the registered models (``field_limits.api_bounds``), so a generated client knows
them; ``tests/server/test_openapi.py`` holds the server to every bound the schema states.

Kinds that are not plain text on the wire: ``loras`` is a typed list of ``LoraIn`` objects (batch items give
the list itself; a form field holds it as JSON text, ``json_text_schema``); an ``image`` field
(``last_image``) is a file part of ``POST /jobs`` (``FilePart``), never a text field. Adding a kind: add its
builder to ``_FORM_KINDS`` and, for a file, a ``FilePart`` to the form.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, cast

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic_core import PydanticCustomError

from stillmotion import bounded_json
from stillmotion.engine.request import DeclaredField, GenerationRequest, request_fields
from stillmotion.models.lora_refs import EXPERTS, MAX_LORAS, MAX_STRENGTH, MIN_STRENGTH, parse_lora_text
from stillmotion.service.field_limits import PROMPT_PATTERN, FieldBounds, api_bounds

# Numbers as a form sends them: ASCII digits only (not "٨", "²", "+16", " 16 ", "1_6" or "16.0" for an
# integer); the length bound keeps a 5,000-digit "number" from reaching int().
MAX_NUMBER_CHARS = 40
_PLAIN_INT = re.compile(r"-?[0-9]+")
_PLAIN_FLOAT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _plain(pattern: re.Pattern[str], kind: str, example: str) -> BeforeValidator:
    """Form values arrive as text: take only a number written plainly (pydantic's lax parsing would also
    take signs, spaces, underscores and "8.0" for an integer). Numbers (from the web UI) pass through."""

    def check(value: object) -> object:
        if isinstance(value, bool):  # True is an int to Python, never a number to a user
            raise PydanticCustomError("plain_number", f"must be {kind}, not a true/false value")
        if isinstance(value, str) and (len(value) > MAX_NUMBER_CHARS or not pattern.fullmatch(value)):
            raise PydanticCustomError(
                "plain_number",
                f"must be {kind} written plainly in at most {MAX_NUMBER_CHARS} characters, e.g. {example}",
            )
        return value

    return BeforeValidator(check)


PLAIN_INT = _plain(_PLAIN_INT, "a whole number (ASCII digits, optionally a leading minus)", "16")
PLAIN_FLOAT = _plain(_PLAIN_FLOAT, "a decimal number", "7.5")


def plain_int(text: str) -> int | None:
    """``text`` as an integer when it is one written plainly (the form rule above), else None."""
    return int(text) if len(text) <= MAX_NUMBER_CHARS and _PLAIN_INT.fullmatch(text) else None


# -- the field builders, one per kind of RequestField ------------------------------------------------------

FormField = tuple[Any, Any]  # (annotation, pydantic Field) as create_model takes them
_MODEL_RULES = "each model may be narrower (GET /models lists its limits)"


def _number_field(declared: DeclaredField, bounds: FieldBounds, description: str) -> FormField:
    """An optional number: its type is checked here, its rules by ``resolve`` (module docstring)."""
    whole = declared.info.kind == "int"
    stated: dict[str, Any] = {
        key: (int(value) if whole and key != "multipleOf" else value)
        for key, value in (
            ("minimum", bounds.low),
            ("maximum", bounds.high),
            ("multipleOf", bounds.multiple_of),
        )
        if value is not None
    }
    number = Annotated[int, PLAIN_INT] if whole else Annotated[float, PLAIN_FLOAT]
    return number | None, Field(default=None, description=description, json_schema_extra=stated)


def choice_enum(declared: DeclaredField) -> type[StrEnum]:
    """The choices of a "choice" field as a named enum (a component of the OpenAPI document)."""
    name = "".join(part.title() for part in declared.name.split("_"))
    enum: type[StrEnum] = cast(Any, StrEnum)(name, {choice: choice for choice in declared.info.choices})
    enum.__doc__ = declared.info.help
    return enum


CHOICE_ENUMS: dict[str, type[StrEnum]] = {
    d.name: choice_enum(d) for d in request_fields() if d.info.kind == "choice"
}


def _choice_field(declared: DeclaredField, bounds: FieldBounds, description: str) -> FormField:
    return CHOICE_ENUMS[declared.name] | None, Field(default=None, description=description)


def _text_field(declared: DeclaredField, bounds: FieldBounds, description: str) -> FormField:
    pattern = PROMPT_PATTERN if declared.info.kind == "text" else None
    text = Field(
        default=declared.default, max_length=bounds.max_chars, pattern=pattern, description=description
    )
    return (str if declared.default == "" else str | None), text


def _flag_field(declared: DeclaredField, bounds: FieldBounds, description: str) -> FormField:
    """An optional boolean: a form sends "true" or "false"."""
    return bool | None, Field(default=None, description=description)


LoraExpert = StrEnum("LoraExpert", {expert: expert for expert in EXPERTS})  # type: ignore[misc]
LoraExpert.__doc__ = "Which expert of a two-expert model a LoRA goes into (a one-denoiser model: both)."
MAX_LORAS_CHARS = 16 << 10  # the loras form field: 8 references with room to spare
MAX_LORAS_DEPTH = 4  # an array of flat objects: 2 levels


class LoraIn(BaseModel):
    """One LoRA of a request (models/lora_refs.py ``LoraChoice``); its rules are checked when it resolves."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    ref: str = Field(
        max_length=1024,
        description="A .safetensors file under the server's LoRA folders (its relative path), or a Hugging "
        "Face file owner/repo/path/file.safetensors[@revision].",
    )
    strength: Annotated[float, PLAIN_FLOAT] = Field(
        default=1.0,
        description="Scales the LoRA (1 = as trained).",
        json_schema_extra={"minimum": MIN_STRENGTH, "maximum": MAX_STRENGTH},
    )
    expert: LoraExpert = Field(default=LoraExpert("both"), description=LoraExpert.__doc__)


def _lora_list(value: object) -> object:
    """The loras as a form sends them (JSON text, bounded) or as a batch item gives them (the list); a
    CLI-style "REF[:STRENGTH[:EXPERT]]" string in the list is read as the CLI reads it."""
    if isinstance(value, str):
        try:
            value = bounded_json.loads(value, max_depth=MAX_LORAS_DEPTH, max_bytes=MAX_LORAS_CHARS)
        except ValueError as exc:
            raise PydanticCustomError(
                "json", "must be a JSON array of LoRA objects ({error})", {"error": str(exc)}
            ) from None
    if isinstance(value, list):
        try:
            return [vars(parse_lora_text(item)) if isinstance(item, str) else item for item in value]
        except ValueError as exc:
            raise PydanticCustomError("lora_text", "{error}", {"error": str(exc)}) from None
    return value


def _loras_field(declared: DeclaredField, bounds: FieldBounds, description: str) -> FormField:
    loras = Annotated[list[LoraIn], BeforeValidator(_lora_list), Field(max_length=MAX_LORAS)]
    return loras | None, Field(default=None, description=description)


_FORM_KINDS: dict[str, Callable[[DeclaredField, FieldBounds, str], FormField]] = {
    "int": _number_field,
    "float": _number_field,
    "choice": _choice_field,
    "text": _text_field,
    "model": _text_field,
    "flag": _flag_field,
    "loras": _loras_field,
}


def _form_field(declared: DeclaredField) -> FormField:
    info = declared.info
    description = info.help + (f" Bounds: {_MODEL_RULES}." if info.bounds is not None else "")
    build = _FORM_KINDS.get(info.kind)
    if build is None:
        raise TypeError(f"request field {declared.name}: no form builder for kind {info.kind!r}")
    return build(declared, api_bounds()[declared.name], description)


def json_text_schema(description: str, content: dict[str, Any], max_chars: int) -> dict[str, Any]:
    """A form part holding JSON text (a list of objects, say): a string whose content the schema describes,
    so generated clients send the JSON as text and readers see its shape."""
    return {
        "type": "string",
        "maxLength": max_chars,
        "contentMediaType": "application/json",
        "contentSchema": content,
        "description": description,
    }


@dataclass(frozen=True)
class FilePart:
    """A file part of a form (sent as a multipart file upload, never as a text field)."""

    name: str
    required: bool
    description: str


IMAGE_PART = FilePart(
    "image", True, "PNG, JPEG or WebP still image (size limited by the server; checked by content)."
)
# Request fields of kind "image" (``last_image``): optional file parts of POST /jobs, not form fields.
_IMAGE_FIELDS = tuple(d for d in request_fields() if d.info.kind == "image")
(LAST_IMAGE_PART,) = (
    FilePart(d.name, False, f"Optional file part, PNG, JPEG or WebP. {d.info.help}") for d in _IMAGE_FIELDS
)
# Fields that hold a list: a form field carries it as JSON text (``form_schema``).
_JSON_TEXT_FIELDS = {d.name: MAX_LORAS_CHARS for d in request_fields() if d.info.kind == "loras"}


# -- the forms --------------------------------------------------------------------------------------------

_FORM_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)

_FIELDS: dict[str, Any] = {
    declared.name: _form_field(declared) for declared in request_fields() if declared.info.kind != "image"
}
GenerationFields: type[BaseModel] = create_model(
    "GenerationFields",
    __config__=_FORM_CONFIG,
    __doc__="The generation fields of a job (multipart form fields with diffusers' names); see the field "
    "list in engine/request.py.",
    **_FIELDS,
)


def request_of(fields: BaseModel) -> GenerationRequest:
    """The engine's request from validated form fields (the one translation from the wire)."""
    return GenerationRequest(**fields.model_dump(mode="json"))


@dataclass(frozen=True)
class Form:
    """A multipart body: its generation fields, file parts and extra text parts, and its description."""

    name: str
    doc: str
    files: tuple[FilePart, ...]
    extra: dict[str, dict[str, Any]]  # extra text parts: name -> JSON Schema
    one_of: tuple[tuple[str, ...], ...] = ()  # groups of parts of which exactly one must be given


JOB_FORM = Form(
    "JobForm",
    "Multipart body of POST /jobs: the image file plus the generation fields (the prompt optional on the "
    "wire: a model without a text encoder takes none; the server requires it for the others).",
    (IMAGE_PART, LAST_IMAGE_PART),
    {},
)
PLAN_FORM = Form(
    "PlanForm",
    "Multipart body of POST /plan: the generation fields and, optionally, the image (with it, presets keep "
    "its aspect ratio exactly as a job would). The prompt is optional here: the plan does not depend on it.",
    (FilePart("image", False, "Optional: with it, presets keep its aspect ratio exactly as a job would."),),
    {},
)


def form_schema(form: Form) -> dict[str, Any]:
    """The JSON Schema of ``form``'s multipart body, as a generator reads it: every optional field plainly
    typed (a form has no null: left out means the default), file parts as binary strings."""
    base = GenerationFields.model_json_schema(ref_template="#/components/schemas/{model}")
    properties = {name: _without_null(prop) for name, prop in base["properties"].items()}
    for name, max_chars in _JSON_TEXT_FIELDS.items():
        value = properties[name]
        properties[name] = json_text_schema(
            f"{value.pop('description', '')} JSON text of the list, e.g. "
            '[{"ref": "my-style.safetensors", "strength": 0.8}].',
            value,
            max_chars,
        )
    for part in form.files:
        properties[part.name] = {
            "type": "string",
            "format": "binary",
            "contentMediaType": "application/octet-stream",
            "description": part.description,
        }
    properties.update(form.extra)
    schema: dict[str, Any] = {
        "title": form.name,
        "description": form.doc,
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    required = [part.name for part in form.files if part.required]
    if required:
        schema["required"] = required
    if form.one_of:
        schema["oneOf"] = [{"required": list(group)} for group in form.one_of]
    return schema


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    """An optional field's schema without pydantic's ``null`` branch (a form leaves the field out instead)."""
    options = [option for option in prop.get("anyOf", []) if option.get("type") != "null"]
    if not options:
        return prop
    rest = {key: value for key, value in prop.items() if key not in ("anyOf", "default")}
    if len(options) == 1:
        return {**options[0], **rest}
    return {**rest, "anyOf": options}
