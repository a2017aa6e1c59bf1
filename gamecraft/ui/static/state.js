// The page's state, shared by its modules, and small DOM helpers.

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

export const state = {
  table: null,          // ActionTable (actions.js), from GET /api/actions
  rows: [],             // the timeline: [{id, text, parts: [{key, speed}], locked, generating}]; locked = played
                        // (history), generating = in the running request (read-only until it ends)
  world: null,          // {number, chunks, state, stateName, seed, chunkUris: [{n, uri}], prompt}
  worlds: 0,            // worlds started in this page session
  source: null,         // {field: image|video|continue_from, uri, name, path}
  config: { backend: "cog", url: "http://127.0.0.1:5000" },
  health: null,         // {status, server, text} from the last /api/health poll
  running: null,        // {id, abort, ...} while a prediction runs
  lastRunEnd: 0,        // performance.now() when the last request ended
  undo: [],             // snapshots of the new rows (and the world) before edits; emptied by every request
  schema: {},           // input name -> OpenAPI property (ranges, defaults), when the server has a schema
  saved: null,          // {rows, chunks, running} of the last session kept in IndexedDB (store.js)
};

let nextId = 1;
export const newRow = (parts, text = null, locked = false) =>
  ({ id: nextId++, parts, text: text ?? (parts.length ? parts.map((p) => p.key).join("+") : "idle"), locked, generating: false });

/** A row's copy (its parts too): what a request sends and what undo keeps. */
export const copyRow = (r) => ({ ...r, parts: r.parts && r.parts.map((p) => ({ ...p })) });

/** New rows: neither played (history) nor in the running request. */
export const pendingRows = () => state.rows.filter((r) => !r.locked && !r.generating);
export const historyRows = () => state.rows.filter((r) => r.locked && !r.generating);

/** The chunks a world has (its chunk files arrive before its state). */
export const worldChunks = (w = state.world) => (w ? Math.max(w.chunks, 0, ...w.chunkUris.map((c) => c.n)) : 0);

/** What the next request is: Keep playing (new rows from the world's state) when it can, else Generate.
 * While a request runs, the next one is planned as if it succeeds (its world goes on after its chunks). */
export function requestPlan(mode = null) {
  const r = state.running;
  const keep = mode ? mode === "keep" : (Boolean(state.world?.state) || Boolean(r)) && pendingRows().length > 0;
  const rows = keep ? pendingRows() : state.rows.filter((row) => !row.generating);
  const first = !keep ? 1 : r ? r.first + r.total : (state.world?.chunks ?? 0) + 1;
  return { mode: keep ? "keep" : "generate", rows, first };
}

export const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** Seconds as "12 s" or "2 min 05 s". */
export function duration(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "…";
  const r = Math.max(0, Math.round(s));
  return r < 60 ? `${r} s` : `${Math.floor(r / 60)} min ${String(r % 60).padStart(2, "0")} s`;
}

/** A data: URI as a Blob (synchronously: the video element gets it at once). */
export function dataUriToBlob(uri) {
  const [head, payload] = uri.split(",", 2);
  const mime = head.slice(5).split(";")[0] || "application/octet-stream";
  const bin = atob(payload);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Blob([bytes], { type: mime });
}

/** A playable/downloadable URL for an output (data: URIs become blob: URLs). */
export const objectUrl = (uri) => (uri.startsWith("data:") ? URL.createObjectURL(dataUriToBlob(uri)) : uri);

/** The GameCraft metadata of a state file (safetensors header), or null. */
export async function stateMetadata(blob) {
  try {
    const head = new DataView(await blob.slice(0, 8).arrayBuffer());
    const size = Number(head.getBigUint64(0, true));
    if (size <= 0 || size > 16 * 1024 * 1024) return null;
    const header = JSON.parse(await blob.slice(8, 8 + size).text());
    const meta = header.__metadata__?.gamecraft;
    return meta ? JSON.parse(meta) : null;
  } catch {
    return null;
  }
}

/** Announce a message to screen readers (the page's polite live region). */
export function announce(text) {
  const box = $("#announce");
  box.textContent = "";
  setTimeout(() => { box.textContent = text; }, 30);
}
