/**
 * RFB server-to-client messages (RFC 6143 §7.6): a pure, incremental parser that finds where each
 * message ends (measure) and a decoder that applies FramebufferUpdates to a screen model
 * (Raw, CopyRect, Hextile, ZRLE, DesktopSize and Cursor pseudo-encodings). Anything else —
 * unknown message types or encodings, rectangles outside the frame, absurd sizes — is a
 * ProtocolError, which the relay turns into a clean disconnect.
 */
import { Inflate } from 'pako';
import { ENC, MAX_CUT_TEXT } from './client-messages.js';
import { PixelDecoder, type PixelFormat } from './pixel.js';
import { ProtocolError } from './reader.js';

export const MAX_ZRLE_BYTES = 64 << 20;
export const MAX_CURSOR = 1024;

/** What a decoded update does to the screen (implemented by recorder/screen's ScreenWriter). */
export interface ScreenSink {
  /** rgba is only valid during the call (the decoder reuses it): copy what you keep. */
  putRect(x: number, y: number, w: number, h: number, rgba: Uint8Array): void;
  fillRect(x: number, y: number, w: number, h: number, r: number, g: number, b: number): void;
  copyRect(sx: number, sy: number, x: number, y: number, w: number, h: number): void;
  resize(w: number, h: number): void;
  cursor(w: number, h: number, hx: number, hy: number, rgba: Uint8Array | null): void;
  endUpdate(): void;
}

export type ServerMessage =
  | { type: 'FramebufferUpdate'; rects: number }
  | { type: 'SetColourMapEntries'; first: number; count: number }
  | { type: 'Bell' }
  | { type: 'ServerCutText'; text: Buffer };

class NeedMore extends Error {
  constructor(readonly need: number) { super('need more'); }
}

/** Bounds-checked cursor over a buffer; running past the end throws NeedMore(total needed). */
class Cur {
  constructor(readonly b: Buffer, public p: number) {}
  need(n: number): void { if (this.p + n > this.b.length) throw new NeedMore(this.p + n); }
  u8(): number { this.need(1); return this.b[this.p++]!; }
  u16(): number { this.need(2); const v = this.b.readUInt16BE(this.p); this.p += 2; return v; }
  u32(): number { this.need(4); const v = this.b.readUInt32BE(this.p); this.p += 4; return v; }
  s32(): number { this.need(4); const v = this.b.readInt32BE(this.p); this.p += 4; return v; }
  skip(n: number): void { this.need(n); this.p += n; }
}

/** The state the server stream depends on: frame size and the client's pixel format. */
export class ServerStreamState {
  width: number;
  height: number;
  pf: PixelFormat;
  colourMap = new Uint8Array(256 * 3);
  private dec: PixelDecoder | null = null;
  private zrle: Inflate | null = null;

  constructor(width: number, height: number, pf: PixelFormat) {
    this.width = width; this.height = height; this.pf = pf;
  }

  setPixelFormat(pf: PixelFormat): void {
    this.pf = pf;
    this.dec = null;
  }

  get decoder(): PixelDecoder {
    return (this.dec ??= new PixelDecoder(this.pf, this.colourMap));
  }

  private scratchBuf = new Uint8Array(0);
  /**
   * A reused RGBA buffer of n bytes for one rectangle or tile: sinks copy the pixels they are given
   * (ScreenSink.putRect), so decoding a full-screen update does not allocate (and collect) megabytes.
   */
  scratch(n: number): Uint8Array {
    if (this.scratchBuf.length < n) this.scratchBuf = new Uint8Array(Math.max(n, this.scratchBuf.length * 2));
    return this.scratchBuf.subarray(0, n);
  }

