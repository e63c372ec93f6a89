/**
 * RFB server-to-client messages (RFC 6143 §7.6): a resumable stream parser that validates every
 * piece before the relay forwards it and applies FramebufferUpdates to a screen model as the bytes
 * arrive (Raw, CopyRect, Hextile, ZRLE, DesktopSize and Cursor pseudo-encodings).
 *
 * Cost is bounded per piece, not per message: the parser keeps at most one unit (a message header,
 * a batch of Raw rows, one Hextile or ZRLE tile, a cursor, a cut text) plus what arrived after it,
 * so a huge rectangle streams through instead of being buffered, and work is linear in the bytes.
 * ZRLE inflation is bounded per rectangle by what its tiles can legitimately need; a
 * FramebufferUpdate may cover at most MAX_UPDATE_SCREENS screens. Anything else — unknown message
 * types or encodings, rectangles outside the frame, absurd sizes — is a ProtocolError; exceeding a
 * budget is a ResourceLimitError. The relay turns both into a clean disconnect.
 */
import { Inflate } from 'pako';
import { ResourceLimitError } from '../bounded.js';
import { ChunkQueue } from '../chunks.js';
import { validSize } from '../../recorder/screen/framebuffer.js';
import { ENC, MAX_CUT_TEXT } from './client-messages.js';
import { PixelDecoder, type PixelFormat } from './pixel.js';
import { ProtocolError } from './reader.js';

export const MAX_CURSOR = 1024;
/** A FramebufferUpdate's rectangles may cover at most this many screens (sum of their areas). */
export const MAX_UPDATE_SCREENS = 4;
/** Compressed ZRLE bytes pushed through zlib per step (bounds the output of one step to ~1 MiB). */
const INFLATE_SLICE = 1024;
/** Raw rows decoded per step. */
const RAW_STEP_BYTES = 256 * 1024;
/** Forwarded bytes are written in pieces of about this size (not one write per tile). */
const FORWARD_BATCH = 64 * 1024;

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

/** Where the parser's output goes. */
export interface ServerStreamOut {
  /** Bytes the parser accepted, in stream order (the relay forwards them to the viewer). */
  forward(b: Buffer): void;
  /**
   * A message ended (its bytes were forwarded before). ServerCutText is the exception: its bytes
   * are not forwarded but passed here as raw, for the relay to forward or drop (clipboard rules).
   */
  message(m: ServerMessage, raw: Buffer | null): void;
}

class NeedMore extends Error {
  constructor(readonly need: number) { super('need more'); }
}

/** Bounds-checked cursor over one unit's bytes; running past the end throws NeedMore(total needed). */
class Cur {
  constructor(readonly b: Uint8Array, public p: number) {}
  need(n: number): void { if (this.p + n > this.b.length) throw new NeedMore(this.p + n); }
  u8(): number { this.need(1); return this.b[this.p++]!; }
}

/** The state the server stream depends on: frame size, the client's pixel format, the ZRLE zlib stream. */
export class ServerStreamState {
  width: number;
  height: number;
  pf: PixelFormat;
  colourMap = new Uint8Array(256 * 3);
  private dec: PixelDecoder | null = null;
  private zrle: Inflate | null = null;

