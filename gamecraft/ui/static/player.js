// The screen: plays the world's chunks back to back as they arrive. Two stacked <video> elements take
// turns: while one plays chunk k, the other has chunk k+1 loaded, so the switch at the end of k shows no
// gap. When k+1 has not arrived yet, the last frame stays and an overlay says which chunk is being
// generated and its ETA. playVideo() shows one whole video instead (the whole world, or a download).

export class WorldPlayer {
  constructor(stage, { onChange = () => {} } = {}) {
    this.stage = stage;
    this.onChange = onChange;
    this.videos = [...stage.querySelectorAll("video.screen")];
    this.overlay = stage.querySelector(".overlay");
    this.chunks = [];            // [{n, url}] in world order
    this.current = -1;           // index into chunks of the chunk on screen
    this.front = 0;              // which of this.videos is visible
    this.waiting = false;        // the current chunk ended and the next is not here yet
    this.generating = null;      // overlay text while a generation runs
    this.mode = "idle";          // idle | chunks | video
    this.paused = false;
    this.log = [];               // [{t, event, n}]: the tests read the switch times
    for (const [i, video] of this.videos.entries()) {
      video.muted = true; video.playsInline = true; video.preload = "auto";
      video.addEventListener("ended", () => { if (i === this.front) this._ended(); });
      video.addEventListener("playing", () => {
        if (i === this.front && this.mode === "chunks") this._note("playing", this.chunks[this.current]?.n);
      });
    }
  }

  get frontVideo() { return this.videos[this.front]; }
  get backVideo() { return this.videos[1 - this.front]; }
  get nowPlaying() { return this.mode === "chunks" ? this.chunks[this.current]?.n ?? null : null; }

  /** A new world (or none): forget the chunks. */
  reset() {
    this.chunks = []; this.current = -1; this.waiting = false; this.mode = "idle"; this.paused = false;
    for (const v of this.videos) { v.pause(); v.removeAttribute("src"); v.removeAttribute("controls"); delete v.dataset.url; v.load(); }
    this.stage.classList.add("empty");
    this._overlay();
    this.onChange();
  }

  /** A world's chunks ([{n, url}]), shown paused at the first one (a world restored or resumed). */
  load(chunks) {
    this.reset();
    if (!chunks.length) return;
    this.chunks = [...chunks].sort((a, b) => a.n - b.n);
    this.stage.classList.remove("empty");
    this.mode = "chunks"; this.paused = true; this.current = 0;
    const v = this.frontVideo;
    v.dataset.url = this.chunks[0].url; v.src = this.chunks[0].url;
    this._preload();
    this._overlay();
    this.onChange();
  }

  /** Chunk ``n`` of the world arrived (a blob: / data: / https URL). Starts playing if idle or waiting. */
  addChunk(n, url) {
    this.chunks.push({ n, url });
    this.chunks.sort((a, b) => a.n - b.n);
    this.stage.classList.remove("empty");
    if (this.mode !== "chunks" || this.current < 0) this.playFrom(n);
    else if (this.waiting && this.chunks[this.current + 1]?.n === n) this._advance();
    else this._preload();
    this.onChange();
  }

  /** What the overlay says while the next chunk is generated (null: generation over). */
  setGenerating(text) {
    this.generating = text;
    this._overlay();
  }

  /** Play the world from chunk ``n`` on. */
  playFrom(n) {
    const index = this.chunks.findIndex((c) => c.n === n);
    if (index < 0) return;
    this.mode = "chunks"; this.paused = false;
    this.frontVideo.removeAttribute("controls");
    this._show(index);
  }

  /** One whole video (the whole world, a request's video) with the browser's own controls. */
  playVideo(url) {
    this.mode = "video"; this.waiting = false; this.paused = false;
    this.backVideo.pause();
    const v = this.frontVideo;
    v.src = url; v.controls = true; v.loop = false;
    this.stage.classList.remove("empty");
    this._overlay();
    v.play().catch(() => {});
    this.onChange();
  }

  togglePause() {
    const v = this.frontVideo;
    if (this.mode === "chunks" && this.waiting && !this.generating) return this.playFrom(this.chunks[0]?.n);
    this.paused = !this.paused;
    if (this.paused) v.pause(); else v.play().catch(() => {});
    this.onChange();
  }

  _show(index) {
    this.current = index;
    this.waiting = false;
    const chunk = this.chunks[index];
    const back = this.backVideo;
    if (back.dataset.url === chunk.url) {  // preloaded: swap
      this._swap();
    } else {
      const v = this.frontVideo;
      v.dataset.url = chunk.url; v.src = chunk.url;
    }
    const v = this.frontVideo;
    v.currentTime = 0;
    v.play().catch(() => {});
    this._overlay();
    this._preload();
    this.onChange();
  }

  _swap() {
    this.frontVideo.pause();
    this.front = 1 - this.front;
    this.videos.forEach((v, i) => v.classList.toggle("front", i === this.front));
  }

  _preload() {
    const next = this.chunks[this.current + 1];
    const back = this.backVideo;
    if (next && back.dataset.url !== next.url) {
      back.dataset.url = next.url; back.src = next.url; back.load();
    }
  }

  _ended() {
    if (this.mode !== "chunks") return;
    const next = this.chunks[this.current + 1], back = this.backVideo;
    const ready = Boolean(next && back.dataset.url === next.url && back.readyState >= 2);  // loaded behind this one
    this._note("ended", this.chunks[this.current]?.n, { next_ready: ready });
    if (this.chunks[this.current + 1]) this._advance();
    else { this.waiting = true; this._overlay(); this.onChange(); }
  }

  _advance() { this._show(this.current + 1); }

  _overlay() {
    // waiting for the next chunk, or for the first one of a new world
    const waiting = (this.mode === "chunks" && this.waiting) || (this.mode === "idle" && Boolean(this.generating));
    const text = waiting ? (this.generating || "end of the world so far · play to replay") : "";
    this.overlay.textContent = text;
    this.overlay.classList.toggle("shown", Boolean(text));
    this.overlay.classList.toggle("generating", Boolean(waiting && this.generating));
  }

  _note(event, n, extra = {}) { this.log.push({ t: performance.now(), event, n, ...extra }); }
}