  /** ZRLE's zlib stream lives for the whole connection. */
  inflate(data: Buffer): Uint8Array {
    this.zrle ??= new Inflate();
    const z = this.zrle;
    const chunks: Uint8Array[] = [];
    z.onData = (c: Uint8Array) => { chunks.push(c); };
    if (!z.push(data, 2 /* Z_SYNC_FLUSH */) && z.err) throw new ProtocolError(`ZRLE data is corrupt: ${z.msg}`);
    if (z.err) throw new ProtocolError(`ZRLE data is corrupt: ${z.msg}`);
    if (chunks.length === 1) return chunks[0]!;
    return Buffer.concat(chunks);
  }
}

/**
 * Length of the server message at buf[off], or null when incomplete (with `need`: the total
 * buffer length worth waiting for before measuring again).
 */
export function measureServerMessage(buf: Buffer, off: number, st: ServerStreamState): { length: number } | { length: null; need: number } {
  const c = new Cur(buf, off);
  try {
    walk(c, st, null);
    return { length: c.p - off };
  } catch (e) {
    if (e instanceof NeedMore) return { length: null, need: e.need };
    throw e;
  }
}

/** Decode one complete message (as measured) and apply it to the sink. */
export function decodeServerMessage(buf: Buffer, st: ServerStreamState, sink: ScreenSink | null): ServerMessage {
  const c = new Cur(buf, 0);
  try {
    return walk(c, st, sink ?? null);
  } catch (e) {
    if (e instanceof NeedMore) throw new ProtocolError('server message shorter than measured');
    throw e;
  }
}

function walk(c: Cur, st: ServerStreamState, sink: ScreenSink | null): ServerMessage {
  const type = c.u8();
  switch (type) {
    case 0: {
      c.skip(1);
      const n = c.u16();
      for (let i = 0; i < n; i++) rect(c, st, sink);
      if (sink) sink.endUpdate();
      return { type: 'FramebufferUpdate', rects: n };
    }
    case 1: {
      c.skip(1);
      const first = c.u16();
      const count = c.u16();
      if (first + count > 256) throw new ProtocolError(`SetColourMapEntries beyond 256 entries (${first}+${count})`);
      c.need(count * 6);
      if (sink) {
        for (let i = 0; i < count; i++) {
          for (let k = 0; k < 3; k++) st.colourMap[(first + i) * 3 + k] = c.b.readUInt16BE(c.p + i * 6 + k * 2) >> 8;
        }
      }
      c.skip(count * 6);
      return { type: 'SetColourMapEntries', first, count };
    }
    case 2:
      return { type: 'Bell' };
    case 3: {
      c.skip(3);
      const len = c.u32();
      if (len > MAX_CUT_TEXT) throw new ProtocolError(`ServerCutText of ${len} bytes is too long`);
      c.need(len);
      const text = sink ? Buffer.from(c.b.subarray(c.p, c.p + len)) : Buffer.alloc(0);
      c.skip(len);
      return { type: 'ServerCutText', text };
    }
    default:
      throw new ProtocolError(`unknown server message type ${type}`);
  }
}

