// Playing the world: Generate (a new world from the start image, every row) and Keep playing (only the new
// rows, from the world's returned state); progress and ETA from the predictor's metrics; each chunk to
// the screen as it arrives; thumbnails; the session's downloads; the whole world as one video.

import { ApiError, cancel, postJson, predict, setUploadName, tidy } from "./api.js";
import { buildInput } from "./commands.js";
import { WorldPlayer } from "./player.js";
import { $, announce, duration, objectUrl, plural, requestPlan, state, stateMetadata, dataUriToBlob } from "./state.js";
import { markServerRow, planProblems, reducedMotion, timelineChanged } from "./timeline.js";
import { checkHealth } from "./status.js";

export let player = null;

export function setupPlay() {
  player = new WorldPlayer($("#stage"), { onChange: showNowPlaying });
  $("#generate").addEventListener("click", () => run("generate"));
  $("#keep").addEventListener("click", () => run("keep"));
  $("#cancel").addEventListener("click", stop);
  $("#play-pause").addEventListener("click", () => player.togglePause());
  $("#world-video").addEventListener("click", worldVideo);
}

/** Start (gamepad Start): Keep playing when the world can go on, else Generate. */
export const playNext = () => run(requestPlan().mode);

// ---------- errors ----------

export function showError(field, msg) {
  const box = document.querySelector(`.field-error[data-for="${field}"]`) || $('.field-error[data-for="generate"]');
  const line = document.createElement("div");
  line.textContent = msg;
  box.append(line);
  box.classList.add("shown");
  const control = { image: "#drop", prompt: "#prompt", seed: "#seed", preset: "#preset", num_inference_steps: "#steps",
    guidance_scale: "#guidance", fps: "#fps", negative_prompt: "#negative" }[field];
  if (control) $(control).setAttribute("aria-invalid", "true");
  if (["num_inference_steps", "guidance_scale", "fps", "negative_prompt"].includes(field)) $("#advanced").open = true;
  announce(msg);
}

export function clearErrors() {
  for (const b of document.querySelectorAll(".field-error:not(#timeline-errors)")) { b.textContent = ""; b.classList.remove("shown"); }
  for (const el of document.querySelectorAll("[aria-invalid=true]:not(#timeline *)")) el.setAttribute("aria-invalid", "false");
}

// ---------- a run ----------

async function run(mode) {
  if (state.running) return;
  clearErrors();
  const plan = requestPlan(mode);
  if (mode === "keep" && !state.world?.state) return showError("generate", "Nothing to continue yet: Generate a world first, or drop a saved state file.");
  if (mode === "generate" && (!state.source || state.source.field === "continue_from")) {
    return showError("image", "Choose a start image (an example, or drop your own) or a video: a saved state continues with Keep playing.");
  }
  const problems = planProblems(plan);
  if (problems.length) {
    for (const p of problems.filter((x) => x.row === null)) showError("actions", p.msg);
    const inRows = problems.filter((x) => x.row !== null).length;
    if (inRows) {  // they are listed under the timeline already
      showError("generate", `Fix the ${inRows === 1 ? "marked row" : `${inRows} problems in the marked rows`} first (listed under the timeline).`);
      $("#timeline li.bad")?.scrollIntoView({ block: "nearest" });
    }
    return;
  }
  const input = buildInput(plan);
  if (mode === "generate") newWorld();
  const world = state.world;
  const abort = new AbortController();
  const r = { mode, plan, world, first: plan.first, total: plan.rows.length, mp4s: 0, pngs: 0, id: null,
    seed: null, progress: null, done: 0, perChunk: [], files: [], abort, input, started: performance.now() };
  state.running = r;
  setUploadName(mode === "keep" ? state.world.stateName : state.source?.name);
  r.group = historyGroup(r);
  setBusy(true);
  progress(r, 0, `starting ${plural(r.total, "chunk")}…`);
  player.setGenerating(`generating chunk ${r.first} · ETA …`);
  $("#stage").classList.add("generating");
  try {
    await predict(input, (name, data) => onEvent(r, name, data), abort.signal, () => state.health);
    for (const row of plan.rows) row.locked = true;
    world.chunks = r.first + r.total - 1;
    world.prompt = input.prompt;
    progress(r, 1, `done: ${plural(r.total, "chunk")} in ${duration((performance.now() - r.started) / 1000)} · world: ${plural(world.chunks, "chunk")}`);
    announce(`done: world has ${plural(world.chunks, "chunk")}`);
  } catch (err) {
    dropUnfinished(r);
    if (err.name === "AbortError" || err.canceled) {
      progress(r, 0, "canceled");
    } else {
      if (err instanceof ApiError && err.status === 409) await checkHealth();
      const e = err instanceof ApiError ? err : new ApiError(tidy(err.message || err));
      for (const x of e.all || [e]) {
        const rowMsg = x.index !== null && x.index !== undefined ? markServerRow(plan, x.index, x.message) : null;
        showError(rowMsg ? "rows" : x.field, rowMsg || x.message);
      }
      progress(r, 0, "failed");
    }
  } finally {
    state.running = null;
    player.setGenerating(null);
    $("#stage").classList.remove("generating");
    setBusy(false);
    showWorld();
    timelineChanged();
  }
}

