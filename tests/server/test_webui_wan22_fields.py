"""The web UI asks for the fields of issue 21 (fast, LoRAs, the last frame) as the other fields are asked:
built for real (Gradio components in a Blocks) and driven through the handlers' raw values, as the browser
sends them, over a real JobService and store: a job's fast choice, LoRAs and last frame come back on reuse;
fast moves the steps and guidance the user kept at a default; a model without them keeps them aside; a
last frame given in the form reaches every job's folder, one job or a group of variations.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest
from fastapi.testclient import TestClient

from stillmotion.config import Settings
from stillmotion.engine.request import GenerationRequest
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.models.lora_refs import LoraChoice, ResolvedLora
from stillmotion.models.registry import get_spec
from stillmotion.service.job_service import JobService
from stillmotion.webui.generate_tab import GenerateTab
from stillmotion.webui.history_tab import HistoryTab
from tests.server.helpers import make_settings, png_bytes
from tests.server.test_webui_form import Screen, built

A14B = "wan2.2-i2v-a14b"


def png_file(path: Path, colour: tuple[int, int, int]) -> str:
    path.write_bytes(png_bytes(96, 64, colour))
    return str(path)


def test_fast_loras_and_the_last_frame_of_a_job_come_back_on_reuse(tmp_path: Path) -> None:
    spec = get_spec(A14B)
    last = png_file(tmp_path / "last.png", (10, 200, 10))
    lora = ResolvedLora(
        reference="owner/styles/ink.safetensors", source="hub", path="/cache/ink.safetensors",
        revision="0123abcd", sha256="ab" * 32, size_bytes=1000, strength=0.8, expert="high",
    )  # fmt: skip
    asked = GenerationRequest(
        prompt="ink waves",
        model=A14B,
        num_inference_steps=6,
        guidance_scale_2=2.5,
        fast=True,
        last_image=last,
    ).resolve(spec, (832, 480), loras=(lora,), last_image_sha256="cd" * 32)
    form = built("i2vgen-xl")
    screen = Screen(form)
    screen.apply(form.reuse({**asked.to_dict(), "last_image": last}))  # as History's reuse gives it
    again = form.request(screen.inputs())
    assert again.fast is True and again.guidance_scale_2 == 2.5 and again.num_inference_steps == 6
    assert again.loras == (LoraChoice("owner/styles/ink.safetensors@0123abcd", 0.8, "high"),)
    assert again.last_image == last


def test_fast_moves_the_steps_and_guidance_kept_at_a_default_and_keeps_typed_ones() -> None:
    spec = get_spec(A14B)
    assert spec.fast is not None
    form = built(A14B)
    screen = Screen(form)
    assert (screen.get("num_inference_steps"), screen.get("guidance_scale")) == (40, 3.5)
    screen.set("fast", True)
    screen.apply(form.toggle_fast(*screen.inputs()))
    assert screen.get("num_inference_steps") == spec.fast.num_inference_steps
    assert screen.get("guidance_scale") == spec.fast.guidance_scale
    resolved = form.request(screen.inputs()).resolve(spec, (832, 480), need_prompt=False)
    assert resolved.fast and resolved.num_inference_steps == spec.fast.num_inference_steps
    screen.set("fast", False)
    screen.apply(form.toggle_fast(*screen.inputs()))
    assert (screen.get("num_inference_steps"), screen.get("guidance_scale")) == (40, 3.5)
    screen.set("num_inference_steps", 8)  # typed by the user: fast leaves it
    screen.set("fast", True)
    screen.apply(form.toggle_fast(*screen.inputs()))
    assert (screen.get("num_inference_steps"), screen.get("guidance_scale")) == (8, spec.fast.guidance_scale)
    screen.switch_to("wan2.2-i2v-a14b-random")  # another model with a fast choice: fast's defaults stay
    assert (screen.get("fast"), screen.get("guidance_scale")) == (True, spec.fast.guidance_scale)


def test_a_model_without_fast_loras_or_a_last_frame_keeps_them_aside(tmp_path: Path) -> None:
    form = built(A14B)
    box = form.component("fast")
    assert isinstance(box, gr.Checkbox) and box.interactive is not False
    screen = Screen(form)
    last = png_file(tmp_path / "last.png", (10, 200, 10))
    screen.set("fast", True)
    screen.set("loras", "ink.safetensors:0.7:low")
    screen.set("last_image", {"path": last})  # Gradio's file data, as the browser sends it
    note = screen.switch_to("i2vgen-xl")
    assert "Fast (approximate) → off" in note
    assert "LoRAs kept aside" in note and "Last frame kept aside" in note
    asked = form.request(screen.inputs())  # nothing the new model would refuse
    assert (asked.fast, asked.loras, asked.last_image) == (None, None, None)
    asked.resolve(get_spec("i2vgen-xl"), (96, 64), need_prompt=False)
    screen.switch_to(A14B)
    back = form.request(screen.inputs())
    assert back.loras == (LoraChoice("ink.safetensors", 0.7, "low"),) and back.last_image == last


@pytest.mark.parametrize("variations", [1, 2])
def test_a_last_frame_given_in_the_form_reaches_every_job_and_comes_back(
    tmp_path: Path, variations: int
) -> None:
    settings = make_settings(tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    service = JobService(settings, JobStore.open(settings))
    form = built("tiny-wan2.2-i2v-a14b")
    tab = GenerateTab(service, form)
    screen = Screen(form)
    screen.set("prompt", "a loop")
    last = png_file(tmp_path / "last.png", (10, 200, 10))
    screen.set("last_image", {"path": last})
    target = tab.submit(png_file(tmp_path / "first.png", (200, 10, 10)), variations, *screen.inputs())
    jobs = [service.get(job_id) for job_id in target["jobs"]]
    assert len(jobs) == variations
    for job in jobs:
        stored = service.last_image(job)
        assert stored is not None and stored.read_bytes() == Path(last).read_bytes()
        assert job.request["last_image"] is not None  # its hash: the worker checks the file against it
    assert Path(last).exists()  # the form's file stays for a re-submit; the service consumed a copy
    history = HistoryTab(service, form, tab)
    tab.image = gr.Image()  # the outputs reuse sets besides the form (built by the tab's layout)
    answer = history.reuse(jobs[0].id)
    screen.apply(list(answer[2:-1]))
    assert form.request(screen.inputs()).last_image == str(service.last_image(jobs[0]))


def test_the_api_queues_a_two_expert_job_with_its_last_frame(client: TestClient, settings: Settings) -> None:
    """The stored request of a two-expert model (its experts note) is a request the store keeps."""
    files = {
        "image": ("first.png", png_bytes(96, 64, (200, 10, 10)), "image/png"),
        "last_image": ("last.png", png_bytes(96, 64, (10, 200, 10)), "image/png"),
    }
    answer = client.post(
        "/api/v1/jobs", data={"prompt": "a loop", "model": "tiny-wan2.2-i2v-a14b"}, files=files
    )
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["request"]["experts"]["high_noise"] == "transformer"
    folder = settings.data_dir / "jobs" / job["id"]
    assert (folder / "last_image.png").read_bytes() == files["last_image"][1]


def test_the_low_noise_guidance_shows_for_two_experts_only_and_a_stray_value_is_never_sent() -> None:
    form = built("tiny-i2vgen-xl")
    box = form.component("guidance_scale_2")
    assert box.visible is False
    screen = Screen(form)
    screen.set("guidance_scale_2", 0)  # what the browser holds for a box it hides
    assert form.request(screen.inputs()).guidance_scale_2 is None
    screen.switch_to(A14B)
    assert screen.get("guidance_scale_2") == get_spec(A14B).defaults.guidance_scale  # "same as Guidance"
    screen.set("guidance_scale_2", 2.0)
    assert form.request(screen.inputs()).guidance_scale_2 == 2.0


def test_an_option_of_one_family_shows_for_that_family_only() -> None:
    """LTX-Video's decode options: shown with its defaults for it, hidden (and never sent) for the others."""
    form = built("tiny-i2vgen-xl")
    screen = Screen(form)
    assert form.component("decode_timestep").visible is False
    screen.set("decode_timestep", 0)  # what the browser holds for a hidden box
    form.request(screen.inputs()).resolve(get_spec("tiny-i2vgen-xl"), (96, 64), need_prompt=False)
    screen.switch_to("ltx-video")
    ltx = form.request(screen.inputs()).resolve(get_spec("ltx-video"), (96, 64), need_prompt=False)
    assert ltx.decode_timestep is not None and ltx.decode_timestep > 0
