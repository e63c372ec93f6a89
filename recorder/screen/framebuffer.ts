/**
 * A protocol-neutral framebuffer model: RGBA pixels (alpha always 255) that desktop protocols
 * update with "put a rectangle of pixels", "fill", "copy a rectangle" and "resize". Every
 * operation is clipped to the frame; out-of-range input never throws or writes outside.
 */

export const MAX_DIMENSION = 16384;
/** Largest frame the model accepts (width*height), about 64 MiB of RGBA. */
export const MAX_PIXELS = 16_777_216;

export function validSize(width: number, height: number): boolean {
  return Number.isInteger(width) && Number.isInteger(height) && width > 0 && height > 0
    && width <= MAX_DIMENSION && height <= MAX_DIMENSION && width * height <= MAX_PIXELS;
}

/** Whether this machine stores a Uint32 with its lowest byte first (fixed for the process). */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([0x01020304]).buffer)[0] === 4;

export class Framebuffer {
  width: number;
  height: number;
  data: Uint8Array;
  /** data as 32-bit pixels, made on first use and again after a resize. */
  private words: Uint32Array | null = null;

  constructor(width: number, height: number) {
    if (!validSize(width, height)) throw new RangeError(`framebuffer size ${width}x${height} is out of range`);
    this.width = width;
    this.height = height;
    this.data = new Uint8Array(width * height * 4);
    for (let i = 3; i < this.data.length; i += 4) this.data[i] = 255;
  }

  /** Change size; the overlapping top-left part is kept, the rest is black. */
  resize(width: number, height: number): void {
    if (!validSize(width, height)) throw new RangeError(`framebuffer size ${width}x${height} is out of range`);
    const old = this;
    const next = new Framebuffer(width, height);
    const w = Math.min(width, old.width);
    const h = Math.min(height, old.height);
    for (let y = 0; y < h; y++) {
      next.data.set(old.data.subarray(y * old.width * 4, (y * old.width + w) * 4), y * width * 4);
    }
    this.width = width;
    this.height = height;
    this.data = next.data;
    this.words = null;
  }

  /** Intersection of a rectangle with the frame, or null. */
  clip(x: number, y: number, w: number, h: number): { x: number; y: number; w: number; h: number } | null {
    const x0 = Math.max(0, x);
    const y0 = Math.max(0, y);
    const x1 = Math.min(this.width, x + w);
    const y1 = Math.min(this.height, y + h);
    if (x1 <= x0 || y1 <= y0) return null;
    return { x: x0, y: y0, w: x1 - x0, h: y1 - y0 };
  }

  /** Write w*h RGBA pixels (row-major, 4 bytes each) at x,y. Returns whether any pixel changed. */
  putRect(x: number, y: number, w: number, h: number, rgba: Uint8Array): boolean {
    if (rgba.length < w * h * 4) throw new RangeError('pixel data shorter than the rectangle');
    const c = this.clip(x, y, w, h);
    if (!c) return false;
    let changed = false;
    const a = Buffer.from(this.data.buffer, this.data.byteOffset, this.data.length);
    const b = Buffer.from(rgba.buffer, rgba.byteOffset, rgba.length);
    for (let row = 0; row < c.h; row++) {
      const srcRow = c.y - y + row;
      const src = (srcRow * w + (c.x - x)) * 4;
      const dst = ((c.y + row) * this.width + c.x) * 4;
      if (!changed && a.compare(b, src, src + c.w * 4, dst, dst + c.w * 4) === 0) continue;
      changed = true;
      this.data.set(rgba.subarray(src, src + c.w * 4), dst);
    }
    return changed;
  }

  /** Fill a rectangle with one colour. Returns whether any pixel changed. */
  fillRect(x: number, y: number, w: number, h: number, r: number, g: number, b: number): boolean {
    const c = this.clip(x, y, w, h);
    if (!c) return false;
    const px = (r & 255) | ((g & 255) << 8) | ((b & 255) << 16) | (255 << 24);
    if (!this.words || this.words.buffer !== this.data.buffer) this.words = new Uint32Array(this.data.buffer, this.data.byteOffset, this.width * this.height);
    const view = this.words;
    const v = LITTLE_ENDIAN ? px >>> 0 : (((r & 255) << 24) | ((g & 255) << 16) | ((b & 255) << 8) | 255) >>> 0;
    let changed = false;
    for (let row = 0; row < c.h; row++) {
      const start = (c.y + row) * this.width + c.x;
      if (!changed) {
        for (let i = start; i < start + c.w; i++) if (view[i] !== v) { changed = true; break; }
        if (!changed) continue;
      }
      view.fill(v, start, start + c.w);
    }
    return changed;
  }

  /** Copy the w*h rectangle at sx,sy to x,y (overlap-safe). */
  copyRect(sx: number, sy: number, x: number, y: number, w: number, h: number): void {
    const src = this.clip(sx, sy, w, h);
    if (!src) return;
    const dx = x + (src.x - sx);
    const dy = y + (src.y - sy);
    const dst = this.clip(dx, dy, src.w, src.h);
    if (!dst) return;
    const ox = dst.x - dx;
    const oy = dst.y - dy;
    const tmp = this.getRect(src.x + ox, src.y + oy, dst.w, dst.h);
    this.putRect(dst.x, dst.y, dst.w, dst.h, tmp);
  }

  /** A copy of a rectangle's RGBA pixels (clipped rectangles must be passed clipped). */
  getRect(x: number, y: number, w: number, h: number): Uint8Array {
    const out = new Uint8Array(w * h * 4);
    for (let row = 0; row < h; row++) {
      const start = ((y + row) * this.width + x) * 4;
      out.set(this.data.subarray(start, start + w * 4), row * w * 4);
    }
    return out;
  }
}
