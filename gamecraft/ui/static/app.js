// The controller page: boots from the page's server (config, action table, examples, input schema) and
// wires the parts: input devices -> timeline -> request (JSON, commands) -> play -> screen and downloads.
import { ActionTable, partsFromDescription } from "./actions.js";
import { getJson } from "./api.js";
import { ADVANCED, buildInput, command } from "./commands.js";
import { setupInput } from "./input.js";
import { describePath, drawMinimap } from "./minimap.js";
import { topDownPoints } from "./path.js";
import { player, showWorld, showWorldChunks } from "./outputs.js";
import { clearErrors, playNext, refreshButtons, setupPlay, showError } from "./play.js";
import { $, $$, announce, dataUriToBlob, newRow, pendingRows, plural, requestPlan, state, stateMetadata } from "./state.js";
import { checkHealth, startHealthPolling } from "./status.js";
import { dismissOffer, offerSaved, saveSoon, SETTINGS } from "./store.js";
import { addRows, clearPending, forgetWorld, pushUndo, renderTimeline, rowsJson, setTimelineListener, undo } from "./timeline.js";

// ---------- rendering ----------

function render() {
  renderTimeline();
  const plan = requestPlan();
  const json = rowsJson(plan.rows);
  $("#json-actions").textContent = json.actions;
  $("#json-speeds").textContent = json.action_speeds;
  const last = plan.first + plan.rows.length - 1;
  const span = plan.rows.length > 1 ? `chunks ${plan.first}–${last}` : `chunk ${plan.first}`;
  const start = state.source && state.source.field !== "continue_from" ? state.source.name : "a start image";
  $("#plan").textContent = (state.running && plan.rows.length ? "after this request, " : "") + (!plan.rows.length ? `next: ▶ Generate from ${start}, once you add chunks`
    : plan.mode === "keep" ? `next: ▶▶ Keep playing · ${span} from the world's state`
      : `next: ▶ Generate · ${span} from ${start}` + (state.world?.state ? " (or add chunks to keep playing this world)" : ""));
  $("#command").textContent = command($("#cmd-kind").value, plan);
  const played = state.rows.filter((r) => r.locked && r.parts).map((r) => r.parts);
  const fresh = pendingRows().map((r) => (state.table.parseAction(r.text).error ? [] : r.parts || []));
  drawMinimap($("#minimap"), fresh, played, state.table);
  const text = describePath(played, fresh, state.table);
  $("#minimap").setAttribute("aria-label", text);
  $("#map-summary").textContent = text;
  const { headings, pitches } = topDownPoints(played.concat(fresh), state.table);
  $("#minimap").dataset.yaw = Math.round((headings.at(-1) * 180) / Math.PI);
  $("#minimap").dataset.pitch = Math.round(pitches.at(-1));
  showWorld();
  refreshButtons();
  saveSoon();
}

// ---------- the start: examples, files, saved worlds ----------

function setSource(source) {
  state.source = source;
  const image = source.field === "image";
  $("#start-thumb").src = image ? source.uri : "";
  $("#start-thumb").classList.toggle("shown", image);
  $("#drop-text").textContent = `${{ image: "image", video: "video", continue_from: "saved world" }[source.field]}: ${source.name}`;
  for (const b of $$("#examples button")) b.setAttribute("aria-checked", String(b.dataset.file === source.example));
  clearErrors();
  render();
}

async function loadFile(file) {
  if (state.running) return showError("image", "A request is running: load the file once it ends (or cancel it with ■).");
  const uri = await new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
  const field = /\.safetensors$/i.test(file.name) ? "continue_from" : file.type.startsWith("video/") ? "video" : "image";
  if (field === "continue_from") await loadWorld(uri, file.name);
  setSource({ field, uri, name: file.name });
}

