"""The controller page in a real headless Chromium (Playwright), against the real Cog server with tiny
weights (CPU) behind the page's own proxy server.

Needs the ``playwright`` Python package (its bundled driver only; no downloaded browsers) and
Debian's ``chromium`` (``/usr/bin/chromium``, or ``GAMECRAFT_CHROMIUM``). Screenshots go to
``GAMECRAFT_UI_ARTIFACTS`` or a pytest temporary folder (printed in the report).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
from pathlib import Path

import pytest
from tools.cog_server import request_json, start_cog_server
from conftest import REPO_ROOT

from gamecraft.pipeline.actions import parse_actions
from gamecraft.pipeline.camera import chunk_poses
from gamecraft.media.preview import top_down_points
from gamecraft.ui import CogBackend, make_server

CHROMIUM = os.environ.get("GAMECRAFT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"chromium not found ({CHROMIUM}); install Debian's chromium package", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

IMAGE = REPO_ROOT / "assets" / "start.png"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000
FAKE_PAD = """
window.__pad = {id: "Test pad (STANDARD GAMEPAD)", index: 0, connected: true, mapping: "standard", timestamp: 0,
                axes: [0, 0, 0, 0], buttons: Array.from({length: 17}, () => ({pressed: false, touched: false, value: 0}))};
