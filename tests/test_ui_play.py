"""The controller page as a game, in headless Chromium: held input, the timeline, playback, the screen, the
status badge and accessibility. The model side is tests/ui_contract_predictor.py under the real coglet
(the predictor contract's progress metrics, exact timings, a worker that can die); the end-to-end runs with
the real pipeline (tiny weights) are in test_ui_browser.py.
"""

from __future__ import annotations

import base64
import json
import re

from ui_harness import (
    capture_inputs,
    chunks_for,
    downloads,
    held_seconds,
    hold,
    lists,
    open_page,
    record_keys,
    require_browser,
    rows,
    set_prompt,
    wait_done,
    watch,
)

from gamecraft.media.video_reader import read_video_frames

sync_api = require_browser()  # the shared fixtures (browser, page, url, artifacts) are in conftest.py

FAKE_PAD = """
window.__pad = {id: "Test pad (STANDARD GAMEPAD Vendor: 054c Product: 09cc)", index: 0, connected: true,
                mapping: "standard", timestamp: 0, axes: [0, 0, 0, 0],
                buttons: Array.from({length: 17}, () => ({pressed: false, touched: false, value: 0}))};
navigator.getGamepads = () => [window.__pad, null, null, null];
"""


# ---------- play semantics ----------


def test_a_held_key_is_as_many_chunks_as_it_was_held(page):
    # durations are read from the page's own key events: a loaded CI machine stretches the waits below
    record_keys(page)
    page.keyboard.down("KeyW")
    page.wait_for_timeout(2640)  # about 2 chunks
    assert page.get_attribute(".cap[data-key=w]", "aria-pressed") == "true"
    live = re.fullmatch(r"holding w 0\.4 · (\d+) chunks? · ([\d.]+) s", page.text_content("#holding"))
    assert live and int(live.group(1)) == chunks_for(float(live.group(2)))
    page.keyboard.up("KeyW")
    assert page.get_attribute(".cap[data-key=w]", "aria-pressed") == "false"
    n = chunks_for(held_seconds(page, "KeyW"))
    assert n >= 2 and rows(page) == ["w"] * n
    page.keyboard.press("KeyD")  # a tap is one chunk
    record_keys(page)
    hold(page, "KeyW", "ArrowLeft", seconds=0.9)  # a chord: combined chunks
    m = chunks_for(held_seconds(page, "KeyW", "ArrowLeft"))
    assert lists(page) == (["w"] * n + ["d"] + ["w+left_rot"] * m, [0.4] * n + [0.4] + [[0.4, 20]] * m)


def test_gesture_phases_become_chunks(page):
    cases = page.evaluate("""async () => {
        const { phasesToChunks } = await import('./gestures.js');
        const key = (k, drag = false) => [k, { key: k, speed: 1, drag }];
        const ph = (start, end, ...keys) => ({ start, end, inputs: new Map(keys) });
        const run = (phases) => phasesToChunks(phases, 1.32).map((c) => [[...c.keys.keys()].join('+'), c.count]);
        return {
            tap: run([ph(0, 0.1, key('w'))]),
            four: run([ph(0, 4, key('w'))]),
            chord: run([ph(0, 0.08, key('w')), ph(0.08, 2.6, key('w'), key('left_rot')),
                        ph(2.6, 2.65, key('left_rot'))]),
            tap_during_hold: run([ph(0, 2, key('w')), ph(2, 2.2, key('w'), key('left_rot')), ph(2.2, 4.2, key('w'))]),
            drag: run([ph(0, 3, key('left_rot', true))]),
        };
    }""")
    assert cases == {
        "tap": [["w", 1]],
        "four": [["w", 3]],
        "chord": [["w+left_rot", 2]],
        "tap_during_hold": [["w", 2], ["w+left_rot", 1], ["w", 1]],
        "drag": [["left_rot", 1]],
    }


def test_drag_distance_sets_the_degrees(page):
    box = page.locator("#lookpad").bounding_box()
    cx, cy, half = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["width"] / 2

    def drag(dx, hold_key=None):
        if hold_key:
            page.keyboard.down(hold_key)
        page.mouse.move(cx - dx / 2, cy)
        page.mouse.down()
        page.mouse.move(cx + dx / 2, cy, steps=6)
        page.mouse.up()
        if hold_key:
            page.keyboard.up(hold_key)

    drag(-half / 2)  # a quarter of the pad to the left: half the look speed
    drag(half)  # half the pad to the right: the look speed
    drag(2 * half - 4)  # (almost) the whole pad: twice
    drag(-half, "KeyS")  # with S held: one combined chunk
    actions, speeds = lists(page)
    assert actions == ["left_rot", "right_rot", "right_rot", "s+left_rot"]
    assert speeds[0] == 10 and speeds[1] == 20 and 39 <= speeds[2] <= 40 and speeds[3] == [0.4, 20]