function newWorld() {
  state.worlds += 1;
  state.world = { number: state.worlds, chunks: 0, state: null, stateName: null, seed: null, chunkUris: [] };
  player.reset();
  $("#thumbs").textContent = "";
}

/** A failed or canceled request leaves no state: its chunks are not part of the world. */
function dropUnfinished(r) {
  r.world.chunkUris = r.world.chunkUris.filter((c) => c.n < r.first);
  player.chunks = player.chunks.filter((c) => c.n < r.first);
  for (const t of $$thumbs()) if (Number(t.dataset.chunk) >= r.first) t.remove();
}
const $$thumbs = () => [...document.querySelectorAll("#thumbs .thumb")];

async function stop() {
  const r = state.running;
  if (!r) return;
  if (r.id) await cancel(r.id).catch(() => {});
  r.abort.abort();
}

function setBusy(busy) {
  $("#generate").disabled = busy;
  $("#keep").disabled = busy || !(state.world?.state && requestPlan().mode === "keep");
  $("#cancel").disabled = !busy;
  document.body.classList.toggle("busy", busy);
}

export function refreshButtons() { if (!state.running) setBusy(false); }

// ---------- progress ----------

function progress(r, fraction, text) {
  const f = Math.max(0, Math.min(1, fraction));
  $("#bar").style.width = `${Math.round(f * 100)}%`;
  $("#progress").setAttribute("aria-valuenow", String(Math.round(f * 100)));
  $("#progress-text").textContent = text;
}

/** The predictor's progress metric (see docs/ui.md): phase, chunk k of n, world chunk, step, ETA. */
function onProgress(r, p) {
  r.progress = p;
  if (p.seed !== undefined && p.seed !== null) setSeed(r, p.seed);
  if (!r.firstFixed && p.world_chunk && p.chunk) {  // the server's own numbering wins (e.g. a state file)
    r.first = p.world_chunk - p.chunk + 1; r.firstFixed = true;
  }
  const steps = p.steps || 1;
  const within = { start: 0, denoise: 0.9 * (p.step || 0) / steps, decode: 0.95, done: 1 }[p.phase] ?? 0;
  const fraction = ((p.chunk || 1) - 1 + within) / (p.chunks || r.total);
  const left = (p.chunks || r.total) - (p.chunk || 1) + 1 - within;
  const chunkEta = p.eta_s === null || p.eta_s === undefined ? null : (p.eta_s * (1 - within)) / Math.max(left, 1e-6);
  const what = { start: "starting", denoise: `step ${p.step}/${p.steps}`, decode: "decoding", done: "done" }[p.phase] || p.phase;
  const eta = p.eta_s === null || p.eta_s === undefined ? "ETA …" : `ETA ${duration(p.eta_s)}`;
  progress(r, fraction, `chunk ${p.world_chunk ?? r.first + (p.chunk || 1) - 1} (${p.chunk}/${p.chunks}) · ${what} · ${eta}`);
  const next = p.phase === "done" ? null : p.world_chunk ?? r.first + (p.chunk || 1) - 1;
  if (next) player.setGenerating(`generating chunk ${next} · ETA ${duration(chunkEta)}`);
}

/** Without the progress metric (older predictors): chunks_done and seconds_per_chunk. */
function onChunkMetric(r) {
  if (r.progress) return;
  const mean = r.perChunk.length ? r.perChunk.reduce((a, b) => a + b, 0) / r.perChunk.length : null;
  const left = r.total - r.done;
  const eta = mean === null ? null : mean * left;
  progress(r, r.done / r.total, `chunk ${r.done}/${r.total} done` + (left ? ` · generating chunk ${r.first + r.done} · ETA ${duration(eta)}` : ""));
  player.setGenerating(left ? `generating chunk ${r.first + r.done} · ETA ${duration(mean)}` : null);
}

