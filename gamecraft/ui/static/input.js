// Input devices -> held inputs (gestures.js) -> timeline rows. Keyboard W/A/S/D and arrows, the on-screen
// caps (press and hold, several fingers for a chord), drags on the look pad (distance = degrees) and a
// standard gamepad (left stick move, right stick look, tilt = speed; D-pad = W/A/S/D; A idle, B undo,
// Start play). Keys typed into fields, and arrows on a focused slider or list, stay with that control.

import { describe, fmt } from "./actions.js";
import { Gestures } from "./gestures.js";
import { $, $$, plural, state } from "./state.js";
import { addRows, removeLastPending, undo } from "./timeline.js";

const KEYMAP = { KeyW: "w", KeyA: "a", KeyS: "s", KeyD: "d",
  ArrowUp: "up_rot", ArrowDown: "down_rot", ArrowLeft: "left_rot", ArrowRight: "right_rot" };
export const DEADZONE = 0.3;
const DRAG_THRESHOLD_PX = 12;
const DPAD = { 12: "w", 13: "s", 14: "a", 15: "d" };

export const sliders = () => ({ move: Number($("#move-speed").value), look: Number($("#look-speed").value) });
const now = () => performance.now() / 1000;
let gestures = null;

function commit(chunks) {
  const table = state.table;
  const rows = [];
  for (const { keys, count } of chunks) {
    const parts = table.chord([...keys.keys()], (k) => Number(fmt(keys.get(k))));
    for (let i = 0; i < count; i++) rows.push(parts.map((p) => ({ ...p })));
  }
  addRows(rows);
}

/** Caps lit (aria-pressed) for what is held, and the "holding" line: what releasing now would add. */
function showHeld() {
  const held = new Set([...gestures.held.values()].map((v) => v.key));
  for (const cap of $$(".cap")) {
    const on = held.has(cap.dataset.key);
    cap.classList.toggle("on", on);
    cap.setAttribute("aria-pressed", String(on));
  }
  const p = gestures.preview(now());
  const box = $("#holding");
  if (!p.chunks) {
    box.textContent = `hold a key: 1 chunk per ${state.table.chunk.seconds.toFixed(2)} s held`;
    box.classList.remove("live");
    return;
  }
  const parts = state.table.chord(p.keys, (k) => [...gestures.held.values()].find((v) => v.key === k)?.speed ?? 0);
  box.textContent = `holding ${describe(parts, state.table)} · ${plural(p.chunks, "chunk")} · ${p.seconds.toFixed(1)} s`;
  box.classList.add("live");
}

