// What a request brings back, shown as it arrives: progress and ETA from the predictor's metrics, each chunk
// to the screen and a thumbnail, the session's downloads, and the whole world as one video.

import { ApiError, postJson, tidy } from "./api.js";
import { WorldPlayer } from "./player.js";
import { $, dataUriToBlob, duration, objectUrl, plural, state, stateMetadata, worldChunks } from "./state.js";
import { reducedMotion } from "./timeline.js";

export let player = null;

export function setupOutputs({ onScreenError }) {
  player = new WorldPlayer($("#stage"), { onChange: showNowPlaying });
  $("#play-pause").addEventListener("click", () => player.togglePause());
  $("#world-video").addEventListener("click", () => worldVideo().catch((err) => onScreenError(err.message || String(err))));
}

// ---------- progress ----------

export function progress(r, fraction, text) {
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
  // the screen's ETA is the chunk's: its share of eta_s, but in the decode the decode time measured on the
  // request's earlier chunks (no event comes during a decode, so it is counted down between events)
  const now = performance.now() / 1000;
  if (p.phase === "decode") r.decodeAt = now;
  else if (r.decodeAt && (p.phase === "start" || p.phase === "done")) { r.decodeS = now - r.decodeAt; r.decodeAt = null; }
  let chunkEta = p.eta_s === null || p.eta_s === undefined ? null : (p.eta_s * (1 - within)) / Math.max(left, 1e-6);
  if (p.phase === "decode" && r.decodeS) chunkEta = r.decodeS;
  const what = { start: "starting", denoise: `step ${p.step}/${p.steps}`, decode: "decoding", done: "done" }[p.phase] || p.phase;
  const eta = p.eta_s === null || p.eta_s === undefined ? "ETA …" : `ETA ${duration(p.eta_s)}`;
  progress(r, fraction, `chunk ${p.world_chunk ?? r.first + (p.chunk || 1) - 1} (${p.chunk}/${p.chunks}) · ${what} · ${eta}`);
  const next = p.phase === "done" ? null : p.world_chunk ?? r.first + (p.chunk || 1) - 1;
  r.screenEta = next ? { chunk: next, eta: chunkEta, at: now } : null;
  showScreenEta(r);
}

/** The screen's "generating chunk k · ETA s", counted down from the last event's estimate. */
export function showScreenEta(r) {
  const e = r.screenEta;
  if (!e) return;
  const left = e.eta === null ? null : Math.max(0, e.eta - (performance.now() / 1000 - e.at));
  player.setGenerating(`generating chunk ${e.chunk} · ETA ${duration(left)}`);
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

export function onEvent(r, name, data) {
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
      r.received = r.mp4s;
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
    r.stateUri = uri;  // the world's state once the request succeeded (play.js commits it)
    file = addFile(r, what, uri, objectUrl(uri), "world state (continue later)");
    r.stateMeta = readState(r, uri, file);
  }
}

/** The state's own metadata (seed, chunks_done, actions), also without the predictor's metrics; null if none. */
async function readState(r, uri, file) {
  const blob = uri.startsWith("data:") ? dataUriToBlob(uri) : await fetch(uri).then((x) => x.blob()).catch(() => null);
  const meta = blob && (await stateMetadata(blob));
  r.stateName = file.name;
  if (meta && r.seed === null) setSeed(r, meta.seed);
  return meta || null;
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
    if (f.what === "state.safetensors") r.stateName = f.name;
  }
  r.group.querySelector("h3").textContent = groupTitle(r);
}

function groupTitle(r) {
  const verb = r.mode === "keep" ? "▶▶ keep playing" : "▶ generate";
  return `world ${r.world.number} · ${verb} · chunk${r.total > 1 ? `s ${r.first}–${r.first + r.total - 1}` : ` ${r.first}`}` +
    (r.seed !== null ? ` · seed ${r.seed}` : "");
}

export function historyGroup(r) {
  const group = document.createElement("section");
  group.className = "request";
  group.innerHTML = "<h3></h3><ul></ul>";
  group.querySelector("h3").textContent = groupTitle(r);
  $("#history").prepend(group);
  $("#history-panel").hidden = false;
  $("#no-downloads").hidden = true;
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

/** A world's chunks back on the screen and in the thumbnails (a failed request's world restored, a resumed
 * world, undo of "new world"); the screen waits at the first chunk. */
export function showWorldChunks(world) {
  $("#thumbs").textContent = "";
  const chunks = [...(world?.chunkUris || [])].sort((a, b) => a.n - b.n).map((c) => ({ n: c.n, url: objectUrl(c.uri) }));
  for (const c of chunks) addThumb(c.n, c.url);
  player.load(chunks);
  showWorld();
}

/** A failed or canceled request leaves no state: its chunks are not part of the world. */
export function dropUnfinished(r) {
  r.world.chunkUris = r.world.chunkUris.filter((c) => c.n < r.first);
  player.chunks = player.chunks.filter((c) => c.n < r.first);
  for (const t of $$thumbs()) if (Number(t.dataset.chunk) >= r.first) t.remove();
}
const $$thumbs = () => [...document.querySelectorAll("#thumbs .thumb")];

/** On a phone the screen is below the controller: bring it into view when the first chunk arrives. */
function revealScreen() {
  const box = $("#stage").getBoundingClientRect();
  if (box.top >= 0 && box.bottom <= innerHeight) return;
  $("#stage").scrollIntoView({ block: "center", behavior: reducedMotion() ? "auto" : "smooth" });
}

function showNowPlaying() {
  const n = player.nowPlaying, total = worldChunks();
  $("#now-playing").textContent = player.mode === "video" ? "whole video" : n && total ? `chunk ${n} of ${total}` : "–";
  const atEnd = player.mode === "chunks" && player.waiting && !player.generating;
  $("#play-pause").textContent = atEnd ? "replay" : player.mode === "idle" ? "play" : player.paused ? "play" : "pause";
  $("#play-pause").disabled = player.mode === "idle";
  for (const t of $$thumbs()) t.classList.toggle("current", Number(t.dataset.chunk) === n);
}

export function showWorld() {
  const w = state.world;
  const n = worldChunks(w);  // chunks arrive before the state
  $("#world").textContent = !w ? "no world yet" : `world ${w.number}: ${plural(n, "chunk")} · ` +
    `${(n * state.table.chunk.seconds).toFixed(1)} s` + (w.seed !== null && w.seed !== undefined ? ` · seed ${w.seed}` : "");
  $("#world-video").disabled = !w || w.chunkUris.length < 1;
  showNowPlaying();
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
  } finally {
    button.textContent = old;
    button.disabled = false;
  }
}
