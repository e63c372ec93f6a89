/**
 * MySQL/MariaDB wire format: pure framing, builders and parsers over buffers (no sockets).
 * Every parser bounds-checks and throws ProtocolError on malformed input.
 */
import { createHash, randomBytes } from 'node:crypto';
import { ChunkQueue } from '../chunks.js';

export class ProtocolError extends Error {
  /** Where in the packet's payload parsing stopped, when known (for logs: never the payload itself). */
  readonly offset?: number;
  constructor(message: string, offset?: number) {
    super(message);
    this.name = 'ProtocolError';
    if (offset !== undefined) this.offset = offset;
  }
}

/** Capability flags (Protocol::CapabilityFlags). */
export const CAP = {
  LONG_PASSWORD: 0x1,
  FOUND_ROWS: 0x2,
  LONG_FLAG: 0x4,
  CONNECT_WITH_DB: 0x8,
  NO_SCHEMA: 0x10,
  COMPRESS: 0x20,
  ODBC: 0x40,
  LOCAL_FILES: 0x80,
  IGNORE_SPACE: 0x100,
  PROTOCOL_41: 0x200,
  INTERACTIVE: 0x400,
  SSL: 0x800,
  IGNORE_SIGPIPE: 0x1000,
  TRANSACTIONS: 0x2000,
  RESERVED: 0x4000,
  SECURE_CONNECTION: 0x8000,
  MULTI_STATEMENTS: 0x10000,
  MULTI_RESULTS: 0x20000,
  PS_MULTI_RESULTS: 0x40000,
  PLUGIN_AUTH: 0x80000,
  CONNECT_ATTRS: 0x100000,
  PLUGIN_AUTH_LENENC_CLIENT_DATA: 0x200000,
  CAN_HANDLE_EXPIRED_PASSWORDS: 0x400000,
  SESSION_TRACK: 0x800000,
  DEPRECATE_EOF: 0x1000000,
} as const;

/**
 * MariaDB's extended capability flags (bits 32..63 of the capabilities, as a 32-bit number). A
 * MariaDB server leaves CLIENT_MYSQL (LONG_PASSWORD) unset in its greeting and puts them in the
 * last 4 reserved bytes; a client that leaves CLIENT_MYSQL unset answers in the last 4 filler bytes.
 */
export const MARIADB_CAP = {
  PROGRESS: 0x1,
  COM_MULTI: 0x2,
  STMT_BULK_OPERATIONS: 0x4,
  EXTENDED_METADATA: 0x8,
  CACHE_METADATA: 0x10,
  BULK_UNIT_RESULTS: 0x20,
} as const;

/**
 * The extended flags the gateway relays: extended column metadata (type names, format=json),
 * metadata caching for prepared statements (followed by the inspector) and COM_STMT_BULK_EXECUTE
 * (recorded like an execution). Not PROGRESS: its reports are ERR-shaped packets in the middle of
 * a response (clients simply get no progress reports); not BULK_UNIT_RESULTS (MariaDB 11.5+).
 */
export const GATEWAY_EXT_CAPS = MARIADB_CAP.STMT_BULK_OPERATIONS | MARIADB_CAP.EXTENDED_METADATA | MARIADB_CAP.CACHE_METADATA;

/** What the gateway offers clients and knows how to relay. */
export const GATEWAY_CAPS =
  CAP.LONG_PASSWORD | CAP.FOUND_ROWS | CAP.LONG_FLAG | CAP.CONNECT_WITH_DB | CAP.NO_SCHEMA | CAP.ODBC |
  CAP.LOCAL_FILES | CAP.IGNORE_SPACE | CAP.PROTOCOL_41 | CAP.INTERACTIVE | CAP.SSL | CAP.IGNORE_SIGPIPE |
  CAP.TRANSACTIONS | CAP.SECURE_CONNECTION | CAP.MULTI_STATEMENTS | CAP.MULTI_RESULTS | CAP.PS_MULTI_RESULTS |
  CAP.PLUGIN_AUTH | CAP.CONNECT_ATTRS | CAP.PLUGIN_AUTH_LENENC_CLIENT_DATA | CAP.SESSION_TRACK | CAP.DEPRECATE_EOF;

