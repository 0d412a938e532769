"""The web UI in a real browser: Debian's Chromium driven by Playwright (headless) against the served app.

What a user sees at 1366x768 and 400 px wide: the first screen holds image, prompt, Generate and status; the
plan readout follows every edit; a non-image upload and an out-of-range value are refused in plain words
naming the field; a model switch keeps the prompt and brings every value into the new model's range; a
queued job shows its place in the queue; a finished one its seed (kept with one click), a video that plays
and a download named after the job; variations run, show and cancel as a group, and list together in the
history, which shows thumbnails and pixel sizes; the workers table names the device and the running job.
Screenshots go to STILLMOTION_SCREENSHOT_DIR (default: the test's tmp dir). Install the browser with
scripts/install-browser.sh (`make test` does). A missing browser is a failure, never a silent skip: the
`chromium` fixture looks for it before anything starts, and only STILLMOTION_SKIP_BROWSER_TESTS=1, set by
hand and never by CI, turns that failure into a skip.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.helpers import BASE, free_port, png_bytes, server_process, small_job_fields, wait_terminal

WIDE = {"width": 1366, "height": 768}
NARROW = {"width": 400, "height": 860}

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
    with server_process(root / "data", port, OMP_NUM_THREADS="1"):
        yield f"{BASE}:{port}", root


@pytest.fixture(scope="module")
def shots(served: tuple[str, Path]) -> Path:
    folder = Path(os.environ.get("STILLMOTION_SCREENSHOT_DIR") or served[1] / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _open(browser: Any, base: str, viewport: dict[str, int], outside: list[str] | None = None) -> Any:
    from playwright.sync_api import expect

    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(30_000)
    if outside is not None:
        page.on(
            "request",
            lambda r: outside.append(r.url) if not r.url.startswith((base, "data:", "blob:")) else None,
        )
    page.goto(base + "/", wait_until="load")
    expect(page.locator("#sm-submit")).to_be_visible(
        timeout=30_000
    )  # 2 busy cores: the page may take a while
    expect(page.locator("#sm-plan")).to_contain_text("steps", timeout=30_000)  # the first readout has arrived
    return page


def _number(page: Any, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input")
    box.fill(value)
    box.press("Tab")


def _settings(page: Any) -> None:
    from playwright.sync_api import expect

    if not page.locator("#sm-frames").is_visible():
        page.locator("#sm-settings").get_by_text("Settings").click()
    expect(page.locator("#sm-frames")).to_be_visible()


def _bottom(page: Any, selector: str) -> float:
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    return float(box["y"] + box["height"])


def test_the_first_screen_holds_image_prompt_generate_and_status(
    browser: Any, served: tuple[str, Path], shots: Path
) -> None:
    base, _ = served
    page = _open(browser, base, WIDE)
    for selector in ("#sm-image", "#sm-prompt", "#sm-submit", "#sm-status", "#sm-plan"):
        assert _bottom(page, selector) <= WIDE["height"], f"{selector} is below the first 1366x768 screen"
    page.screenshot(path=str(shots / "1366-01-loaded.png"))
    narrow = _open(browser, base, NARROW)
    assert narrow.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]  # no sideways scroll
    assert _bottom(narrow, "#sm-submit") <= NARROW["height"]
    settings = narrow.locator("#sm-settings").bounding_box()
    assert settings is not None and _bottom(narrow, "#sm-video") <= settings["y"], (
        "the video is below Settings"
    )
    narrow.screenshot(path=str(shots / "400-01-loaded.png"), full_page=True)


def test_a_non_image_upload_gets_the_plain_error_and_no_plan(
    browser: Any, served: tuple[str, Path], shots: Path
) -> None:
    from playwright.sync_api import expect

    base, root = served
    notes = root / "notes.png"  # named like an image, holding text
    notes.write_bytes(b"these are my notes, not a picture\n" * 10)
    page = _open(browser, base, WIDE)
    page.locator("#sm-image input[type=file]").set_input_files(str(notes))
    readout = page.locator("#sm-plan")
    expect(readout).to_contain_text("This file is not an image we can read", timeout=30_000)
    expect(readout).to_contain_text("PNG, JPEG or WebP")
    expect(readout).not_to_contain_text("steps")  # the old plan is gone
    page.locator("#sm-prompt textarea").fill("a picture that is not one")
    page.locator("#sm-submit").click()
    toast = page.get_by_test_id("toast-body").last
    expect(toast).to_contain_text("Input image: this file is not an image we can read")
    page.screenshot(path=str(shots / "1366-02-not-an-image.png"))
    text = page.locator("body").inner_text()
    assert "Could not preprocess" not in text and "/tmp/gradio" not in text and "Unidentified" not in text
    # Plain words: no error code, no "image: image:", no Python bytes; and no broken-picture icon.
    assert "unsupported_format" not in text and "image: image" not in text and "b'" not in text
    previews = page.locator("#sm-image img")
    assert all(previews.nth(i).evaluate("i => getComputedStyle(i).visibility") == "hidden"
               for i in range(previews.count())), "the broken preview is still shown"  # fmt: skip


def test_out_of_range_values_are_refused_naming_the_field(browser: Any, served: tuple[str, Path]) -> None:
    from playwright.sync_api import expect

    base, root = served
    image = root / "refused.png"
    image.write_bytes(png_bytes(96, 64))
    page = _open(browser, base, WIDE)
    page.locator("#sm-image input[type=file]").set_input_files(str(image))
    page.locator("#sm-prompt textarea").fill("too many frames")
    _settings(page)
    _number(page, "sm-frames", "1000")
    expect(page.locator("#sm-frames input")).to_have_value("1000")  # not clamped behind the user's back
    page.locator("#sm-submit").click()
    toast = page.get_by_test_id("toast-body").last
    # Worded by the request's own check (as the API and the CLI word it), naming the form's field.
    expect(toast).to_contain_text(re.compile(r"Frames: .*1000.*32"))
    with httpx.Client(base_url=base, timeout=30) as http:
        prompts = [j["request"]["prompt"] for j in http.get("/api/v1/jobs").json()["jobs"]]
    assert "too many frames" not in prompts  # nothing was queued


def test_generate_queue_seed_download_and_history(
    browser: Any, served: tuple[str, Path], shots: Path
) -> None:
    from playwright.sync_api import expect

    base, root = served
    image_path = root / "photo.png"
    image_path.write_bytes(png_bytes(128, 96))
    outside: list[str] = []
    console_errors: list[str] = []
    page = _open(browser, base, WIDE, outside)
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.locator("#sm-image input[type=file]").set_input_files(str(image_path))
    page.locator("#sm-prompt textarea").fill("a red square drifting slowly to the right")
    readout = page.locator("#sm-plan")
    expect(readout).to_contain_text("576×448 px")  # 512p in the image's 4:3, width x height
    _settings(page)
    rules = page.locator("#sm-rules")
    expect(rules).to_contain_text("Frames: 8 to 32")  # the form's words, not num_frames
    assert "num_frames" not in rules.inner_text() and "guidance_scale" not in rules.inner_text()
    dice, seed_box = page.locator("#sm-dice").bounding_box(), page.locator("#sm-seed").bounding_box()
    assert dice is not None and seed_box is not None and dice["width"] < seed_box["width"] / 2, (
        dice,
        seed_box,
    )
    page.locator("#sm-size").get_by_text("Custom").click()
    expect(page.locator("#sm-width input")).to_have_value("576")  # Custom starts from the size planned
    expect(page.locator("#sm-height input")).to_have_value("448")
    _number(page, "sm-width", "64")
    _number(page, "sm-height", "64")
    _number(page, "sm-frames", "8")
    expect(readout).to_contain_text("64×64 px, 8 frames")  # no button: the readout follows the form
    _number(page, "sm-steps", "3")
    expect(readout).to_contain_text("3 steps")
    _number(page, "sm-steps", "2")
    expect(readout).to_contain_text("2 steps")
    page.screenshot(path=str(shots / "1366-03-settings-and-plan.png"), full_page=True)

    with httpx.Client(base_url=base, timeout=30) as http:
        # A long job from the API first, so the UI's job waits in the queue behind it.
        blocker = http.post(
            "/api/v1/jobs",
            files={"image": ("p.png", png_bytes(), "image/png")},
            data=small_job_fields(
                prompt="submitted through the REST API", height="256", width="256", num_inference_steps="60"
            ),
        ).json()
        page.locator("#sm-submit").click()
        status = page.locator("#sm-status")
        expect(status).to_contain_text("number 1 in the queue", timeout=30_000)
        page.screenshot(path=str(shots / "1366-04-queued.png"))
        http.post(f"/api/v1/jobs/{blocker['id']}/cancel")
        expect(status).to_contain_text("Done", timeout=180_000)
        assert wait_terminal(http, blocker["id"])["status"] == "cancelled"
        ui_job = next(
            j for j in http.get("/api/v1/jobs").json()["jobs"] if j["request"]["prompt"].startswith("a red")
        )
    seed = ui_job["request"]["seed"]
    expect(status).to_contain_text(f"Seed {seed}")
    video = page.locator("#sm-video video")
    expect(video).to_have_count(1, timeout=30_000)
    video.evaluate("v => { v.muted = true; return v.play(); }")
    page.wait_for_function(
        "() => { const v = document.querySelector('#sm-video video');"
        " return v && v.readyState >= 2 && v.duration > 0 && v.currentTime > 0; }",
        timeout=30_000,
    )
    state = video.evaluate("v => ({w: v.videoWidth, h: v.videoHeight, d: v.duration})")
    assert (state["w"], state["h"]) == (64, 64) and state["d"] > 0, state
    download = page.locator("#sm-download")
    expect(download).to_be_visible()
    with page.expect_download() as info:
        download.click()
    assert info.value.suggested_filename == f"stillmotion-{ui_job['id']}.mp4"  # the API's name too
    page.locator("#sm-keep-seed").click()
    expect(page.locator("#sm-seed input")).to_have_value(str(seed))
    # A job has run: the readout now says how long the next one should take here.
    expect(readout).to_contain_text("measured on this machine from 1 earlier job")
    page.screenshot(path=str(shots / "1366-05-done.png"), full_page=True)

    page.get_by_role("tab", name="History").click()
    history = page.locator("#sm-history")
    expect(history).to_contain_text(ui_job["id"][:8], timeout=30_000)
    expect(history).to_contain_text("64×64")
    expect(history).to_contain_text(str(seed))
    poster = history.locator("img:visible").first  # the poster frame of the video
    expect(poster).to_be_visible(timeout=30_000)
    loaded = poster.evaluate("i => ({w: i.naturalWidth, ok: i.complete})")
    assert loaded["ok"] and loaded["w"] > 0, loaded
    page.screenshot(path=str(shots / "1366-06-history.png"), full_page=True)
    history.get_by_text(blocker["id"][:8]).click()
    expect(page.locator("#sm-detail")).to_contain_text("submitted through the REST API")
    page.locator("#sm-reuse").click()
    expect(page.locator("#sm-prompt textarea")).to_have_value("submitted through the REST API")

    narrow = _open(browser, base, NARROW)
    narrow.get_by_role("tab", name="History").click()
    expect(narrow.locator("#sm-history")).to_contain_text(ui_job["id"][:8], timeout=30_000)
    narrow.screenshot(path=str(shots / "400-02-history.png"), full_page=True)

    assert outside == [], f"the UI made requests off this server: {outside[:5]}"
    assert ui_job["request"]["height"] == 64 and ui_job["request"]["num_frames"] == 8
    assert ui_job["request"]["num_inference_steps"] == 2
    assert seed != 0  # -1 in the UI means a random seed, not 0


def _choose_model(page: Any, name: str) -> None:
    box = page.locator("#sm-model input")
    box.click()
    box.fill(name)
    page.get_by_role("option", name=name, exact=True).click()


def test_a_model_switch_keeps_the_prompt_and_brings_values_into_range(
    browser: Any, served: tuple[str, Path], shots: Path
) -> None:
    from playwright.sync_api import expect

    base, root = served
    image = root / "switch.png"
    image.write_bytes(png_bytes(128, 96))
    for viewport, prefix in ((WIDE, "1366"), (NARROW, "400")):
        page = _open(browser, base, viewport)
        page.locator("#sm-image input[type=file]").set_input_files(str(image))
        prompt = page.locator("#sm-prompt textarea")
        prompt.fill("waves roll in")
        _settings(page)
        _choose_model(page, "wan2.1-i2v-14b-480p")
        frames, note = page.locator("#sm-frames input"), page.locator("#sm-model-note")
        expect(frames).to_have_value("81", timeout=30_000)
        _number(page, "sm-frames", "41")  # the user's own value, too many for I2VGen-XL
        _choose_model(page, "i2vgen-xl")
        expect(frames).to_have_value("32", timeout=30_000)
        expect(note).to_contain_text("Frames 41 → 32")
        expect(page.locator("#sm-plan")).to_contain_text("32 frames", timeout=60_000)  # planned as switched
        page.locator("#sm-model").scroll_into_view_if_needed()
        page.screenshot(path=str(shots / f"{prefix}-07-model-switch.png"), full_page=prefix == "400")
        _choose_model(page, "svd-xt")  # no text encoder: the prompt is kept aside, not lost
        expect(prompt).to_have_value("", timeout=30_000)
        expect(prompt).to_be_disabled()
        expect(note).to_contain_text("Prompt kept aside")
        _choose_model(page, "tiny-i2vgen-xl")
        expect(prompt).to_have_value("waves roll in", timeout=30_000)
        expect(page.locator("#sm-plan")).to_contain_text("tiny-i2vgen-xl", timeout=60_000)
        expect(page.get_by_test_id("toast-body")).to_have_count(0)  # no error at any switch
        assert "greater than maximum" not in page.locator("body").inner_text()
        page.close()


def _one_line(page: Any, selector: str, text: str) -> bool:
    """Whether the table cell holding ``text`` shows it on one line (no word broken across lines)."""
    return bool(
        page.evaluate(
            "([selector, text]) => { const cell = [...document.querySelectorAll(selector)]"
            ".find(c => c.textContent.trim() === text); if (!cell) return false;"
            " const range = document.createRange(); range.selectNodeContents(cell);"
            " return range.getClientRects().length === 1; }",
            [selector, text],
        )
    )


LONG_PROMPT = "variations of a red square drifting slowly across a calm blue sea at dusk, the light fading"


def test_variations_show_cancel_and_list_as_a_group_and_workers_say_what_runs(
    browser: Any, served: tuple[str, Path], shots: Path
) -> None:
    from playwright.sync_api import expect

    base, root = served
    image = root / "group.png"
    image.write_bytes(png_bytes(128, 96))
    page = _open(browser, base, WIDE)
    page.locator("#sm-image input[type=file]").set_input_files(str(image))
    page.locator("#sm-prompt textarea").fill(LONG_PROMPT)
    _settings(page)
    page.locator("#sm-size").get_by_text("Custom").click()
    for elem_id, value in (("sm-width", "64"), ("sm-height", "64"), ("sm-frames", "8"), ("sm-steps", "2")):
        _number(page, elem_id, value)
    _number(page, "sm-variations", "2")
    page.locator("#sm-submit").click()
    status = page.locator("#sm-status")
    expect(status).to_contain_text("of 2 done", timeout=30_000)
    expect(status).to_contain_text("Variations: 2 of 2 done", timeout=180_000)  # not "Done" after the first
    expect(page.locator("#sm-video video")).to_have_count(1, timeout=30_000)
    page.screenshot(path=str(shots / "1366-08-variations-done.png"))

    with httpx.Client(base_url=base, timeout=30) as http:
        blocker = http.post(
            "/api/v1/jobs",
            files={"image": ("p.png", png_bytes(), "image/png")},
            data=small_job_fields(
                prompt="a long job ahead", height="256", width="256", num_inference_steps="60"
            ),
        ).json()
        _number(page, "sm-variations", "3")
        page.locator("#sm-submit").click()
        expect(status).to_contain_text("Variations: 0 of 3 done", timeout=30_000)
        page.screenshot(path=str(shots / "1366-09-variations-queued.png"))

        page.get_by_role("tab", name="History").click()
        workers = page.locator("#sm-workers")
        expect(workers).to_contain_text(f"running {blocker['id'][:8]}", timeout=60_000)
        expect(workers).to_contain_text("CPU")
        assert "auto" not in workers.inner_text()
        page.screenshot(path=str(shots / "1366-10-workers.png"), full_page=True)
        narrow = _open(browser, base, NARROW)
        narrow.get_by_role("tab", name="History").click()
        expect(narrow.locator("#sm-workers")).to_contain_text("running", timeout=30_000)
        assert _one_line(narrow, "#sm-workers td", "worker-0"), "the worker's name breaks at 400 px"
        narrow.locator("#sm-workers").scroll_into_view_if_needed()
        narrow.screenshot(path=str(shots / "400-04-workers.png"), full_page=True)
        narrow.close()

        page.get_by_role("tab", name="Generate").click()
        page.locator("#sm-cancel").click()  # the whole group, not only the job on screen
        expect(status).to_contain_text("Variations: 3 of 3 done", timeout=60_000)
        expect(status).to_contain_text("3 cancelled")
        http.post(f"/api/v1/jobs/{blocker['id']}/cancel")
        wait_terminal(http, blocker["id"])
        group = [
            j
            for j in http.get("/api/v1/jobs").json()["jobs"]
            if j["request"]["prompt"].startswith("variations")
        ]
    assert sorted(j["status"] for j in group) == ["cancelled"] * 3 + ["succeeded"] * 2

    page.get_by_role("tab", name="History").click()
    history = page.locator("#sm-history")
    expect(history).to_contain_text("(3/3)", timeout=30_000)
    jobs_column = history.locator("[data-testid^='cell-'][data-testid$='-1']").all_inner_texts()
    places = [cell.split(" ")[-1] for cell in jobs_column if cell.endswith("/3)")]
    assert places == ["(1/3)", "(2/3)", "(3/3)"], jobs_column  # together, in the order asked
    prompt_cell = history.locator("[data-testid='cell-0-4']")
    prompt_cell.click()  # a selected prompt shows whole, not clipped to the column
    expect(prompt_cell).to_contain_text(LONG_PROMPT)
    page.screenshot(path=str(shots / "1366-11-history-groups.png"), full_page=True)
    narrow = _open(browser, base, NARROW)
    narrow.get_by_role("tab", name="History").click()
    expect(narrow.locator("#sm-history")).to_contain_text("(3/3)", timeout=30_000)
    narrow.screenshot(path=str(shots / "400-05-history-groups.png"), full_page=True)


def test_a_missing_browser_fails_unless_the_skip_is_explicit(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-chromium")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", str(tmp_path))  # no chromium on PATH either
        with pytest.raises(pytest.fail.Exception, match="STILLMOTION_SKIP_BROWSER_TESTS=1"):
            find_chromium(missing, skip_requested=False)
        with pytest.raises(pytest.skip.Exception):
            find_chromium(missing, skip_requested=True)
