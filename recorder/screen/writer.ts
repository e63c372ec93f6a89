/**
 * Records a desktop session as NDJSON lines through a ScreenRecorder, keeping a framebuffer model:
 *
 *   {"type":"header","width","height"}                       (written by the recorder)
 *   {"type":"keyframe","w","h","png"}                        full frame, at start, resize and every interval
 *   {"type":"rect","x","y","w","h","png"}                    a changed rectangle after an update
 *   {"type":"copy","sx","sy","x","y","w","h"}                a rectangle copied inside the frame
 *   {"type":"resize","w","h"}                                new size (a keyframe follows)
 *   {"type":"cursor","w","h","hx","hy","png"}                cursor shape (png absent: hidden)
 *   {"type":"input", ...}                                    keys/clicks/clipboard (see input())
 *
 * Protocol modules call putRect/fillRect/copyRect/resize during an update and endUpdate() after
 * it; the PNGs are taken from the model, so any encoding maps to the same lines. A keyframe is
 * written when the interval passed or many lines were written since the last one, so a seek (and
 * a live watcher's snapshot) never needs more than a bounded tail.
 *
 * Large images (keyframes and rectangles of WORKER_MIN_PIXELS and more) are PNG-encoded by the
 * process's PNG worker thread, so a session's full-screen frames never stall the event loop that
 * every session shares; lines keep their order (a line waits for the images before it). `busy`
 * says the backlog is full: the protocol stops reading its source until whenReady() calls back.
 * close() finishes synchronously (it waits for the worker's last results, then encodes the final
 * keyframe itself). Should the worker
 * fail, the image is encoded on the main thread from the frame as it is then.
 */
import type { Clock } from '../../policies/clock.js';
import type { ScreenRecorder } from '../types.js';
import { Framebuffer } from './framebuffer.js';
import { encodePng } from './png.js';
import { pngWorker, type PngJob } from './png-worker.js';

/** Images of at least this many pixels are encoded by the PNG worker. */
export const WORKER_MIN_PIXELS = 65_536;
/** Lines waiting behind images beyond which the writer is busy. */
const MAX_QUEUED_LINES = 1000;

export interface ScreenWriterOptions {
  keyframeIntervalMs?: number;
  /** Lines since the last keyframe after which a new one is forced. */
  keyframeEveryLines?: number;
  /** PNG bytes since the last keyframe after which a new one is forced. */
  keyframeEveryBytes?: number;
  /** false: encode every PNG on the calling thread. */
  worker?: boolean;
}

interface Damage { x: number; y: number; w: number; h: number }

/** A line not written yet: it waits for its own image or an earlier one. */
interface Line { type: string; data: Record<string, unknown>; img?: { job: PngJob; x: number; y: number; w: number; h: number } }

export class ScreenWriter {
  readonly fb: Framebuffer;
  private damage: Damage[] = [];
  private lastKeyframe = -Infinity;
  private linesSinceKey = 0;
  private bytesSinceKey = 0;
  private needKeyframe = true;
  private closed = false;
  private readonly interval: number;
  private readonly everyLines: number;
  private readonly everyBytes: number;
  private readonly useWorker: boolean;
  private queue: Line[] = [];
  /** Pixels of images handed to the worker and not written yet. */
  private backlog = 0;
  private readyWaiters: (() => void)[] = [];
  private closing = false;

  constructor(private rec: ScreenRecorder, private clock: Clock, width: number, height: number, opts: ScreenWriterOptions = {}) {
    this.fb = new Framebuffer(width, height);
    this.interval = opts.keyframeIntervalMs ?? 10_000;
    this.everyLines = opts.keyframeEveryLines ?? 300;
    this.everyBytes = opts.keyframeEveryBytes ?? 4 * 1024 * 1024;
    this.useWorker = opts.worker !== false;
  }

  /** Too much is waiting for the PNG worker: stop feeding updates until whenReady() calls back. */
  get busy(): boolean {
    return this.backlog > 2 * this.fb.width * this.fb.height || this.queue.length > MAX_QUEUED_LINES;
  }

  whenReady(cb: () => void): void {
    if (!this.busy || this.closed) cb();
    else this.readyWaiters.push(cb);
  }

  private emit(type: string, data: Record<string, unknown>): void {
    if (this.closed) return;
    if (this.queue.length) this.queue.push({ type, data });
    else this.write(type, data);
  }

  /** A line with a PNG of the frame's w*h rectangle at x,y (rgba: a copy of it, given up to the writer). */
  private emitImage(type: string, data: Record<string, unknown>, x: number, y: number, w: number, h: number, rgba: Uint8Array): void {
    if (this.closed) return;
    if (!this.useWorker || w * h < WORKER_MIN_PIXELS) {
      this.emit(type, { ...data, png: encodePng(w, h, rgba).toString('base64') });
      return;
    }
    this.backlog += w * h;
    this.queue.push({ type, data, img: { x, y, w, h, job: pngWorker.encode(w, h, rgba, () => this.writeReady()) } });
  }

  private write(type: string, data: Record<string, unknown>): void {
    this.rec.write(type, data);
    this.linesSinceKey++;
    if (typeof data.png === 'string') this.bytesSinceKey += data.png.length;
  }

  private writeLine(l: Line): void {
    let data = l.data;
    if (l.img) {
      const { x, y, w, h, job } = l.img;
      this.backlog -= w * h;
      const fits = x + w <= this.fb.width && y + h <= this.fb.height;
      const png = job.png ?? encodePng(w, h, fits ? this.fb.getRect(x, y, w, h) : new Uint8Array(w * h * 4)).toString('base64');
      data = { ...data, png };
    }
    this.write(l.type, data);
  }