/** Flags that change the shape of packets after authentication: client and upstream must agree on them. */
export const FORMAT_CAPS = CAP.PROTOCOL_41 | CAP.SESSION_TRACK | CAP.DEPRECATE_EOF;

export const STATUS = {
  IN_TRANS: 0x1,
  AUTOCOMMIT: 0x2,
  MORE_RESULTS_EXISTS: 0x8,
  CURSOR_EXISTS: 0x40,
  LAST_ROW_SENT: 0x80,
} as const;

export const COM = {
  SLEEP: 0x00,
  QUIT: 0x01,
  INIT_DB: 0x02,
  QUERY: 0x03,
  FIELD_LIST: 0x04,
  CREATE_DB: 0x05,
  DROP_DB: 0x06,
  REFRESH: 0x07,
  SHUTDOWN: 0x08,
  STATISTICS: 0x09,
  PROCESS_INFO: 0x0a,
  CONNECT: 0x0b,
  PROCESS_KILL: 0x0c,
  DEBUG: 0x0d,
  PING: 0x0e,
  TIME: 0x0f,
  DELAYED_INSERT: 0x10,
  CHANGE_USER: 0x11,
  BINLOG_DUMP: 0x12,
  TABLE_DUMP: 0x13,
  CONNECT_OUT: 0x14,
  REGISTER_SLAVE: 0x15,
  STMT_PREPARE: 0x16,
  STMT_EXECUTE: 0x17,
  STMT_SEND_LONG_DATA: 0x18,
  STMT_CLOSE: 0x19,
  STMT_RESET: 0x1a,
  SET_OPTION: 0x1b,
  STMT_FETCH: 0x1c,
  DAEMON: 0x1d,
  BINLOG_DUMP_GTID: 0x1e,
  RESET_CONNECTION: 0x1f,
  STMT_BULK_EXECUTE: 0xfa,
} as const;

const COM_NAMES = new Map<number, string>(Object.entries(COM).map(([k, v]) => [v, `COM_${k}`]));
/** COM_QUERY, COM_STMT_EXECUTE... for logs and messages. */
export function commandName(cmd: number): string {
  return COM_NAMES.get(cmd) ?? `command 0x${cmd.toString(16)}`;
}

/** Error codes and SQLSTATEs the gateway sends. */
export const ER = {
  ACCESS_DENIED: { code: 1045, state: '28000' },
  DB_ACCESS_DENIED: { code: 1044, state: '42000' },
  SPECIFIC_ACCESS_DENIED: { code: 1227, state: '42000' },
  HANDSHAKE: { code: 1043, state: '08S01' },
  NET_READ: { code: 1158, state: '08S01' },
  UNKNOWN_COM: { code: 1047, state: '08S01' },
  NOT_ALLOWED_COMMAND: { code: 1148, state: '42000' },
  CONNECTION_KILLED: { code: 1927, state: '70100' },
  UNKNOWN: { code: 1105, state: 'HY000' },
  PACKET_TOO_LARGE: { code: 1153, state: '08S01' },
  CON_COUNT: { code: 1040, state: '08004' },
  HOST_BLOCKED: { code: 1129, state: 'HY000' },
} as const;
export type ErrSpec = { code: number; state: string };

export const MAX_PAYLOAD = 0xffffff;

/** One logical packet (continuation frames of a >16 MiB payload joined) and the frames it came in. */
export interface Packet {
  /** Sequence id of the first frame. */
  seq: number;
  /** Sequence id of the last frame. */
  lastSeq: number;
  payload: Buffer;
  /** The bytes exactly as they arrived (headers included), for untouched forwarding. */
  raw: Buffer;
}

/**
 * Incremental framer: feed chunks, take whole logical packets. Refuses logical packets larger
 * than maxPacket (the caller answers with an ERR and closes).
 */
export class PacketReader {
  /** Received bytes not yet consumed; a big packet arriving in small chunks is joined once. */
  private readonly q = new ChunkQueue();
  private frames: Buffer[] = [];
  private parts: Buffer[] = [];
  private partsLen = 0;
  private firstSeq = -1;
  constructor(public maxPacket = 64 * 1024 * 1024) {}

