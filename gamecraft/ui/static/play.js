// Playing the world: Generate (a new world from the start image, every row) and Keep playing (only the new
// rows, from the world's returned state). A request is a transaction: it sends a copy of its rows, which stay
// read-only (marked generating) while it runs; a new world replaces the old one only once the server
// accepted the request (its first event); only the chunks the server made become history, from what it
// returned; a refused, failed or canceled request leaves the world, the rows and the screen as they were.

import { ApiError, cancel, predict, serverAdvice, setUploadName, tidy, workerDied } from "./api.js";
import { buildInput } from "./commands.js";
import { partsFromDescription } from "./actions.js";
import { dropUnfinished, historyGroup, onEvent, player, progress, setupOutputs, showScreenEta, showWorld, showWorldChunks } from "./outputs.js";
import { $, announce, copyRow, duration, historyRows, newRow, pendingRows, plural, requestPlan, state, worldChunks } from "./state.js";
import { markServerRow, planProblems, sealUndo, timelineChanged } from "./timeline.js";
import { checkHealth, setHealthListener } from "./status.js";
import { dismissOffer, forgetRunning, rememberRunning, saveSoon } from "./store.js";

export { player };

export function setupPlay() {
  setupOutputs({ onScreenError: (msg) => showError("screen", msg) });
  $("#generate").addEventListener("click", () => run("generate"));
  $("#keep").addEventListener("click", () => run("keep"));
  $("#cancel").addEventListener("click", stop);
  for (const id of ["#generate", "#keep"]) $(id).dataset.does = $(id).title;
  setHealthListener((health) => {
    if (health.status === "READY") clearErrors("server");  // their cause is gone
    refreshButtons();
  });
  // a running request dies with the page: say so before the tab goes
  window.addEventListener("beforeunload", (e) => { if (state.running) { e.preventDefault(); e.returnValue = ""; } });
}

/** Start (gamepad Start, Enter): Keep playing when the world can go on; with nothing new, replay the world. */
export function playNext() {
  if (state.running) return;
  const plan = requestPlan();
  if (plan.mode === "generate" && !pendingRows().length && worldChunks() > 0) {
    player.playFrom(player.chunks[0]?.n);
    announce(`replaying world ${state.world.number}`);
    return;
  }
  run(plan.mode);
}

// ---------- errors ----------

/** An error next to its field; ``cause`` "server" marks one that goes when the server is ready again. */
export function showError(field, msg, cause = null) {
  const box = document.querySelector(`.field-error[data-for="${field}"]`) || $('.field-error[data-for="generate"]');
  const line = document.createElement("div");
  line.textContent = msg;
  if (cause) line.dataset.cause = cause;
  box.append(line);
  box.classList.add("shown");
  const control = { image: "#drop", prompt: "#prompt", seed: "#seed", preset: "#preset", num_inference_steps: "#steps",
    guidance_scale: "#guidance", fps: "#fps", negative_prompt: "#negative" }[field];
  if (control) $(control).setAttribute("aria-invalid", "true");
  if (["num_inference_steps", "guidance_scale", "fps", "negative_prompt"].includes(field)) $("#advanced").open = true;
  announce(msg);
}

/** Every error box (or only the lines of one ``cause``). */
export function clearErrors(cause = null) {
  for (const b of document.querySelectorAll(".field-error:not(#timeline-errors)")) {
    if (cause) for (const line of b.querySelectorAll(`[data-cause="${cause}"]`)) line.remove();
    else b.textContent = "";
    if (!b.textContent) b.classList.remove("shown");
  }
  if (!cause) for (const el of document.querySelectorAll("[aria-invalid=true]:not(#timeline *)")) el.setAttribute("aria-invalid", "false");
}

// ---------- a request ----------

async function run(mode) {
  if (state.running) return;
  const why = reasons()[mode];
  clearErrors(why ? "server" : null);
  if (why) return showError("generate", sentence(why), "server");
  dismissOffer();
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
  if (mode === "generate" && worldChunks() > 0 && !(await confirmReplace())) return;
  if (state.running) return;
  const input = buildInput(plan);  // the JSON of the rows: a copy, whatever happens to them from now on
  const sent = plan.rows.map(copyRow);
  const r = { mode, plan, sent, input, world: null, oldWorld: state.world, accepted: false, first: plan.first,
    total: plan.rows.length, mp4s: 0, pngs: 0, received: 0, id: null, seed: null, progress: null, done: 0, perChunk: [],
    files: [], abort: new AbortController(), started: performance.now(), stateUri: null, stateMeta: null, stateName: null };
  for (const row of plan.rows) row.generating = true;
  sealUndo();
  state.running = r;
  rememberRunning(r);
  setUploadName(mode === "keep" ? state.world.stateName : state.source?.name);
  timelineChanged();
  refreshButtons();
  progress(r, 0, `starting ${plural(r.total, "chunk")}…`);
  const ticker = setInterval(() => showScreenEta(r), 500);
  try {
    await predict(input, (name, data) => { if (!r.accepted) accept(r); onEvent(r, name, data); }, r.abort.signal, checkHealth);
    await commit(r);
  } catch (err) {
    rollback(r);
    await failed(r, err);
  } finally {
    clearInterval(ticker);
    state.running = null;
    state.lastRunEnd = performance.now();
    forgetRunning();
    sealUndo();
    player.setGenerating(null);
    $("#stage").classList.remove("generating");
    showWorld();
    timelineChanged();
    saveSoon();
    settleHealth();
  }
}