/** A saved state file: its world (chunk count, seed, the actions played) becomes the timeline's history. */
async function loadWorld(uri, name) {
  const meta = await stateMetadata(dataUriToBlob(uri));
  dismissOffer();  // a world of the player's choosing: the one kept in the browser gives way
  pushUndo("loaded a saved world", true);
  state.worlds += 1;
  state.world = { number: state.worlds, chunks: meta?.chunks_done ?? 0, state: uri, stateName: name,
    seed: meta?.seed ?? null, chunkUris: [], prompt: meta?.prompt };
  showWorldChunks(null);
  const history = (meta?.actions || []).map((text) => {
    const parts = partsFromDescription(text, state.table);
    return newRow(parts, parts ? null : text, true);
  });
  state.rows = history.concat(pendingRows());
  if (meta?.prompt && !$("#prompt").dataset.edited) $("#prompt").value = meta.prompt;
  announce(meta ? `saved world loaded: ${plural(state.world.chunks, "chunk")}, seed ${meta.seed}` : "state file loaded (no GameCraft metadata found)");
}

async function loadExamples() {
  let examples = [];
  try { examples = await getJson("/examples/index.json"); } catch { return; }
  const box = $("#examples");
  for (const ex of examples) {
    const b = document.createElement("button");
    b.type = "button"; b.dataset.file = ex.file; b.setAttribute("role", "radio"); b.setAttribute("aria-checked", "false");
    b.setAttribute("aria-label", `example start image: ${ex.title}`); b.title = `${ex.title} — ${ex.prompt}`;
    b.innerHTML = `<img alt="" src="examples/${ex.file}"><span>${ex.title}</span>`;
    b.addEventListener("click", () => useExample(ex));
    box.append(b);
  }
  if (examples.length && !state.source) await useExample(examples[0]);
}

async function useExample(ex) {
  const blob = await fetch(`examples/${ex.file}`).then((r) => r.blob());
  const uri = await new Promise((resolve) => { const f = new FileReader(); f.onload = () => resolve(f.result); f.readAsDataURL(blob); });
  if (!$("#prompt").dataset.edited) $("#prompt").value = ex.prompt;
  setSource({ field: "image", uri, name: ex.file, path: ex.path, example: ex.file });
}

// ---------- a world kept in the browser (store.js) ----------

/** The saved session back: world, rows, settings, start; its chunks on the screen. */
function resume(saved) {
  state.worlds = Math.max(state.worlds, saved.worlds || 0);
  state.world = saved.world ? { ...saved.world } : null;
  state.rows = saved.rows.map((r) => newRow(r.parts, r.text, r.locked));
  for (const id of SETTINGS) {
    const el = $(`#${id}`), value = saved.settings?.[id];
    if (value === undefined) continue;
    if (el.type === "checkbox") el.checked = value; else el.value = value;
    el.dispatchEvent(new Event("input"));
  }
  if (saved.settings?.prompt !== undefined) $("#prompt").dataset.edited = "1";
  if (saved.source) setSource(saved.source);
  showWorldChunks(state.world);
  render();
  announce(state.world ? `world ${state.world.number} resumed: ${plural(state.world.chunks, "chunk")}` : "timeline resumed");
}

// ---------- the input schema (ranges and defaults of the other inputs) ----------

async function loadSchema() {
  let doc;
  try { doc = await getJson("/api/schema"); } catch { return; }
  const schemas = doc?.components?.schemas || {};
  const props = schemas.Input?.properties || {};
  for (const [name, p] of Object.entries(props)) {
    const ref = p.allOf?.[0]?.$ref?.split("/").pop();
    state.schema[name] = ref ? { ...p, ...schemas[ref] } : p;
  }
  const ids = Object.fromEntries([["prompt", "prompt"], ["seed", "seed"], ["preset", "preset"], ...ADVANCED.map(([id, name]) => [id, name])]);
  for (const [id, name] of Object.entries(ids)) {
    const p = state.schema[name], el = $(`#${id}`);
    if (!p || !el) continue;
    if (p.description) el.title = p.description;
    if (p.minimum !== undefined) el.min = p.minimum;
    if (p.maximum !== undefined) el.max = p.maximum;
    if (p.maxLength !== undefined) el.maxLength = p.maxLength;
    if (el.type === "checkbox" && typeof p.default === "boolean" && !el.dataset.touched) el.checked = p.default;
    else if (p.default !== undefined && p.default !== null && el.tagName === "INPUT" && el.type !== "checkbox") el.placeholder = String(p.default);
    if (el.tagName === "SELECT" && Array.isArray(p.enum)) {
      const value = el.value;
      el.textContent = "";
      for (const option of p.enum) el.append(new Option(option, option, false, option === (value || p.default)));
    }
  }
  render();
}

