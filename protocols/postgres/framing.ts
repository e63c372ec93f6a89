/**
 * PostgreSQL wire framing: pure functions over buffers (no sockets), so they can be fuzzed.
 *
 * Frontend (client) messages after start-up and all backend messages are framed as
 * `type byte + int32 length (including itself) + body`. The start-up packet (and SSLRequest,
 * GSSENCRequest, CancelRequest) has no type byte: `int32 length + int32 code + body`.
 * The relay frames messages and forwards their bytes untouched; only the messages that policy,
 * audit and cancel mapping need are decoded here.
 */
import { ChunkQueue } from '../chunks.js';

export const PROTOCOL_3 = 196608; // 3.0
export const SSL_REQUEST = 80877103;
export const GSSENC_REQUEST = 80877104;
export const CANCEL_REQUEST = 80877102;

/** Largest start-up packet we accept (PostgreSQL itself uses 10000). */
export const MAX_STARTUP = 10_000;

export class ProtocolViolation extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolViolation';
  }
}

export interface Frame {
  /** One ASCII letter, e.g. 'Q', 'P', 'D'. */
  type: string;
  /** The message body (after the length). A view into the input; copy before keeping it. Empty for partial pieces. */
  body: Buffer;
  /** The whole message (type + length + body), forwarded untouched; for a partial piece, just that piece. */
  raw: Buffer;
  /** A piece of a large pass-through message (see StreamOptions): forward raw, there is no body to decode. */
  partial?: boolean;
}

/**
 * Large messages of pass-through types (DataRow, CopyData) need not be held whole: above
 * `threshold` bytes they are emitted in pieces as they arrive, so the relay's buffer stays
 * bounded by the socket chunk size whatever the row size. Their own length limit is `maxLength`.
 */
export interface StreamOptions {
  types: string;
  threshold: number;
  maxLength: number;
}

const EMPTY = Buffer.alloc(0);

/**
 * Splits a byte stream into typed frames. Bounded: a declared length above maxLength is a
 * protocol violation (so a hostile peer cannot make the relay buffer gigabytes).
 */
export class FrameSplitter {
  private readonly q = new ChunkQueue();
  private streamLeft = 0;
  private streamType = '';

  constructor(private readonly maxLength: number, private readonly stream?: StreamOptions) {}

  /** Feed bytes; returns every complete frame (and pieces of streamed ones). Throws ProtocolViolation on a bad length. */
  push(chunk: Buffer): Frame[] {
    const out: Frame[] = [];
    // Fast path: nothing held, so whole frames are views into this chunk (no copy); only an
    // incomplete tail (or a streamed message) goes through the queue.
    if (this.q.length === 0 && this.streamLeft === 0) {
      let off = 0;
      while (chunk.length - off >= 5) {
        const type = String.fromCharCode(chunk[off]!);
        const len = chunk.readUInt32BE(off + 1);
        if (len < 4) throw new ProtocolViolation(`invalid message length ${len}`);
        if (this.stream && 1 + len > this.stream.threshold && this.stream.types.includes(type)) break;
        if (len > this.maxLength) throw new ProtocolViolation(`message of ${len} bytes exceeds the limit of ${this.maxLength}`);
        if (chunk.length - off < 1 + len) break;
        const raw = chunk.subarray(off, off + 1 + len);
        out.push({ type, body: raw.subarray(5), raw });
        off += 1 + len;
      }
      if (off === chunk.length) return out;
      chunk = off ? chunk.subarray(off) : chunk;
    }
    this.q.push(chunk);
    for (;;) {
      if (this.streamLeft > 0) {
        if (this.q.length === 0) break;
        const piece = this.q.take(Math.min(this.streamLeft, this.q.length));
        this.streamLeft -= piece.length;
        out.push({ type: this.streamType, body: EMPTY, raw: piece, partial: true });
        continue;
      }
      if (this.q.length < 5) break;
      const head = this.q.peek(5);
      const type = String.fromCharCode(head[0]!);
      const len = head.readUInt32BE(1);
      if (len < 4) throw new ProtocolViolation(`invalid message length ${len}`);
      const streamable = !!this.stream && this.stream.types.includes(type) && 1 + len > this.stream.threshold;
      const limit = streamable ? this.stream!.maxLength : this.maxLength;
      if (len > limit) throw new ProtocolViolation(`message of ${len} bytes exceeds the limit of ${limit}`);
      if (streamable) {
        this.streamType = type;
        this.streamLeft = 1 + len;
        continue;
      }
      if (this.q.length < 1 + len) break;
      const raw = this.q.take(1 + len);
      out.push({ type, body: raw.subarray(5), raw });
    }
    return out;
  }

