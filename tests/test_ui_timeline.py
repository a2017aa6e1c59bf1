"""The controller page's timeline and its details, in headless Chromium: focus, layout, inline validation
against the parser, undo, the command box and copying, the server status badge, accessibility and the phone
layout. The model side is tests/ui_contract_predictor.py under the real coglet (see test_ui_play.py)."""

from __future__ import annotations

import time

from ui_harness import (
    PHONE,
    capture_inputs,
    lists,
    open_page,
    require_browser,
    rows,
    set_prompt,
    wait_done,
    watch,
)

sync_api = require_browser()  # the shared fixtures (browser, page, url, artifacts) are in conftest.py


# ---------- the timeline: focus, layout, validation, undo ----------


def test_focus_stays_where_the_user_puts_it(page):
    page.keyboard.press("KeyW")
    page.keyboard.press("KeyD")
    speed = page.get_by_role("spinbutton", name="row 1 w speed (units, 0–3)")
    speed.fill("0.7")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "move row 1 down"
    page.keyboard.press("KeyS")  # inside the timeline, letters are not controller keys
    assert lists(page) == (["w", "d"], [0.7, 0.4])
    page.keyboard.press("Escape")  # Esc leaves the timeline: the keys drive the controller again
    page.keyboard.press("KeyS")
    assert lists(page)[0] == ["w", "d", "s"]
    # editing the prompt, then clicking a timeline field: the click lands and typing goes there
    page.click("#prompt")
    page.keyboard.type(" at dusk")
    page.click("#timeline li:nth-child(1) input.action")
    page.keyboard.press("End")
    page.keyboard.type("+left_rot")
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "row 1 action"
    assert lists(page) == (["w+left_rot", "d", "s"], [[0.7, 20], 0.4, 0.4])


def test_a_four_part_chunk_row_fits_and_can_be_deleted(page):
    # typed, not held: four keys pressed one by one can make extra phases on a loaded machine
    page.keyboard.press("KeyW")
    action = page.locator("#timeline li input.action").first
    action.fill("w+d+left_rot+down_rot")
    page.keyboard.press("Escape")
    assert lists(page)[0] == ["w+d+left_rot+down_rot"]
    # the whole name shows (issue 30 #9)
    assert action.evaluate("x => x.scrollWidth <= x.clientWidth"), action.evaluate(
        "x => [x.scrollWidth, x.clientWidth]"
    )
    box = page.locator("#timeline").bounding_box()
    for name in ("move row 1 down", "delete row 1"):
        b = page.get_by_role("button", name=name).bounding_box()
        assert box["x"] <= b["x"] and b["x"] + b["width"] <= box["x"] + box["width"], name
    page.get_by_role("button", name="delete row 1").click()
    assert lists(page) == ([], [])


def test_arrows_on_a_focused_slider_move_the_slider(page):
    page.focus("#look-speed")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowUp")
    assert page.input_value("#look-speed") == "23" and page.text_content("#look-speed-out") == "23"
    assert rows(page) == []


def test_enter_and_space_on_the_drop_zone_open_the_file_chooser(page):
    choosers = []
    # listening intercepts the dialog; set up before any key is pressed
    page.on("filechooser", lambda chooser: choosers.append(chooser))
    page.wait_for_timeout(200)
    for n, key in enumerate(("Enter", "Space"), 1):
        page.focus("#drop")
        page.keyboard.press(key)
        deadline = time.monotonic() + 10
        while len(choosers) < n and time.monotonic() < deadline:
            page.wait_for_timeout(50)
        assert len(choosers) == n, key
        assert choosers[-1].element.get_attribute("id") == "file"
    assert rows(page) == []


def test_every_bad_entry_is_listed_by_row_and_marked(page):
    sent = capture_inputs(page)
    for key in ("KeyW", "KeyW", "KeyW", "ArrowLeft", "KeyA"):
        page.keyboard.press(key)
    field = lambda n: page.locator(f"#timeline li:nth-child({n}) input.action")  # noqa: E731
    field(2).fill("jump")
    page.get_by_role("spinbutton", name="row 3 w speed (units, 0–3)").fill("-5")
    page.get_by_role("spinbutton", name="row 4 left_rot speed (degrees, 0–90)").fill("")
    field(5).fill("a+d")
    errors = page.locator("#timeline-errors li").all_text_contents()
    assert errors == [
        "row 2: unknown action 'jump'; expected one of w, s, a, d, left_rot, right_rot, up_rot, down_rot, idle "
        "(or an alias such as 'forward', 'look_left')",
        "row 3: speed for 'w' must be >= 0 (use 's' for the other direction), got -5",
        "row 4: speed for 'left_rot' is empty; give a number",
        "row 5: 'd' conflicts with 'a' (same strafe axis); combine at most one action per axis",
    ]
    assert page.locator("#timeline li.bad").evaluate_all("ls => ls.map(l => l.dataset.row)") == ["2", "3", "4", "5"]
    assert page.get_attribute("#timeline li:nth-child(2) input.action", "aria-invalid") == "true"
    page.click("#generate")
    assert sent == [] and page.locator("#timeline-errors").is_visible()


