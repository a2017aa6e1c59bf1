// Minimap-style top-down drawing of the camera path (+x right, +z = initial view up), one colour
// per chunk, heading arrows and numbered chunk boundaries, like gamecraft/preview.py.
import { PALETTE, topDownPoints } from "./path.js";

/** Draws ``played`` (the world so far, dimmed) followed by ``chunks`` (the timeline, in colour). */
export function drawMinimap(canvas, chunks, played, table) {
  const FRAMES_PER_CHUNK = table.chunk.frames;
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 320, h = canvas.clientHeight || 320;
  canvas.width = w * dpr; canvas.height = h * dpr;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const bg = ctx.createRadialGradient(w / 2, h / 2, 10, w / 2, h / 2, Math.max(w, h) / 1.2);
  bg.addColorStop(0, "#14202b"); bg.addColorStop(1, "#0a0f15");
  ctx.fillStyle = bg; ctx.fillRect(0, 0, w, h);

  const offset = played.length;
  const all = played.concat(chunks);
  const { positions, headings } = topDownPoints(all, table);
  let lo = [Infinity, Infinity], hi = [-Infinity, -Infinity];
  for (const [x, z] of positions) { lo = [Math.min(lo[0], x), Math.min(lo[1], z)]; hi = [Math.max(hi[0], x), Math.max(hi[1], z)]; }
  const extent = Math.max(hi[0] - lo[0], hi[1] - lo[1], 1) * 1.3;
  const centre = [(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2];
  const scale = (Math.min(w, h) - 24) / extent;
  const px = (x, z) => [w / 2 + (x - centre[0]) * scale, h / 2 - (z - centre[1]) * scale];

  // grid
  const step = Math.pow(10, Math.floor(Math.log10(extent / 4)));
  ctx.strokeStyle = "rgba(120, 200, 255, 0.08)"; ctx.lineWidth = 1;
  for (let v = Math.floor((centre[0] - extent) / step) * step; v <= centre[0] + extent; v += step) {
    const [x] = px(v, 0); ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, h); ctx.stroke();
  }
  for (let v = Math.floor((centre[1] - extent) / step) * step; v <= centre[1] + extent; v += step) {
    const [, y] = px(0, v); ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke();
  }
  ctx.fillStyle = "rgba(160, 190, 210, 0.7)"; ctx.font = "11px ui-monospace, monospace"; ctx.textAlign = "center";
  ctx.fillText(`grid ${+step.toPrecision(2)} u`, w / 2, h - 18); ctx.fillText("N", w / 2, 16); ctx.textAlign = "start";

  const color = (j) => (j < offset ? "#56687a" : PALETTE[(j - offset) % PALETTE.length]);
  all.forEach((_, j) => {
    const seg = positions.slice(j * FRAMES_PER_CHUNK, (j + 1) * FRAMES_PER_CHUNK + 1);
    ctx.strokeStyle = color(j); ctx.lineWidth = j < offset ? 2.5 : 3.5; ctx.lineCap = "round"; ctx.lineJoin = "round";
    ctx.shadowColor = color(j); ctx.shadowBlur = j < offset ? 0 : 8;
    ctx.beginPath(); seg.forEach(([x, z], i) => { const [a, b] = px(x, z); i ? ctx.lineTo(a, b) : ctx.moveTo(a, b); });
    ctx.stroke(); ctx.shadowBlur = 0;
    const end = Math.min((j + 1) * FRAMES_PER_CHUNK, positions.length - 1);
    if (j >= offset) arrow(ctx, px(...positions[end]), headings[end], 16, color(j));
  });
  // the player: a view cone at the final pose
  const last = positions.length - 1, [cx, cy] = px(...positions[last]), hd = headings[last];
  ctx.fillStyle = "rgba(255, 230, 120, 0.18)"; ctx.beginPath(); ctx.moveTo(cx, cy);
  ctx.arc(cx, cy, 46, -Math.PI / 2 - hd - 0.5, -Math.PI / 2 - hd + 0.5); ctx.closePath(); ctx.fill();
  for (let j = 0; j <= all.length; j++) {
    if (j && j < offset) continue;  // the played world: only its start and its end are marked
    const [bx, by] = px(...positions[Math.min(j * FRAMES_PER_CHUNK, last)]);
    ctx.fillStyle = "#0a0f15"; ctx.strokeStyle = j ? color(j - 1) : "#ffe678"; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(bx, by, 8, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
    ctx.fillStyle = "#e8f1f8"; ctx.font = "bold 9px ui-monospace, monospace"; ctx.textAlign = "center"; ctx.textBaseline = "middle";
    ctx.fillText(j ? String(j) : "S", bx, by + 0.5);
  }
  ctx.textAlign = "start"; ctx.textBaseline = "alphabetic";
}

function arrow(ctx, [x0, y0], heading, len, color) {
  const dx = -Math.sin(heading), dy = -Math.cos(heading);
  const x1 = x0 + dx * len, y1 = y0 + dy * len, base = Math.atan2(dy, dx) + Math.PI;
  ctx.strokeStyle = color; ctx.lineWidth = 2.5;
  ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1);
  for (const side of [1, -1]) { ctx.moveTo(x1, y1); ctx.lineTo(x1 + Math.cos(base - side * 0.45) * len * 0.4, y1 + Math.sin(base - side * 0.45) * len * 0.4); }
  ctx.stroke();
}

/** The map in words (the canvas's text alternative): where the path ends and where the camera faces. */
export function describePath(played, chunks, table) {
  const all = played.concat(chunks);
  if (!all.length) return "Camera path: empty. Add chunks with the keys, the look pad or a gamepad.";
  const { positions, headings, pitches } = topDownPoints(all, table);
  const [x, z] = positions.at(-1);
  const yaw = Math.round((headings.at(-1) * 180) / Math.PI), pitch = Math.round(pitches.at(-1));
  const side = (v, pos, neg) => `${Math.abs(v).toFixed(2)} ${v >= 0 ? pos : neg}`;
  const turn = yaw === 0 ? "facing the start direction" : `turned ${Math.abs(yaw)}° ${yaw > 0 ? "left" : "right"}`;
  const tilt = pitch === 0 ? "" : `, looking ${Math.abs(pitch)}° ${pitch > 0 ? "up" : "down"}`;
  const history = played.length ? `${played.length} played (grey) and ${chunks.length} new` : `${chunks.length}`;
  return `Camera path of ${history} chunk${all.length === 1 ? "" : "s"}: ends ${side(z, "forward", "back")} and ` +
    `${side(x, "right", "left")} of the start (translation units), ${turn}${tilt}.`;
}
