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
  if (plan.mode === "keep") input.continue_from = state.world?.state ?? "(the state file the running request returns)";
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

/** The file a command reads for an input that is a file (a data: URI in the page): an example by its URL on
 * the page's server (the command then runs from any directory), the user's own file by its name. */
function fileFor(field, plan) {
  if (plan.mode === "keep") return { name: state.world.stateName || "world-state.safetensors" };
  if (state.source?.example) return { url: new URL(`examples/${state.source.example}`, location.href).href, name: state.source.example };
  return { name: state.source?.name || "start.png" };
}

const MIME = { image: "image/png", video: "video/mp4", continue_from: "application/octet-stream" };
// Replicate's docs ("Input files") recommend a data URI only under 1 MB; larger files go through its files API
const DATA_URI_MAX_BYTES = 1_000_000;

/** JSON with ", " and ": " separators (readable in a terminal). */
const spaced = (v) => (v && typeof v === "object" && !Array.isArray(v)
  ? `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${spaced(x)}`).join(", ")}}` : JSON.stringify(v));

export const shq = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;

/** A status check on $OUT (a prediction's JSON): print it; exit 1 unless it succeeded. */
const CHECK = [
  `printf '%s\\n' "$OUT"`,
  `case $OUT in *'"status":"succeeded"'*|*'"status": "succeeded"'*) ;; *) echo 'gamecraft: the prediction did not succeed (its error is above)' >&2; exit 1 ;; esac`,
];

/** The next request as a curl (Cog server or Replicate) or `cog predict` command. */
export function command(kind, plan = requestPlan()) {
  const input = buildInput(plan);
  const fileField = ["continue_from", "image", "video"].find((f) => f in input && String(input[f]).startsWith("data:"));
  const file = fileField ? fileFor(fileField, plan) : null;
  if (kind === "cog") {
    const args = Object.entries(input).map(([name, value]) => {
      // cog predict runs in the model's folder (its cog.yaml): an example by its path there
      if (name === fileField) return `-i ${name}=@${shq(state.source?.path && plan.mode !== "keep" ? state.source.path : file.name).replace(/^'([\w./-]+)'$/, "$1")}`;
      const text = typeof value === "string" ? value : JSON.stringify(value);
      return `-i ${name}=${/^[\w.,:/+-]+$/.test(text) ? text : shq(text)}`;
    });
    return ["cog predict", ...args].join(" \\\n    ");
  }
  // a subshell that stops at the first failure: a missing file, an HTTP error, a prediction that failed
  const replicate = state.config.backend === "replicate";
  const api = state.config.api || "https://api.replicate.com/v1";
  const version = state.config.version || state.config.latest_version;
  const lines = ["( set -eo pipefail"];
  const auth = `-H "Authorization: Bearer $REPLICATE_API_TOKEN"`;
  const failed = `|| { printf '%s\\n' "$OUT" >&2; exit 1; }`;  // an HTTP error: its body says why
  const read = file && (file.url ? `curl -sSf ${shq(file.url)}` : null);
  const mime = fileField ? String(input[fileField]).slice(5).split(";")[0] || MIME[fileField] : null;
  const large = fileField && (String(input[fileField]).length - String(input[fileField]).indexOf(",") - 1) * 0.75 > DATA_URI_MAX_BYTES;
  let marker = null;
  if (fileField && replicate && large) {  // Replicate's files API: the input is the file's URL
    const upload = `curl -sS --fail-with-body ${auth} -F ${shq(`content=@${file.url ? "-" : file.name};filename=${file.name};type=${mime}`)} ${api}/files`;
    lines.push(`  FILE=$(${read ? `${read} | ` : ""}${upload} | sed -n 's/.*"get": *"\\([^"]*\\)".*/\\1/p')`);
    marker = "$FILE";
  } else if (fileField) {
    lines.push(`  FILE=$(${read ? `${read} | base64 -w0` : `base64 -w0 ${shq(file.name)}`})`);
    marker = `data:${mime};base64,$FILE`;
  }
  const sentInput = fileField ? { ...input, [fileField]: "\u0000FILE\u0000" } : input;
  const body = spaced(replicate && version ? { version, input: sentInput } : { input: sentInput });
  const [before, after] = body.split(JSON.stringify("\u0000FILE\u0000"));
  const feed = marker ? `printf %s ${shq(`${before}"`)}"${marker}"${shq(`"${after}`)}` : `printf %s ${shq(body)}`;
  if (replicate) {  // create, then poll: Replicate holds a request at most 60 s, a GameCraft request is longer
    const url = version ? `${api}/predictions` : `${api}/models/${state.config.model}/predictions`;
    lines.push(`  OUT=$(${feed} \\\n    | curl -sS --fail-with-body -X POST ${url} ${auth} -H 'Content-Type: application/json' --data-binary @-) ${failed}`);
    lines.push(`  GET=$(printf %s "$OUT" | sed -n 's/.*"get": *"\\([^"]*\\)".*/\\1/p')`);
    lines.push(`  until printf %s "$OUT" | grep -Eq '"status": ?"(succeeded|failed|canceled)"'; do sleep 1; OUT=$(curl -sS --fail-with-body ${auth} "$GET") ${failed}; done`);
  } else {
    lines.push(`  OUT=$(${feed} \\\n    | curl -sS --fail-with-body -X POST ${state.config.url}/predictions -H 'Content-Type: application/json' --data-binary @-) ${failed}`);
  }
  lines.push(...CHECK.map((l) => `  ${l}`));
  return lines.join("\n") + " )";
}
