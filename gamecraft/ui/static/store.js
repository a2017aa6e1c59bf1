// The world survives the tab: the world (its state file, rows, chunk videos) and the settings are kept in the
// browser's IndexedDB as they change, and offered back when the page opens ("resume world 1 · 7 chunks").
// A request that was running when the page went is remembered too, so the next page can say it was lost.
// The large files (chunk videos, the state file: megabytes each) are kept apart from the session record and
// written once each, so an edit of the timeline rewrites only the small record.

import { ADVANCED } from "./commands.js";
import { $, plural, state } from "./state.js";

const DB = "gamecraft-controller", STORE = "session", FILES = "files", KEY = "current";
const SETTINGS = ["prompt", "seed", "preset", "move-speed", "look-speed", ...ADVANCED.map(([id]) => id)];

let loaded = false;   // the saved session was read (nothing is saved before: the page's first renders would
                      // overwrite it)
let offered = null;   // the saved session while the page offers it back (nothing is saved over it until answered)
let running = null;   // {mode, first, total, world} of the running request
let timer = null;
const written = new Map();  // file key -> the uri string stored under it (skip writing it again)

function open() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 2);
    req.onupgradeneeded = () => {
      for (const name of [STORE, FILES]) if (!req.result.objectStoreNames.contains(name)) req.result.createObjectStore(name);
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** fn(sessionStore, filesStore) in one transaction; resolves with the result of the request fn returns. */
async function transact(mode, fn) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction([STORE, FILES], mode);
      const req = fn(tx.objectStore(STORE), tx.objectStore(FILES));
      tx.oncomplete = () => resolve(req?.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

/** What is kept: the world, every row, settings. A running request is kept as if it failed (its request may
 * never end): the world as it was before it, its rows as new rows. */
function snapshot() {
  const r = state.running;
  const w = r?.mode === "generate" ? r.oldWorld : state.world;
  const before = (c) => !r || r.mode === "generate" || c.n < r.first;
  const settings = {};
  for (const id of SETTINGS) {
    const el = $(`#${id}`);
    settings[id] = el.type === "checkbox" ? el.checked : el.value;
  }
  return {
    version: 1, savedAt: Date.now(), worlds: r?.accepted && r.mode === "generate" ? state.worlds - 1 : state.worlds, running,
    world: w && { number: w.number, chunks: w.chunks, state: w.state, stateName: w.stateName, seed: w.seed,
      prompt: w.prompt, chunkUris: w.chunkUris.filter(before).map((c) => ({ n: c.n, uri: c.uri })) },
    rows: state.rows.map((row) => ({ text: row.text, parts: row.parts, locked: row.locked })),
    settings, source: state.source,
  };
}

export async function saveNow() {
  clearTimeout(timer);
  if (!loaded || offered || !state.table) return;
  const record = snapshot();
  // files by key: w<world>-c<n> (a chunk), w<world>-state; the record keeps the keys
  const files = new Map();
  if (record.world) {
    const w = record.world, tag = `w${w.number}`;
    if (w.state) { files.set(`${tag}-state`, w.state); w.state = `${tag}-state`; }
    w.chunkUris = w.chunkUris.map((c) => { files.set(`${tag}-c${c.n}`, c.uri); return { n: c.n, key: `${tag}-c${c.n}` }; });
  }
  try {
    await transact("readwrite", (store, fileStore) => {
      for (const [key, uri] of files) if (written.get(key) !== uri) fileStore.put(uri, key);
      const keys = fileStore.getAllKeys();  // files of forgotten worlds and dropped chunks go
      keys.onsuccess = () => { for (const key of keys.result) if (!files.has(key)) fileStore.delete(key); };
      return store.put(record, KEY);
    });
    for (const [key, uri] of files) written.set(key, uri);
    state.saved = { rows: record.rows.length, chunks: record.world?.chunkUris.length ?? 0, running: Boolean(record.running) };
  } catch { /* private mode, quota: play on */ }
}

/** Save a moment after the last change (a held key adds rows several times a second). */
export function saveSoon() {
  clearTimeout(timer);
  timer = setTimeout(saveNow, 400);
}

export function rememberRunning(r) {
  running = { mode: r.mode, first: r.first, total: r.total, world: state.world?.number ?? null };
  saveNow();
}

export function forgetRunning() { running = null; }

async function load() {
  try {
    const saved = await transact("readonly", (store) => store.get(KEY));
    const w = saved?.world;
    if (!w) return saved;
    const keys = [...(w.state ? [w.state] : []), ...w.chunkUris.map((c) => c.key)];
    const uris = {};
    await transact("readonly", (_, fileStore) => {
      for (const key of keys) { const req = fileStore.get(key); req.onsuccess = () => { uris[key] = req.result; }; }
      return null;
    });
    if (w.state) w.state = uris[w.state] ?? null;
    w.chunkUris = w.chunkUris.filter((c) => uris[c.key]).map((c) => ({ n: c.n, uri: uris[c.key] }));
    return saved;
  } catch {
    return null;
  }
}

/** On load: offer the saved world back; ``resume(saved)`` restores it. Resolves once the offer is shown. */
export async function offerSaved(resume) {
  const saved = await load();
  loaded = true;
  if (!saved || (!saved.world?.chunks && !saved.world?.chunkUris?.length && !saved.rows?.length)) return;
  offered = saved;
  const w = saved.world, chunks = w ? Math.max(w.chunks, ...w.chunkUris.map((c) => c.n)) : 0;
  const newRows = saved.rows.filter((r) => !r.locked).length;
  $("#resume-go").textContent = w ? `resume world ${w.number} · ${plural(chunks, "chunk")}` : `resume ${plural(newRows, "new chunk")}`;
  const lost = saved.running;
  const span = lost && (lost.total > 1 ? `chunks ${lost.first}–${lost.first + lost.total - 1}` : `chunk ${lost.first}`);
  $("#resume-text").textContent = (w ? `Your world from ${new Date(saved.savedAt).toLocaleString()} is kept in this browser` +
    (newRows ? `, with ${plural(newRows, "new chunk")} not played yet.` : ".") : "Your timeline is kept in this browser.") +
    (lost ? ` A request (${lost.mode === "keep" ? "▶▶ Keep playing" : "▶ Generate"}, ${span}) was running when the page ` +
      `closed: its answer is lost, and its rows are back as new rows${lost.mode === "keep" ? " (▶▶ Keep playing sends them again)" : ""}.` : "");
  $("#resume").hidden = false;
  $("#resume-go").onclick = () => { const s = offered; dismissOffer(); resume(s); saveSoon(); };
  $("#resume-no").onclick = () => { dismissOffer(); saveSoon(); };
}

/** The offer is answered (or the player started something else): saving goes on, over the old session. */
export function dismissOffer() {
  if (!offered) return;
  offered = null;
  $("#resume").hidden = true;
}

export { SETTINGS };
