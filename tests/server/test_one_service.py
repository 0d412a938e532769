"""The web UI and the REST API share one JobService: one queue, one admission rule, one shutdown.

Driven through Gradio's own client over HTTP (the same calls the browser makes), against the real app.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file

from stillmotion.server.app import create_app
from tests.server.helpers import live_server, make_settings, png_bytes

pytestmark = pytest.mark.timeout(120)

# The UI's submit inputs after the image: prompt, negative, model, size, height, width, frames, steps,
# guidance, fps, seed (-1 = random).
FORM = ("a red square drifting", "", "tiny-i2vgen-xl", "Custom", 64, 64, 8, 2, 9.0, 8, -1)


def test_ui_jobs_land_in_the_api_queue_and_a_draining_service_refuses_both(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    app = create_app(settings, start_worker=False)
    image = tmp_path / "in.png"
    image.write_bytes(png_bytes())
    with live_server(app) as base, httpx.Client(base_url=base, timeout=30) as http:
        ui = Client(f"{base}/", verbose=False)
        try:
            ui.predict(handle_file(str(image)), *FORM, api_name="/submit")
            (job,) = http.get("/api/v1/jobs").json()["jobs"]  # the UI's job, seen by the API
            assert job["status"] == "queued" and job["request"]["prompt"] == FORM[0]

            app.state.service.accepting = False  # what the lifespan does when shutdown begins
            with pytest.raises(Exception, match="shutting down"):
                ui.predict(handle_file(str(image)), *FORM, api_name="/submit")
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