function rect(c: Cur, st: ServerStreamState, sink: ScreenSink | null): void {
  const x = c.u16(), y = c.u16(), w = c.u16(), h = c.u16();
  const enc = c.s32();
  if (enc === ENC.DesktopSize) {
    if (w === 0 || h === 0) throw new ProtocolError(`DesktopSize to ${w}x${h}`);
    st.width = w; st.height = h;
    sink?.resize(w, h);
    return;
  }
  if (enc === ENC.Cursor) {
    if (w > MAX_CURSOR || h > MAX_CURSOR) throw new ProtocolError(`cursor of ${w}x${h} is too large`);
    const bpp = st.decoder.bytes;
    const pixels = w * h * bpp;
    const maskRow = (w + 7) >> 3;
    c.need(pixels + maskRow * h);
    if (sink) {
      if (w === 0 || h === 0) sink.cursor(0, 0, 0, 0, null);
      else {
        const out = new Uint8Array(w * h * 4);
        st.decoder.rgbaRun(c.b, c.p, w * h, out, 0);
        const mask = c.p + pixels;
        for (let yy = 0; yy < h; yy++) {
          for (let xx = 0; xx < w; xx++) {
            const bit = (c.b[mask + yy * maskRow + (xx >> 3)]! >> (7 - (xx & 7))) & 1;
            out[(yy * w + xx) * 4 + 3] = bit ? 255 : 0;
          }
        }
        sink.cursor(w, h, Math.min(x, w - 1), Math.min(y, h - 1), out);
      }
    }
    c.skip(pixels + maskRow * h);
    return;
  }
  if (x + w > st.width || y + h > st.height) {
    throw new ProtocolError(`rectangle ${w}x${h}+${x}+${y} is outside the ${st.width}x${st.height} framebuffer`);
  }
  switch (enc) {
    case ENC.Raw: {
      const len = w * h * st.decoder.bytes;
      c.need(len);
      if (sink && w && h) {
        const out = st.scratch(w * h * 4);
        st.decoder.rgbaRun(c.b, c.p, w * h, out, 0);
        sink.putRect(x, y, w, h, out);
      }
      c.skip(len);
      return;
    }
    case ENC.CopyRect: {
      const sx = c.u16(), sy = c.u16();
      if (sx + w > st.width || sy + h > st.height) throw new ProtocolError('CopyRect source outside the framebuffer');
      sink?.copyRect(sx, sy, x, y, w, h);
      return;
    }
    case ENC.Hextile:
      hextile(c, st, sink, x, y, w, h);
      return;
    case ENC.ZRLE: {
      const len = c.u32();
      if (len > MAX_ZRLE_BYTES) throw new ProtocolError(`ZRLE rectangle of ${len} bytes is too large`);
      c.need(len);
      if (sink && w && h) zrle(st.inflate(Buffer.from(c.b.subarray(c.p, c.p + len))), st, sink, x, y, w, h);
      c.skip(len);
      return;
    }
    default:
      throw new ProtocolError(`encoding ${enc} was not negotiated (the gateway allows Raw, CopyRect, Hextile, ZRLE)`);
  }
}

function hextile(c: Cur, st: ServerStreamState, sink: ScreenSink | null, rx: number, ry: number, rw: number, rh: number): void {
  const d = st.decoder;
  const bpp = d.bytes;
  let bg = 0;
  let fg = 0;
  const rgb = new Uint8Array(4);
  for (let ty = ry; ty < ry + rh; ty += 16) {
    const th = Math.min(16, ry + rh - ty);
    for (let tx = rx; tx < rx + rw; tx += 16) {
      const tw = Math.min(16, rx + rw - tx);
      const sub = c.u8();
      if (sub & 1) {
        const len = tw * th * bpp;
        c.need(len);
        if (sink) {
          const out = st.scratch(tw * th * 4);
          d.rgbaRun(c.b, c.p, tw * th, out, 0);
          sink.putRect(tx, ty, tw, th, out);
        }
        c.skip(len);
        continue;
      }
      if (sub & 2) { c.need(bpp); bg = d.value(c.b, c.p); c.skip(bpp); }
      if (sub & 4) { c.need(bpp); fg = d.value(c.b, c.p); c.skip(bpp); }
      if (sink) { d.rgba(bg, rgb, 0); sink.fillRect(tx, ty, tw, th, rgb[0]!, rgb[1]!, rgb[2]!); }
      if (sub & 8) {
        const n = c.u8();
        const coloured = (sub & 16) !== 0;
        const each = coloured ? bpp + 2 : 2;
        c.need(n * each);
        for (let i = 0; i < n; i++) {
          let colour = fg;
          if (coloured) { colour = d.value(c.b, c.p); c.p += bpp; }
          const xy = c.b[c.p++]!, wh = c.b[c.p++]!;
          if (sink) {
            const sx = xy >> 4, sy = xy & 15, sw = (wh >> 4) + 1, sh = (wh & 15) + 1;
            if (sx + sw > tw || sy + sh > th) throw new ProtocolError('hextile subrectangle outside its tile');
            d.rgba(colour, rgb, 0);
            sink.fillRect(tx + sx, ty + sy, sw, sh, rgb[0]!, rgb[1]!, rgb[2]!);
          }
        }
      }
    }
  }
}