def test_gamepad_tilt_scales_speed_and_the_dpad_moves(browser, url):
    page = open_page(browser, url, init_script=FAKE_PAD)
    try:
        page.wait_for_function("document.querySelector('#pad-status').textContent === 'pad: Test pad'")
        badge = page.locator("#pad-status").evaluate("b => [b.scrollWidth, b.clientWidth, b.title]")
        assert badge[0] <= badge[1] and badge[2].startswith("Test pad (STANDARD GAMEPAD")

        def pad(axes=None, button=None, wait=150):
            """Set the fake pad; returns how long it stayed so (seconds, measured in the page; polled every 50 ms)."""
            t0 = page.evaluate(
                "([axes, button]) => { if (axes) window.__pad.axes = axes;"
                " window.__pad.buttons.forEach((b, i) => {"
                "   b.pressed = i === button; b.value = +(i === button); });"
                " return performance.now(); }",
                [axes, button],
            )
            page.wait_for_timeout(wait)
            return (page.evaluate("performance.now()") - t0) / 1000

        forward = pad([0.1, -0.65, 0, 0], wait=700)  # left stick half tilted forward (halfway past the deadzone)
        pad([0, 0, 0, 0])
        pad([0, 0, 1.0, -0.2], wait=300)  # right stick fully right; -0.2 is inside the deadzone
        pad([0, 0, 0, 0])
        right = pad(button=15, wait=2640)  # D-pad right held: "d" at the slider's speed
        pad(button=None)
        pad(button=0), pad(button=None)  # A: an idle chunk
        pad(button=0), pad(button=None)
        pad(button=1), pad(button=None)  # B: undo the last chunk
        n, m = chunks_for(forward), chunks_for(right)
        assert m >= 2
        assert lists(page) == (["w"] * n + ["right_rot"] + ["d"] * m + ["idle"], [0.2] * n + [20] + [0.4] * m + [0])
        set_prompt(page, "pad run")
        pad(button=9), pad(button=None)  # Start: plays (a new world from the example image)
        assert wait_done(page).startswith("done")
        assert page.locator("#thumbs .thumb").count() == n + m + 2
    finally:
        page.context.close()
    assert page.errors == []


# ---------- generate, keep playing, history ----------


def test_keep_playing_sends_only_new_chunks_from_the_returned_state(page, artifacts):
    sent = capture_inputs(page)
    progress_texts = watch(page, "#progress-text")
    set_prompt(page, "keep test [step 0.05s]")
    page.keyboard.press("KeyW")
    hold(page, "KeyW", "ArrowLeft", seconds=0.3)
    assert rows(page) == ["w", "w+left_rot"]
    page.click("#generate")
    assert wait_done(page).startswith("done: 2 chunks")
    assert page.locator("#timeline li.locked").count() == 2  # played: history, locked and dimmed
    locked = page.locator("#timeline li.locked input.action")
    assert locked.evaluate_all("xs => xs.map(x => x.readOnly)") == [True, True]
    assert float(page.locator("#timeline li.locked").first.evaluate("li => getComputedStyle(li).opacity")) < 0.7
    page.keyboard.press("KeyD")
    assert "Keep playing · chunk 3 from the world's state" in page.text_content("#plan")
    assert lists(page) == (["d"], [0.4])
    page.click("#keep")
    assert wait_done(page).startswith("done: 1 chunk")
    assert [json.loads(s["actions"]) for s in sent] == [["w", "w+left_rot"], ["d"]]
    assert "continue_from" in sent[1] and "image" not in sent[1] and sent[0]["image"].startswith("data:image/png")
    assert page.text_content("#world").startswith("world 1: 3 chunks")
    assert page.locator("#thumbs .thumb").evaluate_all("ts => ts.map(t => t.dataset.chunk)") == ["1", "2", "3"]
    # every download stays, named like the predictor's files (seed, id, world chunk number)
    names = downloads(page)
    assert all(n.startswith("gamecraft-1234-") for n in names) and len({n.split("-")[2] for n in names}) == 2
    assert sorted(kinds(names)) == [
        "chunk001.mp4",
        "chunk002.mp4",
        "chunk003.mp4",
        "state.safetensors",
        "state.safetensors",
        "video.mp4",
        "video.mp4",
    ]
    assert any("step 2/4" in t for t in progress_texts()) and any("decoding" in t for t in progress_texts())
    assert any("ETA" in t for t in progress_texts())
    # thumbnails open a chunk; the whole world is one video made by the page's server
    page.click("#thumbs .thumb[data-chunk='2']")
    assert page.evaluate("window.gamecraft.player.nowPlaying") == 2
    page.click("#world-video")
    page.wait_for_selector("#history a[download$='chunks001-003.mp4']")
    data = page.evaluate("""async () => {
        const a = document.querySelector("#history a[download$='chunks001-003.mp4']");
        const bytes = new Uint8Array(await (await fetch(a.href)).arrayBuffer());
        let s = ''; for (const b of bytes) s += String.fromCharCode(b); return btoa(s); }""")
    world = artifacts / "world.mp4"
    world.write_bytes(base64.b64decode(data))
    frames, info = read_video_frames(world)
    assert frames.shape[0] == 3 * 33 and abs(info.duration_s - 3.96) < 0.05
    assert "joined without re-encoding" in page.text_content("#history")
    page.screenshot(path=str(artifacts / "keep-playing.png"), full_page=True)


