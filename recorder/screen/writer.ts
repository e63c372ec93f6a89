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
 */
import type { Clock } from '../../policies/clock.js';
import type { ScreenRecorder } from '../types.js';
import { Framebuffer } from './framebuffer.js';
import { encodePng } from './png.js';

export interface ScreenWriterOptions {
  keyframeIntervalMs?: number;
  /** Lines since the last keyframe after which a new one is forced. */
  keyframeEveryLines?: number;
  /** PNG bytes since the last keyframe after which a new one is forced. */
  keyframeEveryBytes?: number;
}

interface Damage { x: number; y: number; w: number; h: number }

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

  constructor(private rec: ScreenRecorder, private clock: Clock, width: number, height: number, opts: ScreenWriterOptions = {}) {
    this.fb = new Framebuffer(width, height);
    this.interval = opts.keyframeIntervalMs ?? 10_000;
    this.everyLines = opts.keyframeEveryLines ?? 300;
    this.everyBytes = opts.keyframeEveryBytes ?? 4 * 1024 * 1024;
  }

  private emit(type: string, data: Record<string, unknown>, pngBytes = 0): void {
    if (this.closed) return;
    this.rec.write(type, data);
    this.linesSinceKey++;
    this.bytesSinceKey += pngBytes;
  }

  private addDamage(x: number, y: number, w: number, h: number): void {
    const c = this.fb.clip(x, y, w, h);
    if (c) this.damage.push(c);
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
    const png = encodePng(w, h, rgba).toString('base64');
    this.emit('cursor', { w, h, hx, hy, png }, png.length);
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
    const png = encodePng(this.fb.width, this.fb.height, this.fb.data).toString('base64');
    this.emit('keyframe', { w: this.fb.width, h: this.fb.height, png });
    this.lastKeyframe = this.clock.now();
    this.linesSinceKey = 0;
    this.bytesSinceKey = 0;
    this.needKeyframe = false;
  }

  private flushDamage(): void {
    const list = mergeDamage(this.damage);
    this.damage = [];
    if (this.needKeyframe) return;
    for (const d of list) {
      const png = encodePng(d.w, d.h, this.fb.getRect(d.x, d.y, d.w, d.h)).toString('base64');
      this.emit('rect', { x: d.x, y: d.y, w: d.w, h: d.h, png }, png.length);
    }
  }

  /** Write a final keyframe (the frame at the end) and stop. */
  close(): void {
    if (this.closed) return;
    this.keyframe();
    this.closed = true;
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