function onEvent(r, name, data) {
  if (name === "start") r.id = data.id;
  else if (name === "log") log(String(data.data || ""));
  else if (name === "metric") {
    if (data.name === "progress" && data.value && typeof data.value === "object") onProgress(r, data.value);
    else if (data.name === "seed") setSeed(r, data.value);
    else if (data.name === "chunks_done") { r.done = Number(data.value); onChunkMetric(r); }
    else if (data.name === "seconds_per_chunk") {
      if (data.mode === "append") r.perChunk.push(Number(data.value));
      else if (Array.isArray(data.value)) r.perChunk = data.value.map(Number);
      onChunkMetric(r);
    }
  } else if (name === "output") addOutput(r, String(data.chunk));
}

function log(line) {
  const clean = tidy(line.replace(/^\S+ \S+ \w+ [\w.]+: /, "").trimEnd(), 1000);
  if (!clean) return;
  const box = $("#log");
  box.textContent += clean + "\n";
  box.scrollTop = box.scrollHeight;
}

function setSeed(r, seed) {
  if (seed === null || seed === undefined) return;
  r.seed = seed; r.world.seed = seed;
  renameFiles(r);
  showWorld();
}

// ---------- outputs ----------

const kindOf = (uri) => (/^data:video|\.mp4($|\?)/.test(uri) ? "mp4" : /^data:image|\.png($|\?)/.test(uri) ? "png" : "state");
const pad3 = (n) => String(n).padStart(3, "0");

/** gamecraft-<seed>-<id>-<what>: the predictor's own file name when the output is a URL. */
function fileName(r, what, uri) {
  if (!uri.startsWith("data:")) return decodeURIComponent(uri.split("?")[0].split("/").pop());
  const id = String(r.id || "local").replace(/^pred_/, "").slice(0, 12);
  return `gamecraft-${r.seed ?? "seed"}-${id}-${what}`;
}

function addOutput(r, uri) {
  const kind = kindOf(uri);
  let what, file;
  if (kind === "mp4") {
    r.mp4s += 1;
    if (r.mp4s <= r.total) {
      const n = r.first + r.mp4s - 1;
      what = `chunk${pad3(n)}.mp4`;
      const url = objectUrl(uri);
      r.world.chunkUris.push({ n, uri });
      player.addChunk(n, url);
      addThumb(n, url);
      if (n === r.first) revealScreen();
      showWorld();
      file = addFile(r, what, uri, url, `chunk ${n}`);
    } else {
      what = "video.mp4";
      file = addFile(r, what, uri, objectUrl(uri), `this request's video (chunks ${r.first}–${r.first + r.total - 1})`);
    }
  } else if (kind === "png") {
    r.pngs += 1;
    const lastFrame = "return_last_frame" in r.input && r.pngs === 1;
    what = lastFrame ? "last-frame.png" : "camera.png";
    file = addFile(r, what, uri, objectUrl(uri), lastFrame ? "last frame" : "camera path");
  } else {
    what = "state.safetensors";
    r.world.state = uri;
    file = addFile(r, what, uri, objectUrl(uri), "world state (continue later)");
    readState(r, uri, file);
  }
}

/** The state's own metadata: the seed and the world's chunk count, also without the predictor's metrics. */
async function readState(r, uri, file) {
  const blob = uri.startsWith("data:") ? dataUriToBlob(uri) : await fetch(uri).then((x) => x.blob()).catch(() => null);
  const meta = blob && (await stateMetadata(blob));
  if (!meta) return;
  if (r.seed === null) setSeed(r, meta.seed);
  r.world.stateName = file.name;
  timelineChanged();
}

function addFile(r, what, uri, url, title) {
  const a = document.createElement("a");
  a.href = url; a.title = title; a.dataset.what = what; a.dataset.data = uri.startsWith("data:") ? "1" : "";
  const name = fileName(r, what, uri);
  a.download = name; a.textContent = `⬇ ${name}`;
  const li = document.createElement("li");
  li.append(a);
  r.group.querySelector("ul").append(li);
  const file = { name, what, a };
  r.files.push(file);
  return file;
}

function renameFiles(r) {
  for (const f of r.files) {
    if (!f.a.dataset.data) continue;
    f.name = fileName(r, f.what, "data:"); f.a.download = f.name; f.a.textContent = `⬇ ${f.name}`;
    if (f.what === "state.safetensors") r.world.stateName = f.name;
  }
  r.group.querySelector("h3").textContent = groupTitle(r);
}

