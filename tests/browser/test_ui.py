"""The web UI in a real browser: Debian's Chromium driven by Playwright (headless) against the served app.

Upload an image, choose a 64x64 custom size, 8 frames, 2 steps and the tiny model, submit, wait for the
video and check that it plays; a job submitted through the REST API must show in the UI's history.
Screenshots go to STILLMOTION_SCREENSHOT_DIR (default: the test's tmp dir). Install the browser with
scripts/install-browser.sh (`make test` does). A missing browser is a failure, never a silent skip: the
`chromium` fixture looks for it before anything starts, and only STILLMOTION_SKIP_BROWSER_TESTS=1, set by
hand and never by CI, turns that failure into a skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.helpers import BASE, free_port, png_bytes, server_process, small_job_fields, wait_terminal

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

CHROMIUM = os.environ.get("STILLMOTION_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


SKIP_SWITCH = "STILLMOTION_SKIP_BROWSER_TESTS"  # an explicit opt-out for a developer without a browser


def find_chromium(configured: str, skip_requested: bool) -> str:
    """The Chromium to drive; a missing one fails the test unless the skip was asked for explicitly."""
    path = configured if Path(configured).exists() else shutil.which("chromium")
    if path is not None:
        return path
    message = f"Chromium not found at {configured} or on PATH; run scripts/install-browser.sh"
    if skip_requested:
        pytest.skip(f"{message} ({SKIP_SWITCH}=1)")
    pytest.fail(f"{message}, or set {SKIP_SWITCH}=1 to skip the browser test on purpose.")


@pytest.fixture(scope="module")
def chromium() -> str:
    """Checked before the server starts, so a missing browser is reported at once and plainly."""
    return find_chromium(CHROMIUM, os.environ.get(SKIP_SWITCH) == "1")


@pytest.fixture(scope="module")
def served(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("browser")
    port = free_port()
    with server_process(root / "data", port):
        yield f"{BASE}:{port}", root


@pytest.fixture(scope="module")
def shots(served: tuple[str, Path]) -> Path:
    folder = Path(os.environ.get("STILLMOTION_SCREENSHOT_DIR") or served[1] / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _slider(page: Any, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(value)
    box.press("Enter")


def test_generate_in_the_browser(chromium: str, served: tuple[str, Path], shots: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, root = served
    image_path = root / "photo.png"
    image_path.write_bytes(png_bytes(128, 96))
    with httpx.Client(base_url=base, timeout=30) as http:  # a job from the API, to find in the UI history
        api_job = http.post(
            "/api/v1/jobs",
            files={"image": ("p.png", png_bytes(), "image/png")},
            data=small_job_fields(prompt="submitted through the REST API"),
        ).json()
        wait_terminal(http, api_job["id"])

    outside: list[str] = []
    console_errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.on(
                "request",
                lambda r: outside.append(r.url) if not r.url.startswith((base, "data:", "blob:")) else None,
            )
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.goto(base + "/", wait_until="load")
            expect(page.locator("#sm-submit")).to_be_visible()
            page.screenshot(path=str(shots / "01-loaded.png"), full_page=True)

            page.locator("#sm-image input[type=file]").set_input_files(str(image_path))
            expect(page.locator("#sm-image img")).to_be_visible()
            page.locator("#sm-prompt textarea").fill("a red square drifting slowly to the right")
            model = page.locator("#sm-model input")
            model.fill("tiny-i2vgen-xl")
            model.press("Enter")
            # Choosing a model resets frames/steps to its defaults: let that land before setting them.
            expect(page.locator("#sm-steps input[type=number]")).to_have_value("4")
            page.locator("#sm-size").get_by_text("Custom").click()
            page.locator("#sm-height input").fill("64")
            page.locator("#sm-width input").fill("64")
            page.locator("#sm-width input").press("Tab")
            _slider(page, "sm-frames", "8")
            _slider(page, "sm-steps", "2")
            page.locator("#sm-plan-btn").click()
            expect(page.locator("#sm-plan")).to_contain_text("64×64", timeout=30_000)
            page.screenshot(path=str(shots / "02-filled-with-plan.png"), full_page=True)

            page.locator("#sm-submit").click()
            expect(page.locator("#sm-status")).to_contain_text("Job", timeout=30_000)
            page.screenshot(path=str(shots / "03-submitted.png"), full_page=True)
            expect(page.locator("#sm-status")).to_contain_text("succeeded", timeout=180_000)
            video = page.locator("#sm-video video")
            expect(video).to_have_count(1, timeout=30_000)
            video.evaluate("v => { v.muted = true; return v.play(); }")
            page.wait_for_function(
                "() => { const v = document.querySelector('#sm-video video');"
                " return v && v.readyState >= 2 && v.duration > 0 && v.currentTime > 0; }",
                timeout=30_000,
            )
            state = video.evaluate(
                "v => ({ready: v.readyState, duration: v.duration, t: v.currentTime,"
                " w: v.videoWidth, h: v.videoHeight})"
            )
            assert state["ready"] >= 2 and state["duration"] > 0 and state["t"] > 0, state
            assert (state["w"], state["h"]) == (64, 64), state
            expect(page.locator("#sm-download")).to_be_visible()
            page.screenshot(path=str(shots / "04-video.png"), full_page=True)

            page.get_by_role("tab", name="History").click()
            history = page.locator("#sm-history")
            expect(history).to_contain_text(api_job["id"][:8], timeout=30_000)
            expect(history).to_contain_text("succeeded")
            history.get_by_text(api_job["id"][:8]).click()
            expect(page.locator("#sm-detail")).to_contain_text("submitted through the REST API")
            page.screenshot(path=str(shots / "05-history.png"), full_page=True)
            page.locator("#sm-reuse").click()
            expect(page.locator("#sm-prompt textarea")).to_have_value("submitted through the REST API")
            page.screenshot(path=str(shots / "06-reused.png"), full_page=True)
        finally:
            browser.close()

    assert outside == [], f"the UI made requests off this server: {outside[:5]}"
    with httpx.Client(base_url=base, timeout=30) as http:
        jobs = http.get("/api/v1/jobs").json()["jobs"]
    ui_jobs = [j for j in jobs if j["request"]["prompt"].startswith("a red square")]
    assert len(ui_jobs) == 1 and ui_jobs[0]["status"] == "succeeded"
    assert ui_jobs[0]["request"]["height"] == 64 and ui_jobs[0]["request"]["num_frames"] == 8
    assert ui_jobs[0]["request"]["num_inference_steps"] == 2
    assert ui_jobs[0]["request"]["seed"] != 0  # -1 in the UI means a random seed, not 0


def test_a_missing_browser_fails_unless_the_skip_is_explicit(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-chromium")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", str(tmp_path))  # no chromium on PATH either
        with pytest.raises(pytest.fail.Exception, match="STILLMOTION_SKIP_BROWSER_TESTS=1"):
            find_chromium(missing, skip_requested=False)
        with pytest.raises(pytest.skip.Exception):
            find_chromium(missing, skip_requested=True)