def test_aliases_get_their_own_units_and_move_the_map(page):
    page.keyboard.press("KeyW")
    field = page.locator("#timeline input.action")
    field.fill("look_left")
    assert page.locator("#timeline .speed .unit").all_text_contents() == ["°"]
    assert lists(page) == (["left_rot"], [20])
    assert page.get_attribute("#minimap", "data-yaw") == "20"
    field.dispatch_event("change")
    assert field.input_value() == "left_rot"


CASES = [
    "w",
    "W",
    " look_left ",
    "forward+turn_right",
    "w+s",
    "w+w",
    "idle+w",
    "jump",
    "",
    "+",
    "w+",
    "stay",
    "left_rot+w",
    "a+d+up_rot+left_rot",
    "tilt_down",
]
SPEEDS = [0, 0.2, 3, 3.01, -0.5, 90, 90.5, 45]


def test_inline_validation_says_what_the_parser_says(page):
    from gamecraft.pipeline.actions import ActionError, parse_actions

    js = page.evaluate(
        """([cases, speeds]) => {
        const t = window.gamecraft.state.table;
        return {actions: cases.map((c) => t.parseAction(c)),
                speeds: ['w', 'left_rot'].flatMap((k) => speeds.map((v) => t.checkSpeed(k, v)))}; }""",
        [CASES, SPEEDS],
    )
    for case, got in zip(CASES, js["actions"], strict=True):
        try:
            segment = parse_actions([case], [0 if case.strip().lower() in ("idle", "stay") else [0] * 4])[0]
            expected = None
        except ActionError as err:
            expected, segment = str(err).removeprefix("actions[0]: "), None
            if str(err).startswith("action_speeds"):  # the action itself was fine
                expected = None
        if expected is None and segment is None:
            keys = got["keys"]
            assert keys is not None and parse_actions([case], [[0] * len(keys) if len(keys) > 1 else 0]), case
        assert got["error"] == expected, case
    for (key, value), got in zip([(k, v) for k in ("w", "left_rot") for v in SPEEDS], js["speeds"], strict=True):
        try:
            parse_actions([key], [value])
            expected = None
        except ActionError as err:
            expected = str(err).removeprefix("action_speeds[0]: ")
        assert got == expected, (key, value)


def test_clear_and_new_world_can_be_undone(page):
    for _ in range(12):
        page.keyboard.press("KeyW")
    last = page.locator("#timeline li").last.bounding_box()
    box = page.locator("#timeline").bounding_box()
    assert box["y"] <= last["y"] and last["y"] + last["height"] <= box["y"] + box["height"] + 1  # scrolled into view
    page.click("#clear")
    assert rows(page) == [] and "cleared 12 new chunks" in page.text_content("#toast")
    page.click("#toast button")
    assert len(rows(page)) == 12
    page.keyboard.press("Backspace")
    assert len(rows(page)) == 11
    page.keyboard.press("Control+KeyZ")
    assert len(rows(page)) == 12


def test_the_command_follows_every_keystroke(page):
    page.keyboard.press("KeyW")
    page.click("#seed")
    page.keyboard.type("42")
    assert '"seed": 42' in page.text_content("#command")
    page.click("#advanced summary")
    page.click("#steps")
    page.keyboard.type("3")
    assert '"num_inference_steps": 3' in page.text_content("#command")
    page.select_option("#cmd-kind", "cog")
    assert "-i num_inference_steps=3" in page.text_content("#command") and "-i seed=42" in page.text_content("#command")


def test_copy_buttons_copy_and_say_so(browser, url):
    page = open_page(browser, url, permissions=["clipboard-read", "clipboard-write"])
    try:
        page.keyboard.press("KeyW")
        for target in ("json-actions", "json-speeds", "command"):
            button = page.locator(f"button.copy[data-copy='{target}']")
            button.click()
            sync_api.expect(button).to_have_text("copied ✓")
            assert page.evaluate("navigator.clipboard.readText()") == page.text_content(f"#{target}")
        sync_api.expect(page.locator("#announce")).to_have_text("command copied to the clipboard")
    finally:
        page.context.close()


# ---------- accessibility, phone, details ----------