  push(chunk: Buffer): void {
    this.q.push(chunk);
  }

  /** Bytes received but not yet part of a returned packet (e.g. a TLS ClientHello after SSLRequest). */
  takeRest(): Buffer {
    const pending = Buffer.concat([...this.frames, this.q.drain()]);
    this.frames = [];
    this.parts = [];
    this.partsLen = 0;
    this.firstSeq = -1;
    return pending;
  }

  get buffered(): number {
    return this.q.length + this.partsLen;
  }

  next(): Packet | null {
    for (;;) {
      if (this.q.length < 4) return null;
      const head = this.q.peek(4);
      const len = head.readUIntLE(0, 3);
      const seq = head[3]!;
      if (this.partsLen + len > this.maxPacket) throw new ProtocolError(`packet larger than ${this.maxPacket} bytes`);
      if (this.q.length < 4 + len) return null;
      const frameBytes = this.q.take(4 + len); // a view: socket chunks are never reused
      if (this.firstSeq < 0) this.firstSeq = seq;
      this.frames.push(frameBytes);
      this.parts.push(frameBytes.subarray(4));
      this.partsLen += len;
      if (len === MAX_PAYLOAD) continue; // a continuation frame follows
      const pkt: Packet = {
        seq: this.firstSeq,
        lastSeq: seq,
        payload: this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts),
        raw: this.frames.length === 1 ? this.frames[0]! : Buffer.concat(this.frames),
      };
      this.frames = [];
      this.parts = [];
      this.partsLen = 0;
      this.firstSeq = -1;
      return pkt;
    }
  }
}

/** Frame a payload (splitting at 16 MiB); returns the bytes and the next sequence id. */
export function frame(payload: Buffer, seq: number): { bytes: Buffer; next: number } {
  const out: Buffer[] = [];
  let off = 0;
  let s = seq & 0xff;
  for (;;) {
    const len = Math.min(MAX_PAYLOAD, payload.length - off);
    const h = Buffer.alloc(4);
    h.writeUIntLE(len, 0, 3);
    h[3] = s;
    out.push(h, payload.subarray(off, off + len));
    off += len;
    s = (s + 1) & 0xff;
    if (len < MAX_PAYLOAD) break;
  }
  return { bytes: Buffer.concat(out), next: s };
}

/** Rewrite the sequence id of a single-frame packet's raw bytes. */
export function withSeq(raw: Buffer, seq: number): Buffer {
  const b = Buffer.from(raw);
  b[3] = seq & 0xff;
  return b;
}

// ---------- a bounds-checked cursor ----------

export class Cursor {
  off = 0;
  constructor(readonly buf: Buffer) {}
  get left(): number { return this.buf.length - this.off; }
  need(n: number, what: string): void {
    if (n < 0 || this.off + n > this.buf.length) throw new ProtocolError(`truncated packet (${what})`, this.off);
  }
  u8(what = 'u8'): number { this.need(1, what); return this.buf[this.off++]!; }
  u16(what = 'u16'): number { this.need(2, what); const v = this.buf.readUInt16LE(this.off); this.off += 2; return v; }
  u24(what = 'u24'): number { this.need(3, what); const v = this.buf.readUIntLE(this.off, 3); this.off += 3; return v; }
  u32(what = 'u32'): number { this.need(4, what); const v = this.buf.readUInt32LE(this.off); this.off += 4; return v; }
  bytes(n: number, what = 'bytes'): Buffer { this.need(n, what); const b = this.buf.subarray(this.off, this.off + n); this.off += n; return b; }
  rest(): Buffer { const b = this.buf.subarray(this.off); this.off = this.buf.length; return b; }
  /** NUL-terminated string; a missing NUL takes the rest when allowEof. */
  cstr(what = 'string', allowEof = false): Buffer {
    const end = this.buf.indexOf(0, this.off);
    if (end < 0) {
      if (allowEof) return this.rest();
      throw new ProtocolError(`unterminated ${what}`);
    }
    const b = this.buf.subarray(this.off, end);
    this.off = end + 1;
    return b;
  }
  /** A length-encoded integer, any value up to 2^64 - 1 (e.g. affected rows, last insert id). */
  lenencBig(what = 'length-encoded integer'): bigint {
    const at = this.off;
    const first = this.u8(what);
    if (first < 0xfb) return BigInt(first);
    if (first === 0xfc) return BigInt(this.u16(what));
    if (first === 0xfd) return BigInt(this.u24(what));
    if (first === 0xfe) {
      this.need(8, what);
      const v = this.buf.readBigUInt64LE(this.off);
      this.off += 8;
      return v;
    }
    throw new ProtocolError(`invalid ${what} (0x${first.toString(16)})`, at);
  }
  /** A length-encoded count or length: a number (a length beyond 2^53 cannot be real). */
  lenenc(what = 'length-encoded integer'): number {
    const at = this.off;
    const v = this.lenencBig(what);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError(`${what} out of range`, at);
    return Number(v);
  }
  lenencBytes(what = 'length-encoded string'): Buffer {
    const n = this.lenenc(what);
    return this.bytes(n, what);
  }
}