  /** Bytes held waiting for the rest of a frame. */
  get pending(): number { return this.q.length; }

  /** Take the unframed rest (e.g. after switching protocol phases). */
  drain(): Buffer {
    return this.q.drain();
  }
}

/**
 * The bytes of one socket chunk's frames, forwarded as one write. Frames forwarded untouched are
 * consecutive views of the same input buffer, so they are merged back into one view instead of
 * copied: a chunk that holds only whole pass-through messages goes out as the very same bytes.
 */
export class Gather {
  private parts: Buffer[] = [];
  private size = 0;

  add(b: Buffer): void {
    if (!b.length) return;
    this.size += b.length;
    const n = this.parts.length;
    const last = n ? this.parts[n - 1]! : null;
    if (last && last.buffer === b.buffer && last.byteOffset + last.length === b.byteOffset) {
      this.parts[n - 1] = Buffer.from(b.buffer, last.byteOffset, last.length + b.length);
    } else {
      this.parts.push(b);
    }
  }

  join(): Buffer {
    const n = this.parts.length;
    return n === 0 ? EMPTY : n === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.size);
  }
}

export type StartupPacket =
  | { kind: 'ssl' }
  | { kind: 'gssenc' }
  | { kind: 'cancel'; pid: number; key: number }
  | { kind: 'startup'; version: number; params: Record<string, string> };

/**
 * Try to read one start-up packet from the front of buf.
 * Returns null when more bytes are needed, else the packet and the bytes it used.
 */
export function readStartup(buf: Buffer): { packet: StartupPacket; used: number } | null {
  if (buf.length < 4) return null;
  const len = buf.readUInt32BE(0);
  if (len < 8 || len > MAX_STARTUP) throw new ProtocolViolation(`invalid start-up packet length ${len}`);
  if (buf.length < len) return null;
  const code = buf.readUInt32BE(4);
  const body = buf.subarray(8, len);
  if (code === SSL_REQUEST) {
    if (len !== 8) throw new ProtocolViolation('invalid SSLRequest');
    return { packet: { kind: 'ssl' }, used: len };
  }
  if (code === GSSENC_REQUEST) {
    if (len !== 8) throw new ProtocolViolation('invalid GSSENCRequest');
    return { packet: { kind: 'gssenc' }, used: len };
  }
  if (code === CANCEL_REQUEST) {
    if (len !== 16) throw new ProtocolViolation('invalid CancelRequest');
    return { packet: { kind: 'cancel', pid: body.readUInt32BE(0), key: body.readUInt32BE(4) }, used: len };
  }
  const major = code >>> 16;
  if (major !== 3) throw new ProtocolViolation(`unsupported frontend protocol ${major}.${code & 0xffff}: server supports 3.0`);
  const params: Record<string, string> = Object.create(null);
  const r = new Reader(body);
  for (;;) {
    const k = r.cstring();
    if (k === '') break;
    params[k] = r.cstring();
  }
  if (!r.done()) throw new ProtocolViolation('trailing bytes in start-up packet');
  return { packet: { kind: 'startup', version: code, params }, used: len };
}

