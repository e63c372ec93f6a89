/**
 * The tabular token stream a server answers with (MS-TDS 2.2.7): encoders for the tokens the
 * gateway writes itself (ERROR, INFO, DONE, ENVCHANGE, LOGINACK) and a tracker that follows a
 * response as it is forwarded, to learn row counts (DONE tokens), errors, the attention
 * acknowledgement, login results and prepared-statement handles, without holding the rows.
 */
import { ProtocolError } from './packets.js';
import { StreamReader, bVarchar, bytes, readAll, skip, u16, u32, u64, u8, usVarchar, type Reader } from './reader.js';
import { UnsupportedType, intOf, readValue, skipValue, typeInfo, type TypeInfo } from './types.js';

export const TOKEN = {
  ALTMETADATA: 0x88,
  ALTROW: 0xd3,
  COLINFO: 0xa5,
  COLMETADATA: 0x81,
  DATACLASSIFICATION: 0xa3,
  DONE: 0xfd,
  DONEPROC: 0xfe,
  DONEINPROC: 0xff,
  ENVCHANGE: 0xe3,
  ERROR: 0xaa,
  FEATUREEXTACK: 0xae,
  FEDAUTHINFO: 0xee,
  INFO: 0xab,
  LOGINACK: 0xad,
  NBCROW: 0xd2,
  OFFSET: 0x78,
  ORDER: 0xa9,
  RETURNSTATUS: 0x79,
  RETURNVALUE: 0xac,
  ROW: 0xd1,
  SESSIONSTATE: 0xe4,
  SSPI: 0xed,
  TABNAME: 0xa4,
} as const;

export const DONE = {
  FINAL: 0x0000,
  MORE: 0x0001,
  ERROR: 0x0002,
  INXACT: 0x0004,
  COUNT: 0x0010,
  ATTN: 0x0020,
  SRVERROR: 0x0100,
} as const;

export const ENV = {
  DATABASE: 1,
  LANGUAGE: 2,
  CHARSET: 3,
  PACKET_SIZE: 4,
  COLLATION: 7,
  BEGIN_TRAN: 8,
  COMMIT_TRAN: 9,
  ROLLBACK_TRAN: 10,
  RESET_ACK: 18,
  ROUTING: 20,
} as const;

// ---- encoders ----

function bv(s: string): Buffer {
  const b = Buffer.from(s, 'utf16le');
  if (b.length / 2 > 255) throw new Error('B_VARCHAR longer than 255 characters');
  return Buffer.concat([Buffer.from([b.length / 2]), b]);
}

function usv(s: string): Buffer {
  const b = Buffer.from(s.length > 4000 ? s.slice(0, 4000) : s, 'utf16le');
  const h = Buffer.alloc(2);
  h.writeUInt16LE(b.length / 2);
  return Buffer.concat([h, b]);
}

export interface ServerMessage {
  number: number;
  state?: number;
  /** Severity: 0-10 informational, 11-16 user errors, 20+ fatal (the connection ends). */
  class: number;
  message: string;
  server?: string;
  proc?: string;
  line?: number;
}

function messageToken(token: number, m: ServerMessage): Buffer {
  const head = Buffer.alloc(6);
  head.writeInt32LE(m.number, 0);
  head[4] = m.state ?? 1;
  head[5] = m.class;
  const line = Buffer.alloc(4);
  line.writeUInt32LE(m.line ?? 1);
  const server = (m.server ?? 'Tollgate').slice(0, 128);
  const body = Buffer.concat([head, usv(m.message), bv(server), bv((m.proc ?? '').slice(0, 128)), line]);
  const t = Buffer.alloc(3);
  t[0] = token;
  t.writeUInt16LE(body.length, 1);
  return Buffer.concat([t, body]);
}

export const encodeError = (m: ServerMessage): Buffer => messageToken(TOKEN.ERROR, m);
export const encodeInfo = (m: ServerMessage): Buffer => messageToken(TOKEN.INFO, m);

export function encodeDone(status: number, rows = 0, token: number = TOKEN.DONE, curCmd = 0): Buffer {
  const b = Buffer.alloc(13);
  b[0] = token;
  b.writeUInt16LE(status, 1);
  b.writeUInt16LE(curCmd, 3);
  b.writeUInt32LE(rows >>> 0, 5);
  b.writeUInt32LE(Math.floor(rows / 0x100000000), 9);
  return b;
}