  constructor(width: number, height: number, pf: PixelFormat) {
    if (!validSize(width, height)) throw new ProtocolError(`framebuffer size ${width}x${height} is out of range`);
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
   * A reused RGBA buffer of n bytes for one rectangle piece or tile: sinks copy the pixels they are
   * given (ScreenSink.putRect), so decoding does not allocate (and collect) megabytes.
   */
  scratch(n: number): Uint8Array {
    if (this.scratchBuf.length < n) this.scratchBuf = new Uint8Array(Math.max(n, Math.min(this.scratchBuf.length * 2, RAW_STEP_BYTES * 4)));
    return this.scratchBuf.subarray(0, n);
  }

  /** Push compressed ZRLE bytes through the connection's zlib stream; inflated pieces go to out (valid during the call). */
  inflate(data: Uint8Array, out: (piece: Uint8Array) => void): void {
    const z = (this.zrle ??= new Inflate({ chunkSize: 16 * 1024 }));
    z.onData = out;
    z.push(data, 2 /* Z_SYNC_FLUSH */);
    if (z.err) throw new ProtocolError(`ZRLE data is corrupt: ${z.msg}`);
  }
}

/** Most bytes one ZRLE tile can take: subencoding, a 127-colour palette, and cpixel + run byte per pixel. */
export function zrleTileMax(tw: number, th: number, cb: number): number {
  return 1 + 127 * cb + tw * th * (cb + 1);
}

/** Most inflated bytes a w×h ZRLE rectangle can legitimately need. */
export function zrleRectMax(w: number, h: number, cb: number): number {
  if (!w || !h) return 0;
  return Math.ceil(w / 64) * Math.ceil(h / 64) * (1 + 127 * cb) + w * h * (cb + 1);
}

type Rect =
  | { k: 'raw'; x: number; y: number; w: number; h: number; row: number }
  | { k: 'hextile'; x: number; y: number; w: number; h: number; tx: number; ty: number; bg: number; fg: number }
  | {
    k: 'zrle'; x: number; y: number; w: number; h: number; tx: number; ty: number;
    /** Compressed bytes still to come, inflated bytes so far and the rectangle's budget for them. */
    left: number; produced: number; budget: number;
    /** Inflated bytes not yet decoded; the length at the last incomplete try and what it asked for. */
    zq: ChunkQueue; tried: number; need: number;
  };

/**
 * The server half of an RFB connection after ServerInit, as a resumable parser: push() what
 * arrives, run() parses and decodes what it can (while more() allows), forwarding accepted bytes.
 */
export class ServerStream {
  private q = new ChunkQueue();
  private fwd: Buffer[] = [];
  private fwdBytes = 0;
  /** Inside a FramebufferUpdate: rectangles left, their count, the area covered so far. */
  private rectsLeft = -1;
  private rectsTotal = 0;
  private area = 0;
  private rect: Rect | null = null;
  private dec: PixelDecoder;
  /** Bytes of input examined (peeked or taken), a measure of the parser's work. */
  examined = 0;

  /**
   * decode: false only frames the stream (ZRLE data is skipped, not inflated): for a client that
   * counts updates (the benchmark), never for the relay, which must check what it forwards.
   */
  constructor(readonly st: ServerStreamState, private sink: ScreenSink | null, private out: ServerStreamOut, private opts: { decode?: boolean } = {}) {
    this.dec = st.decoder;
  }

  push(b: Buffer): void { this.q.push(b); }

  /** Bytes waiting to be parsed (the ZRLE rectangle being decoded included). */
  get buffered(): number { return this.q.length + (this.rect?.k === 'zrle' ? this.rect.zq.length : 0); }

  /** Parse while more() is true; returns whether it stopped with input it could still parse. */
  run(more: () => boolean = () => true): boolean {
    try {
      for (;;) {
        if (!more()) return this.buffered > 0 || this.rectsLeft === 0;
        if (!this.step()) return false;
      }
    } finally {
      this.flush();
    }
  }

  private peek(n: number): Buffer { this.examined += n; return this.q.peek(n); }
  private take(n: number): Buffer { this.examined += n; return this.q.take(n); }

  private forward(b: Buffer): void {
    this.fwd.push(b);
    this.fwdBytes += b.length;
    if (this.fwdBytes >= FORWARD_BATCH) this.flush();
  }

  private flush(): void {
    if (!this.fwd.length) return;
    const b = this.fwd.length === 1 ? this.fwd[0]! : Buffer.concat(this.fwd, this.fwdBytes);
    this.fwd = [];
    this.fwdBytes = 0;
    this.out.forward(b);
  }

  private message(m: ServerMessage, raw: Buffer | null = null): void {
    this.flush();
    this.out.message(m, raw);
  }

  /** One unit of work; false when more input is needed first. */
  private step(): boolean {
    if (this.rectsLeft === 0) {
      // The end of an update (the recorder encodes what changed) is a step of its own.
      this.endUpdate();
      return true;
    }
    if (this.rect) {
      switch (this.rect.k) {
        case 'raw': return this.rawStep(this.rect);
        case 'hextile': return this.hextileStep(this.rect);
        case 'zrle': return this.zrleStep(this.rect);
      }
    }
    if (this.rectsLeft >= 0) return this.rectHeader();
    return this.messageStart();
  }