def test_controls_have_names_states_and_live_regions(page):
    page.keyboard.press("KeyW")
    page.keyboard.press("ArrowLeft")
    tree = page.locator("main").aria_snapshot()
    for bad in ('button "↑"', 'button "↓"', 'button "✕"', 'button "■"', 'spinbutton "u"', 'spinbutton "°"'):
        assert bad not in tree
    for name in ("move row 2 up", "move row 1 down", "delete row 2", "cancel the generation", "random seed"):
        assert page.get_by_role("button", name=name, exact=True).count() == 1, name
    assert page.get_by_role("spinbutton", name="row 2 left_rot speed (degrees, 0–90)").count() == 1
    assert page.get_by_label("command", exact=True).evaluate("e => e.id") == "cmd-kind"
    assert (
        page.get_by_role("img")
        .first.get_attribute("aria-label")
        .startswith("Camera path of 2 chunks: ends 0.40 forward and 0.00 right of the start")
    )
    assert page.get_attribute("#progress-text", "role") == "status"
    assert page.get_attribute("#server-status", "aria-live") == "polite"
    assert page.get_attribute(".field-error[data-for=generate]", "role") == "alert"
    page.keyboard.down("KeyD")
    assert page.get_attribute(".cap[data-key=d]", "aria-pressed") == "true"
    page.keyboard.up("KeyD")
    page.focus(".cap[data-key=up_rot]")  # a cap from the keyboard: Enter adds one chunk
    page.keyboard.press("Enter")
    assert lists(page)[0] == ["w", "left_rot", "d", "up_rot"]
    assert page.eval_on_selector("#stage-text .blink", "e => getComputedStyle(e).animationIterationCount") == "6"


def test_reduced_motion_stops_the_blinking(browser, url):
    page = open_page(browser, url, reduced_motion="reduce")
    try:
        assert page.eval_on_selector("#stage-text .blink", "e => getComputedStyle(e).animationName") == "none"
    finally:
        page.context.close()


def test_no_request_fails_while_the_page_loads(browser, url):
    context = browser.new_context()
    page = context.new_page()
    failed = []
    page.on("response", lambda r: failed.append((r.status, r.url)) if r.status >= 400 else None)
    page.goto(url)
    page.wait_for_function("document.body.classList.contains('ready')")
    assert failed == []
    assert page.evaluate("document.querySelector('link[rel=icon]').href").endswith("/favicon.svg")
    context.close()


def test_the_phone_layout_fits_and_shows_the_first_chunk(browser, url, artifacts):
    page = open_page(browser, url, viewport=PHONE, has_touch=True, is_mobile=True)
    try:
        assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
        clipped = page.evaluate("""() => [...document.querySelectorAll(
                'label, button, h2, .badge, summary, #plan, .draft')]
            .filter((e) => e.offsetParent && e.scrollWidth > e.clientWidth + 1)
            .map((e) => e.id || e.textContent.trim())""")
        assert clipped == []
        tops = page.evaluate("['#cancel', '#generate', '#keep'].map((s) => document.querySelector(s).offsetTop)")
        assert len(set(tops)) == 1, tops
        # the header keeps its height whatever the server badge says (it did grow a row on the first health
        # answer, moving the whole page 30 px under the user's thumb)
        main_top = "document.querySelector('main').getBoundingClientRect().top"
        answered = page.evaluate(main_top)
        page.evaluate("document.querySelector('#server-text').textContent = 'server: …'")
        assert page.evaluate(main_top) == answered
        page.evaluate(
            "document.querySelector('#server-text').textContent = 'Replicate model someone/a-long-name:0123abcd: ready'"
        )
        assert page.evaluate(main_top) == answered
        assert page.evaluate("document.querySelector('#pad-status').getBoundingClientRect().bottom") <= answered
        page.evaluate("window.gamecraft.checkHealth()")
        page.screenshot(path=str(artifacts / "phone-top.png"))
        page.locator(".cap[data-key=w]").tap()
        page.locator(".cap[data-key=d]").tap()
        assert rows(page) == ["w", "d"]
        page.screenshot(path=str(artifacts / "phone-controller.png"))
        set_prompt(page, "phone [step 0.1s]")
        page.click("#generate")
        page.wait_for_selector("#thumbs .thumb")
        page.wait_for_timeout(800)  # the smooth scroll
        stage = page.locator("#stage").bounding_box()
        assert stage["y"] >= 0 and stage["y"] + stage["height"] <= PHONE["height"]
        wait_done(page)
        page.screenshot(path=str(artifacts / "phone-playing.png"))
        page.screenshot(path=str(artifacts / "phone-full.png"), full_page=True)
    finally:
        page.context.close()
    assert page.errors == []


def test_watch_sees_every_text_set_in_one_task(page):
    """Progress events read from one network chunk set the text several times in one task; the harness must
    see each (the browser tests assert on intermediate progress texts)."""
    seen = watch(page, "#progress-text")
    page.evaluate("""() => { const el = document.querySelector('#progress-text');
        el.textContent = 'chunk 1 (1/3) · step 1/2'; el.textContent = 'chunk 1 (1/3) · decoding'; }""")
    page.wait_for_function("window.__seen['#progress-text'].length >= 2")
    assert seen() == ["chunk 1 (1/3) · step 1/2", "chunk 1 (1/3) · decoding"]
