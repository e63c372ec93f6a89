/** RFB pixel formats (RFC 6143 §7.4) and conversion of pixels to RGB. */
import { ProtocolError } from './reader.js';

/** Whether this machine stores a Uint32 with its lowest byte first. */
const HOST_LE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

export interface PixelFormat {
  bpp: number;
  depth: number;
  bigEndian: boolean;
  trueColour: boolean;
  redMax: number;
  greenMax: number;
  blueMax: number;
  redShift: number;
  greenShift: number;
  blueShift: number;
}

export function parsePixelFormat(b: Buffer, off = 0): PixelFormat {
  if (b.length < off + 16) throw new ProtocolError('pixel format: 16 bytes expected');
  const pf: PixelFormat = {
    bpp: b[off]!, depth: b[off + 1]!, bigEndian: b[off + 2]! !== 0, trueColour: b[off + 3]! !== 0,
    redMax: b.readUInt16BE(off + 4), greenMax: b.readUInt16BE(off + 6), blueMax: b.readUInt16BE(off + 8),
    redShift: b[off + 10]!, greenShift: b[off + 11]!, blueShift: b[off + 12]!,
  };
  checkPixelFormat(pf);
  return pf;
}

export function checkPixelFormat(pf: PixelFormat): void {
  if (![8, 16, 32].includes(pf.bpp)) throw new ProtocolError(`pixel format: ${pf.bpp} bits per pixel is not supported`);
  if (pf.depth < 1 || pf.depth > 32) throw new ProtocolError(`pixel format: depth ${pf.depth} is out of range`);
  if (pf.trueColour) {
    for (const s of [pf.redShift, pf.greenShift, pf.blueShift]) if (s > 31) throw new ProtocolError('pixel format: colour shift out of range');
    for (const m of [pf.redMax, pf.greenMax, pf.blueMax]) if (m === 0) throw new ProtocolError('pixel format: a colour maximum of 0');
  }
}

export function encodePixelFormat(pf: PixelFormat): Buffer {
  const b = Buffer.alloc(16);
  b[0] = pf.bpp; b[1] = pf.depth; b[2] = pf.bigEndian ? 1 : 0; b[3] = pf.trueColour ? 1 : 0;
  b.writeUInt16BE(pf.redMax, 4); b.writeUInt16BE(pf.greenMax, 6); b.writeUInt16BE(pf.blueMax, 8);
  b[10] = pf.redShift; b[11] = pf.greenShift; b[12] = pf.blueShift;
  return b;
}

/** Reads pixels and compressed pixels (ZRLE's CPIXEL) of one format and turns them into RGB. */
export class PixelDecoder {
  readonly bytes: number;
  /** Bytes of a CPIXEL (3 when a 32-bit true-colour pixel's colours fit in 3 bytes). */
  readonly cbytes: number;
  /** For 3-byte CPIXELs: where the 3 bytes go in the 4-byte pixel. */
  private readonly cshift: number;
  private readonly rs: number; private readonly gs: number; private readonly bs: number;
  private readonly rm: number; private readonly gm: number; private readonly bm: number;
  private readonly fast: boolean;

  constructor(readonly pf: PixelFormat, readonly colourMap: Uint8Array) {
    this.bytes = pf.bpp / 8;
    this.rs = pf.redShift; this.gs = pf.greenShift; this.bs = pf.blueShift;
    this.rm = pf.redMax || 1; this.gm = pf.greenMax || 1; this.bm = pf.blueMax || 1;
    this.fast = pf.trueColour && this.rm === 255 && this.gm === 255 && this.bm === 255;
    const mask = pf.trueColour ? ((pf.redMax << pf.redShift) | (pf.greenMax << pf.greenShift) | (pf.blueMax << pf.blueShift)) >>> 0 : 0xffffffff;
    if (pf.trueColour && pf.bpp === 32 && pf.depth <= 24 && (mask & 0xff000000) === 0) {
      this.cbytes = 3; this.cshift = 0;
    } else if (pf.trueColour && pf.bpp === 32 && pf.depth <= 24 && (mask & 0xff) === 0) {
      this.cbytes = 3; this.cshift = 8;
    } else {
      this.cbytes = this.bytes; this.cshift = 0;
    }
  }

