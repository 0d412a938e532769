"""The components that ask for request fields, one widget per declared field (or a few, wrapped).

Every user-facing request field is declared once, in engine/request.py (``request_fields()``), and a widget
here asks for it: the generic widgets by the field's kind (``TextField``, ``ModelField``, ``ChoiceField``,
``NumberField``), so a new simple field shows in the Settings without a line here; a few UI-only wrappers
ask for declared fields their own way (``SizeField``: presets or Custom for resolution, height and width;
``SeedField``: the seed with its dice; ``InterpolationField``: Off/2x/3x/4x). Labels, help lines, choices
and each model's ranges come from the declaration; nothing here repeats a rule that ``resolve`` checks.

A widget is made without components (``props(spec)``, what it shows for a model, is then known: webui/form.py
reads it for ``model_fields``), and ``build(spec)`` places its components inside the caller's layout. Then:
``read(values)`` turns its inputs' raw values into request fields; ``show(request, spec)`` sets its outputs
from a job's stored request (reuse); ``follow(old, new, values)`` brings its values into a newly chosen
model's range, with a short note for every value of the user's it had to change. Handlers get raw values
(``preprocess=False``): the checks are stillmotion's own, never Gradio's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import gradio as gr

from stillmotion.engine.request import (
    DeclaredField,
    GenerationRequest,
    RequestField,
    draw_seed,
    preset_size,
    request_fields,
)
from stillmotion.errors import InvalidRequest
from stillmotion.media.interpolation import DEFAULT_INTERPOLATOR
from stillmotion.models.registry import RESOLUTION_PRESETS, Limits, ModelSpec
from stillmotion.webui.views import rules_markdown

# Fields a model without a text encoder refuses (``GenerationRequest._resolve_prompts``): their boxes lock.
PROMPT_FIELDS = ("prompt", "negative_prompt")
PLACEHOLDERS = {"prompt": "e.g. waves rolling onto the beach"}
NO_PROMPT = "{model} takes no prompt: it animates the image alone"
CUSTOM = "Custom"
INTERPOLATE_OFF = "Off"
Values = Sequence[Any]
Updates = list[Any]


def short_help(info: RequestField) -> str:
    """The help's first sentence: the line under a component."""
    first, dot, _ = info.help.partition(". ")
    return first + "." if dot else info.help


def elem_id(info: RequestField) -> str:
    return "sm-" + info.label.lower().replace(" ", "-")


def model_default(declared: DeclaredField, spec: ModelSpec | None) -> Any:
    """The value a request that leaves the field out gets: the model's default, else the declared one; a
    field ``same_as`` another shows that field's (a number box cannot be left empty in the browser)."""
    if spec is None:
        return declared.default
    name = declared.info.same_as or declared.name
    return getattr(spec.defaults, name, declared.default)


def plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def as_number(value: Any, kind: str) -> Any:
    """A number box's raw value as the request takes it: blank is "not given", 8.0 is 8 for a whole-number
    field; anything else is passed on for ``resolve`` to word (8.5 frames: "must be a whole number")."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def accepts(spec: ModelSpec, name: str, value: Any, **others: Any) -> bool:
    """Whether ``spec`` takes ``value`` for ``name`` (the other fields at ``others`` or their defaults):
    asked of ``resolve`` itself, so no rule is written twice."""
    try:
        GenerationRequest(**{name: value, **others}).resolve(spec, None, need_prompt=False)
    except InvalidRequest as exc:
        return exc.field != name
    return True


def nearest(declared: DeclaredField, spec: ModelSpec, value: float, **others: Any) -> Any:
    """The value ``spec`` takes for the field that is nearest ``value`` (the lower one on a tie), else the
    model's default."""
    info = declared.info
    if info.bounds is None:
        return model_default(declared, spec)
    low, high = info.bounds(spec.limits)
    start = min(max(value, low), high)
    if info.kind != "int":
        return start if accepts(spec, declared.name, start, **others) else model_default(declared, spec)
    start = round(start)
    for distance in range(int(high - low) + 1):
        for candidate in (start - distance, start + distance):
            if low <= candidate <= high and accepts(spec, declared.name, candidate, **others):
                return candidate
    return model_default(declared, spec)


