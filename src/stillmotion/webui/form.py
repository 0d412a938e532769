"""The generation form: every declared request field, asked for by its widget (webui/widgets.py).

``Form`` holds one widget per field of ``request_fields()`` (engine/request.py), in declaration order, so a
field declared there shows here without an edit: the prompt on the first screen (``build_main``), every other
field in Settings (``build_settings``: the model first, then the rest, number boxes two to a row). Then:

- ``inputs``: the components whose raw values every handler gets (``preprocess=False``), in order;
  ``request(values)`` reads them into a ``GenerationRequest`` (whose ``resolve`` words every broken rule);
- ``outputs`` and ``reuse(request, spec)``: the form set from a job's stored (resolved) request;
- ``switch(values)``: what a model switch changes (wired to the model list by ``build_settings``): each
  field brought into the new model's range, its default where the user kept the old one, with a note for
  every value of the user's that had to move, and the prompt kept aside for a model that takes none.

``model_fields(spec)`` is what the form shows for a model, by component name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import gradio as gr

from stillmotion.engine.request import GenerationRequest, request_fields
from stillmotion.errors import StillmotionError
from stillmotion.models.registry import ModelSpec, get_spec
from stillmotion.webui.widgets import (
    ChoiceField,
    FlagField,
    ImageField,
    InterpolationField,
    LorasField,
    ModelField,
    NumberField,
    SeedField,
    SizeField,
    TextField,
    Updates,
    Widget,
)

# Asked on the first screen, under the input image (the last frame only shows for a model that takes one);
# every other field is in Settings.
MAIN = ("prompt", "last_image")
FAST = "fast"  # the flag whose choice changes the steps' and guidance's defaults (ModelSpec.defaults_for)


def spec_or_none(name: object) -> ModelSpec | None:
    """The registered model ``name`` (a repo id or folder typed in is not, and has no ranges to follow)."""
    if not isinstance(name, str) or not name.strip():
        return None
    try:
        return get_spec(name.strip())
    except StillmotionError:
        return None


def make_widgets(model_choices: Sequence[str], default_model: str) -> list[Widget]:
    """One widget per declared field, in declaration order; a wrapper takes all the fields it asks for."""
    wrappers = {
        "resolution": SizeField,
        "height": SizeField,
        "width": SizeField,
        "seed": SeedField,
        "interpolate": InterpolationField,
        "interpolate_fps": InterpolationField,
        "interpolator": InterpolationField,
    }
    widgets: list[Widget] = []
    covered: set[str] = set()
    for declared in request_fields():
        if declared.name in covered:
            continue
        kind = declared.info.kind
        widget: Widget
        if declared.name in wrappers:
            widget = wrappers[declared.name]()
        elif kind == "model":
            widget = ModelField(declared.name, model_choices, default_model)
        elif kind == "text":
            widget = TextField(declared.name)
        elif kind == "choice":
            widget = ChoiceField(declared.name)
        elif kind in ("int", "float"):
            widget = NumberField(declared.name)
        elif kind == "flag":
            widget = FlagField(declared.name)
        elif kind == "loras":
            widget = LorasField(declared.name)
        elif kind == "image":
            widget = ImageField(declared.name)
        else:  # a new kind of field needs its widget written once, here
            raise ValueError(f"no web UI widget for {declared.name!r} of kind {kind!r} (webui/form.py)")
        covered.update(widget.covers)
        widgets.append(widget)
    return widgets


def with_fast(spec: ModelSpec | None, fast: bool) -> ModelSpec | None:
    """``spec`` as the form's defaults see it: with ``fast`` on, the fast choice's steps and guidance."""
    if spec is None or not fast or spec.fast is None:
        return spec
    return replace(spec, defaults=spec.defaults_for(fast=True))


def model_fields(spec: ModelSpec) -> dict[str, dict[str, Any]]:
    """What the form shows for ``spec`` (``gr.update`` keyword arguments), by component name: ranges, steps
    and defaults of the number boxes, the size preset and steps, the prompt boxes, the rules in words."""
    shown: dict[str, dict[str, Any]] = {}
    for widget in make_widgets([spec.name], spec.name):
        shown.update(widget.props(spec))
    return shown


class Form:
    """The form's widgets, built into a layout, read, set and switched as one."""

    def __init__(self, model_choices: Sequence[str], default_model: str) -> None:
        self.widgets = make_widgets(model_choices, default_model)
        self.model = next(w for w in self.widgets if isinstance(w, ModelField))
        self.fast = next((w for w in self.widgets if FAST in w.covers), None)

    # -- layout ----------------------------------------------------------------------------------------------

    def build_main(self, spec: ModelSpec) -> None:
        """The first screen's fields (the prompt)."""
        for widget in self.widgets:
            if set(widget.covers) & set(MAIN):
                widget.build(spec)

    def build_settings(self, spec: ModelSpec) -> None:
        """Every other field: the model first (the ranges follow it), then in declaration order, consecutive
        number boxes two to a row. The model list's switch is wired here (``switched``: its event)."""
        self.model.build(spec)
        rest = [w for w in self.widgets if w is not self.model and not set(w.covers) & set(MAIN)]
        for group in _pairs_of_numbers(rest):
            if len(group) == 1:
                group[0].build(spec)
                continue
            with gr.Row():
                for widget in group:
                    widget.build(spec)
        # The event, so the page can re-plan once the switch has set every field (webui/generate_tab.py).
        self.switched = self.model.inputs[0].input(
            self.switch, self.inputs, self.outputs, queue=False, preprocess=False
        )
        if self.fast is not None:  # fast on or off moves the steps and guidance the user kept at a default
            self.fast.inputs[0].input(
                self.toggle_fast, self.inputs, self.outputs, queue=False, preprocess=False
            )

    # -- reading and setting ---------------------------------------------------------------------------------

    @property
    def inputs(self) -> list[Any]:
        return [component for widget in self.widgets for component in widget.inputs]

    @property
    def outputs(self) -> list[Any]:
        return [component for widget in self.widgets for component in widget.outputs]

    @property
    def replans(self) -> list[Any]:
        """The components whose change changes the plan (or its time)."""
        return [component for widget in self.widgets for component in widget.replans]

    def component(self, name: str) -> Any:
        """The (first) input component that asks for the field ``name``."""
        return next(w.component(name) for w in self.widgets if name in w.covers)

    def fields(self, values: Sequence[Any]) -> dict[str, Any]:
        """The request fields the form's raw ``values`` (one per input) ask for; None: not given."""
        fields: dict[str, Any] = {}
        for widget, chunk in self._chunks(values):
            fields.update(widget.read(chunk))
        return fields

    def request(self, values: Sequence[Any]) -> GenerationRequest:
        return GenerationRequest.from_dict(self.fields(values))

    def reuse(self, request: Mapping[str, Any]) -> Updates:
        """The outputs set as ``request`` (a job's stored request) asked, for its model's ranges."""
        spec = spec_or_none(request.get("model"))
        return [update for widget in self.widgets for update in widget.show(request, spec)]

    def switch(self, *values: Any) -> Updates:
        """The outputs after the model list changed to a new model (see the module docstring)."""
        chunks = dict((id(widget), chunk) for widget, chunk in self._chunks(values))
        name, previous = chunks[id(self.model)]
        new, old = spec_or_none(name), spec_or_none(previous)
        if new is None or (old is not None and old.name == new.name):
            return [
                update for w in self.widgets for update in _unchanged(w, name if w is self.model else None)
            ]
        fast = bool(self.fast is not None and chunks[id(self.fast)][0])
        old = with_fast(old, fast)  # the defaults the user saw, so a kept default follows the model
        new = with_fast(new, fast) or new
        updates: dict[int, Updates] = {}
        notes: list[str] = []
        for widget in self.widgets:
            if widget is not self.model:
                updates[id(widget)], widget_notes = widget.follow(old, new, chunks[id(widget)])
                notes.extend(widget_notes)
        updates[id(self.model)] = self.model.switched(name, new, notes)
        return [update for widget in self.widgets for update in updates[id(widget)]]

    def toggle_fast(self, *values: Any) -> Updates:
        """The outputs after the fast flag changed: each number the user kept at the model's default (with
        fast off, or on) moves to the default of the new choice; a value the user typed stays."""
        chunks = dict((id(widget), chunk) for widget, chunk in self._chunks(values))
        spec = spec_or_none(chunks[id(self.model)][0])
        if spec is None or self.fast is None or spec.fast is None:
            return [update for w in self.widgets for update in _unchanged(w, None)]
        fast = bool(chunks[id(self.fast)][0])
        before, after = with_fast(spec, not fast), with_fast(spec, fast) or spec
        return [
            update
            for w in self.widgets
            for update in (
                w.follow(before, after, chunks[id(w)])[0]
                if isinstance(w, NumberField)
                else _unchanged(w, None)
            )
        ]

    def _chunks(self, values: Sequence[Any]) -> Iterator[tuple[Widget, Sequence[Any]]]:
        start = 0
        for widget in self.widgets:
            yield widget, values[start : start + len(widget.inputs)]
            start += len(widget.inputs)


def _unchanged(widget: Widget, model_name: Any) -> Updates:
    """No change to ``widget``'s outputs; the model list's ``previous`` follows a typed model name."""
    updates: Updates = [gr.update() for _ in widget.outputs]
    if model_name is not None:
        updates[1] = model_name
    return updates


def _pairs_of_numbers(widgets: Sequence[Widget]) -> Iterator[list[Widget]]:
    """``widgets`` in order, consecutive number boxes in pairs (one row each), every other widget alone."""
    pending: list[Widget] = []
    for widget in widgets:
        if isinstance(widget, NumberField):
            pending.append(widget)
            if len(pending) == 2:
                yield pending
                pending = []
            continue
        if pending:
            yield pending
            pending = []
        yield [widget]
    if pending:
        yield pending
