// The request the page would send next, as the predictor's inputs and as commands a user can run
// themselves: curl against the Cog server (or Replicate's API) and `cog predict`. tests/test_ui_browser.py
// runs the curl command against the test server and parses the cog predict arguments back into inputs.

import { rowsJson } from "./timeline.js";
import { $, requestPlan, state } from "./state.js";

/** Advanced inputs: [element id, input name, kind]; sent only when set (coglet refuses explicit nulls). */
export const ADVANCED = [["steps", "num_inference_steps", "int"], ["guidance", "guidance_scale", "float"],
  ["fps", "fps", "int"], ["negative", "negative_prompt", "text"], ["go-fast", "go_fast", "bool"],
  ["last-frame", "return_last_frame", "bool"], ["camera-preview", "camera_preview", "bool"]];

/** The predictor inputs of ``plan`` (files as data: URIs or URLs), in a readable order. */
export function buildInput(plan = requestPlan()) {
  const json = rowsJson(plan.rows);
  const input = {};
  if (plan.mode === "keep") input.continue_from = state.world.state;
  else if (state.source && state.source.field !== "continue_from") input[state.source.field] = state.source.uri;
  Object.assign(input, { prompt: $("#prompt").value, actions: json.actions, action_speeds: json.action_speeds });
  if ($("#preset").value !== defaultOf("preset", "distilled")) input.preset = $("#preset").value;
  if ($("#seed").value.trim() !== "") input.seed = Number($("#seed").value);
  for (const [id, name, kind] of ADVANCED) {
    const el = $(`#${id}`);
    if (kind === "bool") { if (el.checked !== Boolean(defaultOf(name, false))) input[name] = el.checked; continue; }
    const raw = el.value.trim();
    if (raw === "" || (kind !== "text" && Number(raw) === defaultOf(name, null))) continue;
    input[name] = kind === "text" ? el.value : Number(raw);
  }
  return input;
}

const defaultOf = (name, fallback) => state.schema[name]?.default ?? fallback;

/** The file a command reads for an input that is a file (a data: URI in the page). */
function fileFor(field, plan) {
  if (plan.mode === "keep") return state.world.stateName || "world-state.safetensors";
  return state.source?.path || state.source?.name || "start.png";
}

const MIME = { image: "image/png", video: "video/mp4", continue_from: "application/octet-stream" };

/** JSON with ", " and ": " separators (readable in a terminal). */
const spaced = (v) => (v && typeof v === "object" && !Array.isArray(v)
  ? `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${spaced(x)}`).join(", ")}}` : JSON.stringify(v));

export const shq = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;

/** The next request as a curl (Cog server or Replicate) or `cog predict` command. */
export function command(kind, plan = requestPlan()) {
  const input = buildInput(plan);
  const fileField = ["continue_from", "image", "video"].find((f) => f in input);
  const file = fileField ? fileFor(fileField, plan) : null;
  if (kind === "cog") {
    const args = Object.entries(input).map(([name, value]) => {
      if (name === fileField && String(value).startsWith("data:")) return `-i ${name}=@${shq(file).replace(/^'([\w./-]+)'$/, "$1")}`;
      const text = typeof value === "string" ? value : JSON.stringify(value);
      return `-i ${name}=${/^[\w.,:/+-]+$/.test(text) ? text : shq(text)}`;
    });
    return ["cog predict", ...args].join(" \\\n    ");
  }
  // the body streams through a pipe: a start image is often larger than one command-line argument may be
  const body = spaced(state.config.backend === "replicate" && state.config.version
    ? { version: state.config.version, input } : { input });
  let parts;
  if (fileField && String(input[fileField]).startsWith("data:")) {
    const marker = JSON.stringify(input[fileField]);
    const [before, after] = [body.slice(0, body.indexOf(marker) + 1), body.slice(body.indexOf(marker) + marker.length - 1)];
    const mime = String(input[fileField]).slice(5).split(";")[0] || MIME[fileField];
    parts = [`printf %s ${shq(`${before}data:${mime};base64,`)}`, `base64 -w0 ${shq(file)}`, `printf %s ${shq(after)}`];
  } else {
    parts = [`printf %s ${shq(body)}`];
  }
  const feed = `{ ${parts.join("; ")}; }`;
  if (state.config.backend === "replicate") {
    const api = state.config.api || "https://api.replicate.com/v1";
    const url = state.config.version ? `${api}/predictions` : `${api}/models/${state.config.model}/predictions`;
    return `${feed} \\\n  | curl -s -X POST ${url} \\\n    -H "Authorization: Bearer $REPLICATE_API_TOKEN" -H 'Prefer: wait' \\\n` +
      "    -H 'Content-Type: application/json' --data-binary @-";
  }
  return `${feed} \\\n  | curl -s -X POST ${state.config.url}/predictions \\\n    -H 'Content-Type: application/json' --data-binary @-`;
}
