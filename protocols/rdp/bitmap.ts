/**
 * Bitmap updates (TS_UPDATE_BITMAP_DATA) and their pixel encodings: uncompressed (bottom-up,
 * rows padded to 4 bytes), interleaved RLE (MS-RDPBCGR 2.2.9.1.1.3.1.2.4, 15/16/24 bpp) and
 * planar (MS-RDPEGDI 2.2.2.5.1, 32 bpp, without colour loss / chroma subsampling). Output is RGBA,
 * top-down. Every read is bounds-checked; undecodable input returns null or throws
 * RdpProtocolError, never writes out of range.
 *
 * Allocation follows the data: before any buffer is sized from a rectangle's width and height,
 * the bytes that arrived must be able to cover it (RLE_PIXELS_PER_BYTE, PLANAR_PIXELS_PER_BYTE),
 * so a 28-byte PDU claiming a 4096x4096 picture costs nothing. Buffers come from a BitmapScratch
 * the recorder reuses for the whole session.
 */
import { RdpProtocolError, need } from './errors.js';

export const BITMAP_COMPRESSION = 0x0001;
export const NO_BITMAP_COMPRESSION_HDR = 0x0400;

export interface BitmapRect {
  left: number; top: number; right: number; bottom: number;
  width: number; height: number; bpp: number; flags: number;
  data: Buffer;
}

const MAX_RECT_PIXELS = 4096 * 4096;
/** Most pixels one byte of interleaved RLE can stand for (a 3-byte MEGA_MEGA order runs 65535). */
export const RLE_PIXELS_PER_BYTE = 21845;
/** Most pixels one planar RLE control byte covers (a run of 47). */
export const PLANAR_PIXELS_PER_BYTE = 47;

/** Reusable decode buffers (grown on demand, never shrunk): one per session. */
export class BitmapScratch {
  private u8: Uint8Array[] = [];
  private u32 = new Uint32Array(0);

  /** n bytes in slot k (0: RGBA output, 1..4: planar planes); contents are stale. */
  bytes(k: number, n: number): Uint8Array {
    if ((this.u8[k]?.length ?? -1) < n) this.u8[k] = new Uint8Array(n);
    return this.u8[k]!.subarray(0, n);
  }

  /** n 32-bit pixel values, zeroed. */
  pixels(n: number): Uint32Array {
    if (this.u32.length < n) this.u32 = new Uint32Array(n);
    const v = this.u32.subarray(0, n);
    v.fill(0);
    return v;
  }
}

/** Fresh buffers each call (tests and one-off decodes). */
const fresh = { bytes: (_k: number, n: number) => new Uint8Array(n), pixels: (n: number) => new Uint32Array(n) };
type Scratch = Pick<BitmapScratch, 'bytes' | 'pixels'>;

/** The rectangles of a bitmap update (body starts with updateType = 1). */
export function parseBitmapUpdate(p: Buffer): BitmapRect[] {
  need(p, 0, 4, 'bitmap update');
  const n = p.readUInt16LE(2);
  let off = 4;
  const out: BitmapRect[] = [];
  for (let i = 0; i < n; i++) {
    need(p, off, 18, 'bitmap data header');
    const r = {
      left: p.readUInt16LE(off), top: p.readUInt16LE(off + 2), right: p.readUInt16LE(off + 4), bottom: p.readUInt16LE(off + 6),
      width: p.readUInt16LE(off + 8), height: p.readUInt16LE(off + 10), bpp: p.readUInt16LE(off + 12), flags: p.readUInt16LE(off + 14),
    };
    let len = p.readUInt16LE(off + 16);
    off += 18;
    if ((r.flags & BITMAP_COMPRESSION) && !(r.flags & NO_BITMAP_COMPRESSION_HDR)) {
      need(p, off, 8, 'bitmap compression header');
      if (len < 8) throw new RdpProtocolError('bitmap length shorter than its compression header');
      off += 8;
      len -= 8;
    }
    need(p, off, len, 'bitmap data');
    out.push({ ...r, data: p.subarray(off, off + len) });
    off += len;
  }
  return out;
}

