/**
 * Replay of a screen recording (see writer.ts for the lines): a seek index over the keyframes,
 * and the frame at any time = the last keyframe at or before it + the lines after it.
 */
import { Framebuffer } from './framebuffer.js';
import { decodePng } from './png.js';

export interface ScreenLine { t: number; type: string; [k: string]: unknown }

export interface SeekEntry { t: number; line: number }

export class ScreenReplay {
  readonly lines: ScreenLine[];
  /** Keyframes in time order: where a seek starts. */
  readonly index: SeekEntry[];
  readonly duration: number;

  constructor(lines: Record<string, unknown>[]) {
    this.lines = lines.filter((l): l is ScreenLine => typeof l?.t === 'number' && typeof l?.type === 'string');
    this.index = [];
    this.lines.forEach((l, i) => { if (l.type === 'keyframe') this.index.push({ t: l.t, line: i }); });
    this.duration = this.lines.length ? this.lines[this.lines.length - 1]!.t : 0;
  }

  /** Events that are not pixels (input, clipboard...) in time order. */
  inputs(): ScreenLine[] {
    return this.lines.filter((l) => l.type === 'input');
  }

  /** The frame as it was at time t (seconds); null before the first keyframe. */
  frameAt(t: number = Infinity): Framebuffer | null {
    let start = -1;
    for (const e of this.index) {
      if (e.t <= t) start = e.line;
      else break;
    }
    if (start < 0) return null;
    let fb: Framebuffer | null = null;
    for (let i = start; i < this.lines.length; i++) {
      const l = this.lines[i]!;
      if (l.t > t) break;
      fb = applyLine(fb, l);
    }
    return fb;
  }
}

/** Apply one line to a frame (a keyframe replaces it). Malformed lines are ignored. */
export function applyLine(fb: Framebuffer | null, l: ScreenLine): Framebuffer | null {
  const n = (k: string) => (typeof l[k] === 'number' ? (l[k] as number) : NaN);
  switch (l.type) {
    case 'keyframe': {
      if (typeof l.png !== 'string') return fb;
      const img = decodePng(Buffer.from(l.png, 'base64'));
      const next = new Framebuffer(img.width, img.height);
      next.data.set(img.rgba.subarray(0, next.data.length));
      return next;
    }
    case 'rect': {
      if (!fb || typeof l.png !== 'string') return fb;
      const img = decodePng(Buffer.from(l.png, 'base64'));
      fb.putRect(n('x'), n('y'), img.width, img.height, img.rgba);
      return fb;
    }
    case 'copy':
      fb?.copyRect(n('sx'), n('sy'), n('x'), n('y'), n('w'), n('h'));
      return fb;
    case 'resize':
      if (fb && Number.isInteger(n('w')) && Number.isInteger(n('h'))) fb.resize(n('w'), n('h'));
      return fb;
    default:
      return fb;
  }
}
