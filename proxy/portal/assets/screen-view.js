// Desktop screens (VNC, RDP) on a canvas, for the live view and for replay. The lines are the
// recorder's screen stream, as in screen.ndjson and in the live view's 'screen' frames:
//   header {width, height} · keyframe {w, h, png} · rect {x, y, w, h, png} · copy {sx, sy, x, y, w, h}
//   resize {w, h} · cursor · input (keys, clicks, clipboard: shown from the session's events instead)
// PNGs decode asynchronously, so lines wait in a queue; a keyframe is the whole frame, so when one
// is waiting, the lines before it are skipped once it has decoded (a slow watcher catches up
// instead of falling behind; a keyframe that does not decode is dropped and the lines before it
// are drawn as usual).

const MAX_SIDE = 16384;

const int = (v, min, max) => Number.isInteger(v) && v >= min && v <= max;

function pngBitmap(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  // No colour management and no premultiplication: the canvas gets the recorded pixels as they are.
  return createImageBitmap(new Blob([bytes], { type: 'image/png' }), { premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
}

export class ScreenView {
  /**
   * canvas: the <canvas> to draw on; onError(message): a line could not be drawn (the view goes on
   * with the next one).
   */
  constructor(canvas, { onError = () => {} } = {}) {
    this.canvas = canvas;
    this.g = canvas.getContext('2d', { willReadFrequently: false });
    this.onError = onError;
    this.pending = [];
    this.running = false;
    this.waiters = [];
    this.frames = 0;
    // Scaled to the page's width, never above the remote screen's own size (CSSOM, allowed by the CSP).
    canvas.style.display = 'block';
    canvas.style.width = '100%';
    canvas.style.height = 'auto';
    canvas.style.background = '#000';
    this.fit();
  }

  fit() {
    this.canvas.style.maxWidth = `${this.canvas.width}px`;
  }

  setSize(w, h) {
    if (!int(w, 1, MAX_SIDE) || !int(h, 1, MAX_SIDE)) return false;
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
      this.fit();
    }
    return true;
  }

  /** Queue one line. */
  push(line) {
    if (!line || typeof line !== 'object' || typeof line.type !== 'string') return;
    this.pending.push(line);
    if (!this.running) void this.run();
  }

  /** Drop what is waiting (a seek restarts from a keyframe). */
  clear() {
    this.pending = [];
  }

  /** Resolves once every queued line is drawn. */
  idle() {
    if (!this.running && !this.pending.length) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  async run() {
    this.running = true;
    try {
      while (this.pending.length) {
        const k = this.pending.findLastIndex((l) => l.type === 'keyframe');
        const l = k > 0 ? this.pending[k] : this.pending.shift();
        try {
          await this.draw(l);
          // The keyframe is on the canvas: what waited before it is superseded.
          const at = k > 0 ? this.pending.indexOf(l) : -1;
          if (at >= 0) this.pending.splice(0, at + 1);
        } catch (e) {
          const at = k > 0 ? this.pending.indexOf(l) : -1;
          if (at >= 0) this.pending.splice(at, 1);
          this.onError(`a ${l.type} line could not be drawn: ${e && e.message ? e.message : e}`);
        }
      }
    } finally {
      this.running = false;
      for (const w of this.waiters.splice(0)) w();
    }
  }

  counted() {
    this.frames++;
    this.canvas.dataset.frames = String(this.frames);
  }

  async draw(l) {
    const g = this.g;
    switch (l.type) {
      case 'header':
        this.setSize(l.width, l.height);
        return;
      case 'keyframe': {
        if (typeof l.png !== 'string') throw new Error('no picture');
        const img = await pngBitmap(l.png);
        this.setSize(img.width, img.height);
        g.drawImage(img, 0, 0);
        img.close();
        this.counted();
        return;
      }
      case 'rect': {
        if (typeof l.png !== 'string' || !int(l.x, 0, MAX_SIDE) || !int(l.y, 0, MAX_SIDE)) return;
        const img = await pngBitmap(l.png);
        g.drawImage(img, l.x, l.y);
        img.close();
        this.counted();
        return;
      }
      case 'copy': {
        const ok = ['sx', 'sy', 'x', 'y'].every((k) => int(l[k], 0, MAX_SIDE)) && int(l.w, 1, MAX_SIDE) && int(l.h, 1, MAX_SIDE);
        if (ok) g.drawImage(this.canvas, l.sx, l.sy, l.w, l.h, l.x, l.y, l.w, l.h);
        return;
      }
      case 'resize': {
        if (!int(l.w, 1, MAX_SIDE) || !int(l.h, 1, MAX_SIDE)) return;
        // The top-left part that still fits is kept, the rest is black (a keyframe follows).
        const keep = g.getImageData(0, 0, Math.min(this.canvas.width, l.w), Math.min(this.canvas.height, l.h));
        this.setSize(l.w, l.h);
        g.fillStyle = '#000';
        g.fillRect(0, 0, l.w, l.h);
        g.putImageData(keep, 0, 0);
        return;
      }
      default:
        // cursor, input, unknown kinds: nothing to draw.
    }
  }
}

/** Parse a screen.ndjson file: well-formed lines with a time and a type (a torn last line is dropped). */
export function parseScreen(text) {
  const lines = [];
  for (const s of text.split('\n')) {
    if (!s.trim()) continue;
    let l;
    try { l = JSON.parse(s); } catch { continue; }
    if (l && typeof l === 'object' && typeof l.t === 'number' && Number.isFinite(l.t) && typeof l.type === 'string') lines.push(l);
  }
  return lines;
}

/**
 * Replay of a screen recording on a ScreenView: the keyframe index says where a seek starts
 * (the last keyframe at or before the time), then the lines up to the time are drawn. Playing
 * moves forward from where the view is, so it never re-decodes what is already on the canvas.
 */
export class ScreenPlayer {
  constructor(view, lines, { onTime = () => {}, onState = () => {} } = {}) {
    this.view = view;
    this.lines = lines;
    this.index = [];
    lines.forEach((l, i) => { if (l.type === 'keyframe') this.index.push({ t: l.t, line: i }); });
    this.duration = lines.length ? lines[lines.length - 1].t : 0;
    this.header = lines.find((l) => l.type === 'header') ?? null;
    this.onTime = onTime;
    this.onState = onState;
    this.pos = -1; // last line drawn
    this.time = 0;
    this.timer = null;
    this.busy = Promise.resolve();
  }

  /** Index of the keyframe line a seek to t starts from (-1: before the first keyframe). */
  keyframeAt(t) {
    let line = -1;
    for (const k of this.index) {
      if (k.t <= t) line = k.line;
      else break;
    }
    return line;
  }

  /** Draw the frame as it was at time t (seconds); resolves once it is on the canvas. */
  seek(t) {
    const to = Math.max(0, Math.min(Number(t) || 0, this.duration));
    this.busy = this.busy.then(() => this.goTo(to));
    return this.busy;
  }

  async goTo(t) {
    const start = this.keyframeAt(t);
    const forward = this.pos >= 0 && this.pos >= start && this.lines[this.pos].t <= t;
    let i;
    if (forward) {
      i = this.pos + 1;
    } else {
      this.view.clear();
      if (start < 0) {
        // Before the first keyframe: a black screen of the recorded size.
        const h = this.header;
        if (h && this.view.setSize(h.width, h.height)) { this.view.g.fillStyle = '#000'; this.view.g.fillRect(0, 0, h.width, h.height); }
        this.pos = -1;
        this.time = t;
        this.onTime(t);
        return;
      }
      i = start;
    }
    for (; i < this.lines.length && this.lines[i].t <= t; i++) this.view.push(this.lines[i]);
    this.pos = i - 1;
    await this.view.idle();
    this.time = t;
    this.onTime(t);
  }

  get playing() { return this.timer !== null; }

  play() {
    if (this.timer) return;
    if (this.time >= this.duration) { this.time = 0; void this.seek(0); }
    const base = performance.now() / 1000 - this.time;
    let inFlight = false;
    this.timer = setInterval(() => {
      if (inFlight) return; // drawing is slower than real time: skip a tick, catch up on the next
      const t = Math.min(performance.now() / 1000 - base, this.duration);
      inFlight = true;
      void this.seek(t).finally(() => { inFlight = false; });
      if (t >= this.duration) this.pause();
    }, 100);
    this.onState(true);
  }

  pause() {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.timer = null;
    this.onState(false);
  }
}
