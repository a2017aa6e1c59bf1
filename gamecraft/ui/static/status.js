// The header badge: the model server's state from GET /api/health (its /health-check), polled, naming
// which server it is about. States: setup, ready, busy, unhealthy, setup failed, unreachable; and when the
// page's own server does not answer, that is what the badge says.

import { $, state } from "./state.js";

const WORDS = { STARTING: "setup", READY: "ready", BUSY: "busy", UNHEALTHY: "unhealthy", DEFUNCT: "unhealthy",
  SETUP_FAILED: "setup failed" };
const CLASS = { setup: "warn", ready: "good", busy: "warn", unhealthy: "bad", "setup failed": "bad", unreachable: "bad" };

export function serverName(config = state.config) {
  if (config.backend === "replicate") return `Replicate model ${config.model}${config.version ? `:${config.version.slice(0, 8)}` : ""}`;
  return `Cog server ${String(config.url).replace(/^https?:\/\//, "")}`;
}

let listener = () => {};
/** ``fn(health)`` after every answer (the play buttons follow the server's state). */
export const setHealthListener = (fn) => { listener = fn; };

/** Ask once; updates state.health and the badge at once, then tells the listener. */
export async function checkHealth() {
  const server = serverName();
  let health;
  try {
    const r = await fetch("/api/health", { cache: "no-store" });
    let body = {};
    try { body = await r.json(); } catch { /* not JSON */ }
    if (r.ok && body.status) health = { status: body.status, word: WORDS[body.status] || body.status.toLowerCase(), server };
    else health = { status: "UNREACHABLE", word: "unreachable", server, detail: body.detail, url: state.config.url };
  } catch {
    health = { status: "PAGE_DOWN", word: "not answering", server: `page's server ${location.host}`, url: location.origin };
  }
  health.at = performance.now();
  state.health = health;
  const badge = $("#server-status");
  const text = `${health.server}: ${health.word}`;
  if ($("#server-text").textContent !== text) $("#server-text").textContent = text;
  badge.className = `badge status ${CLASS[health.word] || "bad"}`;
  badge.title = health.detail || (health.status === "PAGE_DOWN"
    ? "the page's own server (python -m gamecraft.ui) does not answer" : `${health.server} /health-check: ${health.status}`);
  listener(health);
  return health;
}

/** Poll every ``intervalMs``; resolves after the first answer (checkHealth never rejects). */
export function startHealthPolling(intervalMs = 3000) {
  setInterval(checkHealth, intervalMs);
  return checkHealth();
}