def follow_value(
    declared: DeclaredField, value: Any, old: ModelSpec | None, new: ModelSpec, **others: Any
) -> tuple[Any, str | None]:
    """A field's value after a switch from ``old`` to ``new``: the new default where the user kept the old
    one (or gave none), the value itself where ``new`` takes it, else the nearest that ``new`` takes (with a
    note)."""
    if value is None or (old is not None and value == model_default(declared, old)):
        return model_default(declared, new), None
    if accepts(new, declared.name, value, **others):
        return value, None
    moved = nearest(declared, new, float(value), **others)
    return moved, f"{declared.info.label} {plain(value)} → {plain(moved)}"


class Widget:
    """Asks for the declared fields ``covers``; see the module docstring for the protocol."""

    def __init__(self, *names: str) -> None:
        fields = {declared.name: declared for declared in request_fields()}
        self.declared = [fields[name] for name in names]
        self.covers = names
        self.inputs: list[Any] = []  # read by ``read``, in order; their values come to every handler
        self.extras: list[Any] = []  # set by ``show`` and ``follow`` besides the inputs
        self.replans: list[Any] = []  # inputs whose change changes the plan (``RequestField.affects_plan``)

    @property
    def outputs(self) -> list[Any]:
        return [*self.inputs, *self.extras]

    def props(self, spec: ModelSpec) -> dict[str, dict[str, Any]]:
        """What the components show for ``spec`` (``gr.update`` keyword arguments), by component name."""
        return {}

    def component(self, name: str) -> Any:
        """The input that asks for the field ``name`` (one of ``covers``)."""
        return self.inputs[0]

    def build(self, spec: ModelSpec) -> None:
        raise NotImplementedError

    def read(self, values: Values) -> dict[str, Any]:
        raise NotImplementedError

    def show(self, request: Mapping[str, Any], spec: ModelSpec | None) -> Updates:
        raise NotImplementedError

    def follow(self, old: ModelSpec | None, new: ModelSpec, values: Values) -> tuple[Updates, list[str]]:
        return [gr.update() for _ in self.outputs], []