/** A bounds-checked reader over a message body; throws ProtocolViolation instead of reading past the end. */
export class Reader {
  private off = 0;
  constructor(private readonly b: Buffer) {}
  done(): boolean { return this.off === this.b.length; }
  get offset(): number { return this.off; }
  byte(): number {
    if (this.off + 1 > this.b.length) throw new ProtocolViolation('message truncated');
    return this.b[this.off++]!;
  }
  int16(): number {
    if (this.off + 2 > this.b.length) throw new ProtocolViolation('message truncated');
    const v = this.b.readInt16BE(this.off);
    this.off += 2;
    return v;
  }
  int32(): number {
    if (this.off + 4 > this.b.length) throw new ProtocolViolation('message truncated');
    const v = this.b.readInt32BE(this.off);
    this.off += 4;
    return v;
  }
  cstring(): string {
    const end = this.b.indexOf(0, this.off);
    if (end < 0) throw new ProtocolViolation('message truncated (unterminated string)');
    const s = this.b.toString('utf8', this.off, end);
    this.off = end + 1;
    return s;
  }
  bytes(n: number): Buffer {
    if (n < 0 || this.off + n > this.b.length) throw new ProtocolViolation('message truncated');
    const v = this.b.subarray(this.off, this.off + n);
    this.off += n;
    return v;
  }
  rest(): Buffer {
    const v = this.b.subarray(this.off);
    this.off = this.b.length;
    return v;
  }
}

// ---- decoders (frontend messages) ----

/** 'Q' Query: the SQL text. */
export function decodeQuery(body: Buffer): string {
  const r = new Reader(body);
  const s = r.cstring();
  if (!r.done()) throw new ProtocolViolation('trailing bytes in Query');
  return s;
}

/** 'P' Parse: statement name, SQL text and the number of declared parameter types. */
export function decodeParse(body: Buffer): { name: string; text: string; paramTypes: number } {
  const r = new Reader(body);
  const name = r.cstring();
  const text = r.cstring();
  const n = r.int16();
  if (n < 0) throw new ProtocolViolation('negative parameter count in Parse');
  r.bytes(n * 4);
  if (!r.done()) throw new ProtocolViolation('trailing bytes in Parse');
  return { name, text, paramTypes: n };
}

/** 'B' Bind: portal, statement and the number of parameter values (values are not decoded). */
export function decodeBind(body: Buffer): { portal: string; statement: string; params: number } {
  const r = new Reader(body);
  const portal = r.cstring();
  const statement = r.cstring();
  const nFormats = r.int16();
  if (nFormats < 0) throw new ProtocolViolation('negative format count in Bind');
  r.bytes(nFormats * 2);
  const nParams = r.int16();
  if (nParams < 0) throw new ProtocolViolation('negative parameter count in Bind');
  for (let i = 0; i < nParams; i++) {
    const len = r.int32();
    if (len > 0) r.bytes(len);
    else if (len < -1) throw new ProtocolViolation('invalid parameter length in Bind');
  }
  const nResult = r.int16();
  if (nResult < 0) throw new ProtocolViolation('negative result format count in Bind');
  r.bytes(nResult * 2);
  if (!r.done()) throw new ProtocolViolation('trailing bytes in Bind');
  return { portal, statement, params: nParams };
}

/** 'E' Execute: portal name and row limit. */
export function decodeExecute(body: Buffer): { portal: string; maxRows: number } {
  const r = new Reader(body);
  const portal = r.cstring();
  const maxRows = r.int32();
  if (!r.done()) throw new ProtocolViolation('trailing bytes in Execute');
  return { portal, maxRows };
}

/** 'C' Close or 'D' Describe: 'S' statement / 'P' portal and its name. */
export function decodeTarget(body: Buffer): { which: 'S' | 'P'; name: string } {
  const r = new Reader(body);
  const w = String.fromCharCode(r.byte());
  if (w !== 'S' && w !== 'P') throw new ProtocolViolation(`invalid Close/Describe target '${w}'`);
  const name = r.cstring();
  if (!r.done()) throw new ProtocolViolation('trailing bytes in Close/Describe');
  return { which: w, name };
}

/** 'p' SASLInitialResponse: mechanism and the client-first message. */
export function decodeSaslInitial(body: Buffer): { mechanism: string; data: Buffer } {
  const r = new Reader(body);
  const mechanism = r.cstring();
  const n = r.int32();
  const data = n === -1 ? Buffer.alloc(0) : r.bytes(n);
  if (!r.done()) throw new ProtocolViolation('trailing bytes in SASLInitialResponse');
  return { mechanism, data };
}

/** 'p' PasswordMessage: the password as sent (cleartext). */
export function decodePassword(body: Buffer): string {
  const r = new Reader(body);
  const s = r.cstring();
  if (!r.done()) throw new ProtocolViolation('trailing bytes in PasswordMessage');
  return s;
}

// ---- decoders (backend messages) ----

