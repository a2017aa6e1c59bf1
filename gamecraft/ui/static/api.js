// Talking to the page's own server (/api/...), which proxies a Cog server or Replicate.
// Predictions stream as Server-Sent Events in coglet's format: start, log, metric, output
// ({index, chunk}), completed ({status, output, error, logs}).

export const FIELDS = ["image", "video", "continue_from", "prompt", "actions", "action_speeds", "preset",
  "seed", "num_inference_steps", "guidance_scale", "fps"];

export class ApiError extends Error {
  /** field: the input the error concerns (or null); status: HTTP status (409 busy, 422, ...). */
  constructor(message, field = null, status = 0) { super(message); this.field = field; this.status = status; }
}

export async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new ApiError(`${path}: HTTP ${r.status}`, null, r.status);
  return r.json();
}

/** POST a prediction and stream its events to onEvent(name, data); resolves with the final prediction. */
export async function predict(input, onEvent, signal) {
  const r = await fetch("/api/predictions", {
    method: "POST", signal,
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify({ input }),
  });
  if (!r.ok) throw await httpError(r);
  let final = null;
  const reader = r.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
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
  if (!final) throw new ApiError("the stream ended before the prediction completed (server restarted?)");
  if (final.status !== "succeeded") throw predictionError(final);
  return final;
}

export async function cancel(id) {
  await fetch(`/api/predictions/${encodeURIComponent(id)}/cancel`, { method: "POST" });
}

async function httpError(r) {
  let body = null;
  try { body = await r.json(); } catch { /* not JSON */ }
  if (r.status === 409) return new ApiError("The server is busy with another prediction; try again when it finishes.", "generate", 409);
  if (r.status === 422 && body && Array.isArray(body.detail)) {
    const first = body.detail[0] || {};
    const loc = first.loc || [];
    const field = loc.find((p) => FIELDS.includes(p)) || null;
    const errors = body.detail.map((d) => {
      const f = (d.loc || []).find((p) => FIELDS.includes(p)) || null;
      return { field: f, msg: `${f || "input"}: ${d.msg}` };
    });
    const err = new ApiError(`${field || "input"}: ${first.msg || "invalid"}`, field, 422);
    err.all = errors;
    return err;
  }
  const detail = body && (body.detail || body.error || body.title);
  return new ApiError(`HTTP ${r.status}${detail ? `: ${typeof detail === "string" ? detail : JSON.stringify(detail)}` : ""}`, "generate", r.status);
}

/** A failed prediction's error, stripped of coglet's prefixes, with the field it names. */
export function predictionError(final) {
  let msg = String(final.error || `prediction ${final.status}`);
  msg = msg.replace(/^Prediction failed:\s*/, "").replace(/^Generator iteration error:\s*/, "").replace(/^\w*(Error|Exception):\s*/, "");
  const err = new ApiError(msg, fieldOf(msg), 200);
  err.canceled = final.status === "canceled";
  return err;
}

export function fieldOf(msg) {
  const m = /^([a-z_]+)(\[\d+\])?:/.exec(msg);
  if (m && FIELDS.includes(m[1])) return m[1];
  if (/state file|continue_from/.test(msg)) return "image";
  if (/exactly one of image|image/.test(msg)) return "image";
  return "generate";
}
