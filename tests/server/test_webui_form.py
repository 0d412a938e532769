"""The web UI's form is derived from the field list (engine/request.py), and follows a model switch.

Built for real (Gradio components in a Blocks), then driven through the handlers' raw values, as the browser
sends them: every declared field has a component that submit reads and reuse sets; a field declared later
appears in the Settings with nothing edited in webui/; a model switch brings each value into the new model's
range with a note, and keeps the prompt of a model that takes none.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import gradio as gr
import pytest

from stillmotion.engine import request as request_module
from stillmotion.engine.request import DeclaredField, GenerationRequest, RequestField, request_fields
from stillmotion.models.registry import get_spec, list_specs
from stillmotion.webui import form as form_module
from stillmotion.webui import widgets as widgets_module
from stillmotion.webui.form import Form

WAN = "wan2.1-i2v-14b-480p"


def built(default_model: str) -> Form:
    form = Form([spec.name for spec in list_specs()], default_model)
    spec = get_spec(default_model)
    with gr.Blocks():
        form.build_main(spec)
        form.build_settings(spec)
    return form


class Screen:
    """The form's values as the browser holds them, changed by handler answers as the browser applies them."""

    def __init__(self, form: Form) -> None:
        self.form = form
        self.values = {id(c): getattr(c, "value", None) for c in form.outputs}

    def set(self, name: str, value: Any) -> None:
        self.values[id(self.form.component(name))] = value

    def get(self, name: str) -> Any:
        return self.values[id(self.form.component(name))]

    def inputs(self) -> list[Any]:
        return [self.values[id(c)] for c in self.form.inputs]

    def apply(self, updates: Sequence[Any]) -> None:
        assert len(updates) == len(self.form.outputs)
        for component, update in zip(self.form.outputs, updates, strict=True):
            if not isinstance(update, dict):
                self.values[id(component)] = update
            elif "value" in update:
                self.values[id(component)] = update["value"]

    def switch_to(self, model: str) -> str:
        """Choose ``model`` in the list; the note the switch shows."""
        self.set("model", model)
        self.apply(self.form.switch(*self.inputs()))
        note = self.values[id(self.form.model.note)]
        return str(note)


def test_every_declared_field_has_a_component_that_submit_reads_and_reuse_sets() -> None:
    form = built("tiny-i2vgen-xl")
    covered = [name for widget in form.widgets for name in widget.covers]
    assert sorted(covered) == sorted(declared.name for declared in request_fields())
    assert all(widget.inputs for widget in form.widgets)
    spec = get_spec("tiny-i2vgen-xl")
    asked = GenerationRequest(
        prompt="waves roll in", negative_prompt="blur", model=spec.name, height=64, width=96, num_frames=9,
        num_inference_steps=3, guidance_scale=7.5, fps=10, seed=1234, interpolate=2, interpolator="rife",
    ).resolve(spec, (96, 64))  # fmt: skip
    screen = Screen(form)
    screen.apply(form.reuse(asked.to_dict()))  # the job's stored request, as History's reuse reads it
    again = form.request(screen.inputs()).resolve(spec, (96, 64))
    assert again == asked
    preset = GenerationRequest(prompt="waves", model=spec.name, resolution="512p", seed=5).resolve(
        spec, (96, 64)
    )
    screen.apply(form.reuse(preset.to_dict()))
    assert screen.get("resolution") == "512p"  # a preset stays a preset (its size follows the image)
    assert form.request(screen.inputs()).resolve(spec, (96, 64)) == preset


@pytest.fixture
def a_new_field(monkeypatch: pytest.MonkeyPatch) -> Iterator[DeclaredField]:
    """A float field declared after the others, as a family might add one (no webui/ edit)."""
    new = DeclaredField(
        "motion_strength",
        float,
        RequestField(
            "Motion strength", "How much moves. More is wilder.", "float", bounds=lambda _: (0.0, 1.0)
        ),
        None,
    )
    declared = [*request_fields(), new]
    for module in (request_module, form_module, widgets_module):
        monkeypatch.setattr(module, "request_fields", lambda: iter(declared), raising=False)
    yield new


def test_a_newly_declared_field_shows_in_the_settings_and_is_read_back(a_new_field: DeclaredField) -> None:
    form = built("tiny-i2vgen-xl")
    box = form.component("motion_strength")
    assert isinstance(box, gr.Number) and box.label == "Motion strength"
    assert box.minimum == 0.0 and box.maximum == 1.0 and box.info == "How much moves. 0 to 1 for this model."
    screen = Screen(form)
    screen.set("motion_strength", 0.25)
    assert form.fields(screen.inputs())["motion_strength"] == 0.25
    screen.apply(form.reuse({"model": "tiny-i2vgen-xl", "motion_strength": 0.75}))
    assert form.fields(screen.inputs())["motion_strength"] == 0.75


def test_a_model_switch_brings_each_value_into_range_with_a_note() -> None:
    screen = Screen(built(WAN))
    assert screen.get("num_frames") == 81
    assert screen.switch_to("i2vgen-xl") == ""  # the user kept Wan's defaults: I2VGen-XL's, no note
    assert (screen.get("num_frames"), screen.get("resolution")) == (16, "512p")
    screen.switch_to(WAN)
    screen.set("num_frames", 41)  # the user's own value, too many for I2VGen-XL
    note = screen.switch_to("i2vgen-xl")
    assert screen.get("num_frames") == 32 and "Frames 41 → 32" in note
    screen.set("num_frames", 30)
    note = screen.switch_to(WAN)
    assert screen.get("num_frames") == 29 and "Frames 30 → 29" in note  # Wan takes 4k+1
    screen.set("resolution", "Custom")
    screen.set("width", 1000)
    screen.set("height", 520)
    note = screen.switch_to("ltx-video")  # sides in multiples of 32
    assert (screen.get("width"), screen.get("height")) == (992, 512) and "Width 1000 → 992" in note


def test_a_model_without_a_prompt_keeps_the_text_aside_and_gives_it_back() -> None:
    screen = Screen(built("i2vgen-xl"))
    screen.set("prompt", "waves roll in")
    screen.set("negative_prompt", "blur")
    note = screen.switch_to("svd-xt")
    assert screen.get("prompt") == "" and screen.get("negative_prompt") == ""  # svd-xt would refuse them
    assert "Prompt kept aside" in note
    assert screen.form.request(screen.inputs()).resolve(get_spec("svd-xt"), None).prompt == ""
    screen.switch_to("i2vgen-xl")
    assert (screen.get("prompt"), screen.get("negative_prompt")) == ("waves roll in", "blur")


def test_reuse_of_a_job_on_another_model_does_not_count_as_a_switch() -> None:
    form = built("i2vgen-xl")
    screen = Screen(form)
    asked = GenerationRequest(prompt="w", model=WAN, num_frames=41, num_inference_steps=50).resolve(
        get_spec(WAN), (832, 480)
    )
    screen.apply(form.reuse(asked.to_dict()))
    assert screen.switch_to(WAN) == ""  # what the list's change event sees next: nothing to follow
    assert (screen.get("num_frames"), screen.get("num_inference_steps")) == (41, 50)


def test_no_function_in_the_web_ui_is_longer_than_about_80_lines() -> None:
    import ast
    from pathlib import Path

    folder = Path(form_module.__file__).parent
    long = []
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 80:
                    long.append(f"{path.name}:{node.name} ({length} lines)")
    assert not long, long
