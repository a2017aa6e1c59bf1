"""The controller page in a real headless Chromium (Playwright) against the real Cog server with tiny weights
(CPU) behind the page's own server: a held-key session end to end, the commands it shows (run for real),
errors, cancel and saved worlds. Play semantics, playback and layout against the contract predictor are in
test_ui_play.py.

Needs the ``playwright`` Python package (its bundled driver only; no downloaded browsers) and Debian's
``chromium`` (``/usr/bin/chromium``, or ``GAMECRAFT_CHROMIUM``). Screenshots go to ``GAMECRAFT_UI_ARTIFACTS``
or a pytest temporary folder (printed in the report).
"""

from __future__ import annotations

import base64
import json
import math
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from safetensors import safe_open
from ui_harness import (
    capture_inputs,
    downloads,
    hold,
    lists,
    open_page,
    page_server,
    require_browser,
    rows,
    run_curl,
    wait_done,
    watch,
)

from gamecraft.media.preview import top_down_points
from gamecraft.pipeline.actions import parse_actions
from gamecraft.pipeline.camera import chunk_poses
from gamecraft.ui import CogBackend
from tools.cog_server import request_json, start_cog_server

sync_api = require_browser()
IMAGE = REPO_ROOT / "assets" / "start.png"
SCHEMA = (
    json.loads((REPO_ROOT / ".cog" / "openapi_schema.json").read_text())
    if (REPO_ROOT / ".cog" / "openapi_schema.json").is_file()
    else None
)


@pytest.fixture(scope="module")
def cog(tmp_path_factory):
    if SCHEMA is None:
        subprocess.run(["python", str(REPO_ROOT / "tools" / "cog_schema.py")], cwd=REPO_ROOT, check=True)
    env = {
        "GAMECRAFT_WEIGHTS": "tiny",
        "GAMECRAFT_TINY_SIZE": "32x48",
        "CUDA_VISIBLE_DEVICES": "",
        "TMPDIR": str(tmp_path_factory.mktemp("cog-tmp")),
    }
    server = start_cog_server(REPO_ROOT, "predict.py:Predictor", env, startup_timeout_s=240)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ui_url(cog):
    with page_server(CogBackend(cog.url)) as (address, _):
        yield address


@pytest.fixture
def page(browser, ui_url):
    page = open_page(browser, ui_url)
    yield page
    page.context.close()
    assert page.errors == [], page.errors


def set_steps(page, steps):
    page.click("#advanced summary")
    page.fill("#steps", str(steps))
    page.keyboard.press("Escape")


def test_js_camera_path_agrees_with_python(page):
    actions = ["w", "left_rot", "w+left_rot", "d+up_rot", "idle", "s+right_rot+down_rot", "a"]
    speeds = [0.4, 30, [0.5, 45], [0.3, 10], 0, [0.2, 60, 5], 1.5]
    segments = parse_actions(actions, speeds)
    positions, headings = top_down_points([chunk_poses(s) for s in segments])
    chunks = [[{"key": m.key, "speed": m.speed} for m in s.motions] for s in segments]
    js = page.evaluate(
        "async (chunks) => (await import('./path.js')).topDownPoints(chunks, window.gamecraft.state.table)", chunks
    )
    assert len(js["positions"]) == positions.shape[0] == len(actions) * 33 + 1
    assert (
        max(
            abs(a - b)
            for p, q in zip(js["positions"], positions.tolist(), strict=True)
            for a, b in zip(p, q, strict=True)
        )
        < 1e-9
    )
    assert max(abs(a - b) for a, b in zip(js["headings"], headings.tolist(), strict=True)) < 1e-9


