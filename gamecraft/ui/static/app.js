// The controller page: input (keys, drag, on-screen caps, gamepad) -> timeline -> JSON, the
// live minimap, and playing the world through /api/predictions (see api.js).
import { chord, describe, fmt, isLook, label, reparse, toJson, unit } from "./chunks.js";
import { drawMinimap } from "./minimap.js";
import { PALETTE, topDownPoints } from "./path.js";
import { ApiError, cancel, getJson, predict } from "./api.js";

const $ = (sel) => document.querySelector(sel);
const KEYMAP = { KeyW: "w", KeyA: "a", KeyS: "s", KeyD: "d",
  ArrowUp: "up_rot", ArrowDown: "down_rot", ArrowLeft: "left_rot", ArrowRight: "right_rot" };
const DEADZONE = 0.3;

const state = {
  chunks: [],              // [[{key, speed}, ...], ...]
  held: new Set(),         // keys physically held now
  gesture: new Set(),      // every key/drag direction since the gesture began (insertion order = press order)
  draft: new Set(),        // on-screen caps toggled on
  pad: new Set(),          // directions of the gamepad sticks now
  padButtons: [],
  dragging: null,
  source: null,            // {field: "image"|"video"|"continue_from", uri, name}
  lastState: null,         // state file (data URI or URL) of the last prediction
  worldChunks: 0,          // chunks in the world so far (continuations count on)
  played: [],              // the world's chunks so far (drawn dimmed before the timeline)
  lastBatch: null,         // JSON of the chunks of the last generation
  config: { backend: "cog", url: "http://127.0.0.1:5000" },
  running: null,           // {id, abort}
};
const speeds = () => ({ move: Number($("#move-speed").value), look: Number($("#look-speed").value) });

// ---------- timeline ----------
function addChunk(parts) {
  state.chunks.push(parts.map((p) => ({ ...p })));
  render();
}

function commitGesture() {
  if (state.gesture.size) addChunk(chord([...state.gesture], speeds()));
  state.gesture.clear();
  lightCaps();
}

function addDraft() {
  const keys = [...state.draft, ...state.pad];
  addChunk(chord(keys, speeds()));
  state.draft.clear();
  lightCaps();
}

function render() {
  const list = $("#timeline");
  list.textContent = "";
  state.chunks.forEach((parts, i) => {
    const li = document.createElement("li");
    li.className = "chunk";
    li.innerHTML = `<span class="swatch" style="background:${PALETTE[i % PALETTE.length]}"></span>
      <span class="num">${i + 1}</span>`;
    const action = document.createElement("input");
    action.className = "action"; action.value = label(parts); action.title = "action (edit: w+left_rot, idle, …)";
    action.addEventListener("change", () => { state.chunks[i] = reparse(action.value, parts, speeds()); render(); });
    li.append(action);
    parts.forEach((p) => {
      const box = document.createElement("label");
      box.className = "speed";
      const input = document.createElement("input");
      input.type = "number"; input.step = isLook(p.key) ? "1" : "0.05"; input.min = "0"; input.max = isLook(p.key) ? "90" : "3";
      input.value = fmt(p.speed); input.title = `${p.key} speed`;
      input.addEventListener("change", () => { p.speed = Number(input.value); render(); });
      box.append(input, unit(p.key));
      li.append(box);
    });
    for (const [text, title, fn] of [["↑", "move up", () => move(i, -1)], ["↓", "move down", () => move(i, 1)],
      ["✕", "delete", () => { state.chunks.splice(i, 1); render(); }]]) {
      const b = document.createElement("button");
      b.className = "small icon"; b.textContent = text; b.title = title; b.addEventListener("click", fn);
      li.append(b);
    }
    list.append(li);
  });
  $("#chunk-count").textContent = `${state.chunks.length} chunk${state.chunks.length === 1 ? "" : "s"} · ${(state.chunks.length * 33 / 25).toFixed(1)} s`;
  const json = toJson(state.chunks);
  $("#json-actions").textContent = json.actions;
  $("#json-speeds").textContent = json.action_speeds;
  $("#command").textContent = command(json);
  // right after a generation the timeline is the batch just played: show the world as played;
  // once the timeline changes, show it as the continuation of the world (what Keep playing sends)
  const world = !state.lastState ? [] : JSON.stringify(state.chunks) === state.lastBatch
    ? state.played.slice(0, state.played.length - state.chunks.length) : state.played;
  drawMinimap($("#minimap"), state.chunks, world);
  const { headings, pitches } = topDownPoints(state.chunks);
  $("#minimap").dataset.yaw = Math.round(headings.at(-1) * 180 / Math.PI);
  $("#minimap").dataset.pitch = Math.round(pitches.at(-1));
}