export function lenencInt(v: number | bigint): Buffer {
  if (typeof v === 'bigint' && v > BigInt(0xffffff)) { const b = Buffer.alloc(9); b[0] = 0xfe; b.writeBigUInt64LE(v, 1); return b; }
  const n = Number(v);
  if (n < 0xfb) return Buffer.from([n]);
  if (n <= 0xffff) { const b = Buffer.alloc(3); b[0] = 0xfc; b.writeUInt16LE(n, 1); return b; }
  if (n <= 0xffffff) { const b = Buffer.alloc(4); b[0] = 0xfd; b.writeUIntLE(n, 1, 3); return b; }
  const b = Buffer.alloc(9); b[0] = 0xfe; b.writeBigUInt64LE(BigInt(n), 1); return b;
}

// ---------- builders ----------

/** 20 printable random bytes (some clients treat the nonce as a C string). */
export function makeNonce(): Buffer {
  const r = randomBytes(20);
  for (let i = 0; i < r.length; i++) r[i] = 0x21 + (r[i]! % 94);
  return r;
}

export interface Greeting {
  serverVersion: string;
  connectionId: number;
  nonce: Buffer;
  caps: number;
  /** MariaDB's extended capabilities (MARIADB_CAP); 0 from a MySQL server (CLIENT_MYSQL set). */
  extCaps: number;
  charset: number;
  status: number;
  authPlugin: string;
}

export function buildGreeting(g: Omit<Greeting, 'extCaps'> & { extCaps?: number }): Buffer {
  // Extended capabilities are announced the MariaDB way: CLIENT_MYSQL unset, flags in the reserved bytes.
  const caps = (g.extCaps ? g.caps & ~CAP.LONG_PASSWORD : g.caps) >>> 0;
  const head = Buffer.alloc(1 + 0);
  head[0] = 0x0a;
  const fixed = Buffer.alloc(4 + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10);
  let o = 0;
  fixed.writeUInt32LE(g.connectionId >>> 0, o); o += 4;
  g.nonce.copy(fixed, o, 0, 8); o += 8;
  fixed[o++] = 0;
  fixed.writeUInt16LE(caps & 0xffff, o); o += 2;
  fixed[o++] = g.charset;
  fixed.writeUInt16LE(g.status, o); o += 2;
  fixed.writeUInt16LE(caps >>> 16, o); o += 2;
  fixed[o++] = g.nonce.length + 1;
  // 10 reserved bytes: zero, except MariaDB's extended capabilities in the last 4
  if (g.extCaps) fixed.writeUInt32LE(g.extCaps >>> 0, o + 6);
  return Buffer.concat([
    head,
    Buffer.from(g.serverVersion + '\0', 'utf8'),
    fixed,
    g.nonce.subarray(8),
    Buffer.from([0]),
    Buffer.from(g.authPlugin + '\0', 'latin1'),
  ]);
}