def test_a_held_key_session_from_the_preloaded_example(page, cog, artifacts):
    """The session in docs/ui-session/ (what a 1440x900 screen shows): the example image is there, hold W,
    chord, Generate, Keep playing, the whole world, and the world offered back after a reload."""
    shots = artifacts / "session"
    shots.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 1440, "height": 900})
    shot = lambda name: page.screenshot(path=str(shots / f"{name}.png"))  # noqa: E731
    sent = capture_inputs(page)
    progress = watch(page, "#progress-text")
    assert page.text_content("#drop-text") == "image: village.png"
    assert page.get_attribute("#examples button[data-file='village.png']", "aria-checked") == "true"
    shot("1-start")
    page.keyboard.down("KeyW")
    page.wait_for_timeout(1500)
    shot("2-holding-w")
    page.wait_for_timeout(1140)  # held about 2.6 s: two chunks
    page.keyboard.up("KeyW")
    hold(page, "KeyW", "ArrowLeft", seconds=0.3)
    actions = lists(page)[0]
    assert actions[-1] == "w+left_rot" and set(actions[:-1]) == {"w"}
    shot("3-timeline")
    set_steps(page, 2)
    page.click("#dice")
    page.click("#generate")
    page.wait_for_selector("#thumbs .thumb")
    shot("4-first-chunk-playing")
    assert wait_done(page).startswith(f"done: {len(actions)} chunks")
    assert sent[0]["image"] == page.evaluate("window.gamecraft.state.source.uri")
    seed = sent[0]["seed"]
    # the predictor's progress metric: chunk (world number), step, decode, ETA
    texts = progress()
    assert any(re.fullmatch(r"chunk 1 \(1/\d+\) · step 1/2 · ETA (\d+ s|…)", t) for t in texts), texts
    assert any(re.fullmatch(r"chunk 2 \(2/\d+\) · decoding · ETA \d+ s", t) for t in texts), texts
    names = downloads(page)
    assert all(n.startswith(f"gamecraft-{seed}-") for n in names)  # the seed and the prediction's id
    assert [n.split("-", 3)[3] for n in names] == [f"chunk{i:03d}.mp4" for i in range(1, len(actions) + 1)] + [
        "video.mp4",
        "state.safetensors",
    ]
    assert cog.wait_until_ready() == "READY"
    page.keyboard.press("KeyA")
    shot("5-history-and-a-new-chunk")
    page.click("#keep")
    assert wait_done(page).startswith("done: 1 chunk")
    assert json.loads(sent[1]["actions"]) == ["a"] and "continue_from" in sent[1]
    n = len(actions) + 1
    assert page.text_content("#world").startswith(f"world 1: {n} chunks")
    assert page.locator("#thumbs .thumb").evaluate_all("ts => ts.map(t => +t.dataset.chunk)") == list(range(1, n + 1))
    assert len(downloads(page)) == len(names) + 3 and downloads(page)[-len(names) :] == names  # earlier ones kept
    page.click("#world-video")
    page.wait_for_selector(f"#history a[download$='chunks001-{n:03d}.mp4']")
    shot("6-keep-playing-and-whole-world")
    page.screenshot(path=str(artifacts / "generated.png"), full_page=True)
    assert cog.wait_until_ready() == "READY"
    # the tab goes: the world (the real model's state file and chunks) is offered back
    page.keyboard.press("KeyD")
    page.wait_for_function("window.gamecraft.state.saved?.rows === window.gamecraft.state.rows.length")
    page.reload()
    page.wait_for_function("document.body.classList.contains('ready')")
    sync_api.expect(page.locator("#resume-go")).to_have_text(f"resume world 1 · {n} chunks")
    shot("7-resume")
    page.click("#resume-go")
    assert page.locator("#timeline li.locked").count() == n and rows(page)[-1] == "d"
    assert page.locator("#thumbs .thumb").count() == n and "Keep playing · chunk" in page.text_content("#plan")


def cog_predict_inputs(command: str, cwd: Path) -> dict:
    """The inputs `cog predict` would send for ``command``: -i name=value, @file read as a data URI,
    values typed by the schema as the cog CLI does."""
    words = shlex.split(command.replace("\\\n", " "))
    assert words[:2] == ["cog", "predict"]
    props = SCHEMA["components"]["schemas"]["Input"]["properties"] if SCHEMA else {}
    inputs = {}
    for flag, pair in zip(words[2::2], words[3::2], strict=True):
        assert flag == "-i"
        name, value = pair.split("=", 1)
        kind = props.get(name, {}).get("type") or ("string" if name in ("preset",) else None)
        if value.startswith("@"):
            data = (cwd / value[1:]).read_bytes()
            inputs[name] = data
        elif kind == "integer":
            inputs[name] = int(value)
        elif kind == "number":
            inputs[name] = float(value)
        elif kind == "boolean":
            inputs[name] = value.lower() == "true"
        else:
            inputs[name] = value
    return inputs


def decoded(inputs: dict) -> dict:
    """data: URIs as bytes, so a file and its data URI compare equal."""
    return {
        k: base64.b64decode(v.split(",", 1)[1]) if isinstance(v, str) and v.startswith("data:") else v
        for k, v in inputs.items()
    }