  private messageStart(): boolean {
    const q = this.q;
    if (q.length < 1) return false;
    const type = this.peek(1)[0]!;
    switch (type) {
      case 0: {
        if (q.length < 4) return false;
        const h = this.take(4);
        this.forward(h);
        this.dec = this.st.decoder;
        this.rectsTotal = h.readUInt16BE(2);
        this.rectsLeft = this.rectsTotal;
        this.area = 0;
        return true;
      }
      case 1: {
        if (q.length < 6) return false;
        const h = this.peek(6);
        const first = h.readUInt16BE(2);
        const count = h.readUInt16BE(4);
        if (first + count > 256) throw new ProtocolError(`SetColourMapEntries beyond 256 entries (${first}+${count})`);
        if (q.length < 6 + count * 6) return false;
        const raw = this.take(6 + count * 6);
        for (let i = 0; i < count; i++) {
          for (let k = 0; k < 3; k++) this.st.colourMap[(first + i) * 3 + k] = raw.readUInt16BE(6 + i * 6 + k * 2) >> 8;
        }
        this.forward(raw);
        this.message({ type: 'SetColourMapEntries', first, count });
        return true;
      }
      case 2:
        this.forward(this.take(1));
        this.message({ type: 'Bell' });
        return true;
      case 3: {
        if (q.length < 8) return false;
        const len = this.peek(8).readUInt32BE(4);
        if (len > MAX_CUT_TEXT) throw new ProtocolError(`ServerCutText of ${len} bytes is too long`);
        if (q.length < 8 + len) return false;
        const raw = Buffer.from(this.take(8 + len));
        this.message({ type: 'ServerCutText', text: raw.subarray(8) }, raw);
        return true;
      }
      default:
        throw new ProtocolError(`unknown server message type ${type}`);
    }
  }

  private endUpdate(): void {
    this.rectsLeft = -1;
    this.sink?.endUpdate();
    this.message({ type: 'FramebufferUpdate', rects: this.rectsTotal });
  }

  private rectDone(): void {
    this.rect = null;
    this.rectsLeft--;
  }