navigator.getGamepads = () => [window.__pad, null, null, null];
"""


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    path = Path(os.environ.get("GAMECRAFT_UI_ARTIFACTS") or tmp_path_factory.mktemp("ui-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {path}")
    return path


@pytest.fixture(scope="module")
def cog(tmp_path_factory):
    env = {"GAMECRAFT_WEIGHTS": "tiny", "GAMECRAFT_TINY_SIZE": "32x48", "CUDA_VISIBLE_DEVICES": "",
           "TMPDIR": str(tmp_path_factory.mktemp("cog-tmp"))}
    server = start_cog_server(REPO_ROOT, "predict.py:Predictor", env, startup_timeout_s=240)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ui_url(cog):
    httpd = make_server(CogBackend(cog.url), "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True, timeout=60_000)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, ui_url):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(ui_url)
    page.wait_for_function("window.gamecraft !== undefined")
    yield page
    context.close()
    assert errors == [], errors


def lists(page) -> tuple[list, list]:
    return json.loads(page.text_content("#json-actions")), json.loads(page.text_content("#json-speeds"))


def test_js_camera_path_agrees_with_python(page):
    actions = ["w", "left_rot", "w+left_rot", "d+up_rot", "idle", "s+right_rot+down_rot", "a"]
    speeds = [0.4, 30, [0.5, 45], [0.3, 10], 0, [0.2, 60, 5], 1.5]
    segments = parse_actions(actions, speeds)
    positions, headings = top_down_points([chunk_poses(s) for s in segments])
    chunks = [[{"key": m.key, "speed": m.speed} for m in s.motions] for s in segments]
    js = page.evaluate("async (chunks) => (await import('./path.js')).topDownPoints(chunks)", chunks)
    assert len(js["positions"]) == positions.shape[0] == len(actions) * 33 + 1
    assert max(abs(a - b) for p, q in zip(js["positions"], positions.tolist()) for a, b in zip(p, q)) < 1e-9
    assert max(abs(a - b) for a, b in zip(js["headings"], headings.tolist())) < 1e-9


def test_keys_buttons_and_timeline_edits_make_the_json(page, artifacts):
    page.keyboard.press("KeyW")
    assert lists(page) == (["w"], [0.4])
    page.keyboard.down("KeyW")
    page.keyboard.down("ArrowLeft")
    page.keyboard.up("ArrowLeft")
    page.keyboard.up("KeyW")
    assert lists(page) == (["w", "w+left_rot"], [0.4, [0.4, 20]])
    page.eval_on_selector("#move-speed", "el => { el.value = '1.25'; el.dispatchEvent(new Event('input')); }")
    page.eval_on_selector("#look-speed", "el => { el.value = '35'; el.dispatchEvent(new Event('input')); }")
    assert page.text_content("#move-speed-out") == "1.25"
    page.keyboard.press("ArrowUp")
    page.keyboard.press("KeyD")
    # mouse drag on the look pad while holding S: a combined chunk
    box = page.locator("#lookpad").bounding_box()
    page.keyboard.down("KeyS")
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 - 80, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    page.keyboard.up("KeyS")
    # on-screen caps, Add and idle
    page.click(".cap[data-key=a]")
    page.click(".cap[data-key=down_rot]")
    assert page.locator(".cap.on").count() == 2
    page.click("#add")
    page.click("#idle")
    assert lists(page) == (["w", "w+left_rot", "up_rot", "d", "s+left_rot", "a+down_rot", "idle"],
                           [0.4, [0.4, 20], 35, 1.25, [1.25, 35], [1.25, 35], 0])
    assert page.locator("#timeline li").count() == 7
    # the minimap's final heading is Python's (chunks after a pitch turn about the tilted axis)
    _, headings = top_down_points([chunk_poses(s) for s in parse_actions(*lists(page))])
    assert page.get_attribute("#minimap", "data-yaw") == str(round(math.degrees(headings[-1])))
    page.screenshot(path=str(artifacts / "controller-timeline.png"), full_page=True)

    rows = page.locator("#timeline li")
    rows.nth(6).locator("button[title=delete]").click()       # delete idle
    rows.nth(1).locator("button[title='move up']").click()    # w+left_rot first
    rows.nth(0).locator("input.speed, .speed input").nth(1).fill("10")
    rows.nth(0).locator(".speed input").nth(1).dispatch_event("change")
    rows.nth(2).locator("input.action").fill("w+right_rot")
    rows.nth(2).locator("input.action").dispatch_event("change")
    assert lists(page) == (["w+left_rot", "w", "w+right_rot", "d", "s+left_rot", "a+down_rot"],
                           [[0.4, 10], 0.4, [1.25, 35], 1.25, [1.25, 35], [1.25, 35]])
    command = page.text_content("#command")
    assert command.startswith("curl -s -X POST http://127.0.0.1:") and '\\"w+left_rot\\"' in command
    page.select_option("#cmd-kind", "cog")
    assert "-i actions='[\"w+left_rot\", \"w\"," in page.text_content("#command")


def test_gamepad_sticks_and_buttons(browser, ui_url, cog, artifacts):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.add_init_script(FAKE_PAD)
    page = context.new_page()
    try:
        page.goto(ui_url)
        page.wait_for_function("document.querySelector('#pad-status').textContent.includes('Test pad')")

        def pad(axes=None, button=None):
            page.evaluate("([axes, button]) => { if (axes) window.__pad.axes = axes;"
                          " window.__pad.buttons.forEach((b, i) => { b.pressed = i === button; b.value = +(i === button); }); }",
                          [axes, button])
            page.wait_for_timeout(150)  # the page polls every 50 ms

        pad([0.1, -0.9, 0.8, -0.2])           # left stick up, right stick right; small values inside the deadzone
        assert page.locator(".cap.on").evaluate_all("caps => caps.map(c => c.dataset.key)") == ["w", "right_rot"]
        pad(button=0), pad(button=None)        # A: add chunk
        pad([0, 0, 0, 0.95])                   # right stick down only
        pad(button=0), pad(button=None)
        pad([-0.7, 0, 0, 0])
        pad(button=0), pad(button=None)
        pad(button=1), pad(button=None)        # B: undo the last chunk
        pad([0, 0, 0, 0])
        pad(button=0), pad(button=None)        # centred sticks: idle
        assert lists(page) == (["w+right_rot", "down_rot", "idle"], [[0.4, 20], 20, 0])
        page.screenshot(path=str(artifacts / "gamepad.png"))
        pad(button=9), pad(button=None)        # Start: generate (no start image: the server says so)
        page.wait_for_selector(".field-error[data-for=image].shown", timeout=30_000)
        assert "exactly one of image, video or continue_from" in page.text_content(".field-error[data-for=image]")
        assert cog.wait_until_ready() == "READY"
    finally:
        context.close()


def wait_videos(page, count):
    page.wait_for_function(
        f"() => {{ const v = [...document.querySelectorAll('video.chunk-video')];"
        f" return v.length === {count} && v.every(x => x.readyState >= 2); }}", timeout=TIMEOUT_MS)


def test_generate_plays_each_chunk_then_keep_playing_continues(page, cog, artifacts):
    page.set_input_files("#file", str(IMAGE))
    page.wait_for_function("document.querySelector('#drop-text').textContent.includes('start.png')")
    page.fill("#steps", "2")
    page.click("#dice")
    assert page.input_value("#seed").isdigit()
    page.keyboard.press("KeyW")
    page.keyboard.down("KeyD"), page.keyboard.down("ArrowLeft"), page.keyboard.up("ArrowLeft"), page.keyboard.up("KeyD")
    page.click("#generate")
    wait_videos(page, 2)
    page.wait_for_function("document.querySelector('#progress-text').textContent.startsWith('done')")
    assert page.eval_on_selector("#player", "v => v.src.startsWith('data:video/mp4')")
    page.wait_for_function("document.querySelector('#player').readyState >= 2")
    downloads = page.locator("#downloads a").evaluate_all("as => as.map(a => a.download)")
    assert downloads == ["chunk001.mp4", "chunk002.mp4", "video.mp4", "world-state.safetensors"]
    assert "chunk 2/2 done" in page.text_content("#log")
    page.screenshot(path=str(artifacts / "generated.png"), full_page=True)

    assert cog.wait_until_ready() == "READY"
    page.click("#clear")
    page.keyboard.press("KeyA")
    assert page.is_enabled("#keep")
    page.click("#keep")
    wait_videos(page, 3)
    page.wait_for_function("document.querySelector('#progress-text').textContent.startsWith('done')")
    assert page.locator("video.chunk-video").evaluate_all("v => v.map(x => x.dataset.chunk)") == ["1", "2", "3"]
    assert "world: 3 chunks" in page.text_content("#world")
    page.screenshot(path=str(artifacts / "keep-playing.png"), full_page=True)
    assert cog.wait_until_ready() == "READY"


def test_errors_appear_next_to_their_field(page, cog, artifacts):
    page.set_input_files("#file", str(IMAGE))
    page.wait_for_function("document.querySelector('#drop-text').textContent.includes('start.png')")
    page.click("#generate")   # empty timeline: refused in the page
    assert "Add at least one chunk" in page.text_content(".field-error[data-for=actions]")
    page.keyboard.press("KeyW")
    page.fill("#seed", str(2**31))
    page.click("#generate")   # coglet's 422
    page.wait_for_selector(".field-error[data-for=seed].shown")
    assert "seed" in page.text_content(".field-error[data-for=seed]")
    page.fill("#seed", "3")
    page.fill("#steps", "1")
    page.locator("#timeline input.action").fill("jump")
    page.locator("#timeline input.action").dispatch_event("change")
    page.click("#generate")   # the predictor's ValueError
    page.wait_for_selector(".field-error[data-for=actions].shown")
    assert "actions[0]: unknown action 'jump'" in page.text_content(".field-error[data-for=actions]")
    page.screenshot(path=str(artifacts / "error-inline.png"), full_page=True)
    assert cog.wait_until_ready() == "READY"

    # busy: another client's prediction holds the only slot -> 409 next to Generate
    image = "data:image/png;base64," + __import__("base64").b64encode(IMAGE.read_bytes()).decode()
    status, _ = request_json("POST", f"{cog.url}/predictions", {"id": "ui-busy", "input": {
        "image": image, "actions": json.dumps(["w"] * 12), "action_speeds": json.dumps([0.2] * 12),
        "num_inference_steps": 8}}, headers={"Prefer": "respond-async"})
    assert status == 202
    try:
        page.locator("#timeline input.action").fill("w")
        page.locator("#timeline input.action").dispatch_event("change")
        page.click("#generate")
        page.wait_for_selector(".field-error[data-for=generate].shown")
        assert "busy" in page.text_content(".field-error[data-for=generate]")
    finally:
        request_json("POST", f"{cog.url}/predictions/ui-busy/cancel")
        assert cog.wait_until_ready(60) == "READY"


def test_cancel_stops_a_running_generation(page, cog):
    page.set_input_files("#file", str(IMAGE))
    page.wait_for_function("document.querySelector('#drop-text').textContent.includes('start.png')")
    page.fill("#steps", "8")
    page.keyboard.press("Escape")  # leaves the field: keys drive the controller again
    for _ in range(12):
        page.keyboard.press("KeyW")
    page.click("#generate")
    page.wait_for_function("document.querySelector('#progress-text').textContent.includes('step')", timeout=30_000)
    page.click("#cancel")
    page.wait_for_function("document.querySelector('#progress-text').textContent === 'canceled'", timeout=30_000)
    assert page.is_enabled("#generate")
    assert cog.wait_until_ready(60) == "READY"
    assert page.locator("video.chunk-video").count() < 12


def test_dropping_a_state_file_enables_keep_playing(page):
    data = page.evaluate_handle(
        "() => { const dt = new DataTransfer();"
        " dt.items.add(new File([new Uint8Array([1, 2, 3])], 'my-world.safetensors')); return dt; }")
    page.dispatch_event("#drop", "drop", {"dataTransfer": data})
    page.wait_for_function("document.querySelector('#drop-text').textContent === 'state: my-world.safetensors'")
    assert page.is_enabled("#keep")
    page.keyboard.press("KeyW")
    page.select_option("#cmd-kind", "cog")
    assert page.text_content("#command").startswith("cog predict -i continue_from=@my-world.safetensors")