def test_the_commands_it_shows_run(page, cog, tmp_path):
    page.keyboard.press("KeyW")
    page.keyboard.press("KeyD")
    set_steps(page, 1)
    page.fill("#seed", "7")
    page.keyboard.press("Escape")
    page.click("#examples button[data-file='forest.png']")
    page.wait_for_function("document.querySelector('#drop-text').textContent === 'image: forest.png'")
    page.fill("#prompt", 'the mayor\'s "100%" square, $HOME `x` \\n')  # quotes, % and $ survive the shell
    page.keyboard.press("Escape")
    expected = page.evaluate("window.gamecraft.buildInput()")
    # `cog predict` (no Docker here): its arguments are the same inputs
    page.select_option("#cmd-kind", "cog")
    assert decoded(cog_predict_inputs(page.text_content("#command"), REPO_ROOT)) == decoded(expected)
    # curl, literally, from another directory: the example is read from the page's server
    page.select_option("#cmd-kind", "curl")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_curl(page.text_content("#command"), elsewhere)
    assert result["status"] == "succeeded", result.get("error")
    assert len(result["output"]) == 2 + 2  # two chunks, the video, the state
    first_state = tmp_path / "first.safetensors"
    first_state.write_bytes(decoded({"s": result["output"][-1]})["s"])
    with safe_open(str(first_state), "np") as handle:  # the prompt went through the shell intact
        assert json.loads(handle.metadata()["gamecraft"])["prompt"] == expected["prompt"]
    assert cog.wait_until_ready() == "READY"
    # after Generate, the command is the Keep playing request: it reads the state file the page offers
    page.click("#generate")
    assert wait_done(page).startswith("done")
    assert cog.wait_until_ready() == "READY"
    page.keyboard.press("KeyA")
    name = page.evaluate("window.gamecraft.state.world.stateName")
    assert name == next(n for n in downloads(page) if n.endswith("-state.safetensors"))
    (tmp_path / name).write_bytes(decoded({"s": page.evaluate("window.gamecraft.state.world.state")})["s"])
    result = run_curl(page.text_content("#command"), tmp_path)
    assert result["status"] == "succeeded", result.get("error")
    assert cog.wait_until_ready() == "READY"
    # it fails loudly: a missing state file, and a prediction that fails (a file that is no state file)
    missing = run_curl(page.text_content("#command"), elsewhere, ok=False)
    assert missing.returncode != 0 and name in missing.stderr and missing.stdout == ""
    (elsewhere / name).write_bytes(b"not a state file")
    broken = run_curl(page.text_content("#command"), elsewhere, ok=False)
    assert broken.returncode == 1 and "the prediction did not succeed" in broken.stderr
    assert json.loads(broken.stdout)["status"] == "failed" and "state file" in json.loads(broken.stdout)["error"]
    assert cog.wait_until_ready() == "READY"
    state = tmp_path / "out.safetensors"
    state.write_bytes(decoded({"s": result["output"][-1]})["s"])
    with safe_open(str(state), "np") as handle:
        assert json.loads(handle.metadata()["gamecraft"])["chunks_done"] == 3
    page.select_option("#cmd-kind", "cog")
    assert decoded(cog_predict_inputs(page.text_content("#command"), tmp_path)) == decoded(
        page.evaluate("window.gamecraft.buildInput()")
    )
    assert cog.wait_until_ready() == "READY"