function move(i, delta) {
  const j = i + delta;
  if (j < 0 || j >= state.chunks.length) return;
  [state.chunks[i], state.chunks[j]] = [state.chunks[j], state.chunks[i]];
  render();
}

const shq = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;

function command(json) {
  const seed = $("#seed").value, preset = $("#preset").value, prompt = $("#prompt").value;
  const field = state.source ? state.source.field : "image";
  if ($("#cmd-kind").value === "cog") {
    return [`cog predict -i ${field}=@${state.source ? state.source.name : "start.png"}`, `-i prompt=${shq(prompt)}`,
      `-i actions=${shq(json.actions)}`, `-i action_speeds=${shq(json.action_speeds)}`,
      preset !== "distilled" ? `-i preset=${preset}` : "", seed ? `-i seed=${seed}` : ""].filter(Boolean).join(" \\\n    ");
  }
  const input = { prompt, actions: json.actions, action_speeds: json.action_speeds };
  if (preset !== "distilled") input.preset = preset;
  if (seed) input.seed = Number(seed);
  const body = JSON.stringify({ input: { [field]: "@FILE@", ...input } });
  const mime = { image: "image/png", video: "video/mp4" }[field] || "application/octet-stream";
  const file = `'"data:${mime};base64,'$(base64 -w0 ${state.source ? state.source.name : "start.png"})'"'`;
  const data = shq(body).replace(`"@FILE@"`, file);
  if (state.config.backend === "replicate") {
    const url = state.config.version ? "https://api.replicate.com/v1/predictions"
      : `https://api.replicate.com/v1/models/${state.config.model}/predictions`;
    const withVersion = state.config.version ? data.replace(`{"input"`, `{"version": "${state.config.version}", "input"`) : data;
    return `curl -s -X POST ${url} \\\n  -H "Authorization: Bearer $REPLICATE_API_TOKEN" -H 'Prefer: wait' \\\n  -H 'Content-Type: application/json' -d ${withVersion}`;
  }
  return `curl -s -X POST ${state.config.url}/predictions \\\n  -H 'Content-Type: application/json' -d ${data}`;
}

// ---------- input: keyboard, drag, caps, gamepad ----------
function lightCaps() {
  const on = new Set([...state.held, ...state.gesture, ...state.draft, ...state.pad]);
  document.querySelectorAll(".cap").forEach((cap) => cap.classList.toggle("on", on.has(cap.dataset.key)));
  const parts = chord([...on], speeds());
  $("#draft").textContent = `draft: ${on.size ? describe(parts) : "–"}`;
}

const typing = (e) => /^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName) && e.target.type !== "range";

window.addEventListener("keydown", (e) => {
  if (typing(e) && e.key === "Escape") return e.target.blur();
  if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
  const key = KEYMAP[e.code];
  if (key) {
    e.preventDefault();
    if (e.repeat) return;
    state.held.add(key);
    state.gesture.delete(key); state.gesture.add(key);
    lightCaps();
  } else if (e.key === "Enter" && e.target.tagName !== "BUTTON") {
    e.preventDefault(); addDraft();
  } else if (e.key === "Backspace" && state.chunks.length) {
    e.preventDefault(); state.chunks.pop(); render();
  }
});
window.addEventListener("keyup", (e) => {
  const key = KEYMAP[e.code];
  if (!key || !state.held.has(key)) return;
  state.held.delete(key);
  if (!state.held.size && !state.dragging) commitGesture();
  lightCaps();
});
window.addEventListener("blur", () => { state.held.clear(); state.gesture.clear(); lightCaps(); });

const pad = $("#lookpad");
pad.addEventListener("pointerdown", (e) => { state.dragging = { x: e.clientX, y: e.clientY }; pad.setPointerCapture(e.pointerId); });
pad.addEventListener("pointermove", (e) => {
  if (!state.dragging) return;
  const dx = e.clientX - state.dragging.x, dy = e.clientY - state.dragging.y;
  const add = (k) => { if (!state.gesture.has(k)) { state.gesture.add(k); lightCaps(); } };
  if (Math.abs(dx) > 24) add(dx < 0 ? "left_rot" : "right_rot");
  if (Math.abs(dy) > 24) add(dy < 0 ? "up_rot" : "down_rot");
});
pad.addEventListener("pointerup", () => {
  state.dragging = null;
  if (!state.held.size) commitGesture();
});