function zrle(data: Uint8Array, st: ServerStreamState, sink: ScreenSink, rx: number, ry: number, rw: number, rh: number): void {
  const d = st.decoder;
  const cb = d.cbytes;
  let p = 0;
  const need = (n: number) => { if (p + n > data.length) throw new ProtocolError('ZRLE tile data is truncated'); };
  const palette = new Uint32Array(128);
  const rgb = new Uint8Array(4);
  for (let ty = ry; ty < ry + rh; ty += 64) {
    const th = Math.min(64, ry + rh - ty);
    for (let tx = rx; tx < rx + rw; tx += 64) {
      const tw = Math.min(64, rx + rw - tx);
      need(1);
      const sub = data[p++]!;
      const out = st.scratch(tw * th * 4);
      if (sub === 0) {
        need(tw * th * cb);
        for (let i = 0; i < tw * th; i++) { d.rgba(d.cvalue(data, p), out, i * 4); p += cb; }
      } else if (sub === 1) {
        need(cb);
        d.rgba(d.cvalue(data, p), rgb, 0);
        p += cb;
        sink.fillRect(tx, ty, tw, th, rgb[0]!, rgb[1]!, rgb[2]!);
        continue;
      } else if (sub >= 2 && sub <= 16) {
        need(sub * cb);
        for (let i = 0; i < sub; i++) { palette[i] = d.cvalue(data, p); p += cb; }
        const bits = sub === 2 ? 1 : sub <= 4 ? 2 : 4;
        const rowBytes = (tw * bits + 7) >> 3;
        need(rowBytes * th);
        for (let yy = 0; yy < th; yy++) {
          for (let xx = 0; xx < tw; xx++) {
            const bitPos = xx * bits;
            const byte = data[p + yy * rowBytes + (bitPos >> 3)]!;
            const idx = (byte >> (8 - bits - (bitPos & 7))) & ((1 << bits) - 1);
            if (idx >= sub) throw new ProtocolError('ZRLE palette index out of range');
            d.rgba(palette[idx]!, out, (yy * tw + xx) * 4);
          }
        }
        p += rowBytes * th;
      } else if (sub === 128 || sub >= 130) {
        let psize = 0;
        if (sub >= 130) {
          psize = sub - 128;
          need(psize * cb);
          for (let i = 0; i < psize; i++) { palette[i] = d.cvalue(data, p); p += cb; }
        }
        let i = 0;
        const total = tw * th;
        while (i < total) {
          let v: number;
          let run = 1;
          if (sub === 128) {
            need(cb);
            v = d.cvalue(data, p); p += cb;
            run = readRun();
          } else {
            need(1);
            const idx = data[p++]!;
            if ((idx & 127) >= psize) throw new ProtocolError('ZRLE palette index out of range');
            v = palette[idx & 127]!;
            if (idx & 128) run = readRun();
          }
          if (i + run > total) throw new ProtocolError('ZRLE run longer than its tile');
          d.rgba(v, rgb, 0);
          for (let k = 0; k < run; k++) out.set(rgb, (i + k) * 4);
          i += run;
        }
      } else {
        throw new ProtocolError(`ZRLE sub-encoding ${sub} is not defined`);
      }
      sink.putRect(tx, ty, tw, th, out);
    }
  }
  function readRun(): number {
    let run = 1;
    for (;;) {
      need(1);
      const b = data[p++]!;
      run += b;
      if (b !== 255) return run;
      if (run > 64 * 64) throw new ProtocolError('ZRLE run longer than a tile');
    }
  }
}

export function encodeServerCutText(text: Buffer): Buffer {
  const b = Buffer.alloc(8);
  b[0] = 3;
  b.writeUInt32BE(text.length, 4);
  return Buffer.concat([b, text]);
}
