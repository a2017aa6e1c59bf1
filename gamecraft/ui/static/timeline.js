// The timeline: one row per chunk, numbered as the world's chunks. Played rows (the world's history) are
// locked and dimmed; rows in the running request are read-only and marked generating; new rows can be
// edited, reordered and deleted, and are checked as they are typed against the server's action table (every
// bad entry listed, its row marked). Rows are kept in the DOM and updated in place, so focus, Tab order and
// clicks survive every edit. Undo takes back edits of new rows only, and never crosses a request.

import { fmt, label, pyJson, speedEntry } from "./actions.js";
import { PALETTE } from "./path.js";
import { $, announce, copyRow, historyRows, newRow, pendingRows, plural, requestPlan, state } from "./state.js";

let onChange = () => {};
let onWorld = () => {};
/** ``change``: after every edit; ``world``: after undo brought a forgotten world back (redraw its screen). */
export const setTimelineListener = (change, world = () => {}) => { onChange = change; onWorld = world; };

// ---------- editing ----------

/** Remember the new rows (and, for ``withWorld``, the world and its history) before a change. */
export function pushUndo(what, withWorld = false) {
  const step = { what, pending: pendingRows().map(copyRow) };
  if (withWorld) Object.assign(step, { world: state.world, history: historyRows().map(copyRow) });
  state.undo.push(step);
  if (state.undo.length > 50) state.undo.shift();
}

/** A request starts or ends: what was before it cannot be undone (the world is the server's answer). */
export const sealUndo = () => { state.undo = []; };

export function undo() {
  if (state.running && state.undo.at(-1)?.world !== undefined) return;
  const last = state.undo.pop();
  if (!last) return;
  if (last.world !== undefined) {
    state.world = last.world;
    state.rows = last.history.concat(last.pending);
    onWorld();
  } else {
    state.rows = state.rows.filter((r) => r.locked || r.generating).concat(last.pending);
  }
  changed();
  toast(`undone: ${last.what}`);
}

export function addRows(partsList, what = null) {
  if (!partsList.length) return;
  pushUndo(what || `added ${plural(partsList.length, "chunk")}`);
  for (const parts of partsList) state.rows.push(newRow(parts));
  changed();
  const list = $("#timeline"), last = list.lastElementChild;  // show the new chunk (the list scrolls, not the page)
  if (last && last.offsetTop + last.offsetHeight > list.scrollTop + list.clientHeight) {
    list.scrollTop = last.offsetTop + last.offsetHeight - list.clientHeight;
  }
}

export function removeLastPending() {
  const rows = pendingRows();
  if (!rows.length) return;
  pushUndo("removed the last chunk");
  state.rows.splice(state.rows.indexOf(rows.at(-1)), 1);
  changed();
}

export function clearPending() {
  const n = pendingRows().length;
  if (!n) return;
  pushUndo(`cleared ${plural(n, "chunk")}`);
  state.rows = state.rows.filter((r) => r.locked || r.generating);
  changed();
  toast(`cleared ${plural(n, "new chunk")}`, true);
}

export function forgetWorld(onForget) {
  if (state.running || (!state.rows.length && !state.world)) return;
  pushUndo("new world", true);
  state.rows = []; state.world = null;
  onForget();
  changed();
  toast("new world: the timeline is empty (the downloads stay below the screen)", true);
}

function moveRow(row, delta) {
  const i = state.rows.indexOf(row), j = i + delta;
  if (j < 0 || j >= state.rows.length || state.rows[j].locked || state.rows[j].generating || row.locked || row.generating) return;
  pushUndo("moved a chunk");
  [state.rows[i], state.rows[j]] = [state.rows[j], state.rows[i]];
  changed();
}

function deleteRow(row) {
  if (row.locked || row.generating) return;
  pushUndo(`deleted chunk ${state.rows.indexOf(row) + 1}`);
  state.rows.splice(state.rows.indexOf(row), 1);
  changed();
}

export const reducedMotion = () => matchMedia("(prefers-reduced-motion: reduce)").matches;

let toastTimer = null;
export function toast(text, withUndo = false) {
  const box = $("#toast");
  box.textContent = text;
  if (withUndo) {
    const b = document.createElement("button");
    b.className = "small"; b.textContent = "undo"; b.addEventListener("click", undo);
    box.append(" ", b);
  }
  box.classList.add("shown");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => box.classList.remove("shown"), 8000);
}

// ---------- validation ----------

/** Problems of one row: [{field: "actions"|"action_speeds", part: index|null, msg}] (empty when valid). */
export function rowProblems(row, table = state.table) {
  if (row.parts === null) return [{ field: "actions", part: null, msg: `'${row.text}' is not an action (a custom camera path chunk)` }];
  const parsed = table.parseAction(row.text);
  if (parsed.error) return [{ field: "actions", part: null, msg: parsed.error }];
  return row.parts.map((p, i) => ({ field: "action_speeds", part: i, msg: table.checkSpeed(p.key, p.speed) }))
    .filter((p) => p.msg);
}