  private rectHeader(): boolean {
    const q = this.q;
    if (q.length < 12) return false;
    const hd = this.peek(12);
    const x = hd.readUInt16BE(0), y = hd.readUInt16BE(2), w = hd.readUInt16BE(4), h = hd.readUInt16BE(6);
    const enc = hd.readInt32BE(8);
    const st = this.st;
    const sink = this.sink;
    if (enc === ENC.DesktopSize) {
      if (!validSize(w, h)) throw new ProtocolError(`DesktopSize to ${w}x${h} is out of range`);
      this.forward(this.take(12));
      st.width = w; st.height = h;
      sink?.resize(w, h);
      this.rectDone();
      return true;
    }
    if (enc === ENC.Cursor) {
      if (w > MAX_CURSOR || h > MAX_CURSOR) throw new ProtocolError(`cursor of ${w}x${h} is too large`);
      const pixels = w * h * this.dec.bytes;
      const maskRow = (w + 7) >> 3;
      if (q.length < 12 + pixels + maskRow * h) return false;
      const raw = this.take(12 + pixels + maskRow * h);
      if (sink) {
        if (w === 0 || h === 0) sink.cursor(0, 0, 0, 0, null);
        else {
          const out = new Uint8Array(w * h * 4);
          this.dec.rgbaRun(raw, 12, w * h, out, 0);
          const mask = 12 + pixels;
          for (let yy = 0; yy < h; yy++) {
            for (let xx = 0; xx < w; xx++) {
              const bit = (raw[mask + yy * maskRow + (xx >> 3)]! >> (7 - (xx & 7))) & 1;
              out[(yy * w + xx) * 4 + 3] = bit ? 255 : 0;
            }
          }
          sink.cursor(w, h, Math.min(x, w - 1), Math.min(y, h - 1), out);
        }
      }
      this.forward(raw);
      this.rectDone();
      return true;
    }
    if (x + w > st.width || y + h > st.height) {
      throw new ProtocolError(`rectangle ${w}x${h}+${x}+${y} is outside the ${st.width}x${st.height} framebuffer`);
    }
    if (enc !== ENC.Raw && enc !== ENC.CopyRect && enc !== ENC.Hextile && enc !== ENC.ZRLE) {
      throw new ProtocolError(`encoding ${enc} was not negotiated (the gateway allows Raw, CopyRect, Hextile, ZRLE)`);
    }
    this.area += w * h;
    if (this.area > MAX_UPDATE_SCREENS * st.width * st.height) {
      throw new ResourceLimitError(`a FramebufferUpdate covers more than ${MAX_UPDATE_SCREENS} times the ${st.width}x${st.height} screen`);
    }
    switch (enc) {
      case ENC.Raw:
        this.forward(this.take(12));
        if (w && h) this.rect = { k: 'raw', x, y, w, h, row: 0 };
        else this.rectDone();
        return true;
      case ENC.CopyRect: {
        if (q.length < 16) return false;
        const raw = this.take(16);
        const sx = raw.readUInt16BE(12), sy = raw.readUInt16BE(14);
        if (sx + w > st.width || sy + h > st.height) throw new ProtocolError('CopyRect source outside the framebuffer');
        sink?.copyRect(sx, sy, x, y, w, h);
        this.forward(raw);
        this.rectDone();
        return true;
      }
      case ENC.Hextile:
        this.forward(this.take(12));
        if (w && h) this.rect = { k: 'hextile', x, y, w, h, tx: x, ty: y, bg: 0, fg: 0 };
        else this.rectDone();
        return true;
      default: { // ZRLE
        if (q.length < 16) return false;
        const raw = this.take(16);
        const len = raw.readUInt32BE(12);
        const budget = zrleRectMax(w, h, this.dec.cbytes);
        // zlib adds at most ~1/8 (fixed Huffman codes) over incompressible data, plus headers.
        if (len > budget + (budget >> 3) + 1024) throw new ResourceLimitError(`ZRLE rectangle ${w}x${h} with ${len} compressed bytes is larger than it can need`);
        this.forward(raw);
        this.rect = { k: 'zrle', x, y, w, h, tx: x, ty: y, left: len, produced: 0, budget, zq: new ChunkQueue(), tried: 0, need: 1 };
        if (len === 0 && !(w && h)) this.rectDone();
        return true;
      }
    }
  }

  private rawStep(r: Extract<Rect, { k: 'raw' }>): boolean {
    const rowBytes = r.w * this.dec.bytes;
    const rows = Math.min(r.h - r.row, Math.floor(this.q.length / rowBytes), Math.max(1, Math.floor(RAW_STEP_BYTES / rowBytes)));
    if (rows <= 0) return false;
    const data = this.take(rows * rowBytes);
    if (this.sink) {
      const out = this.st.scratch(r.w * rows * 4);
      this.dec.rgbaRun(data, 0, r.w * rows, out, 0);
      this.sink.putRect(r.x, r.y + r.row, r.w, rows, out);
    }
    this.forward(data);
    r.row += rows;
    if (r.row === r.h) this.rectDone();
    return true;
  }

  private hextileStep(r: Extract<Rect, { k: 'hextile' }>): boolean {
    const q = this.q;
    const bpp = this.dec.bytes;
    const tw = Math.min(16, r.x + r.w - r.tx);
    const th = Math.min(16, r.y + r.h - r.ty);
    if (q.length < 1) return false;
    const sub = this.peek(1)[0]!;
    let len: number;
    if (sub & 1) len = 1 + tw * th * bpp;
    else {
      len = 1 + (sub & 2 ? bpp : 0) + (sub & 4 ? bpp : 0) + (sub & 8 ? 1 : 0);
      if (q.length < len) return false;
      if (sub & 8) len += this.peek(len)[len - 1]! * (sub & 16 ? bpp + 2 : 2);
    }
    if (q.length < len) return false;
    const tile = this.take(len);
    this.hextileTile(r, tile, sub, tw, th);
    this.forward(tile);
    r.tx += 16;
    if (r.tx >= r.x + r.w) {
      r.tx = r.x;
      r.ty += 16;
      if (r.ty >= r.y + r.h) this.rectDone();
    }
    return true;
  }