/** ENVCHANGE with B_VARCHAR values (database, language, packet size...). */
export function encodeEnvChange(type: number, newValue: string, oldValue: string): Buffer {
  const body = Buffer.concat([Buffer.from([type]), bv(newValue), bv(oldValue)]);
  const t = Buffer.alloc(3);
  t[0] = TOKEN.ENVCHANGE;
  t.writeUInt16LE(body.length, 1);
  return Buffer.concat([t, body]);
}

/** ENVCHANGE with B_VARBYTE values (collation, transaction descriptors). */
export function encodeEnvChangeBytes(type: number, newValue: Buffer, oldValue: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from([type, newValue.length]), newValue, Buffer.from([oldValue.length]), oldValue]);
  const t = Buffer.alloc(3);
  t[0] = TOKEN.ENVCHANGE;
  t.writeUInt16LE(body.length, 1);
  return Buffer.concat([t, body]);
}

export function encodeLoginAck(tdsVersion: number, progName: string, version: [number, number, number]): Buffer {
  const v = Buffer.alloc(4);
  v.writeUInt32BE(tdsVersion >>> 0);
  const pv = Buffer.from([version[0], version[1], (version[2] >> 8) & 0xff, version[2] & 0xff]);
  const body = Buffer.concat([Buffer.from([1]), v, bv(progName), pv]);
  const t = Buffer.alloc(3);
  t[0] = TOKEN.LOGINACK;
  t.writeUInt16LE(body.length, 1);
  return Buffer.concat([t, body]);
}

// ---- readers ----

export interface LoginAck { tdsVersion: number; progName: string; version: string }

export function* messageBody(): Reader<ServerMessage> {
  const len = yield* u16();
  const body = yield* bytes(len);
  return readAll(parseMessageBody(), body, { partial: true }).value;
}

function* parseMessageBody(): Reader<ServerMessage> {
  const head = yield* bytes(6);
  const message = yield* usVarchar();
  const server = yield* bVarchar();
  const proc = yield* bVarchar();
  const line = yield* u32();
  return { number: head.readInt32LE(0), state: head[4]!, class: head[5]!, message, server, proc, line };
}

function* loginAck(): Reader<LoginAck> {
  const len = yield* u16();
  const body = yield* bytes(len);
  return readAll((function* () {
    yield* skip(1); // interface
    const v = (yield* bytes(4)).readUInt32BE(0);
    const progName = yield* bVarchar();
    const pv = yield* bytes(4);
    return { tdsVersion: v, progName, version: `${pv[0]}.${pv[1]}.${(pv[2]! << 8) | pv[3]!}` };
  })(), body, { partial: true }).value;
}

/** ENVCHANGE: type and, for the string-valued ones, the new value. */
function* envChange(): Reader<{ type: number; value: string | null; raw: Buffer }> {
  const len = yield* u16();
  const body = yield* bytes(len);
  if (!body.length) throw new ProtocolError('empty ENVCHANGE');
  const type = body[0]!;
  let value: string | null = null;
  if (type === ENV.DATABASE || type === ENV.LANGUAGE || type === ENV.CHARSET || type === ENV.PACKET_SIZE) {
    value = readAll(bVarchar(), body.subarray(1), { partial: true }).value;
  }
  return { type, value, raw: body };
}

export interface TrackerEvents {
  onError?(m: ServerMessage): void;
  onInfo?(m: ServerMessage): void;
  onLoginAck?(a: LoginAck): void;
  onEnvChange?(type: number, value: string | null): void;
  onDone?(token: number, status: number, rows: number): void;
  /** A RETURNVALUE with an integer value (sp_prepare's handle). */
  onReturnInt?(ordinal: number, value: number): void;
  /** A ROW or NBCROW token passed. */
  onRow?(): void;
}

/** The reasons the tracker stops following a response (then it only counts bytes until the message ends). */
export class LostTrack extends ProtocolError {}