export function parseGreeting(payload: Buffer): Greeting {
  const c = new Cursor(payload);
  const proto = c.u8('protocol version');
  if (proto === 0xff) {
    const e = parseErr(payload);
    throw new ProtocolError(`server refused the connection: ${e.code} ${e.message}`);
  }
  if (proto !== 0x0a) throw new ProtocolError(`unsupported protocol version ${proto}`);
  const serverVersion = c.cstr('server version').toString('utf8');
  const connectionId = c.u32('connection id');
  const n1 = c.bytes(8, 'nonce');
  c.u8('filler');
  let caps = c.u16('capabilities');
  let charset = 0;
  let status = 0;
  let authLen = 0;
  let extCaps = 0;
  let nonce: Buffer = n1;
  let authPlugin = 'mysql_native_password';
  if (c.left > 0) {
    charset = c.u8('charset');
    status = c.u16('status');
    caps = (caps | (c.u16('capabilities') << 16)) >>> 0;
    authLen = c.u8('auth data length');
    const reserved = c.bytes(10, 'reserved');
    if (!(caps & CAP.LONG_PASSWORD)) extCaps = reserved.readUInt32LE(6);
    if (caps & CAP.SECURE_CONNECTION) {
      const n2len = Math.max(13, authLen - 8);
      const n2 = c.bytes(Math.min(n2len, c.left), 'nonce part 2');
      nonce = Buffer.concat([n1, n2.subarray(0, 12)]);
    }
    if (caps & CAP.PLUGIN_AUTH && c.left > 0) authPlugin = c.cstr('auth plugin', true).toString('latin1');
  }
  return { serverVersion, connectionId, nonce, caps, extCaps, charset, status, authPlugin };
}

export interface HandshakeResponse {
  caps: number;
  /** MariaDB extended capabilities the client asked for (0 when it left CLIENT_MYSQL set). */
  extCaps: number;
  maxPacket: number;
  charset: number;
  /** Only the SSLRequest fields were present (32-byte payload with CLIENT_SSL). */
  sslRequest: boolean;
  user: string;
  authResponse: Buffer;
  database: string | null;
  authPlugin: string | null;
  attrs: Record<string, string>;
  /** The connection attributes exactly as sent (without their length prefix), to pass on upstream. */
  attrsRaw: Buffer | null;
}

export function parseHandshakeResponse(payload: Buffer): HandshakeResponse {
  const c = new Cursor(payload);
  const caps = c.u32('capabilities') >>> 0;
  if (!(caps & CAP.PROTOCOL_41)) throw new ProtocolError('client does not speak protocol 4.1');
  const maxPacket = c.u32('max packet size');
  const charset = c.u8('charset');
  const filler = c.bytes(23, 'filler');
  const extCaps = caps & CAP.LONG_PASSWORD ? 0 : filler.readUInt32LE(19);
  if (c.left === 0) {
    if (!(caps & CAP.SSL)) throw new ProtocolError('handshake response without user name');
    return { caps, extCaps, maxPacket, charset, sslRequest: true, user: '', authResponse: Buffer.alloc(0), database: null, authPlugin: null, attrs: {}, attrsRaw: null };
  }
  const user = c.cstr('user name').toString('utf8');
  let authResponse: Buffer;
  if (caps & CAP.PLUGIN_AUTH_LENENC_CLIENT_DATA) authResponse = c.lenencBytes('auth response');
  else if (caps & CAP.SECURE_CONNECTION) authResponse = c.bytes(c.u8('auth response length'), 'auth response');
  else authResponse = c.cstr('auth response', true);
  let database: string | null = null;
  if (caps & CAP.CONNECT_WITH_DB && c.left > 0) database = c.cstr('database', true).toString('utf8');
  let authPlugin: string | null = null;
  if (caps & CAP.PLUGIN_AUTH && c.left > 0) authPlugin = c.cstr('auth plugin', true).toString('latin1');
  const attrs: Record<string, string> = {};
  let attrsRaw: Buffer | null = null;
  if (caps & CAP.CONNECT_ATTRS && c.left > 0) {
    const total = c.lenenc('attributes length');
    attrsRaw = c.bytes(total, 'attributes');
    const a = new Cursor(attrsRaw);
    let n = 0;
    while (a.left > 0 && n++ < 64) {
      const k = a.lenencBytes('attribute name').toString('utf8');
      const v = a.lenencBytes('attribute value').toString('utf8');
      attrs[k.slice(0, 64)] = v.slice(0, 256);
    }
  }
  return { caps, extCaps, maxPacket, charset, sslRequest: false, user, authResponse, database, authPlugin, attrs, attrsRaw };
}