def kinds(names):
    """gamecraft-<seed>-<id>-<kind> -> kind."""
    return [n.split("-", 3)[3] for n in names]


def test_chunks_play_back_to_back_without_a_gap(page):
    set_prompt(page, "gapless [step 0.02s]")
    for key in ("KeyW", "KeyD", "KeyA"):
        page.keyboard.press(key)
    page.click("#generate")
    wait_done(page)
    # wait for the chunk numbers asserted (chunk 3 playing after chunks 1 and 2 ended), not for a count of
    # events: on a loaded machine a chunk can stall and fire 'playing' twice
    page.wait_for_function(
        """() => { const log = window.gamecraft.player.log;
                   const at = (event, n) => log.some(e => e.event === event && e.n === n);
                   return at('ended', 1) && at('ended', 2) && at('playing', 3); }""",
        timeout=20_000,
    )
    log = page.evaluate("window.gamecraft.player.log")
    ended = first_times(log, "ended")
    playing = first_times(log, "playing")
    gaps = [playing[n + 1] - ended[n] for n in (1, 2)]
    # the next chunk was loaded behind the one playing, and started in the same moment the other ended
    assert [next(e["next_ready"] for e in log if e["event"] == "ended" and e["n"] == n) for n in (1, 2)] == [True, True]
    assert all(0 <= g < 250 for g in gaps), gaps


def first_times(log, event):
    """{chunk number: time of its first ``event``} (a stall can repeat 'playing' for one chunk)."""
    out = {}
    for e in log:
        if e["event"] == event:
            out.setdefault(e["n"], e["t"])
    return out


def test_a_late_chunk_shows_generating_and_eta_on_the_screen(page, artifacts):
    set_prompt(page, "slow [step 0.6s]")  # 4 steps = 2.4 s per chunk, longer than the 1.32 s a chunk plays
    page.keyboard.press("KeyW")
    page.keyboard.press("KeyD")
    overlay = watch(page, "#stage .overlay")
    page.click("#generate")
    page.wait_for_function("window.gamecraft.player.log.some(e => e.event === 'ended' && e.n === 1)", timeout=20_000)
    page.wait_for_selector("#stage .overlay.shown.generating")
    assert page.text_content("#stage .overlay").startswith("generating chunk 2 · ETA ")
    page.screenshot(path=str(artifacts / "late-chunk-overlay.png"))
    wait_done(page)
    assert overlay()[0].startswith("generating chunk 1 · ETA")  # before the first chunk too
    assert page.evaluate("window.gamecraft.player.log.some(e => e.event === 'playing' && e.n === 2)")


def test_advanced_inputs_reach_the_server(page):
    sent = capture_inputs(page)
    set_prompt(page, "advanced")
    page.click("#advanced summary")
    page.fill("#steps", "2")
    page.fill("#guidance", "1.5")
    page.fill("#fps", "12")
    page.fill("#negative", "blurry")
    for box in ("#go-fast", "#last-frame", "#camera-preview"):
        page.check(box)
    page.keyboard.press("Escape")
    page.keyboard.press("KeyW")
    page.select_option("#cmd-kind", "cog")
    command = page.text_content("#command")
    for arg in (
        "-i num_inference_steps=2",
        "-i guidance_scale=1.5",
        "-i fps=12",
        "-i negative_prompt=blurry",
        "-i go_fast=true",
        "-i return_last_frame=true",
        "-i camera_preview=true",
    ):
        assert arg in command
    page.click("#generate")
    assert wait_done(page).startswith("done")
    assert {
        k: sent[0][k]
        for k in (
            "num_inference_steps",
            "guidance_scale",
            "fps",
            "negative_prompt",
            "go_fast",
            "return_last_frame",
            "camera_preview",
        )
    } == {
        "num_inference_steps": 2,
        "guidance_scale": 1.5,
        "fps": 12,
        "negative_prompt": "blurry",
        "go_fast": True,
        "return_last_frame": True,
        "camera_preview": True,
    }
    assert sorted(kinds(downloads(page))) == [
        "camera.png",
        "chunk001.mp4",
        "last-frame.png",
        "state.safetensors",
        "video.mp4",
    ]


def test_without_the_progress_metric_progress_comes_from_chunks_done(page):
    """Predictors before the progress contract record only chunks_done and seconds_per_chunk."""
    progress = watch(page, "#progress-text")
    set_prompt(page, "old predictor [no progress] [step 0.1s]")
    page.keyboard.press("KeyW")
    page.keyboard.press("KeyD")
    page.click("#generate")
    assert wait_done(page).startswith("done: 2 chunks")
    texts = progress()
    assert any(re.fullmatch(r"chunk 1/2 done · generating chunk 2 · ETA \d+ s", t) for t in texts), texts
    assert not any("step" in t for t in texts)
    # the seed comes from the returned state file's metadata instead
    assert all(n.startswith("gamecraft-1234-") for n in downloads(page))
    assert page.text_content("#world").endswith("seed 1234")
