// Held input -> chunks. A gesture runs from the first input pressed until every input is released again
// (keys, on-screen caps, gamepad sticks and D-pad, drags on the look pad). While it runs, each change of
// the held set starts a new phase; when it ends, every phase becomes as many chunks as it lasted
// (one chunk = 33 frames = 1.32 s at 25 fps; cumulative rounding so a 4 s hold gives 3, never 4), and at
// least one: a tap is one chunk. Phases shorter than GRACE_S (0.3 s) that only assemble a chord (W, then ←
// 80 ms later) or take it apart (releasing ← a moment before W) are merged into the chord.
// Drag-only phases are one chunk whatever their duration: a drag's distance, not its time, sets the turn.

export const GRACE_S = 0.3;

/**
 * Chunks from finished phases. phases: [{start, end, inputs: Map(input -> {key, speed, drag})}] with times
 * in seconds, in order; returns [{keys: Map(key -> speed), count}] (one entry per phase kept).
 */
export function phasesToChunks(phases, chunkSeconds, grace = GRACE_S) {
  const subset = (a, b) => [...a.inputs.keys()].every((k) => b.inputs.has(k));
  const list = phases.filter((p) => p.inputs.size).map((p) => ({ ...p }));
  for (let i = 0; i < list.length; i++) {
    const p = list[i];
    if (p.end - p.start >= grace) continue;
    const next = list[i + 1], prev = list[i - 1];
    if (next && next.start - p.end < 1e-9 && subset(p, next)) {         // assembling a chord
      next.start = p.start; list.splice(i, 1); i -= 1;
    } else if (prev && p.start - prev.end < 1e-9 && subset(p, prev)) {  // taking a chord apart
      prev.end = p.end; list.splice(i, 1); i -= 1;
    }
  }
  const t0 = list.length ? list[0].start : 0;
  return list.map((p) => {
    const dragOnly = [...p.inputs.values()].every((v) => v.drag);
    const count = dragOnly ? 1
      : Math.max(1, Math.round((p.end - t0) / chunkSeconds) - Math.round((p.start - t0) / chunkSeconds));
    const keys = new Map();
    for (const v of p.inputs.values()) keys.set(v.key, Math.max(keys.get(v.key) ?? 0, v.speed));
    return { keys, count };
  });
}

/** Tracks held inputs and hands finished gestures to ``onCommit(chunks)``. Times in seconds. */
export class Gestures {
  constructor({ chunkSeconds, onCommit, onChange = () => {} }) {
    Object.assign(this, { chunkSeconds, onCommit, onChange });
    this.held = new Map();      // input -> {key, speed, drag, order}
    this.phases = [];
    this.phaseStart = null;
    this.order = 0;
  }

  get active() { return this.held.size > 0; }

  /** Press (or re-aim) ``input`` (e.g. "key:w", "pad:left") meaning action ``key`` at ``speed``. */
  press(input, key, speed, t, drag = false) {
    const old = this.held.get(input);
    if (old && old.key === key) {          // same direction: a stick tilting further, a drag growing
      old.speed = Math.max(old.speed, speed);
      this.onChange();
      return;
    }
    this._cut(t);
    this.held.set(input, { key, speed, drag, order: this.order++ });
    this.onChange();
  }

  release(input, t) {
    if (!this.held.has(input)) return;
    this._cut(t);
    this.held.delete(input);
    if (!this.held.size) this._finish();
    this.onChange();
  }

  /** Forget everything held (the window lost focus): nothing is committed. */
  cancel() { this.held.clear(); this.phases = []; this.phaseStart = null; this.onChange(); }

  /** What the gesture would give if it ended at ``t``: {keys: [...], chunks: n, seconds}. */
  preview(t) {
    if (!this.held.size) return { keys: [], chunks: 0, seconds: 0 };
    const phases = [...this.phases, this._phase(t)];
    const chunks = phasesToChunks(phases, this.chunkSeconds).reduce((n, c) => n + c.count, 0);
    return { keys: this._keys(), chunks, seconds: t - phases[0].start };
  }

  _keys() { return [...this.held.values()].sort((a, b) => a.order - b.order).map((v) => v.key); }

  _phase(t) {
    const inputs = new Map();
    for (const [input, v] of [...this.held].sort((a, b) => a[1].order - b[1].order)) inputs.set(input, { ...v });
    return { start: this.phaseStart, end: t, inputs };
  }

  _cut(t) {
    if (this.held.size) this.phases.push(this._phase(t));
    this.phaseStart = t;
  }

  _finish() {
    const chunks = phasesToChunks(this.phases, this.chunkSeconds);
    this.phases = [];
    this.phaseStart = null;
    if (chunks.length) this.onCommit(chunks);
  }
}