  /** Write the lines whose images are done, in order. */
  private writeReady(): void {
    if (this.closed || this.closing) return;
    while (this.queue.length) {
      const l = this.queue[0]!;
      if (l.img && !l.img.job.done) break;
      this.queue.shift();
      this.writeLine(l);
    }
    if (!this.busy) for (const cb of this.readyWaiters.splice(0)) cb();
  }

  /**
   * Damage is kept cheap to track whatever the number of pieces: a piece right below the last one
   * of the same columns extends it (rows streamed in batches), and a long list is merged as it
   * grows (mergeDamage keeps at most 64 rectangles), so tracking costs O(1) per piece.
   */
  private addDamage(x: number, y: number, w: number, h: number): void {
    const c = this.fb.clip(x, y, w, h);
    if (!c) return;
    const last = this.damage[this.damage.length - 1];
    if (last && last.x === c.x && last.w === c.w && last.y + last.h === c.y) { last.h += c.h; return; }
    this.damage.push(c);
    if (this.damage.length >= 256) this.damage = mergeDamage(this.damage);
  }

  putRect(x: number, y: number, w: number, h: number, rgba: Uint8Array): void {
    // Unchanged pixels (full-screen refreshes of a still screen) are not recorded again.
    if (this.fb.putRect(x, y, w, h, rgba)) this.addDamage(x, y, w, h);
  }

  fillRect(x: number, y: number, w: number, h: number, r: number, g: number, b: number): void {
    if (this.fb.fillRect(x, y, w, h, r, g, b)) this.addDamage(x, y, w, h);
  }

  copyRect(sx: number, sy: number, x: number, y: number, w: number, h: number): void {
    this.flushDamage();
    this.fb.copyRect(sx, sy, x, y, w, h);
    if (!this.needKeyframe) this.emit('copy', { sx, sy, x, y, w, h });
  }

  resize(w: number, h: number): void {
    if (w === this.fb.width && h === this.fb.height) return;
    this.flushDamage();
    this.fb.resize(w, h);
    this.emit('resize', { w, h });
    this.needKeyframe = true;
  }

  cursor(w: number, h: number, hx: number, hy: number, rgba: Uint8Array | null): void {
    if (!rgba || w <= 0 || h <= 0) {
      this.emit('cursor', { w: 0, h: 0, hx: 0, hy: 0 });
      return;
    }
    // Not through the worker: a cursor is not part of the frame, so there is nothing to fall back on.
    this.emit('cursor', { w, h, hx, hy, png: encodePng(w, h, rgba).toString('base64') });
  }

  /** An input or clipboard event on the screen timeline (also shown to live watchers). */
  input(data: Record<string, unknown>): void {
    this.emit('input', data);
  }

  /** Whether the next endUpdate() writes a keyframe. */
  keyframeDue(): boolean {
    return this.needKeyframe || this.clock.now() - this.lastKeyframe >= this.interval
      || this.linesSinceKey >= this.everyLines || this.bytesSinceKey >= this.everyBytes;
  }

  /** After a complete update: a keyframe when due, else the changed rectangles as PNGs. */
  endUpdate(): void {
    if (this.closed) return;
    if (this.keyframeDue()) {
      this.damage = [];
      this.keyframe();
      return;
    }
    this.flushDamage();
  }

  keyframe(): void {
    const { width: w, height: h } = this.fb;
    this.emitImage('keyframe', { w, h }, 0, 0, w, h, this.fb.data.slice());
    this.lastKeyframe = this.clock.now();
    this.linesSinceKey = 0;
    this.bytesSinceKey = 0;
    this.needKeyframe = false;
  }

  private flushDamage(): void {
    const list = mergeDamage(this.damage);
    this.damage = [];
    if (this.needKeyframe) return;
    for (const d of list) this.emitImage('rect', { x: d.x, y: d.y, w: d.w, h: d.h }, d.x, d.y, d.w, d.h, this.fb.getRect(d.x, d.y, d.w, d.h));
  }

  /** Write a final keyframe (the frame at the end) and stop; everything queued is written now, in order. */
  close(): void {
    if (this.closed) return;
    this.closing = true;
    for (const l of this.queue.splice(0)) {
      if (l.img && !l.img.job.done) pngWorker.waitFor(l.img.job);
      this.writeLine(l);
    }
    const { width: w, height: h } = this.fb;
    this.write('keyframe', { w, h, png: encodePng(w, h, this.fb.data).toString('base64') });
    this.closed = true;
    for (const cb of this.readyWaiters.splice(0)) cb();
  }
}

/** Drop rectangles fully covered by a later one, and collapse many small ones into their bounding box. */
function mergeDamage(list: Damage[]): Damage[] {
  if (list.length <= 1) return list;
  const kept: Damage[] = [];
  for (let i = 0; i < list.length; i++) {
    const a = list[i]!;
    let covered = false;
    for (let j = i + 1; j < list.length && !covered; j++) {
      const b = list[j]!;
      covered = b.x <= a.x && b.y <= a.y && b.x + b.w >= a.x + a.w && b.y + b.h >= a.y + a.h;
    }
    if (!covered) kept.push(a);
  }
  if (kept.length <= 64) return kept;
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const d of kept) {
    x0 = Math.min(x0, d.x); y0 = Math.min(y0, d.y);
    x1 = Math.max(x1, d.x + d.w); y1 = Math.max(y1, d.y + d.h);
  }
  return [{ x: x0, y: y0, w: x1 - x0, h: y1 - y0 }];
}