class NumberField(Widget):
    """A number box; its range, step and default follow the chosen model (the declaration's ``bounds``). A
    field ``same_as`` another shows only for the models that take it (``available``)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.field = self.declared[0]

    def available(self, spec: ModelSpec) -> bool:
        """Whether ``spec`` takes the field at all: asked only of a field with no value of its own for some
        models (one ``same_as`` another, or an option of one family, such as LTX-Video's decode_timestep)."""
        info = self.field.info
        if info.bounds is None or (info.same_as is None and model_default(self.field, spec) is not None):
            return True
        if not hasattr(GenerationRequest, self.field.name):
            return True  # declared, but not a request field yet: nothing to ask resolve
        return accepts(spec, self.field.name, info.bounds(spec.limits)[0])

    def props(self, spec: ModelSpec) -> dict[str, dict[str, Any]]:
        info = self.field.info
        shown: dict[str, Any] = {
            "value": model_default(self.field, spec),
            "info": short_help(info),
            "visible": self.available(spec),
        }
        if info.bounds is not None:
            low, high = info.bounds(spec.limits)
            step = _step(info, spec, low, high)
            spaced = step > 1 and step == _spacing(info, spec)  # the rule's spacing, not just the arrows'
            within = f"{plain(low)} to {plain(high)}" + (f" in steps of {plain(step)}" if spaced else "")
            shown.update(
                minimum=low, maximum=high, step=step, info=f"{short_help(info)} {within} for this model."
            )
        return {self.field.name: shown}

    def build(self, spec: ModelSpec) -> None:
        info = self.field.info
        box = gr.Number(
            label=info.label,
            precision=0 if info.kind == "int" else None,
            elem_id=elem_id(info),
            min_width=160,
            **self.props(spec)[self.field.name],
        )
        self.inputs = [box]
        self.replans = [box] if info.affects_plan else []

    def read(self, values: Values) -> dict[str, Any]:
        return {self.field.name: as_number(values[0], self.field.info.kind)}

    def show(self, request: Mapping[str, Any], spec: ModelSpec | None) -> Updates:
        value = request.get(self.field.name)
        if value is None and self.field.info.same_as is not None:
            value = request.get(self.field.info.same_as)  # left out: it ran with that field's value
        if spec is None:
            return [value]
        return [gr.update(**{**self.props(spec)[self.field.name], "value": value})]

    def follow(self, old: ModelSpec | None, new: ModelSpec, values: Values) -> tuple[Updates, list[str]]:
        value = as_number(values[0], self.field.info.kind)
        if old is not None and not self.available(old):
            value = None  # the box was hidden: whatever it holds, the user gave nothing
        moved, note = follow_value(self.field, value, old, new)
        update = gr.update(**{**self.props(new)[self.field.name], "value": moved})
        return [update], [note] if note else []


def _spacing(info: RequestField, spec: ModelSpec) -> int:
    """The declared spacing of the valid values for ``spec`` (``step``, else ``multiple_of``), else 1."""
    for spacing in (info.step, info.multiple_of):
        if spacing is not None and spacing(spec.limits) > 1:
            return spacing(spec.limits)
    return 1


def _step(info: RequestField, spec: ModelSpec, low: float, high: float) -> float:
    """How far an arrow click moves: the declared spacing, else 1 for whole numbers, else a power of ten
    near a twentieth of the range (guidance 1 to 30: 1; 0 to 1: 0.01)."""
    if info.kind == "int" or _spacing(info, spec) > 1:
        return _spacing(info, spec)
    return float(10 ** math.floor(math.log10((high - low) / 20))) if high > low else 1.0


class TextField(Widget):
    """A text box; the prompt boxes lock (their text kept aside, and back later) for a model without a text
    encoder, rather than send words it would refuse."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.field = self.declared[0]

    def props(self, spec: ModelSpec) -> dict[str, dict[str, Any]]:
        name = self.field.name
        if name in PROMPT_FIELDS and not spec.limits.accepts_prompt:
            note = NO_PROMPT.format(model=spec.name)
            return {name: {"interactive": False, "value": "", "placeholder": note}}
        default = "default: the model's" if hasattr(spec.defaults, name) else ""
        return {name: {"interactive": True, "placeholder": PLACEHOLDERS.get(name, default)}}

    def build(self, spec: ModelSpec) -> None:
        info = self.field.info
        main = self.field.name == "prompt"
        box = gr.Textbox(
            label=info.label,
            info=None if main else short_help(info),  # the prompt's placeholder says it, on the first screen
            lines=2 if main else 1,
            max_lines=4,
            elem_id=elem_id(info),
            **self.props(spec)[self.field.name],
        )
        self.stash = gr.State(None)  # the text kept aside while a model takes none
        self.inputs = [box, self.stash]
        self.replans = [box] if info.affects_plan else []

    def read(self, values: Values) -> dict[str, Any]:
        text = values[0] if isinstance(values[0], str) else ""
        if not text.strip() and self.field.default is None:
            return {self.field.name: None}  # left empty: the model's default
        return {self.field.name: text}

    def show(self, request: Mapping[str, Any], spec: ModelSpec | None) -> Updates:
        text = request.get(self.field.name) or ""
        if spec is not None and text == model_default(self.field, spec) and self.field.default is None:
            text = ""  # the model's default: left blank, as the user left it
        props = self.props(spec)[self.field.name] if spec is not None else {}
        return [gr.update(**{**props, "value": text}), None]

    def follow(self, old: ModelSpec | None, new: ModelSpec, values: Values) -> tuple[Updates, list[str]]:
        text, kept = (values[0] or ""), values[1]
        props = self.props(new)[self.field.name]
        if self.field.name not in PROMPT_FIELDS:
            return [gr.update(), kept], []
        if not new.limits.accepts_prompt:
            note = (
                f"{self.field.info.label} kept aside until a model that takes one" if text.strip() else None
            )
            return [gr.update(**props), text or kept], [note] if note else []
        return [gr.update(**{**props, "value": text or kept or ""}), None], []


class ChoiceField(Widget):
    """One of a few values (the declaration's ``choices``)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.field = self.declared[0]

    def build(self, spec: ModelSpec) -> None:
        info = self.field.info
        radio = gr.Radio(
            list(info.choices),
            value=model_default(self.field, spec),
            label=info.label,
            info=short_help(info),
            elem_id=elem_id(info),
        )
        self.inputs = [radio]
        self.replans = [radio] if info.affects_plan else []

    def read(self, values: Values) -> dict[str, Any]:
        return {self.field.name: values[0] or None}

    def show(self, request: Mapping[str, Any], spec: ModelSpec | None) -> Updates:
        return [request.get(self.field.name)]


class ModelField(Widget):
    """The model list (every registered model; a repo id or a folder may be typed), its rules in the form's
    words, and the note on what a switch changed. ``previous`` holds the model the form was last set for."""

    def __init__(self, name: str, choices: Sequence[str], default: str) -> None:
        super().__init__(name)
        self.field, self.choices, self.default = self.declared[0], list(choices), default

    def props(self, spec: ModelSpec) -> dict[str, dict[str, Any]]:
        return {"rules": {"value": rules_markdown(spec)}}

    def build(self, spec: ModelSpec) -> None:
        info = self.field.info
        dropdown = gr.Dropdown(
            self.choices,
            value=self.default,
            label=info.label,
            allow_custom_value=True,
            elem_id=elem_id(info),
            info=short_help(info),
        )
        self.note = gr.Markdown("", elem_id="sm-model-note")
        self.rules = gr.Markdown(elem_id="sm-rules", **self.props(spec)["rules"])
        self.previous = gr.State(self.default)
        self.inputs = [dropdown, self.previous]
        self.extras = [self.rules, self.note]
        # Not re-planned on its own change: the switch sets the other fields first, then the page re-plans.

    def read(self, values: Values) -> dict[str, Any]:
        name = values[0] if isinstance(values[0], str) else ""
        return {self.field.name: name.strip() or None}

    def show(self, request: Mapping[str, Any], spec: ModelSpec | None) -> Updates:
        model = request.get(self.field.name)
        rules = rules_markdown(spec) if spec is not None else gr.update()
        return [model, model, rules, ""]

    def switched(self, name: str, new: ModelSpec, notes: Sequence[str]) -> Updates:
        """The outputs after a switch to ``new`` (named ``name``): its rules, and what changed."""
        note = f"**Changed for {new.name}:** " + "; ".join(notes) + "." if notes else ""
        return [gr.update(), name, rules_markdown(new), note]


class SizeField(Widget):
    """Size: a preset (the image's aspect ratio kept) or Custom width x height. Choosing Custom starts from
    the size the plan readout shows (``planned``, written by the plan), not from a fixed one."""

    def __init__(self) -> None:
        super().__init__("resolution", "height", "width")
        self.resolution, self.height, self.width = self.declared

    def props(self, spec: ModelSpec) -> dict[str, dict[str, Any]]:
        """The preset, and the boxes' ranges (their values stay the user's)."""
        ranges = {name: NumberField(name).props(spec)[name] for name in ("height", "width")}
        return {
            "size_mode": {"value": spec.defaults.resolution},
            **{name: {k: v for k, v in shown.items() if k != "value"} for name, shown in ranges.items()},
        }

    def build(self, spec: ModelSpec) -> None:
        info = self.resolution.info
        props = self.props(spec)
        mode = gr.Radio(
            [*RESOLUTION_PRESETS, CUSTOM], label=info.label, info=short_help(info), elem_id="sm-size",
            **props["size_mode"],
        )  # fmt: skip
        # Until a plan says the size, Custom starts from the default preset's square size.
        side = preset_size(RESOLUTION_PRESETS[spec.defaults.resolution], None, spec.limits)[0]
        with gr.Row(visible=False) as row:
            width = gr.Number(
                label=self.width.info.label, precision=0, elem_id="sm-width", value=side, **props["width"]
            )
            height = gr.Number(
                label=self.height.info.label, precision=0, elem_id="sm-height", value=side, **props["height"]
            )
        self.planned = gr.State(None)  # (width, height) of the last plan
        self.inputs = [mode, width, height]
        self.extras = [row]
        self.replans = [mode, width, height]
        mode.input(self._chosen, [mode, self.planned, width, height], [row, width, height], queue=False)

    def component(self, name: str) -> Any:
        mode, width, height = self.inputs
        return {"resolution": mode, "width": width, "height": height}[name]

    @staticmethod
    def _chosen(mode: str, planned: Any, width: Any, height: Any) -> tuple[Any, ...]:
        custom = mode == CUSTOM
        if custom and planned:
            width, height = planned
        return gr.update(visible=custom), width, height

    def read(self, values: Values) -> dict[str, Any]:
        mode, width, height = values
        if mode == CUSTOM:
            return {"resolution": None, "height": as_number(height, "int"), "width": as_number(width, "int")}
        return {"resolution": mode or None, "height": None, "width": None}

    def show(self, request: Mapping[str, Any], spec: ModelSpec | None) -> Updates:
        preset = request.get("resolution")
        height, width = request.get("height"), request.get("width")
        props = self.props(spec) if spec is not None else {"width": {}, "height": {}}
        return [
            preset or CUSTOM,
            gr.update(**{**props["width"], "value": width}),
            gr.update(**{**props["height"], "value": height}),
            gr.update(visible=preset is None),
        ]

    def follow(self, old: ModelSpec | None, new: ModelSpec, values: Values) -> tuple[Updates, list[str]]:
        mode, width, height = values
        props = self.props(new)
        notes: list[str] = []
        if mode == CUSTOM:
            width, height, notes = self._custom_size(new, as_number(width, "int"), as_number(height, "int"))
            if width is None:  # no size near the user's fits this model: its default preset
                mode, notes = new.defaults.resolution, [f"Size → {new.defaults.resolution}"]
        elif old is None or mode == old.defaults.resolution:
            mode = new.defaults.resolution
        custom = mode == CUSTOM
        width_update, height_update = gr.update(**props["width"]), gr.update(**props["height"])
        if custom:  # hidden boxes keep their values; shown ones take the size that fits
            width_update, height_update = width_update | {"value": width}, height_update | {"value": height}
        return [mode, width_update, height_update, gr.update(visible=custom)], notes

    def _custom_size(self, spec: ModelSpec, width: Any, height: Any) -> tuple[Any, Any, list[str]]:
        """The nearest width and height ``spec`` takes, each with the other at the smallest side; (None,
        None) when the pair still breaks a rule (too many pixels)."""
        if not isinstance(width, int) or not isinstance(height, int):
            return None, None, []
        smallest = spec.limits.min_side
        new_width, width_note = follow_value(self.width, width, None, spec, height=smallest)
        new_height, height_note = follow_value(self.height, height, None, spec, width=smallest)
        if not accepts(spec, "height", new_height, width=new_width):
            return None, None, []
        return new_width, new_height, [note for note in (width_note, height_note) if note]


class SeedField(Widget):
    """The seed, -1 for a random one (drawn at submission and recorded; a number box cannot be left empty),
    and its dice, which draws one now."""

    def __init__(self) -> None:
        super().__init__("seed")
        self.field = self.declared[0]

    def build(self, spec: ModelSpec) -> None:
        info = self.field.info
        with gr.Row(equal_height=False, elem_id="sm-seed-row"):
            seed = gr.Number(
                label=info.label,
                info="-1: a random one, drawn when the job is queued and recorded with it.",
                precision=0,
                value=-1,
                elem_id=elem_id(info),
                scale=4,
            )
            dice = gr.Button("Random", elem_id="sm-dice", size="sm", scale=0, min_width=80)
        dice.click(draw_seed, None, seed, queue=False)
        self.inputs = [seed]

    def read(self, values: Values) -> dict[str, Any]:
        seed = as_number(values[0], "int")
        return {"seed": None if seed == -1 else seed}

    def show(self, request: Mapping[str, Any], spec: ModelSpec | None) -> Updates:
        return [request.get("seed")]


class InterpolationField(Widget):
    """Interpolation as one choice, Off or a factor (``interpolate``; ``interpolate_fps`` is the same ask in
    fps, which the form leaves to the API), and the interpolator, which means nothing while it is off."""

    def __init__(self) -> None:
        super().__init__("interpolate", "interpolate_fps", "interpolator")
        self.factor, _, self.interpolator = self.declared
        assert self.factor.info.bounds is not None
        low, high = self.factor.info.bounds(Limits())  # the factors are the same for every model
        self.choices = [INTERPOLATE_OFF, *(f"{k}x" for k in range(int(low), int(high) + 1))]

    def build(self, spec: ModelSpec) -> None:
        with gr.Row():
            factor = gr.Dropdown(
                self.choices,
                value=INTERPOLATE_OFF,
                label=self.factor.info.label,
                info=short_help(self.factor.info),
                elem_id=elem_id(self.factor.info),
            )
            interpolator = gr.Radio(
                list(self.interpolator.info.choices),
                value=DEFAULT_INTERPOLATOR.value,
                label=self.interpolator.info.label,
                info=short_help(self.interpolator.info),
                elem_id=elem_id(self.interpolator.info),
            )
        self.inputs = [factor, interpolator]
        self.replans = [factor, interpolator]

    def read(self, values: Values) -> dict[str, Any]:
        choice, interpolator = values
        factor = None if choice in (None, INTERPOLATE_OFF) else int(str(choice).removesuffix("x"))
        return {
            "interpolate": factor,
            "interpolate_fps": None,
            "interpolator": (interpolator or None) if factor is not None else None,
        }

    def show(self, request: Mapping[str, Any], spec: ModelSpec | None) -> Updates:
        factor = int(request.get("interpolate") or 1)
        return [
            f"{factor}x" if factor > 1 else INTERPOLATE_OFF,
            request.get("interpolator") or DEFAULT_INTERPOLATOR.value,
        ]


def upload_path(image: Any) -> str | None:
    """An uploaded file's path from an image's raw value (Gradio's file data, or a path it was set to)."""
    if isinstance(image, dict):
        path = image.get("path")
        return path if isinstance(path, str) and path else None
    return image if isinstance(image, str) and image else None


class FlagField(Widget):
    """An on/off choice (kind "flag"), open only for a model that takes it on (asked of ``resolve``)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.field = self.declared[0]

    def available(self, spec: ModelSpec) -> bool:
        return accepts(spec, self.field.name, True)

    def props(self, spec: ModelSpec) -> dict[str, dict[str, Any]]:
        info = self.field.info
        if self.available(spec):
            label = spec.fast.label if self.field.name == "fast" and spec.fast is not None else info.label
            return {self.field.name: {"interactive": True, "label": label, "info": short_help(info)}}
        return {
            self.field.name: {
                "interactive": False,
                "value": False,
                "label": info.label,
                "info": f"{spec.name} has none.",
            }
        }

    def build(self, spec: ModelSpec) -> None:
        box = gr.Checkbox(
            elem_id=elem_id(self.field.info), **{"value": False, **self.props(spec)[self.field.name]}
        )
        self.inputs = [box]
        self.replans = [box] if self.field.info.affects_plan else []

    def read(self, values: Values) -> dict[str, Any]:
        return {self.field.name: True if values[0] else None}

    def show(self, request: Mapping[str, Any], spec: ModelSpec | None) -> Updates:
        props = self.props(spec)[self.field.name] if spec is not None else {}
        return [gr.update(**{**props, "value": bool(request.get(self.field.name))})]

    def follow(self, old: ModelSpec | None, new: ModelSpec, values: Values) -> tuple[Updates, list[str]]:
        props = self.props(new)[self.field.name]
        if not values[0] or self.available(new):
            return [gr.update(**{**props, "value": bool(values[0])})], []
        return [gr.update(**props)], [f"{self.field.info.label} → off"]


def lora_lines(loras: Any) -> str:
    """A stored request's LoRAs as the box's lines, ``REF[:STRENGTH[:EXPERT]]`` (a hub file at its recorded
    revision, so a reuse runs the same file)."""
    lines: list[str] = []
    for lora in loras or ():
        if isinstance(lora, str):
            lines.append(lora)
            continue
        if not isinstance(lora, Mapping):
            continue
        ref = str(lora.get("reference") or lora.get("ref") or "")
        if lora.get("source") == "hub" and lora.get("revision"):
            ref = f"{ref}@{lora['revision']}"
        strength, expert = lora.get("strength", 1.0), lora.get("expert") or "both"
        if expert != "both":
            lines.append(f"{ref}:{plain(float(strength))}:{expert}")
        elif float(strength) != 1.0:
            lines.append(f"{ref}:{plain(float(strength))}")
        else:
            lines.append(ref)
    return "\n".join(lines)


class LorasField(Widget):
    """The LoRAs, one per line as the CLI's ``--lora`` takes them (``REF[:STRENGTH[:EXPERT]]``); locked, the
    lines kept aside, for a model that takes none."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.field = self.declared[0]

    def props(self, spec: ModelSpec) -> dict[str, dict[str, Any]]:
        if not spec.accepts_loras:
            return {self.field.name: {"interactive": False, "placeholder": f"{spec.name} takes no LoRAs"}}
        placeholder = "one per line: owner/repo/file.safetensors[@revision][:strength[:high|low|both]]"
        return {self.field.name: {"interactive": True, "placeholder": placeholder}}

    def build(self, spec: ModelSpec) -> None:
        info = self.field.info
        box = gr.Textbox(
            label=info.label,
            info=short_help(info),
            lines=2,
            max_lines=8,
            elem_id=elem_id(info),
            **self.props(spec)[self.field.name],
        )
        self.stash = gr.State(None)  # the lines kept aside while a model takes no LoRAs
        self.inputs = [box, self.stash]
        self.replans = [box] if info.affects_plan else []

    def read(self, values: Values) -> dict[str, Any]:
        text = values[0] if isinstance(values[0], str) else ""
        lines = tuple(line.strip() for line in text.splitlines() if line.strip())
        return {self.field.name: lines or None}  # each line is read (and its errors named) by the request

    def show(self, request: Mapping[str, Any], spec: ModelSpec | None) -> Updates:
        props = self.props(spec)[self.field.name] if spec is not None else {}
        return [gr.update(**{**props, "value": lora_lines(request.get(self.field.name))}), None]

    def follow(self, old: ModelSpec | None, new: ModelSpec, values: Values) -> tuple[Updates, list[str]]:
        text, kept = (values[0] or ""), values[1]
        props = self.props(new)[self.field.name]
        if not new.accepts_loras:
            note = (
                f"{self.field.info.label} kept aside until a model that takes them" if text.strip() else None
            )
            return [gr.update(**{**props, "value": ""}), text or kept], [note] if note else []
        return [gr.update(**{**props, "value": text or kept or ""}), None], []


class ImageField(Widget):
    """A second image (kind "image": the last frame), shown only for a model that takes one; kept aside (and
    back) while the model chosen takes none."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.field = self.declared[0]

    def available(self, spec: ModelSpec) -> bool:
        return accepts(spec, self.field.name, "given")

    def props(self, spec: ModelSpec) -> dict[str, dict[str, Any]]:
        return {self.field.name: {"visible": self.available(spec)}}

    def build(self, spec: ModelSpec) -> None:
        info = self.field.info
        image = gr.Image(
            type="filepath",
            label=info.label,
            sources=["upload", "clipboard"],
            height=160,
            elem_id=elem_id(info),
            **self.props(spec)[self.field.name],
        )
        self.stash = gr.State(None)  # the image's path, kept aside while the model takes none
        self.inputs = [image, self.stash]
        self.replans = [image] if info.affects_plan else []

    def read(self, values: Values) -> dict[str, Any]:
        return {self.field.name: upload_path(values[0])}

    def show(self, request: Mapping[str, Any], spec: ModelSpec | None) -> Updates:
        """``request``'s value is a file's path here (the History tab puts the job's stored image there)."""
        path = request.get(self.field.name)
        props = self.props(spec)[self.field.name] if spec is not None else {}
        return [gr.update(**{**props, "value": path if isinstance(path, str) else None}), None]

    def follow(self, old: ModelSpec | None, new: ModelSpec, values: Values) -> tuple[Updates, list[str]]:
        path, kept = upload_path(values[0]), values[1]
        if self.available(new):
            return [gr.update(visible=True, value=path or kept), None], []
        note = f"{self.field.info.label} kept aside until a model that takes one" if path else None
        return [gr.update(visible=False, value=None), path or kept], [note] if note else []
