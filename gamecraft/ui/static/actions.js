// The action vocabulary, from the page's server (GET /api/actions = gamecraft.actions.action_table(), built
// from the parser's own tables), and the timeline's data model on top of it. A chunk's parts are
// [{key, speed}, ...] (empty = idle) in the order written ("w+left_rot" -> speeds [translation, degrees]).
// parseAction / checkSpeed say what gamecraft.actions.parse_actions would say (tests compare them).

export class ActionTable {
  constructor(table) {
    this.raw = table;
    this.chunk = table.chunk;                      // {frames: 33, fps: 25, seconds: 1.32}
    this.maxChunks = table.max_chunks;
    this.axes = table.axes;                        // ["forward", "strafe", "yaw", "pitch"]
    this.entries = table.actions;
    this.byName = Object.fromEntries(table.actions.map((a) => [a.name, a]));
    this.alias = {};
    for (const a of table.actions) for (const name of [a.name, ...a.aliases]) this.alias[name] = a.name;
    this.idle = table.actions.find((a) => a.kind === "idle").name;
    this.official = table.actions.map((a) => a.name);
  }

  entry(key) { return this.byName[key]; }
  isLook(key) { return this.byName[key]?.kind === "look"; }
  unitSymbol(key) { return this.isLook(key) ? "°" : "u"; }
  unitWord(key) { return this.isLook(key) ? "degrees" : "units"; }
  limit(key) { return this.byName[key].range[1]; }
  /** The key on the same axis pointing the other way ("w" -> "s"). */
  opposite(key) {
    const e = this.byName[key];
    return this.entries.find((a) => a.axis === e.axis && a.name !== key).name;
  }
  /** The move and look entries of one kind, e.g. kinds("move") -> [w, s, a, d entries]. */
  kinds(kind) { return this.entries.filter((a) => a.kind === kind); }

  /** Parse one action text like the server: {keys: [...canonical], error: null} or {keys: null, error}. */
  parseAction(text) {
    const expected = `expected one of ${this.official.join(", ")} (or an alias such as 'forward', 'look_left')`;
    const clean = String(text ?? "").trim().toLowerCase();
    if (!clean) return { keys: null, error: `empty action; expected one of ${this.official.join(", ")}` };
    const keys = [];
    for (const raw of clean.split(this.raw.separator)) {
      const name = raw.trim();
      const key = this.alias[name];
      if (!key) return { keys: null, error: `unknown action '${name || "(empty)"}'; ${expected}` };
      keys.push(key);
    }
    if (keys.includes(this.idle)) {
      return keys.length > 1 ? { keys: null, error: `'${this.idle}' cannot be combined with other actions` }
        : { keys: [], error: null };
    }
    const seen = {};
    for (const key of keys) {
      const axis = this.byName[key].axis;
      if (seen[axis]) {
        const problem = seen[axis] === key ? "appears twice" : `conflicts with '${seen[axis]}' (same ${axis} axis)`;
        return { keys: null, error: `'${key}' ${problem}; combine at most one action per axis` };
      }
      seen[axis] = key;
    }
    return { keys, error: null };
  }

  /** null when ``value`` (a number or the text of a field) is a valid speed for ``key``, else the problem. */
  checkSpeed(key, value) {
    const text = typeof value === "string" ? value.trim() : value;
    if (text === "" || text === null || text === undefined) return `speed for '${key}' is empty; give a number`;
    const speed = Number(text);
    if (!Number.isFinite(speed)) return `speed for '${key}' must be a number, got '${short(String(value), 20)}'`;
    if (speed < 0) return `speed for '${key}' must be >= 0 (use '${this.opposite(key)}' for the other direction), got ${speed}`;
    const max = this.limit(key), unit = this.isLook(key) ? " degrees" : "";
    if (speed > max) return `speed for '${key}' is ${speed}${unit}; the maximum is ${max}${unit} per chunk`;
    return null;
  }

  /** Default speed for a key: the move or look slider's value. */
  defaultSpeed(key, speeds) { return this.isLook(key) ? speeds.look : speeds.move; }

  /** Parts for keys held together: one per axis (the last pressed wins), in the table's axis order. */
  chord(keys, speedOf) {
    const byAxis = {};
    for (const key of keys) byAxis[this.byName[key].axis] = key;
    return this.axes.filter((axis) => byAxis[axis]).map((axis) => ({ key: byAxis[axis], speed: speedOf(byAxis[axis]) }));
  }
}

export const short = (text, max = 80) => {
  const s = String(text);
  return s.length <= max ? s : `${s.slice(0, max - 1)}…`;
};

/** Canonical action string: "w+left_rot", "idle". */
export const label = (parts, idle = "idle") => (parts.length ? parts.map((p) => p.key).join("+") : idle);

export const fmt = (v) => String(Math.round(Number(v) * 1000) / 1000);

/** Human text: "w 0.4 + left_rot 20°" (gamecraft.actions.Segment.describe). */
export const describe = (parts, table) =>
  parts.length ? parts.map((p) => `${p.key} ${fmt(p.speed)}${table.isLook(p.key) ? "°" : ""}`).join(" + ") : "idle";

/** Parts from a describe() text ("w 0.4 + left_rot 20°", "idle"), as saved in a state file; null if not one. */
export function partsFromDescription(text, table) {
  if (text === "idle") return [];
  const parts = [];
  for (const piece of String(text).split(" + ")) {
    const m = /^([a-z_]+) (-?[\d.]+(?:e-?\d+)?)°?$/.exec(piece.trim());
    if (!m || !table.entry(m[1])) return null;
    parts.push({ key: m[1], speed: Number(m[2]) });
  }
  return parts;
}

/** Speed entry for one chunk: 0 for idle, a number for one part, a list for combined ones. */
export function speedEntry(parts) {
  if (!parts.length) return 0;
  const num = (v) => (typeof v === "string" && v.trim() !== "" && Number.isFinite(Number(v)) ? Number(v) : v);
  if (parts.length === 1) return num(parts[0].speed);
  return parts.map((p) => num(p.speed));
}

/** JSON with Python's separators (", "), as README and gamecraft.actions.to_json_lists write it. */
export const pyJson = (v) => (Array.isArray(v) ? `[${v.map(pyJson).join(", ")}]` : JSON.stringify(v));