export function buildHandshakeResponse(r: {
  caps: number; maxPacket: number; charset: number; user: string; authResponse: Buffer;
  database: string | null; authPlugin: string;
  /** MariaDB extended capabilities (CLIENT_MYSQL is then left unset). */
  extCaps?: number;
  /** Connection attributes (the body after the length prefix), sent when caps has CONNECT_ATTRS. */
  attrs?: Buffer | null;
}): Buffer {
  const head = Buffer.alloc(32);
  const ext = r.extCaps ?? 0;
  head.writeUInt32LE((ext ? r.caps & ~CAP.LONG_PASSWORD : r.caps) >>> 0, 0);
  head.writeUInt32LE(r.maxPacket >>> 0, 4);
  head[8] = r.charset;
  if (ext) head.writeUInt32LE(ext >>> 0, 28);
  const parts: Buffer[] = [head, Buffer.from(r.user + '\0', 'utf8')];
  if (r.caps & CAP.PLUGIN_AUTH_LENENC_CLIENT_DATA) parts.push(lenencInt(r.authResponse.length), r.authResponse);
  else parts.push(Buffer.from([r.authResponse.length]), r.authResponse);
  if (r.caps & CAP.CONNECT_WITH_DB) parts.push(Buffer.from((r.database ?? '') + '\0', 'utf8'));
  if (r.caps & CAP.PLUGIN_AUTH) parts.push(Buffer.from(r.authPlugin + '\0', 'latin1'));
  if (r.caps & CAP.CONNECT_ATTRS) parts.push(lenencInt(r.attrs?.length ?? 0), r.attrs ?? Buffer.alloc(0));
  return Buffer.concat(parts);
}

export function buildSslRequest(caps: number, maxPacket: number, charset: number, extCaps = 0): Buffer {
  const b = Buffer.alloc(32);
  b.writeUInt32LE((extCaps ? caps & ~CAP.LONG_PASSWORD : caps) >>> 0, 0);
  b.writeUInt32LE(maxPacket >>> 0, 4);
  b[8] = charset;
  if (extCaps) b.writeUInt32LE(extCaps >>> 0, 28);
  return b;
}

/** A message for the client, said by the gateway (not doubled when the text already says so). */
export function tg(message: string): string {
  return /^Tollgate\b/.test(message) ? message : `Tollgate: ${message}`;
}

/**
 * ERR packet payload. Messages are truncated to keep packets small; they must never contain secrets.
 * Before the greeting (withState false) a client knows no capabilities yet and reads no SQL state.
 */
export function buildErr(spec: ErrSpec, message: string, withState = true): Buffer {
  const h = Buffer.alloc(3);
  h[0] = 0xff;
  h.writeUInt16LE(spec.code, 1);
  return Buffer.concat([h, Buffer.from(withState ? '#' + spec.state : '', 'latin1'), Buffer.from(message.slice(0, 1000), 'utf8')]);
}

export function buildOk(opts: { affectedRows?: number | bigint; insertId?: number | bigint; status?: number; warnings?: number; sessionTrack?: boolean } = {}): Buffer {
  const parts: Buffer[] = [Buffer.from([0x00]), lenencInt(opts.affectedRows ?? 0), lenencInt(opts.insertId ?? 0)];
  const sw = Buffer.alloc(4);
  sw.writeUInt16LE(opts.status ?? STATUS.AUTOCOMMIT, 0);
  sw.writeUInt16LE(opts.warnings ?? 0, 2);
  parts.push(sw);
  if (opts.sessionTrack) parts.push(Buffer.from([0])); // empty info string
  return Buffer.concat(parts);
}

export function buildAuthSwitch(plugin: string, data: Buffer): Buffer {
  return Buffer.concat([Buffer.from([0xfe]), Buffer.from(plugin + '\0', 'latin1'), data, Buffer.from([0])]);
}

export function buildAuthMoreData(data: Buffer): Buffer {
  return Buffer.concat([Buffer.from([0x01]), data]);
}