function bytesPerPixel(bpp: number): number {
  switch (bpp) {
    case 15: case 16: return 2;
    case 24: return 3;
    case 32: return 4;
    default: return 0;
  }
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const luts: Record<number, Uint32Array> = {};

/**
 * Converts pixel values to RGBA a 32-bit word at a time (15/16 bpp through a 64K-entry table),
 * which keeps a full-desktop bitmap to a few milliseconds; big-endian hosts take putRgba.
 */
function rgbaWords(out: Uint8Array, bpp: number): ((i: number, v: number) => void) | null {
  if (!LITTLE_ENDIAN || out.byteOffset % 4) return null;
  const o32 = new Uint32Array(out.buffer, out.byteOffset, out.length >> 2);
  if (bpp === 15 || bpp === 16) {
    let t = luts[bpp];
    if (!t) {
      t = luts[bpp] = new Uint32Array(65536);
      const one = new Uint8Array(t.buffer);
      for (let v = 0; v < 65536; v++) putRgba(one, v * 4, v, bpp);
    }
    const lut = t;
    return (i, v) => { o32[i] = lut[v & 0xffff]!; };
  }
  return (i, v) => { o32[i] = (((v >> 16) & 0xff) | (v & 0xff00) | ((v & 0xff) << 16) | 0xff000000) >>> 0; };
}

/** A pixel value (as read little-endian) to RGBA at out[o]. */
function putRgba(out: Uint8Array, o: number, v: number, bpp: number): void {
  if (bpp === 16) {
    const r = (v >> 11) & 0x1f, g = (v >> 5) & 0x3f, b = v & 0x1f;
    out[o] = (r << 3) | (r >> 2); out[o + 1] = (g << 2) | (g >> 4); out[o + 2] = (b << 3) | (b >> 2);
  } else if (bpp === 15) {
    const r = (v >> 10) & 0x1f, g = (v >> 5) & 0x1f, b = v & 0x1f;
    out[o] = (r << 3) | (r >> 2); out[o + 1] = (g << 3) | (g >> 2); out[o + 2] = (b << 3) | (b >> 2);
  } else {
    out[o] = (v >> 16) & 0xff; out[o + 1] = (v >> 8) & 0xff; out[o + 2] = v & 0xff;
  }
  out[o + 3] = 255;
}

/**
 * Decode one rectangle to width*height RGBA (top-down); null when the encoding is not supported.
 * With a scratch, the result lives in it (valid until its next use).
 */
export function decodeBitmap(r: BitmapRect, scratch: Scratch = fresh): Uint8Array | null {
  if (r.width === 0 || r.height === 0 || r.width * r.height > MAX_RECT_PIXELS) return null;
  const bpp = bytesPerPixel(r.bpp);
  if (!bpp) return null;
  if (!(r.flags & BITMAP_COMPRESSION)) return decodeRaw(r.data, r.width, r.height, r.bpp, scratch);
  if (r.bpp === 32) return decodePlanar(r.data, r.width, r.height, scratch);
  return decodeInterleaved(r.data, r.width, r.height, r.bpp, scratch);
}

export function decodeRaw(d: Buffer, w: number, h: number, bpp: number, scratch: Scratch = fresh): Uint8Array {
  const bytes = bytesPerPixel(bpp);
  const stride = (w * bytes + 3) & ~3;
  need(d, 0, stride * h, 'uncompressed bitmap');
  const out = scratch.bytes(0, w * h * 4);
  const depth = bpp === 32 ? 24 : bpp;
  const put = rgbaWords(out, depth) ?? ((i: number, v: number) => putRgba(out, i * 4, v, depth));
  for (let y = 0; y < h; y++) {
    const src = (h - 1 - y) * stride;
    for (let x = 0; x < w; x++) {
      const s = src + x * bytes;
      put(y * w + x, bytes === 2 ? d[s]! | (d[s + 1]! << 8) : d[s]! | (d[s + 1]! << 8) | (d[s + 2]! << 16));
    }
  }
  return out;
}

/** Interleaved RLE: decodes to pixel values bottom-up, then flips to RGBA. */
export function decodeInterleaved(src: Buffer, w: number, h: number, bpp: number, scratch: Scratch = fresh): Uint8Array {
  const bytes = bytesPerPixel(bpp);
  const total = w * h;
  if (total > src.length * RLE_PIXELS_PER_BYTE) throw new RdpProtocolError(`RLE data of ${src.length} bytes cannot cover ${w}x${h}`);
  const px = scratch.pixels(total);
  const white = bpp === 15 ? 0x7fff : bpp === 16 ? 0xffff : 0xffffff;
  let fg = white;
  let i = 0; // source offset
  let o = 0; // destination pixel
  let insertFg = false;
  let firstLine = true;
  const readPixel = (): number => {
    need(src, i, bytes, 'RLE pixel');
    const v = bytes === 2 ? src.readUInt16LE(i) : src[i]! | (src[i + 1]! << 8) | (src[i + 2]! << 16);
    i += bytes;
    return v;
  };
  const byte = (): number => { need(src, i, 1, 'RLE data'); return src[i++]!; };
  const room = (n: number) => { if (o + n > total) throw new RdpProtocolError('RLE run overflows the bitmap'); };
  const above = () => (firstLine ? 0 : px[o - w]!);
  const fgbg = (mask: number, n: number) => {
    for (let bit = 0; bit < n; bit++) {
      const set = (mask >> bit) & 1;
      px[o] = firstLine ? (set ? fg : 0) : (set ? px[o - w]! ^ fg : px[o - w]!);
      o++;
    }
  };
  while (i < src.length && o < total) {
    if (firstLine && o >= w) { firstLine = false; insertFg = false; }
    const hdr = src[i++]!;
    let code: number;
    if ((hdr & 0xc0) !== 0xc0) code = hdr >> 5;
    else if ((hdr & 0xf0) !== 0xf0) code = hdr >> 4;
    else code = hdr;
    let run = 0;
    switch (code) {
      case 0x0: case 0x1: case 0x3: case 0x4: run = hdr & 0x1f; if (!run) run = byte() + 32; break;
      case 0x2: run = hdr & 0x1f; run = run ? run * 8 : byte() + 1; break;
      case 0xc: case 0xe: run = hdr & 0x0f; if (!run) run = byte() + 16; break;
      case 0xd: run = hdr & 0x0f; run = run ? run * 8 : byte() + 1; break;
      case 0xf0: case 0xf1: case 0xf2: case 0xf3: case 0xf4: case 0xf6: case 0xf7: case 0xf8:
        need(src, i, 2, 'RLE mega run'); run = src.readUInt16LE(i); i += 2; break;
      case 0xf9: case 0xfa: run = 8; break;
      case 0xfd: case 0xfe: run = 1; break;
      default: throw new RdpProtocolError(`unknown RLE order 0x${hdr.toString(16)}`);
    }
    if (code === 0x0 || code === 0xf0) {
      room(run);
      if (insertFg && run > 0) { px[o] = above() ^ fg; o++; run--; }
      while (run-- > 0) { px[o] = above(); o++; }
      insertFg = true;
      continue;
    }
    insertFg = false;
    switch (code) {
      case 0xc: case 0xf6: case 0x1: case 0xf1:
        if (code === 0xc || code === 0xf6) fg = readPixel();
        room(run);
        while (run-- > 0) { px[o] = firstLine ? fg : px[o - w]! ^ fg; o++; }
        break;
      case 0xe: case 0xf8: {
        const a = readPixel(); const b = readPixel();
        room(run * 2);
        while (run-- > 0) { px[o++] = a; px[o++] = b; }
        break;
      }
      case 0x3: case 0xf3: {
        const c = readPixel();
        room(run);
        px.fill(c, o, o + run); o += run;
        break;
      }
      case 0xd: case 0xf7: case 0x2: case 0xf2:
        if (code === 0xd || code === 0xf7) fg = readPixel();
        room(run);
        while (run > 0) { const n = Math.min(8, run); fgbg(byte(), n); run -= n; }
        break;
      case 0x4: case 0xf4:
        room(run);
        while (run-- > 0) px[o++] = readPixel();
        break;
      case 0xf9: room(8); fgbg(0x03, 8); break;
      case 0xfa: room(8); fgbg(0x05, 8); break;
      case 0xfd: room(1); px[o++] = white; break;
      case 0xfe: room(1); px[o++] = 0; break;
    }
  }
  const out = scratch.bytes(0, total * 4);
  const put = rgbaWords(out, bpp) ?? ((i: number, v: number) => putRgba(out, i * 4, v, bpp));
  for (let y = 0; y < h; y++) {
    const srow = (h - 1 - y) * w;
    for (let x = 0; x < w; x++) put(y * w + x, px[srow + x]!);
  }
  return out;
}

/** One planar plane (RLE or raw) into plane[] (w*h bytes, in stream row order); returns bytes used. */
function planarPlane(src: Buffer, off: number, w: number, h: number, rle: boolean, plane: Uint8Array): number {
  if (!rle) {
    need(src, off, w * h, 'planar plane');
    plane.set(src.subarray(off, off + w * h));
    return w * h;
  }
  let i = off;
  for (let y = 0; y < h; y++) {
    let x = 0;
    let last = 0;
    const row = y * w;
    while (x < w) {
      need(src, i, 1, 'planar control byte');
      const ctl = src[i++]!;
      let runLen = ctl & 0x0f;
      let raw = ctl >> 4;
      if (runLen === 1) { runLen = raw + 16; raw = 0; } else if (runLen === 2) { runLen = raw + 32; raw = 0; }
      if (x + raw + runLen > w) throw new RdpProtocolError('planar run overflows the scanline');
      need(src, i, raw, 'planar raw bytes');
      for (let k = 0; k < raw; k++) {
        const v = src[i++]!;
        if (y === 0) { last = v; plane[row + x] = v; } else {
          last = v & 1 ? -((v >> 1) + 1) : v >> 1;
          plane[row + x] = (plane[row - w + x]! + last) & 0xff;
        }
        x++;
      }
      for (let k = 0; k < runLen; k++) {
        plane[row + x] = y === 0 ? last : (plane[row - w + x]! + last) & 0xff;
        x++;
      }
    }
  }
  return i - off;
}

export function decodePlanar(src: Buffer, w: number, h: number, scratch: Scratch = fresh): Uint8Array | null {
  need(src, 0, 1, 'planar header');
  const hdr = src[0]!;
  const cll = hdr & 0x7;
  const cs = (hdr & 0x8) !== 0;
  const rle = (hdr & 0x10) !== 0;
  const noAlpha = (hdr & 0x20) !== 0;
  if (cll || cs) return null;
  const n = noAlpha ? 3 : 4;
  // Each plane needs w*h raw bytes, or at least one control byte per 47 pixels of every row.
  const least = 1 + n * h * (rle ? Math.ceil(w / PLANAR_PIXELS_PER_BYTE) : w);
  if (src.length < least) throw new RdpProtocolError(`planar data of ${src.length} bytes cannot cover ${w}x${h}`);
  let off = 1;
  const planes: Uint8Array[] = [];
  for (let k = 0; k < n; k++) {
    const p = scratch.bytes(1 + k, w * h);
    off += planarPlane(src, off, w, h, rle, p);
    planes.push(p);
  }
  const [r, g, b] = noAlpha ? planes : planes.slice(1);
  const out = scratch.bytes(0, w * h * 4);
  for (let y = 0; y < h; y++) {
    const srow = (h - 1 - y) * w;
    for (let x = 0; x < w; x++) {
      const o = (y * w + x) * 4;
      out[o] = r![srow + x]!; out[o + 1] = g![srow + x]!; out[o + 2] = b![srow + x]!; out[o + 3] = 255;
    }
  }
  return out;
}