  private hextileTile(r: Extract<Rect, { k: 'hextile' }>, b: Buffer, sub: number, tw: number, th: number): void {
    const d = this.dec;
    const bpp = d.bytes;
    const sink = this.sink;
    const rgb = RGB;
    if (sub & 1) {
      if (sink) {
        const out = this.st.scratch(tw * th * 4);
        d.rgbaRun(b, 1, tw * th, out, 0);
        sink.putRect(r.tx, r.ty, tw, th, out);
      }
      return;
    }
    let p = 1;
    if (sub & 2) { r.bg = d.value(b, p); p += bpp; }
    if (sub & 4) { r.fg = d.value(b, p); p += bpp; }
    if (sink) { d.rgba(r.bg, rgb, 0); sink.fillRect(r.tx, r.ty, tw, th, rgb[0]!, rgb[1]!, rgb[2]!); }
    if (!(sub & 8)) return;
    const n = b[p++]!;
    const coloured = (sub & 16) !== 0;
    for (let i = 0; i < n; i++) {
      let colour = r.fg;
      if (coloured) { colour = d.value(b, p); p += bpp; }
      const xy = b[p++]!, wh = b[p++]!;
      const sx = xy >> 4, sy = xy & 15, sw = (wh >> 4) + 1, sh = (wh & 15) + 1;
      if (sx + sw > tw || sy + sh > th) throw new ProtocolError('hextile subrectangle outside its tile');
      if (sink) {
        d.rgba(colour, rgb, 0);
        sink.fillRect(r.tx + sx, r.ty + sy, sw, sh, rgb[0]!, rgb[1]!, rgb[2]!);
      }
    }
  }