  /** The pixel value at b[off] (bytes wide). */
  value(b: Uint8Array, off: number): number {
    switch (this.bytes) {
      case 1: return b[off]!;
      case 2: return this.pf.bigEndian ? (b[off]! << 8) | b[off + 1]! : b[off]! | (b[off + 1]! << 8);
      default: return this.pf.bigEndian
        ? ((b[off]! << 24) | (b[off + 1]! << 16) | (b[off + 2]! << 8) | b[off + 3]!) >>> 0
        : (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16) | (b[off + 3]! << 24)) >>> 0;
    }
  }

  /** The pixel value of a CPIXEL at b[off]. */
  cvalue(b: Uint8Array, off: number): number {
    if (this.cbytes !== 3) return this.value(b, off);
    const v = this.pf.bigEndian ? (b[off]! << 16) | (b[off + 1]! << 8) | b[off + 2]! : b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16);
    return (v << this.cshift) >>> 0;
  }

  /** Write a pixel value as RGBA at out[o]. */
  rgba(v: number, out: Uint8Array, o: number): void {
    if (this.fast) {
      out[o] = (v >>> this.rs) & 255; out[o + 1] = (v >>> this.gs) & 255; out[o + 2] = (v >>> this.bs) & 255;
    } else if (this.pf.trueColour) {
      out[o] = Math.round((((v >>> this.rs) & this.rm) * 255) / this.rm);
      out[o + 1] = Math.round((((v >>> this.gs) & this.gm) * 255) / this.gm);
      out[o + 2] = Math.round((((v >>> this.bs) & this.bm) * 255) / this.bm);
    } else {
      const i = (v & 255) * 3;
      out[o] = this.colourMap[i]!; out[o + 1] = this.colourMap[i + 1]!; out[o + 2] = this.colourMap[i + 2]!;
    }
    out[o + 3] = 255;
  }

  /** count pixels at b[off] into RGBA. */
  rgbaRun(b: Uint8Array, off: number, count: number, out: Uint8Array, o: number): void {
    const n = this.bytes;
    if (this.fast && n === 4 && this.rs % 8 === 0 && this.gs % 8 === 0 && this.bs % 8 === 0) {
      // 8-bit channels on byte boundaries (the usual 32-bit rgb888): copy bytes, no per-pixel calls.
      const be = this.pf.bigEndian;
      const ri = be ? 3 - this.rs / 8 : this.rs / 8;
      const gi = be ? 3 - this.gs / 8 : this.gs / 8;
      const bi = be ? 3 - this.bs / 8 : this.bs / 8;
      if (HOST_LE && (out.byteOffset + o) % 4 === 0 && count > 16) {
        // Copy the pixels as they are, then move the channels in place a 32-bit word at a time.
        out.set(b.subarray(off, off + count * 4), o);
        const w = new Uint32Array(out.buffer, out.byteOffset + o, count);
        const r8 = ri * 8, g8 = gi * 8, b8 = bi * 8;
        for (let i = 0; i < count; i++) {
          const v = w[i]!;
          w[i] = (((v >>> r8) & 255) | (((v >>> g8) & 255) << 8) | (((v >>> b8) & 255) << 16) | 0xff000000) >>> 0;
        }
        return;
      }
      for (let i = 0, p = off, q = o; i < count; i++, p += 4, q += 4) {
        out[q] = b[p + ri]!; out[q + 1] = b[p + gi]!; out[q + 2] = b[p + bi]!; out[q + 3] = 255;
      }
      return;
    }
    for (let i = 0; i < count; i++) this.rgba(this.value(b, off + i * n), out, o + i * 4);
  }
}