function groupTitle(r) {
  const verb = r.mode === "keep" ? "▶▶ keep playing" : "▶ generate";
  return `world ${r.world.number} · ${verb} · chunk${r.total > 1 ? `s ${r.first}–${r.first + r.total - 1}` : ` ${r.first}`}` +
    (r.seed !== null ? ` · seed ${r.seed}` : "");
}

function historyGroup(r) {
  const group = document.createElement("section");
  group.className = "request";
  group.innerHTML = "<h3></h3><ul></ul>";
  group.querySelector("h3").textContent = groupTitle(r);
  $("#history").prepend(group);
  $("#history-panel").hidden = false;
  return group;
}

function addThumb(n, url) {
  const b = document.createElement("button");
  b.className = "thumb"; b.dataset.chunk = n;
  b.setAttribute("aria-label", `play from chunk ${n}`);
  b.title = `play the world from chunk ${n}`;
  const v = document.createElement("video");
  Object.assign(v, { muted: true, preload: "auto", playsInline: true, src: url });
  v.setAttribute("aria-hidden", "true");
  v.addEventListener("loadeddata", () => { v.currentTime = Math.min(v.duration || 0, 0.66); }, { once: true });
  const cap = document.createElement("span"); cap.textContent = `#${n}`;
  b.append(v, cap);
  b.addEventListener("click", () => player.playFrom(n));
  const after = $$thumbs().find((t) => Number(t.dataset.chunk) > n);
  $("#thumbs").insertBefore(b, after || null);
}

/** On a phone the screen is below the controller: bring it into view when the first chunk arrives. */
function revealScreen() {
  const box = $("#stage").getBoundingClientRect();
  if (box.top >= 0 && box.bottom <= innerHeight) return;
  $("#stage").scrollIntoView({ block: "center", behavior: reducedMotion() ? "auto" : "smooth" });
}

function showNowPlaying() {
  const n = player.nowPlaying, total = state.world?.chunkUris.length || 0;
  $("#now-playing").textContent = player.mode === "video" ? "whole video" : n ? `chunk ${n} of ${total}` : "–";
  $("#play-pause").textContent = player.paused ? "play" : "pause";
  for (const t of $$thumbs()) t.classList.toggle("current", Number(t.dataset.chunk) === n);
}

export function showWorld() {
  const w = state.world;
  const n = w ? Math.max(w.chunks, ...w.chunkUris.map((c) => c.n)) : 0;  // chunks arrive before the state
  $("#world").textContent = !w ? "no world yet" : `world ${w.number}: ${plural(n, "chunk")} · ` +
    `${(n * state.table.chunk.seconds).toFixed(1)} s` + (w.seed !== null && w.seed !== undefined ? ` · seed ${w.seed}` : "");
  $("#world-video").disabled = !w || w.chunkUris.length < 1;
  refreshButtons();
}

// ---------- the whole world ----------

async function worldVideo() {
  const w = state.world;
  if (!w || !w.chunkUris.length) return;
  const button = $("#world-video");
  button.disabled = true;
  const old = button.textContent;
  button.textContent = "joining…";
  try {
    const chunks = [...w.chunkUris].sort((a, b) => a.n - b.n);
    const first = chunks[0].n, last = chunks.at(-1).n;
    const name = `gamecraft-${w.seed ?? "seed"}-world${w.number}-chunks${pad3(first)}-${pad3(last)}.mp4`;
    const r = await postJson("/api/world-video", { chunks: chunks.map((c) => c.uri), name });
    if (!r.ok) {
      let detail = `HTTP ${r.status}`;
      try { detail = (await r.json()).detail || detail; } catch { /* keep */ }
      throw new ApiError(`The whole-world video failed: ${tidy(detail)}`);
    }
    const url = URL.createObjectURL(await r.blob());
    player.playVideo(url);
    const group = document.createElement("section");
    group.className = "request";
    group.innerHTML = "<h3></h3><ul><li></li></ul>";
    group.querySelector("h3").textContent = `world ${w.number} · the whole world, chunks ${first}–${last} (${r.headers.get("X-Assembly") === "copy" ? "joined without re-encoding" : "re-encoded"})`;
    const a = Object.assign(document.createElement("a"), { href: url, download: name, textContent: `⬇ ${name}` });
    a.dataset.what = "world.mp4";
    group.querySelector("li").append(a);
    $("#history").prepend(group);
  } catch (err) {
    showError("screen", err.message || String(err));
  } finally {
    button.textContent = old;
    button.disabled = false;
  }
}