  private zrleStep(r: Extract<Rect, { k: 'zrle' }>): boolean {
    if (this.opts.decode === false) {
      if (r.left === 0) { this.rectDone(); return true; }
      if (this.q.length === 0) return false;
      const piece = this.take(Math.min(this.q.length, r.left));
      r.left -= piece.length;
      this.forward(piece);
      return true;
    }
    const tilesLeft = r.ty < r.y + r.h;
    if (tilesLeft) {
      const tw = Math.min(64, r.x + r.w - r.tx);
      const th = Math.min(64, r.y + r.h - r.ty);
      const max = zrleTileMax(tw, th, this.dec.cbytes);
      const avail = r.zq.length;
      const last = r.left === 0;
      if (last && avail === 0) throw new ProtocolError('ZRLE tile data is truncated');
      // Try a tile when it must be complete, or its data doubled since the last try (linear overall).
      if (avail > 0 && (last || avail >= max || avail >= Math.max(r.need, r.tried * 2))) {
        const n = Math.min(avail, max);
        this.examined += n;
        try {
          const used = zrleTile(r.zq.peek(n), tw, th, this.dec, this.st, this.sink, r.tx, r.ty);
          r.zq.skip(used);
          r.tried = 0;
          r.need = 1;
          r.tx += 64;
          if (r.tx >= r.x + r.w) { r.tx = r.x; r.ty += 64; }
          return true;
        } catch (e) {
          if (!(e instanceof NeedMore)) throw e;
          if (last || avail >= max) throw new ProtocolError('ZRLE tile data is truncated');
          r.tried = avail;
          r.need = e.need;
        }
      }
    } else if (r.left === 0) {
      this.rectDone();
      return true;
    }
    if (r.left === 0 || this.q.length === 0) return false;
    // More compressed bytes through zlib; output beyond the rectangle's budget ends the session.
    const slice = this.take(Math.min(this.q.length, r.left, INFLATE_SLICE));
    r.left -= slice.length;
    this.forward(slice);
    this.st.inflate(slice, (piece) => {
      r.produced += piece.length;
      if (r.produced > r.budget) {
        throw new ResourceLimitError(`ZRLE rectangle ${r.w}x${r.h} inflates to more than the ${r.budget} bytes it can need`);
      }
      // After the last tile, extra output is only counted; small pieces are copied so they do not pin zlib's 16 KiB chunks.
      if (r.ty < r.y + r.h) r.zq.push(piece.length < 4096 ? Buffer.from(piece) : Buffer.from(piece.buffer, piece.byteOffset, piece.length));
    });
    return true;
  }
}

const RGB = new Uint8Array(4);
const PALETTE = new Uint32Array(128);

/** Decode one ZRLE tile from data[0..]; returns its length. Throws NeedMore when data ends inside it. */
function zrleTile(data: Uint8Array, tw: number, th: number, d: PixelDecoder, st: ServerStreamState, sink: ScreenSink | null, tx: number, ty: number): number {
  const cb = d.cbytes;
  const c = new Cur(data, 0);
  const palette = PALETTE;
  const rgb = RGB;
  const sub = c.u8();
  const out = st.scratch(tw * th * 4);
  if (sub === 0) {
    c.need(tw * th * cb);
    for (let i = 0; i < tw * th; i++) { d.rgba(d.cvalue(data, c.p), out, i * 4); c.p += cb; }
  } else if (sub === 1) {
    c.need(cb);
    d.rgba(d.cvalue(data, c.p), rgb, 0);
    c.p += cb;
    sink?.fillRect(tx, ty, tw, th, rgb[0]!, rgb[1]!, rgb[2]!);
    return c.p;
  } else if (sub >= 2 && sub <= 16) {
    c.need(sub * cb);
    for (let i = 0; i < sub; i++) { palette[i] = d.cvalue(data, c.p); c.p += cb; }
    const bits = sub === 2 ? 1 : sub <= 4 ? 2 : 4;
    const rowBytes = (tw * bits + 7) >> 3;
    c.need(rowBytes * th);
    for (let yy = 0; yy < th; yy++) {
      for (let xx = 0; xx < tw; xx++) {
        const bitPos = xx * bits;
        const byte = data[c.p + yy * rowBytes + (bitPos >> 3)]!;
        const idx = (byte >> (8 - bits - (bitPos & 7))) & ((1 << bits) - 1);
        if (idx >= sub) throw new ProtocolError('ZRLE palette index out of range');
        d.rgba(palette[idx]!, out, (yy * tw + xx) * 4);
      }
    }
    c.p += rowBytes * th;
  } else if (sub === 128 || sub >= 130) {
    let psize = 0;
    if (sub >= 130) {
      psize = sub - 128;
      c.need(psize * cb);
      for (let i = 0; i < psize; i++) { palette[i] = d.cvalue(data, c.p); c.p += cb; }
    }
    let i = 0;
    const total = tw * th;
    while (i < total) {
      let v: number;
      let run = 1;
      if (sub === 128) {
        c.need(cb);
        v = d.cvalue(data, c.p); c.p += cb;
        run = readRun(c);
      } else {
        const idx = c.u8();
        if ((idx & 127) >= psize) throw new ProtocolError('ZRLE palette index out of range');
        v = palette[idx & 127]!;
        if (idx & 128) run = readRun(c);
      }
      if (i + run > total) throw new ProtocolError('ZRLE run longer than its tile');
      d.rgba(v, rgb, 0);
      for (let k = 0; k < run; k++) out.set(rgb, (i + k) * 4);
      i += run;
    }
  } else {
    throw new ProtocolError(`ZRLE sub-encoding ${sub} is not defined`);
  }
  sink?.putRect(tx, ty, tw, th, out);
  return c.p;
}

function readRun(c: Cur): number {
  let run = 1;
  for (;;) {
    const b = c.u8();
    run += b;
    if (b !== 255) return run;
    if (run > 64 * 64) throw new ProtocolError('ZRLE run longer than a tile');
  }
}

export function encodeServerCutText(text: Buffer): Buffer {
  const b = Buffer.alloc(8);
  b[0] = 3;
  b.writeUInt32BE(text.length, 4);
  return Buffer.concat([b, text]);
}