def test_errors_are_short_and_next_to_their_field(page, cog, artifacts):
    page.keyboard.press("KeyW")
    page.fill("#seed", str(2**31))
    page.click("#generate")  # coglet's 422
    page.wait_for_selector(".field-error[data-for=seed].shown")
    assert page.text_content(".field-error[data-for=seed]").startswith("seed: ")
    assert page.get_attribute("#seed", "aria-invalid") == "true"
    page.fill("#seed", "3")
    # a 2,700-character prompt: the message names the field and its length, not the whole text
    page.eval_on_selector("#prompt", "p => { p.value = 'a castle '.repeat(300); p.dispatchEvent(new Event('input')); }")
    page.click("#generate")
    page.wait_for_selector(".field-error[data-for=prompt].shown")
    text = page.text_content(".field-error[data-for=prompt]")
    assert len(text) < 300 and "2,700 characters" in text, text
    page.fill("#prompt", "a castle")
    # a text file as the start image: the server's message, without its temporary paths
    page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image"}])
    page.wait_for_function("document.querySelector('#drop-text').textContent === 'image: notes.txt'")
    set_steps(page, 1)
    page.click("#generate")
    page.wait_for_selector(".field-error[data-for=image].shown")
    text = page.text_content(".field-error[data-for=image]")
    # (coglet knows it as /tmp/…/tmpXXXXXXXX.txt; the page says the user's name for it)
    assert text == "not a readable image: cannot identify image file 'notes.txt'", text
    page.screenshot(path=str(artifacts / "error-inline.png"), full_page=True)
    assert cog.wait_until_ready() == "READY"
    # the server's own row errors become 1-based rows, marked (the page's check is bypassed here)
    page.click("#examples button[data-file='village.png']")
    page.keyboard.press("KeyD")
    page.route(
        "**/api/predictions",
        lambda route: route.continue_(
            post_data=json.dumps(
                {"input": {**json.loads(route.request.post_data)["input"], "actions": '["w", "jump"]'}}
            )
        ),
    )
    page.click("#generate")

    page.wait_for_selector(".field-error[data-for=rows].shown")
    assert page.text_content(".field-error[data-for=rows]").startswith("row 2: unknown action 'jump'")
    assert page.locator("#timeline li.server-bad").evaluate_all("ls => ls.map(l => l.dataset.row)") == ["2"]
    page.unroute("**/api/predictions")
    assert cog.wait_until_ready() == "READY"

    # busy: another client's prediction holds the only slot -> 409 next to Generate, saying so
    image = "data:image/png;base64," + base64.b64encode(IMAGE.read_bytes()).decode()
    status, _ = request_json(
        "POST",
        f"{cog.url}/predictions",
        {
            "id": "ui-busy",
            "input": {
                "image": image,
                "actions": json.dumps(["w"] * 12),
                "action_speeds": json.dumps([0.2] * 12),
                "num_inference_steps": 8,
            },
        },
        headers={"Prefer": "respond-async"},
    )
    assert status == 202
    try:
        # the page reads the health (as its poll does): the buttons are off and say why
        page.evaluate("window.gamecraft.checkHealth()")
        page.wait_for_function("document.querySelector('#generate').disabled")
        assert page.text_content("#play-why") == (
            f"▶ Generate is off: the Cog server {cog.url.removeprefix('http://')} is busy with another prediction: "
            "wait until it finishes."
        )
    finally:
        request_json("POST", f"{cog.url}/predictions/ui-busy/cancel")
        assert cog.wait_until_ready(60) == "READY"


def test_cancel_stops_a_running_generation(page, cog):
    set_steps(page, 8)
    for _ in range(12):
        page.keyboard.press("KeyW")
    page.click("#generate")
    page.wait_for_selector("#thumbs .thumb")  # the first chunk arrived
    page.get_by_role("button", name="cancel the generation").click()
    assert wait_done(page) == "canceled: the world is as it was"
    sync_api.expect(page.locator("#generate")).to_be_enabled()
    assert cog.wait_until_ready(60) == "READY"
    assert page.locator("#thumbs .thumb").count() < 12
    assert page.locator("#timeline li.locked").count() == 0  # nothing was played into the world


def test_a_saved_world_continues_with_its_own_chunk_numbers(page, browser, ui_url, cog, tmp_path):
    set_steps(page, 1)
    page.keyboard.press("KeyW")
    page.click("#generate")
    assert wait_done(page).startswith("done")
    saved = tmp_path / "my-world.safetensors"
    saved.write_bytes(decoded({"s": page.evaluate("window.gamecraft.state.world.state")})["s"])
    assert cog.wait_until_ready() == "READY"

    other = open_page(browser, ui_url)
    try:
        other.set_input_files("#file", str(saved))
        other.wait_for_function(
            "document.querySelector('#drop-text').textContent === 'saved world: my-world.safetensors'"
        )
        assert rows(other) == ["w"] and other.locator("#timeline li.locked").count() == 1
        other.keyboard.press("KeyD")
        assert "Keep playing · chunk 2 from the world's state" in other.text_content("#plan")
        other.select_option("#cmd-kind", "cog")
        assert other.text_content("#command").startswith("cog predict \\\n    -i continue_from=@my-world.safetensors")
        set_steps(other, 1)
        other.click("#keep")
        assert wait_done(other).startswith("done")
        assert other.locator("#thumbs .thumb").evaluate_all("ts => ts.map(t => t.dataset.chunk)") == ["2"]
        assert [n.split("-", 3)[3] for n in downloads(other)][0] == "chunk002.mp4"
        assert other.text_content("#world").startswith("world 1: 2 chunks")
        assert other.errors == []
    finally:
        other.context.close()
        assert cog.wait_until_ready() == "READY"


def test_minimap_heading_follows_the_timeline(page):
    for key in ("KeyW", "ArrowUp", "ArrowLeft", "KeyD"):
        page.keyboard.press(key)
    _, headings = top_down_points([chunk_poses(s) for s in parse_actions(*lists(page))])
    assert page.get_attribute("#minimap", "data-yaw") == str(round(math.degrees(headings[-1])))
