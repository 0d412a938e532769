"""The web UI and the REST API share one JobService: one queue, one admission rule, one shutdown.

Driven through Gradio's own client over HTTP (the same calls the browser makes), against the real app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client, handle_file

from stillmotion.server.app import create_app
from tests.server.helpers import live_server, make_settings, png_bytes

pytestmark = pytest.mark.timeout(120)

# What the test asks for, by the form's labels; every other input keeps its default (None: left empty).
ASKED = {"Prompt": "a red square drifting", "Model": "tiny-i2vgen-xl", "Size": "Custom", "Width": 64,
         "Height": 64, "Frames": 8, "Steps": 2}  # fmt: skip
PROMPT = ASKED["Prompt"]


def submit_args(ui: Client, image: Path) -> list[Any]:
    """The submit endpoint's arguments in its order (the form's fields, derived from the field list)."""
    endpoint = ui.view_api(return_format="dict", print_info=False)["named_endpoints"]["/submit"]
    args: list[Any] = []
    for parameter in endpoint["parameters"]:
        label = parameter["label"]
        if label == "Input image":
            args.append(handle_file(str(image)))
        elif label in ASKED:
            args.append(ASKED[label])
        else:
            args.append(parameter["parameter_default"] if parameter["parameter_has_default"] else None)
    return args


def test_ui_jobs_land_in_the_api_queue_and_a_draining_service_refuses_both(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    app = create_app(settings, start_worker=False)
    image = tmp_path / "in.png"
    image.write_bytes(png_bytes())
    with live_server(app) as base, httpx.Client(base_url=base, timeout=30) as http:
        ui = Client(f"{base}/", verbose=False)
        try:
            ui.predict(*submit_args(ui, image), api_name="/submit")
            (job,) = http.get("/api/v1/jobs").json()["jobs"]  # the UI's job, seen by the API
            assert job["status"] == "queued" and job["request"]["prompt"] == PROMPT

            app.state.service.accepting = False  # what the lifespan does when shutdown begins
            with pytest.raises(Exception, match="shutting down"):
                ui.predict(*submit_args(ui, image), api_name="/submit")
            refused = http.post(
                "/api/v1/jobs",
                files={"image": ("in.png", png_bytes(), "image/png")},
                data={"prompt": "x", "model": "tiny-i2vgen-xl"},
            )
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
            assert refused.headers["Retry-After"] == "10"
            assert http.get("/api/v1/jobs").json()["total"] == 1  # neither refusal left a row
        finally:
            ui.close()