/** Every problem of the rows a request would send (1-based world chunk numbers), plus request-level ones. */
export function planProblems(plan = requestPlan()) {
  const out = [];
  if (!plan.rows.length) out.push({ field: "actions", row: null, msg: "Add at least one chunk: press W (hold it to go further), or a button above." });
  if (plan.rows.length > state.table.maxChunks) {
    out.push({ field: "actions", row: null, msg: `${plan.rows.length} chunks in one request; at most ${state.table.maxChunks}. Generate part of them, then Keep playing.` });
  }
  for (const row of plan.rows) {
    const n = state.rows.indexOf(row) + 1;
    for (const p of rowProblems(row)) out.push({ ...p, row: n, msg: `row ${n}: ${p.msg}` });
  }
  return out;
}

/** The actions / action_speeds JSON strings of ``rows`` (canonical names where a row is valid). */
export function rowsJson(rows) {
  const actions = rows.map((r) => (r.parts !== null && !state.table.parseAction(r.text).error ? label(r.parts) : r.text));
  return { actions: pyJson(actions), action_speeds: pyJson(rows.map((r) => speedEntry(r.parts || []))) };
}

// ---------- rendering ----------

const elements = new Map();   // row id -> <li>

function speedInput(row, part, i) {
  const table = state.table, entry = table.entry(part.key);
  const box = document.createElement("label");
  box.className = "speed";
  const input = document.createElement("input");
  Object.assign(input, { type: "number", step: table.isLook(part.key) ? "1" : "0.05", min: entry.range[0], max: entry.range[1] });
  input.dataset.part = i;
  input.addEventListener("input", () => { editStep(input, row); row.parts[i].speed = input.value; changed(row); });
  input.addEventListener("change", () => { input._editing = false; });
  const unit = document.createElement("span");
  unit.className = "unit"; unit.setAttribute("aria-hidden", "true"); unit.textContent = table.unitSymbol(part.key);
  box.append(input, unit);
  return box;
}

/** The first keystroke of a visit to a row's field is an undo step (undo brings the row back as it was). */
function editStep(input, row) {
  if (input._editing) return;
  input._editing = true;
  pushUndo(`edited row ${state.rows.indexOf(row) + 1}`);
}

function buildRow(row) {
  const li = document.createElement("li");
  li.className = "chunk";
  li.innerHTML = `<span class="swatch" aria-hidden="true"></span><span class="num"></span>
    <input class="action" spellcheck="false" autocomplete="off"><span class="speeds"></span><span class="tools"></span>`;
  const action = li.querySelector(".action");
  action.addEventListener("input", () => {
    editStep(action, row);
    row.text = action.value;
    const parsed = state.table.parseAction(row.text);
    if (!parsed.error) {  // new parts keep the speeds of parts that survive
      const speeds = { move: Number($("#move-speed").value), look: Number($("#look-speed").value) };
      row.parts = parsed.keys.map((key) => row.parts?.find((p) => p.key === key) || { key, speed: state.table.defaultSpeed(key, speeds) });
    }
    changed(row);
  });
  action.addEventListener("change", () => {  // leaving the field: show the canonical name ("look_left" -> "left_rot")
    action._editing = false;
    if (row.parts && !state.table.parseAction(row.text).error) { row.text = action.value = label(row.parts); changed(row); }
  });
  const tools = li.querySelector(".tools");
  for (const [cls, text, fn] of [["up", "↑", () => moveRow(row, -1)], ["down", "↓", () => moveRow(row, 1)], ["del", "✕", () => deleteRow(row)]]) {
    const b = document.createElement("button");
    b.className = `small icon ${cls}`; b.textContent = text;
    // a mouse click leaves no focus on the button, so the keys drive the controller again (Enter/Space from
    // the keyboard keeps it: the user is working in the form)
    b.addEventListener("click", (e) => { fn(); if (e.detail > 0) b.blur(); });
    tools.append(b);
  }
  li._speedKeys = null;
  return li;
}

