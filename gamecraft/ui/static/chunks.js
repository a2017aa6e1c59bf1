// The timeline's data model: a chunk is [{key, speed}, ...] (empty = idle), parts in the order
// written ("w+left_rot" -> speeds [translation, degrees]), exactly the predictor's grammar.

export const MOVE_KEYS = ["w", "s", "a", "d"];
export const LOOK_KEYS = ["left_rot", "right_rot", "up_rot", "down_rot"];
export const AXIS_OF = { w: "forward", s: "forward", a: "strafe", d: "strafe",
  left_rot: "yaw", right_rot: "yaw", up_rot: "pitch", down_rot: "pitch" };
const ORDER = ["forward", "strafe", "yaw", "pitch"];
export const LIMITS = { move: [0, 3], look: [0, 90] };

export const isLook = (key) => LOOK_KEYS.includes(key);
export const unit = (key) => (isLook(key) ? "°" : "u");

/** Canonical action string: "w+left_rot", "idle". */
export const label = (parts) => (parts.length ? parts.map((p) => p.key).join("+") : "idle");

/** Human text: "w 0.4 + left_rot 20°". */
export const describe = (parts) =>
  parts.length ? parts.map((p) => `${p.key} ${fmt(p.speed)}${isLook(p.key) ? "°" : ""}`).join(" + ") : "idle";

export const fmt = (v) => String(Math.round(Number(v) * 1000) / 1000);

/** Parts from a set of held keys (one per axis, the last pressed wins), in canonical order. */
export function chord(keys, speeds) {
  const byAxis = {};
  for (const key of keys) byAxis[AXIS_OF[key]] = key;
  return ORDER.filter((a) => byAxis[a]).map((a) => {
    const key = byAxis[a];
    return { key, speed: isLook(key) ? speeds.look : speeds.move };
  });
}

/** Speed entry for one chunk: 0 for idle, a number for one part, a list for combined ones. */
export function speedEntry(parts) {
  if (!parts.length) return 0;
  if (parts.length === 1) return Number(parts[0].speed);
  return parts.map((p) => Number(p.speed));
}

/** JSON with Python's separators (", "), as README and gamecraft.actions.to_json_lists write it. */
const pyJson = (v) => (Array.isArray(v) ? `[${v.map(pyJson).join(", ")}]` : JSON.stringify(v));

/** {actions, action_speeds} JSON strings, as the predictor takes them. */
export function toJson(chunks) {
  return { actions: pyJson(chunks.map(label)), action_speeds: pyJson(chunks.map(speedEntry)) };
}

/** Re-key a chunk from edited action text, keeping speeds where the part survives. */
export function reparse(text, oldParts, speeds) {
  const keys = text.split("+").map((s) => s.trim().toLowerCase()).filter((s) => s && s !== "idle");
  return keys.map((key) => {
    const old = oldParts.find((p) => p.key === key);
    return { key, speed: old ? old.speed : isLook(key) ? speeds.look : speeds.move };
  });
}