/** Is the key event meant for the focused control rather than the controller? */
function forControl(e) {
  const el = e.target;
  if (!(el instanceof Element)) return false;
  if (el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT") return true;
  if (el.tagName === "INPUT") {
    if (["range", "checkbox", "radio"].includes(el.type)) return e.code.startsWith("Arrow") || ["Home", "End", "PageUp", "PageDown", "Space"].includes(e.code);
    return !["button", "submit", "reset", "file"].includes(el.type);
  }
  if (el.closest("button, a, summary, [role=button], [role=radio], video")) return ["Enter", "Space", "NumpadEnter"].includes(e.code);
  return false;
}

const typing = (el) => el instanceof Element && (el.tagName === "TEXTAREA" || el.tagName === "SELECT" || el.isContentEditable ||
  (el.tagName === "INPUT" && !["range", "checkbox", "radio", "button", "submit", "reset", "file"].includes(el.type)));

export function setupInput({ play }) {
  gestures = new Gestures({ chunkSeconds: state.table.chunk.seconds, onCommit: commit, onChange: showHeld });
  setInterval(() => { if (gestures.active) showHeld(); }, 100);

  window.addEventListener("keydown", (e) => {
    if (document.querySelector("dialog[open]")) return;  // a question is asked: its buttons have the keys
    const inTimeline = e.target instanceof Element && e.target.closest("#timeline");
    if ((typing(e.target) || inTimeline) && e.key === "Escape") { e.target.blur(); return; }
    // the timeline is a form: while one of its controls has the focus, keys are for it (Esc leaves)
    if (forControl(e) || inTimeline || e.altKey || e.metaKey) return;
    if (e.ctrlKey) {
      if (e.code === "KeyZ" && !typing(e.target)) { e.preventDefault(); undo(); }
      return;
    }
    const key = KEYMAP[e.code];
    if (key) {
      e.preventDefault();
      if (!e.repeat) gestures.press(`key:${e.code}`, key, state.table.defaultSpeed(key, sliders()), e.timeStamp / 1000);
    } else if (e.code === "Backspace") {
      e.preventDefault(); removeLastPending();
    } else if ((e.code === "Enter" || e.code === "NumpadEnter") && !e.repeat) {
      e.preventDefault(); play();  // Keep playing when the world can go on, else Generate (or replay)
    }
  });
  window.addEventListener("keyup", (e) => {
    if (KEYMAP[e.code]) gestures.release(`key:${e.code}`, e.timeStamp / 1000);
  });
  window.addEventListener("blur", () => gestures.cancel());

  // on-screen caps: press and hold like keys (a keyboard "click" on a focused cap adds one chunk)
  for (const cap of $$(".cap")) {
    const input = `cap:${cap.dataset.key}`;
    cap.addEventListener("pointerdown", (e) => {
      cap.setPointerCapture(e.pointerId);
      gestures.press(input, cap.dataset.key, state.table.defaultSpeed(cap.dataset.key, sliders()), e.timeStamp / 1000);
    });
    for (const type of ["pointerup", "pointercancel"]) cap.addEventListener(type, (e) => gestures.release(input, e.timeStamp / 1000));
    cap.addEventListener("click", (e) => {
      if (e.detail !== 0) return;  // pointer clicks were handled as press/release
      const key = cap.dataset.key;
      addRows([[{ key, speed: state.table.defaultSpeed(key, sliders()) }]]);
    });
  }

  // the look pad: drag distance sets the degrees (half the pad's width = the look speed, at most the limit)
  const pad = $("#lookpad");
  let drag = null;
  pad.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX, y: e.clientY };
    pad.setPointerCapture(e.pointerId);
  });
  pad.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const half = pad.clientWidth / 2, t = e.timeStamp / 1000;
    for (const [axis, delta, neg, pos] of [["yaw", e.clientX - drag.x, "left_rot", "right_rot"], ["pitch", e.clientY - drag.y, "up_rot", "down_rot"]]) {
      if (Math.abs(delta) < DRAG_THRESHOLD_PX) continue;
      const key = delta < 0 ? neg : pos;
      const degrees = Math.min(state.table.limit(key), Math.round((sliders().look * Math.abs(delta)) / half));
      gestures.press(`drag:${axis}`, key, degrees, t, true);
    }
  });
  const endDrag = (e) => {
    if (!drag) return;
    drag = null;
    gestures.release("drag:yaw", e.timeStamp / 1000);
    gestures.release("drag:pitch", e.timeStamp / 1000);
  };
  pad.addEventListener("pointerup", endDrag);
  pad.addEventListener("pointercancel", endDrag);

  setInterval(() => pollGamepad(play), 50);
}

let padButtons = [];
/** Stick tilt past the deadzone, scaled to 0..1. */
const tilt = (v) => Math.min(1, Math.max(0, (Math.abs(v) - DEADZONE) / (1 - DEADZONE)));
/** A stick must be this far past the deadzone (scaled) to move: a stick resting just past the deadzone would
 * otherwise hold a near-zero speed and fill the timeline with chunks that do nothing. */
export const MIN_TILT = 0.2;

function pollGamepad(play) {
  const pads = navigator.getGamepads ? [...navigator.getGamepads()].filter(Boolean) : [];
  const gp = pads[0];
  const badge = $("#pad-status");
  const name = gp ? gp.id.replace(/\s*\(.*$/, "").trim() || "gamepad" : "";
  badge.textContent = gp ? `pad: ${name}` : "pad: none";
  badge.title = gp ? gp.id : "no gamepad: press a button on one to connect it";
  badge.classList.toggle("dim", !gp);
  if (!gp) { padButtons = []; return; }
  const t = now(), s = sliders();
  const stick = (input, value, neg, pos, max) => {
    if (tilt(value) >= MIN_TILT) gestures.press(input, value < 0 ? neg : pos, Math.round(max * tilt(value) * 100) / 100, t);
    else gestures.release(input, t);
  };
  stick("pad:forward", gp.axes[1] || 0, "w", "s", s.move);
  stick("pad:strafe", gp.axes[0] || 0, "a", "d", s.move);
  stick("pad:yaw", gp.axes[2] || 0, "left_rot", "right_rot", s.look);
  stick("pad:pitch", gp.axes[3] || 0, "up_rot", "down_rot", s.look);
  const pressed = gp.buttons.map((b) => b.pressed);
  for (const [index, key] of Object.entries(DPAD)) {
    if (pressed[index]) gestures.press(`dpad:${index}`, key, s.move, t);
    else gestures.release(`dpad:${index}`, t);
  }
  const edge = (i) => pressed[i] && !padButtons[i];
  if (edge(0)) addRows([[]], "added an idle chunk");
  if (edge(1)) removeLastPending();
  if (edge(9)) play();
  padButtons = pressed;
}
