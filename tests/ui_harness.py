"""What the controller page's browser tests share: headless Chromium (Playwright with Debian's chromium),
the page's server in a thread, coglet with the contract predictor (tests/ui_contract_predictor.py), and
small helpers that read the page."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from gamecraft.ui import make_server
from tools.cog_server import start_cog_server

CHROMIUM = os.environ.get("GAMECRAFT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000
DESKTOP = {"width": 1440, "height": 1000}
PHONE = {"width": 390, "height": 844}


def require_browser():
    """Skip the module without Chromium or the playwright package; returns playwright.sync_api."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"chromium not found ({CHROMIUM}); install Debian's chromium package", allow_module_level=True)
    return pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")


@contextmanager
def page_server(backend):
    """The page's server for ``backend`` on a free port, in a thread; yields its URL (ending in /)."""
    httpd = make_server(backend, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def start_contract_server(folder: Path):
    """coglet serving tests/ui_contract_predictor.py (with its schema, so SSE is on) from ``folder``."""
    shutil.copy(Path(__file__).with_name("ui_contract_predictor.py"), folder / "predict.py")
    subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tools" / "cog_schema.py"),
            "--root",
            str(folder),
            "--ref",
            "predict.py:Predictor",
            "--out",
            str(folder / ".cog" / "openapi_schema.json"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return start_cog_server(folder, "predict.py:Predictor", {"PYTHONPATH": str(REPO_ROOT)}, startup_timeout_s=120)


def open_page(browser, url, viewport=DESKTOP, init_script=None, **context_args):
    """A new context and page on ``url``, ready (examples loaded); page errors collected in ``page.errors``."""
    context = browser.new_context(viewport=viewport, **context_args)
    if init_script:
        context.add_init_script(init_script)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.errors = []
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    page.goto(url)
    page.wait_for_function("document.body.classList.contains('ready')")
    return page


def lists(page) -> tuple[list, list]:
    """The timeline's actions and action_speeds (the JSON boxes of the next request)."""
    return json.loads(page.text_content("#json-actions")), json.loads(page.text_content("#json-speeds"))


def rows(page) -> list[str]:
    """Every row's action text, history included."""
    return page.locator("#timeline input.action").evaluate_all("xs => xs.map(x => x.value)")


def hold(page, *keys, seconds: float) -> None:
    """Press ``keys`` (a chord), hold them ``seconds``, release in reverse order."""
    for key in keys:
        page.keyboard.down(key)
    page.wait_for_timeout(int(seconds * 1000))
    for key in reversed(keys):
        page.keyboard.up(key)


def wait_done(page, timeout=TIMEOUT_MS):
    page.wait_for_function(
        "!document.body.classList.contains('busy') && "
        "/^(done|failed|canceled)/.test(document.querySelector('#progress-text').textContent)",
        timeout=timeout,
    )
    return page.text_content("#progress-text")


def confirm_new_world(page):
    """Answer "start a new world?" with Replace and return once the new request is posted. The page starts
    it on the dialog's "close" event, a task after the click: without this wait, wait_done could read the
    previous request's last line as this one's on a loaded machine."""
    page.wait_for_selector("#confirm[open]")
    with page.expect_request(lambda r: r.url.endswith("/api/predictions") and r.method == "POST"):
        page.click("#confirm-replace")


def downloads(page) -> list[str]:
    return page.locator("#history a").evaluate_all("as => as.map(a => a.download)")


def capture_inputs(page) -> list[dict]:
    """Every prediction input the page posts from now on (appended as they are sent)."""
    sent: list[dict] = []
    page.on(
        "request",
        lambda r: (
            sent.append(json.loads(r.post_data)["input"])
            if r.url.endswith("/api/predictions") and r.method == "POST"
            else None
        ),
    )
    return sent


def record_keys(page) -> None:
    """Log the page's own key events ({code, type, t} with the event's time stamp in ms) in window.__keys."""
    page.evaluate("""() => { window.__keys = [];
        for (const type of ['keydown', 'keyup']) window.addEventListener(type, (e) => {
            if (!e.repeat) window.__keys.push({code: e.code, type, t: e.timeStamp}); }, true); }""")


def held_seconds(page, *codes) -> float:
    """How long the chord ``codes`` was held, as the page saw it: first press to last release (seconds)."""
    events = [e for e in page.evaluate("window.__keys") if e["code"] in codes]
    downs = [e["t"] for e in events if e["type"] == "keydown"]
    ups = [e["t"] for e in events if e["type"] == "keyup"]
    return (max(ups) - min(downs)) / 1000


def chunks_for(seconds: float) -> int:
    """The page's rule: a hold is round(seconds / 1.32) chunks, at least one."""
    return max(1, round(seconds / 1.32))


def watch(page, selector):
    """Every text the element shows from now on (a MutationObserver); call the result to read them.

    Texts set in one task (progress events that arrived in one network read) reach the observer in one
    callback: each assignment's new text node is read from the records, not only the element's last text."""
    page.evaluate(
        """(sel) => { window.__seen = window.__seen || {}; const seen = window.__seen[sel] = [];
        const el = document.querySelector(sel), options = {childList: true, characterData: true, subtree: true};
        new MutationObserver((records) => {
          for (const r of records) {
            const added = [...r.addedNodes];
            const textSet = r.target === el && added.length && added.every((n) => n.nodeType === Node.TEXT_NODE);
            seen.push(textSet ? added.map((n) => n.data).join("") : el.textContent);
          }
        }).observe(el, options); }""",
        selector,
    )
    return lambda: page.evaluate("(sel) => window.__seen[sel]", selector)


def set_prompt(page, text):
    """Type ``text`` as the prompt and leave the field (Esc), as a player would."""
    page.fill("#prompt", text)
    page.keyboard.press("Escape")


def run_curl(command: str, cwd: Path, env=None, ok=True):
    """Run ``command`` in bash from ``cwd``: the prediction's JSON (``ok``), else the finished process."""
    done = subprocess.run(
        ["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )
    if not ok:
        return done
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