document.querySelectorAll(".cap").forEach((cap) => cap.addEventListener("click", () => {
  const k = cap.dataset.key;
  state.draft.has(k) ? state.draft.delete(k) : state.draft.add(k);
  lightCaps();
}));
$("#add").addEventListener("click", addDraft);
$("#idle").addEventListener("click", () => addChunk([]));
$("#clear").addEventListener("click", () => { state.chunks = []; render(); });

function pollGamepad() {
  const pads = navigator.getGamepads ? [...navigator.getGamepads()].filter(Boolean) : [];
  const gp = pads[0];
  $("#pad-status").textContent = gp ? `pad: ${gp.id.slice(0, 28)}` : "pad: none";
  $("#pad-status").classList.toggle("dim", !gp);
  if (!gp) return;
  const ax = (i) => (Math.abs(gp.axes[i] || 0) > DEADZONE ? gp.axes[i] : 0);
  const dirs = new Set();
  if (ax(1) < 0) dirs.add("w"); if (ax(1) > 0) dirs.add("s");
  if (ax(0) < 0) dirs.add("a"); if (ax(0) > 0) dirs.add("d");
  if (ax(2) < 0) dirs.add("left_rot"); if (ax(2) > 0) dirs.add("right_rot");
  if (ax(3) < 0) dirs.add("up_rot"); if (ax(3) > 0) dirs.add("down_rot");
  const changed = dirs.size !== state.pad.size || [...dirs].some((d) => !state.pad.has(d));
  state.pad = dirs;
  if (changed) lightCaps();
  const pressed = gp.buttons.map((b) => b.pressed);
  const edge = (i) => pressed[i] && !state.padButtons[i];
  if (edge(0)) addDraft();
  if (edge(1) && state.chunks.length) { state.chunks.pop(); render(); }
  if (edge(9)) generate(false);
  state.padButtons = pressed;
}
setInterval(pollGamepad, 50);

for (const id of ["move-speed", "look-speed"]) {
  $(`#${id}`).addEventListener("input", () => { $(`#${id}-out`).textContent = $(`#${id}`).value; lightCaps(); });
}

// ---------- play ----------
function showError(field, msg) {
  const box = document.querySelector(`.field-error[data-for="${field}"]`) || document.querySelector('.field-error[data-for="generate"]');
  box.textContent = msg;
  box.classList.add("shown");
}
function clearErrors() {
  document.querySelectorAll(".field-error").forEach((b) => { b.textContent = ""; b.classList.remove("shown"); });
}

function setSource(file) {
  const reader = new FileReader();
  reader.onload = () => {
    const field = /\.safetensors$/i.test(file.name) ? "continue_from" : file.type.startsWith("video/") ? "video" : "image";
    state.source = { field, uri: reader.result, name: file.name };
    $("#start-thumb").src = field === "image" ? reader.result : "";
    $("#start-thumb").classList.toggle("shown", field === "image");
    $("#drop-text").textContent = `${field === "continue_from" ? "state" : field}: ${file.name}`;
    if (field === "continue_from") { state.lastState = reader.result; $("#keep").disabled = false; }
    clearErrors(); render();
  };
  reader.readAsDataURL(file);
}
const drop = $("#drop");
drop.addEventListener("click", () => $("#file").click());
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) setSource(e.dataTransfer.files[0]); });
$("#file").addEventListener("change", () => { if ($("#file").files[0]) setSource($("#file").files[0]); });
$("#dice").addEventListener("click", () => { $("#seed").value = Math.floor(Math.random() * 2 ** 31); render(); });
for (const id of ["#prompt", "#seed", "#preset", "#cmd-kind"]) $(id).addEventListener("change", render);

function buildInput(keep) {
  const json = toJson(state.chunks);
  const input = { prompt: $("#prompt").value, actions: json.actions, action_speeds: json.action_speeds, preset: $("#preset").value };
  // coglet rejects explicit nulls: optional inputs are omitted when blank
  if ($("#seed").value !== "") input.seed = Number($("#seed").value);
  if ($("#steps").value !== "") input.num_inference_steps = Number($("#steps").value);
  if (keep) input.continue_from = state.lastState;
  else if (state.source) input[state.source.field] = state.source.uri;
  return input;
}