export interface ErrInfo { code: number; state: string; message: string }

export function parseErr(payload: Buffer): ErrInfo {
  const c = new Cursor(payload);
  if (c.u8('header') !== 0xff) throw new ProtocolError('not an ERR packet');
  const code = c.u16('error code');
  let state = 'HY000';
  if (c.left > 0 && c.buf[c.off] === 0x23) {
    c.off++;
    state = c.bytes(Math.min(5, c.left), 'sqlstate').toString('latin1');
  }
  return { code, state, message: c.rest().toString('utf8') };
}

/** Affected rows and the last insert id are 64-bit unsigned: BigInt, exact up to 2^64 - 1. */
export interface OkInfo { affectedRows: bigint; insertId: bigint; status: number; warnings: number }

/**
 * OK packet (0x00) or, with DEPRECATE_EOF, the 0xFE-headed OK that ends a result set. What follows
 * the warnings (the info text and, with CLIENT_SESSION_TRACK, the session state changes) is the
 * client's business and not read here.
 */
export function parseOk(payload: Buffer): OkInfo {
  const c = new Cursor(payload);
  c.u8('header');
  const affectedRows = c.lenencBig('affected rows');
  const insertId = c.lenencBig('insert id');
  const status = c.left >= 2 ? c.u16('status') : 0;
  const warnings = c.left >= 2 ? c.u16('warnings') : 0;
  return { affectedRows, insertId, status, warnings };
}

/** Legacy EOF packet (0xFE, < 9 bytes): warnings then status. */
export function parseEof(payload: Buffer): { status: number; warnings: number } {
  const c = new Cursor(payload);
  c.u8('header');
  const warnings = c.left >= 2 ? c.u16('warnings') : 0;
  const status = c.left >= 2 ? c.u16('status') : 0;
  return { status, warnings };
}

export function isErr(p: Buffer): boolean { return p.length > 0 && p[0] === 0xff; }
export function isOk(p: Buffer): boolean { return p.length >= 7 && p[0] === 0x00; }
/** EOF (legacy, < 9 bytes) or DEPRECATE_EOF's 0xFE OK (shorter than a max-size frame). */
export function isEofLike(p: Buffer, deprecateEof: boolean): boolean {
  if (p.length === 0 || p[0] !== 0xfe) return false;
  return deprecateEof ? p.length < MAX_PAYLOAD : p.length < 9;
}

// ---------- auth scrambles ----------

export const sha1 = (...b: Buffer[]): Buffer => { const h = createHash('sha1'); for (const x of b) h.update(x); return h.digest(); };
export const sha256 = (...b: Buffer[]): Buffer => { const h = createHash('sha256'); for (const x of b) h.update(x); return h.digest(); };

export function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i % b.length]!;
  return out;
}

/** The stored mysql_native_password verifier: hex(SHA1(SHA1(password))). */
export function nativeVerifier(password: string): string {
  return sha1(sha1(Buffer.from(password, 'utf8'))).toString('hex');
}

/** The client's mysql_native_password token: SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw))). */
export function nativeToken(password: string, nonce: Buffer): Buffer {
  if (!password) return Buffer.alloc(0);
  const s1 = sha1(Buffer.from(password, 'utf8'));
  return xor(s1, sha1(nonce, sha1(s1)));
}

/** Check a mysql_native_password token against a stored verifier (hex of SHA1(SHA1(pw))). */
export function checkNativeToken(token: Buffer, nonce: Buffer, verifierHex: string): boolean {
  if (token.length !== 20 || !/^[0-9a-f]{40}$/i.test(verifierHex)) return false;
  const stored = Buffer.from(verifierHex, 'hex');
  const s1 = xor(token, sha1(nonce, stored));
  const check = sha1(s1);
  let diff = 0;
  for (let i = 0; i < 20; i++) diff |= check[i]! ^ stored[i]!;
  return diff === 0;
}

/** caching_sha2_password fast-auth token: SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + nonce). */
export function sha2Token(password: string, nonce: Buffer): Buffer {
  if (!password) return Buffer.alloc(0);
  const s1 = sha256(Buffer.from(password, 'utf8'));
  return xor(s1, sha256(sha256(s1), nonce));
}