/** The server took the request (its first event): a Generate's new world replaces the old one now. */
function accept(r) {
  r.accepted = true;
  if (r.mode === "generate") {
    state.worlds += 1;
    state.world = { number: state.worlds, chunks: 0, state: null, stateName: null, seed: null, chunkUris: [] };
    showWorldChunks(null);
  }
  r.world = state.world;
  r.group = historyGroup(r);
  player.setGenerating(`generating chunk ${r.first} · ETA …`);
  $("#stage").classList.add("generating");
}

/** Success: the chunks the server made become the world's history, as its returned state describes them. */
async function commit(r) {
  const meta = r.stateMeta ? await r.stateMeta : null;
  const w = r.world;
  w.chunks = meta?.chunks_done ?? r.first + r.received - 1;
  if (r.stateUri) Object.assign(w, { state: r.stateUri, stateName: r.stateName });
  w.prompt = r.input.prompt;
  let history;
  if (meta?.actions?.length === w.chunks) {
    history = meta.actions.map((text) => {
      const parts = partsFromDescription(text, state.table);
      return newRow(parts, parts ? null : text, true);
    });
  } else {  // no metadata: what was sent, as far as chunks came back
    const made = r.sent.slice(0, r.received).map((row) => ({ ...copyRow(row), locked: true, generating: false }));
    history = (r.mode === "keep" ? historyRows() : []).concat(made);
  }
  state.rows = history.concat(state.rows.filter((row) => !row.locked && !row.generating));
  progress(r, 1, `done: ${plural(r.received, "chunk")} in ${duration((performance.now() - r.started) / 1000)} · world: ${plural(w.chunks, "chunk")}`);
  announce(`done: world has ${plural(w.chunks, "chunk")}`);
}

/** Refused, failed or canceled: the rows go back to new, the world (and its screen) to what it was. */
function rollback(r) {
  for (const row of r.plan.rows) row.generating = false;
  if (!r.accepted) return;
  if (r.mode === "generate") {
    state.world = r.oldWorld;
    state.worlds -= 1;
    showWorldChunks(r.oldWorld);
  } else {
    dropUnfinished(r);
  }
}

/** The failure's message, after reading the server's health again (it may have changed under the request). */
async function failed(r, err) {
  if (err.name === "AbortError" || err.canceled) {
    progress(r, 0, "canceled: the world is as it was");
    return;
  }
  let health = await checkHealth();
  if (r.accepted && health.status === "BUSY") health = await settleHealth(1500);  // a worker dying takes a moment
  const kept = state.world ? ` World ${state.world.number} (${plural(worldChunks(), "chunk")}) is kept.` : "";
  if (["UNHEALTHY", "DEFUNCT"].includes(health.status)) {
    showError("generate", workerDied(health) + kept, "server");
  } else {
    const e = err instanceof ApiError ? err : new ApiError(tidy(err.message || err));
    for (const x of e.all || [e]) {
      const rowMsg = x.index !== null && x.index !== undefined ? markServerRow(r.plan, x.index, x.message) : null;
      showError(rowMsg ? "rows" : x.field, rowMsg || x.message, [409, 502, 503].includes(x.status) ? "server" : null);
    }
  }
  progress(r, 0, "failed: the world is as it was");
}

/** Re-read the health until it is no longer BUSY (the server frees its slot just after the last event). */
async function settleHealth(limitMs = 3000) {
  const until = performance.now() + limitMs;
  let health = await checkHealth();
  while (health.status === "BUSY" && performance.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 150));
    health = await checkHealth();
  }
  return health;
}

async function stop() {
  const r = state.running;
  if (!r) return;
  if (r.id) await cancel(r.id).catch(() => {});
  r.abort.abort();
}

// ---------- asking before a world is dropped ----------

function confirmReplace() {
  const dialog = $("#confirm"), w = state.world;
  $("#confirm-text").textContent = `▶ Generate starts a new world from the start image. World ${w.number} ` +
    `(${plural(worldChunks(), "chunk")}) stays in the downloads, but ▶▶ Keep playing will continue the new one.`;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "replace"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    $("#confirm-keep").focus();
  });
}

// ---------- the play buttons ----------

/** "text" -> "Text." (a question keeps its mark). */
const sentence = (s) => s.charAt(0).toUpperCase() + s.slice(1) + (/[.?!]$/.test(s) ? "" : ".");

/** Why each play button is off (null: it is on). */
export function reasons() {
  if (state.running) {
    const busy = "a request is running: wait for it, or cancel it (■)";
    return { generate: busy, keep: busy };
  }
  const h = state.health;
  // BUSY read while this page's own request ran is about that request (settleHealth reads it again)
  const ours = h?.status === "BUSY" && h.at < (state.lastRunEnd ?? 0);
  const server = !h || h.status === "READY" || ours ? null : serverAdvice(h);
  const keep = server || (!state.world?.state ? "nothing to continue yet: ▶ Generate a world first, or drop a saved world"
    : !pendingRows().length ? "add chunks to keep playing: hold W (or any key of the controller)" : null);
  return { generate: server, keep };
}

export function refreshButtons() {
  const why = reasons(), next = requestPlan().mode;
  for (const [id, mode] of [["#generate", "generate"], ["#keep", "keep"]]) {
    const b = $(id);
    b.disabled = Boolean(why[mode]);
    b.classList.toggle("primary", next === mode);
    b.title = why[mode] ? `off: ${why[mode]}` : b.dataset.does;
  }
  // the reason is also on the page, next to the buttons (a title is not seen on a touch screen)
  const off = state.running ? null : why[next] ? next : why.keep && worldChunks() > 0 ? "keep" : null;
  $("#play-why").textContent = off ? `${off === "keep" ? "▶▶ Keep playing" : "▶ Generate"} is off: ${sentence(why[off]).replace(/^./, (c) => c.toLowerCase())}` : "";
  $("#cancel").disabled = !state.running;
  document.body.classList.toggle("busy", Boolean(state.running));
}