// ---------- copy ----------

async function copy(button) {
  const text = $(`#${button.dataset.copy}`).textContent;
  let ok = false;
  try { await navigator.clipboard.writeText(text); ok = true; } catch {
    const area = Object.assign(document.createElement("textarea"), { value: text });
    area.style.position = "fixed"; area.style.opacity = "0";
    document.body.append(area); area.select();
    try { ok = document.execCommand("copy"); } catch { ok = false; }
    area.remove();
  }
  const label = button.dataset.label || (button.dataset.label = button.textContent);
  button.textContent = ok ? "copied ✓" : "copy failed";
  button.classList.toggle("done", ok);
  announce(ok ? `${button.dataset.what} copied to the clipboard` : "copying failed: select the text and copy it");
  setTimeout(() => { button.textContent = label; button.classList.remove("done"); }, 1800);
}

// ---------- boot ----------

async function boot() {
  const [config, table] = await Promise.all([getJson("/api/config").catch(() => state.config), getJson("/api/actions")]);
  state.config = config;
  state.table = new ActionTable(table);
  for (const [id, kind] of [["move-speed", "move"], ["look-speed", "look"]]) {
    const entry = state.table.kinds(kind)[0];
    Object.assign($(`#${id}`), { min: entry.range[0], max: entry.range[1] });
    $(`#${id}-range`).textContent = `${entry.unit} per chunk (${entry.range.join("–")}; try ${entry.sensible.join("–")})`;
    $(`#${id}`).addEventListener("input", () => { $(`#${id}-out`).textContent = $(`#${id}`).value; });
  }
  $("#chunk-seconds").textContent = `${state.table.chunk.seconds} s`;

  setTimelineListener(render, () => showWorldChunks(state.world));
  setupInput({ play: playNext });
  setupPlay();

  $("#idle").addEventListener("click", () => addRows([[]], "added an idle chunk"));
  $("#undo").addEventListener("click", undo);
  $("#clear").addEventListener("click", clearPending);
  $("#new-world").addEventListener("click", () => forgetWorld(() => showWorldChunks(null)));
  for (const b of $$("button.copy")) b.addEventListener("click", () => copy(b));
  for (const id of ["#prompt", "#seed", "#preset", "#cmd-kind", ...ADVANCED.map(([i]) => `#${i}`)]) {
    for (const type of ["input", "change"]) $(id).addEventListener(type, () => { $(id).dataset.touched = "1"; render(); });
  }
  $("#prompt").addEventListener("input", () => { $("#prompt").dataset.edited = "1"; });
  $("#dice").addEventListener("click", () => { $("#seed").value = Math.floor(Math.random() * 2 ** 31); render(); });

  const drop = $("#drop");
  drop.addEventListener("click", () => $("#file").click());
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("#file").click(); }
  });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files[0]) loadFile(e.dataTransfer.files[0]);
  });
  $("#file").addEventListener("change", () => { if ($("#file").files[0]) loadFile($("#file").files[0]); });
  window.addEventListener("resize", render);

  render();
  // ready only once the header says which server it is about: the badge's first answer is part of the page
  await Promise.all([startHealthPolling(), loadExamples(), loadSchema()]);
  await offerSaved(resume);
  document.body.classList.add("ready");
}

window.gamecraft = { state, render, buildInput, checkHealth, topDownPoints, get player() { return player; } };  // tests, console
boot().catch((err) => {
  document.body.classList.add("ready", "broken");
  $("#progress-text").textContent = `the page could not start: ${err.message}`;
});
