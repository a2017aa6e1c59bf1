// Camera-path math for the top-down preview, with the conventions of gamecraft/camera.py and
// gamecraft/preview.py: OpenCV camera (x right, y down, z forward); yaw positive to the left
// (toward -x), pitch positive up; translation within a chunk follows the heading (yaw only) at the
// middle of each frame step; chunk j+1 starts at chunk j's last pose (frames + 1 poses per chunk).
// Axes, signs and the frames per chunk come from the server's action table (actions.js), not from here.
// tests/test_ui_browser.py checks topDownPoints against gamecraft.preview.top_down_points.

export const PALETTE = ["#e63946", "#1d78dc", "#2ea043", "#f09614", "#8e44ad", "#009696", "#c83c96", "#6e6e6e"];

/** Signed amounts {forward, strafe, yaw, pitch} of a chunk given as [{key, speed}, ...]. */
export function amounts(parts, table) {
  const out = Object.fromEntries(table.axes.map((axis) => [axis, 0]));
  for (const { key, speed } of parts) {
    const entry = table.entry(key);
    if (entry && entry.axis) out[entry.axis] += entry.sign * (Number(speed) || 0);
  }
  return out;
}

const rad = (deg) => (deg * Math.PI) / 180;
const yawM = (deg) => { const c = Math.cos(rad(deg)), s = Math.sin(rad(deg)); return [[c, 0, -s], [0, 1, 0], [s, 0, c]]; };
const pitchM = (deg) => { const c = Math.cos(rad(deg)), s = Math.sin(rad(deg)); return [[1, 0, 0], [0, c, -s], [0, s, c]]; };
const mul3 = (A, B) => A.map((row) => [0, 1, 2].map((j) => row[0] * B[0][j] + row[1] * B[1][j] + row[2] * B[2][j]));
const apply3 = (A, v) => A.map((row) => row[0] * v[0] + row[1] * v[1] + row[2] * v[2]);

/** 4x4 pose as {R: 3x3, t: [3]}. */
const identity = () => ({ R: [[1, 0, 0], [0, 1, 0], [0, 0, 1]], t: [0, 0, 0] });
const compose = (A, B) => ({ R: mul3(A.R, B.R), t: apply3(A.R, B.t).map((v, i) => v + A.t[i]) });

/** Poses after k/frames of the chunk's motion, k = 0..frames (frames + 1), relative to the chunk start. */
export function segmentPoses(parts, table) {
  const frames = table.chunk.frames, m = amounts(parts, table);
  const step = [m.strafe / frames, 0, m.forward / frames];
  const moving = step.some((v) => v !== 0);
  const poses = [identity()];
  let position = [0, 0, 0];
  for (let k = 1; k <= frames; k++) {
    if (moving) {
      const d = apply3(yawM((m.yaw * (k - 0.5)) / frames), step);
      position = position.map((v, i) => v + d[i]);
    }
    poses.push({ R: mul3(yawM((m.yaw * k) / frames), pitchM((m.pitch * k) / frames)), t: position.slice() });
  }
  return poses;
}

/** All world poses: chunk j's frames from its start, then the final pose (N*frames + 1 poses). */
export function worldPoses(chunks, table) {
  const frames = table.chunk.frames;
  let start = identity();
  const out = [];
  for (const parts of chunks) {
    const poses = segmentPoses(parts, table);
    for (let k = 0; k < frames; k++) out.push(compose(start, poses[k]));
    start = compose(start, poses[frames]);
  }
  out.push(start);
  return out;
}

/** {positions: [[x, z]...], headings: [rad...]} like gamecraft.preview.top_down_points. */
export function topDownPoints(chunks, table) {
  const poses = worldPoses(chunks, table);
  return {
    positions: poses.map((p) => [p.t[0], p.t[2]]),
    headings: poses.map((p) => Math.atan2(-p.R[0][2], p.R[2][2])),
    pitches: poses.map((p) => (Math.asin(Math.max(-1, Math.min(1, -p.R[1][2]))) * 180) / Math.PI),
  };
}
