/**
 * A minimal MySQL client over a raw socket for tests that need exact bytes: log in with
 * mysql_native_password (the gateway's default) or caching_sha2_password fast auth, choose the
 * capability flags (and MariaDB's extended ones) sent, then send any command payload - well formed
 * or not - and read the answer packet by packet. It knows nothing of the gateway's inspector.
 */
import { connect } from 'node:net';
import { PacketConn } from '../../protocols/mysql/conn.js';
import { CAP, buildHandshakeResponse, frame, nativeToken, parseErr, parseGreeting, type Greeting, type Packet } from '../../protocols/mysql/packets.js';

export const BASE_CAPS =
  CAP.LONG_FLAG | CAP.PROTOCOL_41 | CAP.SECURE_CONNECTION | CAP.TRANSACTIONS | CAP.MULTI_STATEMENTS |
  CAP.MULTI_RESULTS | CAP.PS_MULTI_RESULTS | CAP.PLUGIN_AUTH | CAP.PLUGIN_AUTH_LENENC_CLIENT_DATA;

export interface RawLogin {
  host: string;
  port: number;
  user: string;
  password: string;
  database?: string;
  /** Capability flags to send (default BASE_CAPS); CONNECT_WITH_DB is added with a database. */
  caps?: number;
  /** MariaDB extended capability flags (bits 32..63 as a number); sent only when the server offers them. */
  extCaps?: number;
}

export class RawClient {
  private constructor(readonly conn: PacketConn, readonly greeting: Greeting, readonly caps: number, readonly extCaps: number, readonly ok: Buffer) {}

  static async connect(o: RawLogin): Promise<RawClient> {
    const sock = connect({ host: o.host, port: o.port });
    await new Promise<void>((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
    const conn = new PacketConn(sock, 1 << 30);
    const g0 = await conn.read();
    const greeting = parseGreeting(g0.payload);
    const serverExt = greeting.caps & CAP.LONG_PASSWORD ? 0 : g0.payload.readUInt32LE(g0.payload.indexOf(0, 1) + 1 + 4 + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 6);
    let caps = (o.caps ?? BASE_CAPS) & greeting.caps;
    if (o.database) caps |= CAP.CONNECT_WITH_DB;
    const extCaps = (o.extCaps ?? 0) & serverExt;
    if (extCaps) caps &= ~CAP.LONG_PASSWORD;
    const resp = buildHandshakeResponse({
      caps, maxPacket: 1 << 30, charset: 45, user: o.user, authResponse: nativeToken(o.password, greeting.nonce),
      database: o.database ?? null, authPlugin: 'mysql_native_password',
    });
    resp.writeUInt32LE(extCaps >>> 0, 28); // the last 4 filler bytes carry MariaDB's extended flags
    let seq = conn.send(resp, 1);
    for (;;) {
      const p = await conn.read();
      const b = p.payload;
      if (b[0] === 0x00) return new RawClient(conn, greeting, caps, extCaps, b);
      if (b[0] === 0xff) {
        conn.destroy();
        const e = parseErr(b);
        throw new Error(`login refused: ${e.code} (${e.state}) ${e.message}`);
      }
      if (b[0] === 0xfe) {
        const end = b.indexOf(0, 1);
        const plugin = b.subarray(1, end).toString('latin1');
        if (plugin !== 'mysql_native_password') throw new Error(`raw client cannot do ${plugin}`);
        seq = conn.send(nativeToken(o.password, b.subarray(end + 1, end + 21)), (p.lastSeq + 1) & 0xff);
        continue;
      }
      throw new Error(`unexpected login packet 0x${b[0]!.toString(16)} (seq ${seq})`);
    }
  }

  /** Send one command payload (sequence id 0), or raw bytes exactly as given. */
  send(payload: Buffer): void {
    this.conn.send(payload, 0);
  }

  sendRaw(bytes: Buffer): void {
    this.conn.writeRaw(bytes);
  }

  /** The next packet, or null when none arrives within quietMs (or the connection closed). */
  async next(quietMs = 3000): Promise<Packet | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<null>((r) => { timer = setTimeout(() => r(null), quietMs); });
    try {
      return await Promise.race([this.conn.read().catch(() => null), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Send commands back to back, then COM_PING, and collect each command's answer: every answer
   * starts with sequence id 1, and the ping's OK (the answer after the last) marks the end - no
   * waiting for silence. Each command must have an answer (not COM_STMT_CLOSE / SEND_LONG_DATA)
   * of fewer than 256 packets. Stops early when the connection closes.
   */
  async exchange(...payloads: Buffer[]): Promise<Packet[][]> {
    this.sendRaw(Buffer.concat([...payloads, Buffer.from([0x0e])].map((p) => frame(p, 0).bytes)));
    const answers: Packet[][] = [];
    const until = Date.now() + 30_000;
    for (;;) {
      const p = await this.next(Math.max(1, until - Date.now()));
      if (!p) return answers;
      if (p.seq === 1) {
        if (answers.length === payloads.length) return answers; // the ping's OK
        answers.push([]);
      }
      if (!answers.length) throw new Error(`a packet before any answer (${describe(p)})`);
      answers.at(-1)!.push(p);
    }
  }

  /** One command's answer (see exchange). */
  async ask(payload: Buffer): Promise<Packet[]> {
    return (await this.exchange(payload))[0] ?? [];
  }

  /** Resolves true once the connection is closed, false if it is still open after ms. */
  async waitClosed(ms = 15_000): Promise<boolean> {
    const until = Date.now() + ms;
    while (!this.conn.closed && Date.now() < until) await this.next(Math.min(200, until - Date.now()));
    return this.conn.closed;
  }

  get closed(): boolean { return this.conn.closed; }

  close(): void {
    this.conn.destroy();
  }
}

/** COM_QUERY payload. */
export function comQuery(sql: string): Buffer {
  return Buffer.concat([Buffer.from([0x03]), Buffer.from(sql, 'utf8')]);
}

/** COM_STMT_PREPARE payload. */
export function comPrepare(sql: string): Buffer {
  return Buffer.concat([Buffer.from([0x16]), Buffer.from(sql, 'utf8')]);
}

/** COM_STMT_EXECUTE of a statement without parameters, with cursor flags. */
export function comExecute(stmtId: number, flags = 0): Buffer {
  const b = Buffer.alloc(10);
  b[0] = 0x17;
  b.writeUInt32LE(stmtId >>> 0, 1);
  b[5] = flags;
  b.writeUInt32LE(1, 6);
  return b;
}

/** COM_STMT_FETCH of n rows. */
export function comFetch(stmtId: number, rows: number): Buffer {
  const b = Buffer.alloc(9);
  b[0] = 0x1c;
  b.writeUInt32LE(stmtId >>> 0, 1);
  b.writeUInt32LE(rows >>> 0, 5);
  return b;
}

/** One-line description of a packet for assertions: header byte, length, and status flags of OK/EOF. */
export function describe(p: Packet): string {
  const b = p.payload;
  const h = b[0] ?? -1;
  if (h === 0xff) return `ERR ${b.readUInt16LE(1)}`;
  if (h === 0xfe && b.length < 9) return `EOF status=0x${b.readUInt16LE(3).toString(16)}`;
  return `0x${h.toString(16)} len=${b.length}`;
}