function* tokenStream(state: { boundary: boolean }, ev: TrackerEvents): Reader<never> {
  let columns: TypeInfo[] | null = null;
  for (;;) {
    state.boundary = true;
    const tok = yield* u8();
    state.boundary = false;
    switch (tok) {
      case TOKEN.COLMETADATA: {
        const count = yield* u16();
        if (count === 0xffff) { columns = null; break; }
        const cols: TypeInfo[] = [];
        for (let i = 0; i < count; i++) {
          yield* skip(6); // user type, flags
          cols.push(yield* typeInfo('column'));
          yield* bVarchar();
        }
        columns = cols;
        break;
      }
      case TOKEN.ROW:
        if (!columns) throw new LostTrack('a row without column metadata');
        for (const c of columns) yield* skipValue(c, true);
        ev.onRow?.();
        break;
      case TOKEN.NBCROW: {
        if (!columns) throw new LostTrack('a row without column metadata');
        const bitmap = yield* bytes(Math.ceil(columns.length / 8));
        const copy = Buffer.from(bitmap);
        for (let i = 0; i < columns.length; i++) {
          if (copy[i >> 3]! & (1 << (i & 7))) continue;
          yield* skipValue(columns[i]!, true);
        }
        ev.onRow?.();
        break;
      }
      case TOKEN.DONE: case TOKEN.DONEPROC: case TOKEN.DONEINPROC: {
        const status = yield* u16();
        yield* skip(2);
        const rows = yield* u64();
        ev.onDone?.(tok, status, rows);
        break;
      }
      // (read first: an optional call would skip reading its argument)
      case TOKEN.ERROR: { const m = yield* messageBody(); ev.onError?.(m); break; }
      case TOKEN.INFO: { const m = yield* messageBody(); ev.onInfo?.(m); break; }
      case TOKEN.LOGINACK: { const a = yield* loginAck(); ev.onLoginAck?.(a); break; }
      case TOKEN.ENVCHANGE: {
        const e = yield* envChange();
        ev.onEnvChange?.(e.type, e.value);
        break;
      }
      case TOKEN.RETURNSTATUS: yield* skip(4); break;
      case TOKEN.RETURNVALUE: {
        const ordinal = yield* u16();
        yield* bVarchar();
        yield* skip(1 + 4 + 2); // status, user type, flags
        const t = yield* typeInfo('column');
        if (t.kind === 'byte' || t.kind === 'fixed') {
          const v = yield* readValue(t);
          const n = intOf(t, v);
          if (n !== null) ev.onReturnInt?.(ordinal, n);
        } else {
          yield* skipValue(t, false);
        }
        break;
      }
      case TOKEN.ORDER: case TOKEN.COLINFO: case TOKEN.TABNAME: case TOKEN.SSPI:
        yield* skip(yield* u16());
        break;
      case TOKEN.FEDAUTHINFO: case TOKEN.SESSIONSTATE:
        yield* skip(yield* u32());
        break;
      case TOKEN.FEATUREEXTACK:
        for (;;) {
          const id = yield* u8();
          if (id === 0xff) break;
          yield* skip(yield* u32());
        }
        break;
      case TOKEN.OFFSET:
        yield* skip(4);
        break;
      default:
        throw new LostTrack(`token 0x${tok.toString(16)} is not followed by the gateway`);
    }
  }
}

/**
 * Follows one server response message as its packets pass. When it meets something it does not
 * know (a newer token or type), it stops parsing (lost) and the final DONE is read from the last
 * bytes of the message instead. atBoundary tells whether the bytes so far end between tokens
 * (so the gateway may append tokens of its own to the message).
 */
export class ResponseTracker {
  private reader: StreamReader<never>;
  private state = { boundary: true };
  private tail: Buffer = Buffer.alloc(0);
  lost: string | null = null;

  constructor(private ev: TrackerEvents) {
    this.reader = new StreamReader(tokenStream(this.state, ev), 1 << 20);
  }

  feed(payload: Buffer): void {
    this.tail = payload.length >= 13 ? payload.subarray(payload.length - 13) : Buffer.concat([this.tail, payload]).subarray(-13);
    if (this.lost) return;
    try {
      this.reader.push(payload);
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.lost = e instanceof LostTrack || e instanceof UnsupportedType ? e.message : `unparsable response: ${e.message}`;
    }
  }

  get atBoundary(): boolean { return !this.lost && this.state.boundary && this.reader.pending === 0; }

  /** At the end of the message: when lost, report the final DONE found in its last 13 bytes. */
  end(): void {
    if (!this.lost) {
      if (!this.atBoundary) this.lost = 'the message ended inside a token';
      else return;
    }
    const t = this.tail;
    if (t.length === 13 && (t[0] === TOKEN.DONE || t[0] === TOKEN.DONEPROC)) {
      this.ev.onDone?.(t[0]!, t.readUInt16LE(1), t.readUInt32LE(9) * 0x100000000 + t.readUInt32LE(5));
    }
  }
}