export interface ErrorFields {
  severity: string;
  code: string;
  message: string;
  detail?: string;
  hint?: string;
  [field: string]: string | undefined;
}

const FIELD_NAMES: Record<string, string> = {
  S: 'localSeverity', V: 'severity', C: 'code', M: 'message', D: 'detail', H: 'hint', P: 'position',
  p: 'internalPosition', q: 'internalQuery', W: 'where', s: 'schema', t: 'table', c: 'column',
  d: 'dataType', n: 'constraint', F: 'file', L: 'line', R: 'routine',
};

/** 'E' ErrorResponse / 'N' NoticeResponse fields. */
export function decodeErrorFields(body: Buffer): ErrorFields {
  const r = new Reader(body);
  const f: Record<string, string> = {};
  for (;;) {
    const t = r.byte();
    if (t === 0) break;
    f[FIELD_NAMES[String.fromCharCode(t)] ?? String.fromCharCode(t)] = r.cstring();
  }
  return { ...f, severity: f.severity ?? f.localSeverity ?? 'ERROR', code: f.code ?? 'XX000', message: f.message ?? '' };
}

/** 'C' CommandComplete tag, e.g. "INSERT 0 3". */
export function decodeCommandComplete(body: Buffer): string {
  return new Reader(body).cstring();
}

/** Rows affected/returned from a CommandComplete tag (the last number), null when the tag has none. */
export function rowsFromTag(tag: string): number | null {
  const m = /\s(\d+)$/.exec(tag);
  return m ? Number(m[1]) : null;
}

/** 'K' BackendKeyData. */
export function decodeBackendKey(body: Buffer): { pid: number; key: number } {
  const r = new Reader(body);
  return { pid: r.int32() >>> 0, key: r.int32() >>> 0 };
}

// ---- encoders (backend messages the gateway itself sends) ----

function msg(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

function cstr(s: string): Buffer {
  return Buffer.from(s.replace(/\0/g, '') + '\0', 'utf8');
}

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n | 0);
  return b;
}

export interface ErrorSpec {
  severity: 'ERROR' | 'FATAL' | 'WARNING' | 'NOTICE';
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

function fields(e: ErrorSpec): Buffer {
  const parts = [
    Buffer.from('S'), cstr(e.severity), Buffer.from('V'), cstr(e.severity),
    Buffer.from('C'), cstr(e.code), Buffer.from('M'), cstr(e.message),
  ];
  if (e.detail) parts.push(Buffer.from('D'), cstr(e.detail));
  if (e.hint) parts.push(Buffer.from('H'), cstr(e.hint));
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

export function encodeError(e: ErrorSpec): Buffer { return msg('E', fields(e)); }
export function encodeNotice(e: ErrorSpec): Buffer { return msg('N', fields(e)); }
export function encodeAuthOk(): Buffer { return msg('R', int32(0)); }
export function encodeAuthCleartext(): Buffer { return msg('R', int32(3)); }
export function encodeAuthSasl(mechanisms: string[]): Buffer {
  return msg('R', Buffer.concat([int32(10), ...mechanisms.map(cstr), Buffer.from([0])]));
}
export function encodeAuthSaslContinue(data: string): Buffer {
  return msg('R', Buffer.concat([int32(11), Buffer.from(data, 'utf8')]));
}
export function encodeAuthSaslFinal(data: string): Buffer {
  return msg('R', Buffer.concat([int32(12), Buffer.from(data, 'utf8')]));
}
export function encodeBackendKey(pid: number, key: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(pid >>> 0, 0);
  b.writeUInt32BE(key >>> 0, 4);
  return msg('K', b);
}
/** 'v' NegotiateProtocolVersion: the newest protocol version supported (as PostgreSQL sends it, e.g. 196608 = 3.0) and the `_pq_.` options not understood. */
export function encodeNegotiateProtocolVersion(newest: number, options: string[]): Buffer {
  return msg('v', Buffer.concat([int32(newest), int32(options.length), ...options.map(cstr)]));
}
export function encodeReadyForQuery(status: string): Buffer { return msg('Z', Buffer.from(status.slice(0, 1), 'latin1')); }
export function encodeParameterStatus(name: string, value: string): Buffer {
  return msg('S', Buffer.concat([cstr(name), cstr(value)]));
}
