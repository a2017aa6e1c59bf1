// Talking to the page's own server (/api/...), which proxies a Cog server or Replicate. Predictions
// stream as Server-Sent Events in coglet's format: start, log, metric ({name, value, mode}), output
// ({index, chunk}), completed ({status, output, error, logs, metrics}). Every error becomes an ApiError
// with a short message that says which server failed and which input (and row) it concerns.

import { short } from "./actions.js";

export const FIELDS = ["image", "video", "continue_from", "prompt", "actions", "action_speeds", "preset",
  "seed", "num_inference_steps", "guidance_scale", "fps", "negative_prompt", "go_fast", "return_last_frame",
  "camera_preview"];

const PAGE_SERVER = () => `the page's server at ${location.origin}`;

export class ApiError extends Error {
  /** field: the input concerned (or "generate"); index: the entry of actions/action_speeds (0-based) or null. */
  constructor(message, field = "generate", status = 0, index = null) {
    super(message);
    Object.assign(this, { field, status, index });
  }
}

/** fetch() that names the page's server when it does not answer. */
async function call(path, options = {}) {
  try {
    return await fetch(path, { cache: "no-store", ...options });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(`No answer from ${PAGE_SERVER()}: is \`python -m gamecraft.ui\` still running?`, "generate");
  }
}

export async function getJson(path) {
  const r = await call(path);
  if (!r.ok) throw await httpError(r);
  return r.json();
}

export async function postJson(path, body, signal) {
  return call(path, { method: "POST", signal, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

/** POST a prediction and stream its events to onEvent(name, data); resolves with the final prediction.
 * ``health()`` reads the server's health again (async) before a refusal's message is written. */
export async function predict(input, onEvent, signal, health) {
  const r = await call("/api/predictions", {
    method: "POST", signal,
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify({ input }),
  });
  if (!r.ok) throw await httpError(r, health);
  let final = null;
  const reader = r.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(`The connection to ${PAGE_SERVER()} broke during the generation.`);
    }
    if (chunk.done) break;
    buffer += decoder.decode(chunk.value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trimStart();
      }
      if (!data) continue;
      const parsed = JSON.parse(data);
      onEvent(name, parsed);
      if (name === "completed") final = parsed;
    }
  }
  if (!final) throw new ApiError("The stream ended before the prediction completed (did the Cog server restart?).");
  if (final.status !== "succeeded") throw predictionError(final);
  return final;
}

export async function cancel(id) {
  await postJson(`/api/predictions/${encodeURIComponent(id)}/cancel`, {});
}

let upload = null;
/** The name of the user's file in this request: the server only knows it by a temporary name. */
export const setUploadName = (name) => { upload = name; };

/** Quoted values longer than 60 characters in a message are cut: a 2,700-character prompt is not echoed. */
export function tidy(message, max = 300) {
  let msg = String(message);
  msg = msg.replace(/(["'])([^"'\n]{61,})\1/g, (_, q, value) => `${q}${value.slice(0, 40)}…${q} (${value.length.toLocaleString("en")} characters)`);
  // server-side paths (temporary files, the server's folders) mean nothing to the user: keep the file name
  msg = msg.replace(/(?:\/[\w.+-]+)+\/([\w.+-]+)/g, (_, name) => (/^tmp\w{6,}/.test(name) ? upload || "the uploaded file" : name));
  return short(msg, max);
}

/** What a player reads when the model worker died (health UNHEALTHY): what happened, how to restart. */
export const workerDied = (h) => `The ${h.server} is unhealthy: its model worker died, and it takes no more predictions ` +
  "(its /health-check says UNHEALTHY). Restart it: stop it and run `make run` (or `tools/serve.py`) again.";

/** Why nothing can be played on a server in state ``h`` (not READY), with what to do; lower case, no stop. */
export function serverAdvice(h) {
  switch (h.status) {
    case "STARTING": return `the ${h.server} is still setting up: wait until the badge says ready`;
    case "BUSY": return `the ${h.server} is busy with another prediction: wait until it finishes`;
    case "UNHEALTHY": case "DEFUNCT": return `the ${h.server} is unhealthy: its model worker died; restart it (\`make run\` or \`tools/serve.py\`)`;
    case "SETUP_FAILED": return `the ${h.server} failed to set up: see its log, then restart it (\`make run\` or \`tools/serve.py\`)`;
    case "UNREACHABLE": return `${h.detail ? tidy(h.detail) : `the ${h.server} is not reachable`}; start it (\`make run\` or \`tools/serve.py\`)`;
    case "PAGE_DOWN": return `no answer from the page's server at ${h.url}: is \`python -m gamecraft.ui\` still running?`;
    default: return `the ${h.server} says ${h.word}`;
  }
}

async function httpError(r, health = async () => null) {
  let body = null;
  try { body = await r.json(); } catch { /* not JSON */ }
  const detail = body && (body.detail ?? body.error ?? body.title);
  if (r.status === 409) {
    const h = await health();  // read again: the cached answer may be seconds old
    if (h && ["UNHEALTHY", "DEFUNCT"].includes(h.status)) return new ApiError(workerDied(h), "generate", 409);
    return new ApiError(`The ${h ? h.server : "Cog server"} is busy with another prediction; try again when it finishes.`,
      "generate", 409);
  }
  if (r.status === 503) {
    const h = await health();
    return new ApiError(`The ${h?.server || "Cog server"} is not ready (${tidy(detail || "setting up")}); ` +
      "wait until the badge says ready.", "generate", 503);
  }
  if (r.status === 502) return new ApiError(`${tidy(typeof detail === "string" ? capital(detail) : "The upstream server is not reachable")}.`, "generate", 502);
  if (r.status === 422 && body && Array.isArray(body.detail)) {
    const errors = body.detail.map((d) => {
      const field = (d.loc || []).find((p) => FIELDS.includes(p)) || "generate";
      return new ApiError(`${field === "generate" ? "input" : field}: ${tidy(d.msg || "invalid")}`, field, 422);
    });
    const err = errors[0] || new ApiError("input: invalid", "generate", 422);
    err.all = errors;
    return err;
  }
  const text = typeof detail === "string" ? detail : detail ? JSON.stringify(detail) : "";
  return new ApiError(`HTTP ${r.status}${text ? `: ${tidy(text)}` : ""}`, "generate", r.status);
}

const capital = (s) => s.charAt(0).toUpperCase() + s.slice(1);

/** A failed prediction's error, stripped of coglet's prefixes, with the field (and entry) it names. */
export function predictionError(final) {
  let msg = String(final.error || `prediction ${final.status}`);
  msg = msg.replace(/^Prediction failed:\s*/, "").replace(/^Generator iteration error:\s*/, "")
    .replace(/^Input validation error:\s*/, "").replace(/^\w*(Error|Exception):\s*/, "");
  const m = /^([a-z_]+)\[(\d+)\]:/.exec(msg);
  const err = new ApiError(tidy(msg), fieldOf(msg), 200, m ? Number(m[2]) : null);
  err.canceled = final.status === "canceled";
  return err;
}

export function fieldOf(msg) {
  const m = /^([a-z_]+)(\[\d+\])?:/.exec(msg);
  if (m && FIELDS.includes(m[1])) return m[1];
  if (/state file|continue_from/.test(msg)) return "image";
  if (/exactly one of image|image|video/.test(msg)) return "image";
  return "generate";
}