async function generate(keep) {
  if (state.running) return;
  clearErrors();
  if (!state.chunks.length) return showError("actions", "Add at least one chunk (press W, or a button above).");
  const input = buildInput(keep);
  const total = state.chunks.length, first = keep ? state.worldChunks : 0;
  const outputs = { mp4: 0, state: null };
  if (!keep) { state.worldChunks = 0; $("#chunks").textContent = ""; }
  $("#downloads").textContent = ""; $("#log").textContent = "";
  const abort = new AbortController();
  state.running = { id: null, abort };
  setBusy(true, `starting ${total} chunk${total === 1 ? "" : "s"}…`, 0);
  try {
    await predict(input, (name, data) => onEvent(name, data, { total, first, outputs }), abort.signal);
    state.worldChunks = first + total;
    state.played = (keep ? state.played : []).concat(state.chunks.map((c) => c.map((p) => ({ ...p }))));
    state.lastBatch = JSON.stringify(state.chunks);
    state.lastState = outputs.state || state.lastState;
    $("#world").textContent = `world: ${state.worldChunks} chunks · ${(state.worldChunks * 33 / 25).toFixed(1)} s`;
    setBusy(false, `done: ${total} chunk${total === 1 ? "" : "s"}`, 1);
    render();
  } catch (err) {
    if (err.name === "AbortError" || err.canceled) { setBusy(false, "canceled", 0); }
    else {
      const e = err instanceof ApiError ? err : new ApiError(String(err.message || err), "generate");
      (e.all || [{ field: e.field, msg: e.message }]).forEach((x) => showError(x.field || "generate", x.msg));
      setBusy(false, "failed", 0);
    }
  } finally {
    state.running = null;
    $("#keep").disabled = !state.lastState;
  }
}

function onEvent(name, data, run) {
  if (name === "start") state.running.id = data.id;
  if (name === "log") {
    const line = String(data.data || "").replace(/^\S+ \S+ \w+ [\w.]+: /, "").replace(/\/\S*\/([^/\s]+)/g, "$1").trimEnd();
    if (!line) return;
    const log = $("#log");
    log.textContent += line + "\n"; log.scrollTop = log.scrollHeight;
    const m = /chunk (\d+) step (\d+)\/(\d+)/.exec(line);
    if (m) {
      const done = Number(m[1]) - run.first - 1 + Number(m[2]) / Number(m[3]);
      setBusy(true, `chunk ${m[1]} · step ${m[2]}/${m[3]}`, done / run.total);
    }
  }
  if (name === "output") addOutput(data.chunk, run);
}

function addOutput(uri, run) {
  const kind = /^data:video|\.mp4($|\?)/.test(uri) ? "mp4" : /^data:image|\.png($|\?)/.test(uri) ? "png" : "state";
  let name;
  if (kind === "mp4") {
    run.outputs.mp4 += 1;
    if (run.outputs.mp4 <= run.total) {
      const n = run.first + run.outputs.mp4;
      name = `chunk${String(n).padStart(3, "0")}.mp4`;
      const v = document.createElement("video");
      Object.assign(v, { src: uri, muted: true, autoplay: true, loop: true, playsInline: true, title: `chunk ${n}` });
      v.className = "chunk-video"; v.dataset.chunk = n;
      const fig = document.createElement("figure");
      const cap = document.createElement("figcaption"); cap.textContent = `#${n}`;
      fig.append(v, cap); $("#chunks").append(fig);
      play(uri);
    } else { name = "video.mp4"; play(uri); }
  } else name = kind === "png" ? "frame.png" : "world-state.safetensors";
  if (kind === "state") run.outputs.state = uri;
  const a = document.createElement("a");
  a.href = uri; a.download = name; a.textContent = `⬇ ${name}`;
  $("#downloads").append(a);
}

function play(uri) {
  const player = $("#player");
  player.src = uri; player.loop = false;
  $("#stage").classList.remove("empty");
  player.play().catch(() => {});
}

function setBusy(busy, text, fraction) {
  $("#generate").disabled = busy; $("#keep").disabled = busy || !state.lastState; $("#cancel").disabled = !busy;
  $("#progress-text").textContent = text;
  $("#bar").style.width = `${Math.round(Math.max(0, Math.min(1, fraction)) * 100)}%`;
  document.body.classList.toggle("busy", busy);
}

$("#generate").addEventListener("click", () => generate(false));
$("#keep").addEventListener("click", () => generate(true));
$("#cancel").addEventListener("click", async () => {
  const run = state.running;
  if (!run) return;
  if (run.id) await cancel(run.id).catch(() => {});
  run.abort.abort();
});

// ---------- start ----------
getJson("/api/config").then((c) => {
  state.config = c;
  $("#backend").textContent = c.backend === "replicate" ? `☁ replicate: ${c.model}` : `⚙ cog: ${c.url}`;
  render();
}).catch(() => { $("#backend").textContent = "backend unknown"; });
window.addEventListener("resize", render);
render();
window.gamecraft = { state, render, topDownPoints };  // for tests and the console