function updateRow(li, row, n, pendingIndex) {
  const table = state.table;
  const fixed = row.locked || row.generating;
  li.classList.toggle("locked", row.locked && !row.generating);
  li.classList.toggle("generating", row.generating);
  li.dataset.row = n;
  li.querySelector(".swatch").style.background = row.locked ? "#56687a" : PALETTE[pendingIndex % PALETTE.length];
  li.querySelector(".num").textContent = String(n);
  const action = li.querySelector(".action");
  if (document.activeElement !== action) action.value = row.text;
  action.readOnly = fixed;
  action.setAttribute("aria-label", `row ${n} action${row.generating ? " (generating)" : row.locked ? " (played)" : ""}`);
  action.title = row.generating ? `chunk ${n}: being generated (read-only until the request ends)`
    : row.locked ? `chunk ${n} of the world (played; locked)` : "action: w, left_rot, w+left_rot, idle, aliases like look_left";
  const keys = (row.parts || []).map((p) => p.key).join("+");
  const speeds = li.querySelector(".speeds");
  if (li._speedKeys !== keys) {  // parts changed: new speed fields (the action field keeps the focus)
    speeds.textContent = "";
    (row.parts || []).forEach((p, i) => speeds.append(speedInput(row, p, i)));
    li._speedKeys = keys;
  }
  speeds.querySelectorAll("input").forEach((input) => {
    const p = row.parts[Number(input.dataset.part)];
    if (document.activeElement !== input) input.value = typeof p.speed === "string" ? p.speed : fmt(p.speed);
    input.readOnly = fixed;
    input.setAttribute("aria-label", `row ${n} ${p.key} speed (${table.unitWord(p.key)}, ${table.entry(p.key).range.join("–")})`);
  });
  const [up, down, del] = li.querySelectorAll(".tools button");
  up.setAttribute("aria-label", `move row ${n} up`); down.setAttribute("aria-label", `move row ${n} down`);
  del.setAttribute("aria-label", `delete row ${n}`);
  up.title = "move up"; down.title = "move down"; del.title = "delete";
  const prev = state.rows[n - 2];
  up.disabled = !prev || prev.locked || prev.generating;
  down.disabled = n === state.rows.length;
  li.querySelector(".tools").hidden = fixed;
  // marks
  const problems = fixed && row.parts !== null ? [] : rowProblems(row);
  li.classList.toggle("bad", problems.length > 0);
  action.setAttribute("aria-invalid", String(problems.some((p) => p.field === "actions")));
  speeds.querySelectorAll("input").forEach((input, i) => {
    input.setAttribute("aria-invalid", String(problems.some((p) => p.part === i)));
  });
  li.title = problems.map((p) => `row ${n}: ${p.msg}`).join("\n");
}

export function renderTimeline() {
  const list = $("#timeline");
  const focused = document.activeElement;
  const seen = new Set();
  let pendingIndex = 0, reordered = false;
  state.rows.forEach((row, i) => {
    let li = elements.get(row.id);
    if (!li) { li = buildRow(row); elements.set(row.id, li); }
    seen.add(row.id);
    updateRow(li, row, i + 1, row.locked || row.generating ? 0 : pendingIndex++);
    if (list.children[i] !== li) { list.insertBefore(li, list.children[i] || null); reordered = true; }
  });
  for (const [id, li] of elements) if (!seen.has(id)) { li.remove(); elements.delete(id); }
  if (reordered && focused && focused !== document.activeElement && document.contains(focused)) focused.focus();
  const history = historyRows().length, generating = state.rows.filter((r) => r.generating).length;
  const seconds = (state.rows.length * state.table.chunk.seconds).toFixed(1);
  $("#chunk-count").textContent = `${plural(state.rows.length, "chunk")} · ${seconds} s` + (history ? ` · ${history} played` : "") +
    (generating ? ` · ${generating} generating` : "");
  $("#clear").disabled = !pendingRows().length;
  $("#new-world").disabled = Boolean(state.running) || (!state.rows.length && !state.world);
  $("#new-world").title = state.running ? "a request is running: wait for it or cancel it (■)" : "forget the world and its history (undo brings it back)";
  showProblems();
}

/** The inline list of every problem in the rows the next request would send. */
export function showProblems() {
  const box = $("#timeline-errors");
  const problems = planProblems().filter((p) => p.row !== null);
  box.textContent = "";
  for (const p of problems) {
    const li = document.createElement("li");
    li.textContent = p.msg;
    box.append(li);
  }
  box.classList.toggle("shown", problems.length > 0);
}

/** Mark the row of a server error (index = entry of the request, 0-based). */
export function markServerRow(plan, index, msg) {
  const row = plan.rows[index];
  if (!row) return null;
  const n = state.rows.indexOf(row) + 1;
  elements.get(row.id)?.classList.add("bad", "server-bad");
  elements.get(row.id)?.scrollIntoView({ block: "nearest" });
  return `row ${n}: ${msg.replace(/^[a-z_]+\[\d+\]:\s*/, "")}`;
}

function changed(row = null) {
  if (row) for (const li of document.querySelectorAll("#timeline .server-bad")) li.classList.remove("server-bad");
  onChange();
  if (row === null) announceCount();
}

let announced = 0;
function announceCount() {
  if (state.rows.length !== announced) { announced = state.rows.length; announce(`${plural(state.rows.length, "chunk")} in the timeline`); }
}

export const timelineChanged = changed;
