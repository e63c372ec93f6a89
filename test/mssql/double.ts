/**
 * A SQL Server TEST DOUBLE (no SQL Server runs on these machines): a TDS server on a loopback
 * port that does what the gateway needs from a real one, and records every statement it gets.
 *  - PRELOGIN with TLS inside PRELOGIN packets (TLS 1.2), or TDS 8.0 strict TLS, with its own CA;
 *  - LOGIN7 for its admin login and the logins created through it (disabled ones refused),
 *    answered with ENVCHANGE / INFO / LOGINACK / FEATUREEXTACK / DONE as SQL Server does;
 *  - the provisioning and revocation statements (CREATE LOGIN, CREATE USER, ALTER ROLE, ALTER
 *    SERVER ROLE, ALTER LOGIN DISABLE, sys.dm_exec_sessions, KILL, DROP USER, DROP LOGIN, USE),
 *    read with QUOTENAME / N'' unquoting, holding the logins, users and roles in memory;
 *  - a few queries with plausible result sets (COLMETADATA, ROW, NBCROW, DONE) over many types,
 *    WAITFOR DELAY (cancelled by ATTENTION), RAISERROR; RPCs: sp_executesql, sp_prepare /
 *    sp_execute / sp_prepexec / sp_unprepare, and named procedures.
 * The TDS framing helpers come from protocols/mssql; real clients (tedious directly, and tsql,
 * pymssql, tedious through the gateway) check the double's side of the wire independently.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureTlsMaterial } from '../../proxy/tls.js';
import { TdsConn } from '../../protocols/mssql/conn.js';
import { FEATURE, parseLogin7 } from '../../protocols/mssql/login7.js';
import { MAX_PACKET, MessageAssembler, PKT, PacketReader, clampPacketSize, encodeMessage, type Packet } from '../../protocols/mssql/packets.js';
import { ENCRYPT, buildPrelogin, parsePrelogin } from '../../protocols/mssql/prelogin.js';
import { parseRpc, parseSqlBatch, PROC_ID, baseProcName } from '../../protocols/mssql/requests.js';
import { DONE, ENV, TOKEN, ResponseTracker, encodeDone, encodeEnvChange, encodeEnvChangeBytes, encodeError, encodeInfo, encodeLoginAck } from '../../protocols/mssql/tokens.js';

export interface DoubleStatement {
  spid: number;
  login: string;
  kind: 'batch' | 'rpc' | 'attention' | 'bulk';
  /** Batch text, or the statement of sp_executesql / sp_prepare..., or the procedure name. */
  text: string;
  proc?: string;
  params?: number;
  database: string;
}

interface DoubleSession { spid: number; login: string; database: string; sock: Duplex; packetSize: number; pending: NodeJS.Timeout | null }

export interface DoubleLogin { password: string; disabled: boolean; defaultDatabase: string | null; serverRoles: Set<string> }

/** Latin1_General_CI_AS. */
const COLLATION = Buffer.from([0x09, 0x04, 0xd0, 0x00, 0x34]);

// ---- result sets ----

type ColType = 'int' | 'smallint' | 'bigint' | 'nvarchar' | 'nvarcharmax' | 'varbinarymax' | 'bit' | 'float' | 'decimal' | 'datetime2' | 'varchar';
export interface Column { name: string; type: ColType }
type Value = number | string | boolean | Buffer | Date | bigint | null;

function bv(s: string): Buffer {
  const b = Buffer.from(s, 'utf16le');
  return Buffer.concat([Buffer.from([b.length / 2]), b]);
}
const u16 = (n: number) => { const b = Buffer.alloc(2); b.writeUInt16LE(n); return b; };
const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n >>> 0); return b; };

function typeInfo(t: ColType): Buffer {
  switch (t) {
    case 'int': return Buffer.from([0x26, 4]);
    case 'smallint': return Buffer.from([0x26, 2]);
    case 'bigint': return Buffer.from([0x26, 8]);
    case 'bit': return Buffer.from([0x68, 1]);
    case 'float': return Buffer.from([0x6d, 8]);
    case 'decimal': return Buffer.from([0x6a, 9, 10, 2]);
    case 'datetime2': return Buffer.from([0x2a, 7]);
    case 'nvarchar': return Buffer.concat([Buffer.from([0xe7]), u16(200), COLLATION]);
    case 'varchar': return Buffer.concat([Buffer.from([0xa7]), u16(100), COLLATION]);
    case 'nvarcharmax': return Buffer.concat([Buffer.from([0xe7]), u16(0xffff), COLLATION]);
    case 'varbinarymax': return Buffer.from([0xa5, 0xff, 0xff]);
  }
}

function plp(data: Buffer): Buffer {
  const total = Buffer.alloc(8);
  total.writeUInt32LE(data.length, 0);
  // Two chunks when long enough, as servers split large values.
  const half = data.length > 16 ? Math.floor(data.length / 2) : data.length;
  const parts = [data.subarray(0, half), data.subarray(half)].filter((p) => p.length);
  return Buffer.concat([total, ...parts.flatMap((p) => [u32(p.length), p]), u32(0)]);
}

function value(t: ColType, v: Value): Buffer {
  const isNull = v === null;
  switch (t) {
    case 'int': case 'smallint': case 'bigint': {
      if (isNull) return Buffer.from([0]);
      const n = t === 'int' ? 4 : t === 'smallint' ? 2 : 8;
      const b = Buffer.alloc(1 + n);
      b[0] = n;
      if (n === 4) b.writeInt32LE(Number(v), 1);
      else if (n === 2) b.writeInt16LE(Number(v), 1);
      else b.writeBigInt64LE(BigInt(v as number | bigint), 1);
      return b;
    }
    case 'bit': return isNull ? Buffer.from([0]) : Buffer.from([1, v ? 1 : 0]);
    case 'float': {
      if (isNull) return Buffer.from([0]);
      const b = Buffer.alloc(9);
      b[0] = 8;
      b.writeDoubleLE(Number(v), 1);
      return b;
    }
    case 'decimal': {
      if (isNull) return Buffer.from([0]);
      const scaled = BigInt(Math.round(Number(v) * 100));
      const b = Buffer.alloc(10);
      b[0] = 9;
      b[1] = scaled < 0n ? 0 : 1;
      b.writeBigUInt64LE(scaled < 0n ? -scaled : scaled, 2);
      return b;
    }
    case 'datetime2': {
      if (isNull) return Buffer.from([0]);
      const d = v as Date;
      const base = new Date(0);
      base.setUTCFullYear(1, 0, 1); // 0001-01-01 (Date.UTC would read year 1 as 1901)
      const fromBase = d.getTime() - base.getTime();
      const days = Math.floor(fromBase / 86_400_000);
      const ticks = BigInt(fromBase - days * 86_400_000) * 10_000n;
      const b = Buffer.alloc(9);
      b[0] = 8;
      for (let i = 0; i < 5; i++) b[1 + i] = Number((ticks >> BigInt(8 * i)) & 0xffn);
      b.writeUIntLE(days, 6, 3);
      return b;
    }
    case 'nvarchar': case 'varchar': {
      if (isNull) return Buffer.from([0xff, 0xff]);
      const d = Buffer.from(String(v), t === 'nvarchar' ? 'utf16le' : 'latin1');
      return Buffer.concat([u16(d.length), d]);
    }
    case 'nvarcharmax': case 'varbinarymax': {
      if (isNull) return Buffer.alloc(8, 0xff);
      return plp(t === 'nvarcharmax' ? Buffer.from(String(v), 'utf16le') : (v as Buffer));
    }
  }
}

export function encodeResult(cols: Column[], rows: Value[][]): Buffer {
  const meta = Buffer.concat([Buffer.from([TOKEN.COLMETADATA]), u16(cols.length), ...cols.flatMap((c) => [u32(0), u16(0x0001), typeInfo(c.type), bv(c.name)])]);
  const body = rows.map((r) => {
    if (r.some((v) => v === null)) {
      // NBCROW, as SQL Server sends rows with NULLs.
      const bitmap = Buffer.alloc(Math.ceil(cols.length / 8));
      r.forEach((v, i) => { if (v === null) bitmap[i >> 3]! |= 1 << (i & 7); });
      return Buffer.concat([Buffer.from([TOKEN.NBCROW]), bitmap, ...r.flatMap((v, i) => (v === null ? [] : [value(cols[i]!.type, v)]))]);
    }
    return Buffer.concat([Buffer.from([TOKEN.ROW]), ...r.map((v, i) => value(cols[i]!.type, v))]);
  });
  return Buffer.concat([meta, ...body]);
}

/** The canned tables. */
export const ORDERS: { cols: Column[]; rows: Value[][] } = {
  cols: [
    { name: 'id', type: 'int' }, { name: 'customer', type: 'nvarchar' }, { name: 'total', type: 'decimal' },
    { name: 'paid', type: 'bit' }, { name: 'placed', type: 'datetime2' }, { name: 'note', type: 'nvarcharmax' },
    { name: 'blob', type: 'varbinarymax' }, { name: 'weight', type: 'float' }, { name: 'code', type: 'varchar' }, { name: 'big', type: 'bigint' },
  ],
  rows: [
    [1, 'Zoë Müller', 12.5, true, new Date(Date.UTC(2024, 0, 2, 3, 4, 5)), 'first order, deliver to the back door', Buffer.from('cafe', 'hex'), 1.25, 'A-1', 9007199254740991n],
    [2, 'O\'Brien; "quotes" ]]', 100, false, new Date(Date.UTC(2024, 5, 30, 23, 59, 59)), null, null, null, 'B-2', -5n],
    [3, '山田太郎', 0.01, null, null, 'x'.repeat(5000), Buffer.alloc(3000, 7), 3, null, 0n],
  ],
};

const BIG_ROWS = 3000;

export interface DoubleOptions {
  adminUser?: string;
  adminPassword?: string;
  databases?: string[];
  /** Statements matching this fail with the given error (simulated server errors). */
  failOn?: { pattern: RegExp; number: number; message: string } | null;
}

export class TdsDouble {
  host = '127.0.0.1';
  port = 0;
  readonly adminUser: string;
  readonly adminPassword: string;
  readonly ca: string;
  statements: DoubleStatement[] = [];
  logins = new Map<string, DoubleLogin>();
  /** database -> user -> { login, roles } */
  users = new Map<string, Map<string, { login: string; roles: Set<string> }>>();
  sessions = new Map<number, DoubleSession>();
  /** Every login that succeeded, with how its TLS ran. */
  connections: { login: string; spid: number; strict: boolean; database: string }[] = [];
  /** Called (and awaited) before each statement runs. */
  onStatement: ((s: DoubleStatement) => void | Promise<void>) | null = null;
  failOn: DoubleOptions['failOn'] = null;
  /** Refuse PRELOGIN encryption (to test the gateway's refusal of a server without TLS). */
  noEncryption = false;
  private server!: net.Server;
  private dir: string;
  private material: { cert: string; key: string };
  private nextSpid = 51;
  private prepared = new Map<number, string>();
  private nextHandle = 1;
  private sockets = new Set<net.Socket>();

  private constructor(opts: DoubleOptions) {
    this.adminUser = opts.adminUser ?? 'tollgate_admin';
    this.adminPassword = opts.adminPassword ?? 'Adm1n-pw-for-the-double';
    this.dir = mkdtempSync(join(tmpdir(), 'tg-tds-double-'));
    const m = ensureTlsMaterial(this.dir, ['127.0.0.1']);
    this.ca = m.ca;
    this.material = { cert: m.cert, key: m.key.reveal() };
    for (const d of opts.databases ?? ['master', 'sales']) this.users.set(d, new Map());
    this.failOn = opts.failOn ?? null;
  }

  static async start(opts: DoubleOptions = {}): Promise<TdsDouble> {
    const d = new TdsDouble(opts);
    d.server = net.createServer((s) => {
      d.sockets.add(s);
      s.on('close', () => d.sockets.delete(s));
      s.on('error', () => {});
      d.handle(s).catch((e) => { if (process.env['TG_DOUBLE_DEBUG']) console.error('double handle:', e); s.destroy(); });
    });
    await new Promise<void>((r) => d.server.listen(0, d.host, r));
    d.port = (d.server.address() as net.AddressInfo).port;
    return d;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Statements of logins other than the admin (what went through the gateway). */
  sessionStatements(): DoubleStatement[] { return this.statements.filter((s) => s.login !== this.adminUser && s.kind !== 'attention'); }
  /** Statements the admin login ran (provisioning, revocation). */
  adminStatements(): string[] { return this.statements.filter((s) => s.login === this.adminUser && s.kind === 'batch').map((s) => s.text); }
  /** Session logins (tg_…) that exist now. */
  sessionLogins(): string[] { return [...this.logins.keys()].filter((l) => l.startsWith('tg_')).sort(); }
  liveSessionsOf(login: string): number { return [...this.sessions.values()].filter((s) => s.login === login).length; }

  private async handle(raw: net.Socket): Promise<void> {
    const conn = new TdsConn(raw, MAX_PACKET);
    const strict = (await conn.firstByte()) === 0x16;
    if (strict) {
      await conn.startTls(false, 'server', (t) => new tls.TLSSocket(t as net.Socket, { isServer: true, cert: this.material.cert, key: this.material.key, ALPNProtocols: ['tds/8.0'] }));
    }
    const pl = await conn.message(65536);
    if (pl.type !== PKT.PRELOGIN) return conn.destroy();
    const pre = parsePrelogin(pl.payload);
    const asked = (pre.encryption ?? 0) & 0x7f;
    const answer = strict ? ENCRYPT.NOT_SUP : this.noEncryption ? ENCRYPT.NOT_SUP : asked === ENCRYPT.NOT_SUP ? ENCRYPT.NOT_SUP : ENCRYPT.ON;
    conn.write(encodeMessage(PKT.TABULAR_RESULT, buildPrelogin({ version: { major: 16, minor: 0, build: 1000, subbuild: 0 }, encryption: answer, instance: '', mars: 0 })));
    if (!strict && answer === ENCRYPT.ON) {
      await conn.startTls(true, 'server', (t) => new tls.TLSSocket(t as net.Socket, {
        isServer: true, secureContext: tls.createSecureContext({ cert: this.material.cert, key: this.material.key, maxVersion: 'TLSv1.2' }),
      }));
    }
    const lm = await conn.message(65536);
    if (lm.type !== PKT.LOGIN7) return conn.destroy();
    const login = parseLogin7(lm.payload);
    const packetSize = clampPacketSize(login.packetSize);
    const user = login.userName;
    const pw = login.password.reveal();
    const known = user === this.adminUser ? { password: this.adminPassword, disabled: false, defaultDatabase: 'master' } : this.logins.get(user);
    const fail = (number: number, message: string) => {
      conn.write(encodeMessage(PKT.TABULAR_RESULT, Buffer.concat([encodeError({ number, class: 14, state: 1, message, server: 'double' }), encodeDone(DONE.ERROR)]), packetSize));
      conn.end();
    };
    if (!known || known.password !== pw || known.disabled) return fail(18456, `Login failed for user '${user}'.`);
    const database = login.database || known.defaultDatabase || 'master';
    if (!this.users.has(database)) return fail(4060, `Cannot open database "${database}" requested by the login. The login failed.`);
    if (user !== this.adminUser && database !== 'master' && ![...this.users.get(database)!.values()].some((u) => u.login === user)) {
      return fail(916, `The server principal "${user}" is not able to access the database "${database}" under the current security context.`);
    }
    const spid = this.nextSpid++;
    this.connections.push({ login: user, spid, strict, database });
    const sess: DoubleSession = { spid, login: user, database, sock: raw, packetSize, pending: null };
    const utf8 = login.features.some((f) => f.id === FEATURE.UTF8_SUPPORT);
    const tokens = Buffer.concat([
      encodeEnvChange(ENV.DATABASE, database, 'master'),
      encodeInfo({ number: 5701, class: 0, state: 2, message: `Changed database context to '${database}'.`, server: 'double' }),
      encodeEnvChangeBytes(ENV.COLLATION, COLLATION, Buffer.alloc(0)),
      encodeEnvChange(ENV.LANGUAGE, 'us_english', ''),
      encodeLoginAck(0x74000004, 'Microsoft SQL Server', [16, 0, 1000]),
      encodeEnvChange(ENV.PACKET_SIZE, String(packetSize), String(packetSize)),
      ...(utf8 ? [Buffer.from([TOKEN.FEATUREEXTACK, FEATURE.UTF8_SUPPORT, 1, 0, 0, 0, 1, 0xff])] : []),
      encodeDone(DONE.FINAL),
    ]);
    conn.write(encodeMessage(PKT.TABULAR_RESULT, tokens, packetSize));
    const { sock, rest } = conn.release();
    this.sessions.set(spid, sess);
    sock.on('close', () => { this.sessions.delete(spid); if (sess.pending) clearTimeout(sess.pending); });
    const reader = new PacketReader(MAX_PACKET);
    const asm = new MessageAssembler(64 * 1024 * 1024);
    let chain = Promise.resolve();
    const onData = (c: Buffer) => {
      reader.push(c);
      for (let p = reader.next(); p; p = reader.next()) {
        const packet: Packet = p;
        if (packet.type === PKT.ATTENTION) {
          chain = chain.then(() => this.attention(sess, sock));
          continue;
        }
        const m = asm.push(packet);
        if (m) chain = chain.then(() => this.request(sess, sock, m.type, m.payload)).catch((e) => { if (process.env['TG_DOUBLE_DEBUG']) console.error('double:', e); sock.destroy(); });
      }
    };
    sock.on('data', onData);
    if (rest.length) onData(rest);
    sock.resume();
  }

  private send(sess: DoubleSession, sock: Duplex, tokens: Buffer): void {
    if (!sock.destroyed) sock.write(encodeMessage(PKT.TABULAR_RESULT, tokens, sess.packetSize));
  }

  private async attention(sess: DoubleSession, sock: Duplex): Promise<void> {
    this.statements.push({ spid: sess.spid, login: sess.login, kind: 'attention', text: '', database: sess.database });
    // The interrupted request's answer ends first; the acknowledgement is a message of its own
    // (tedious, for one, reads them as two messages).
    if (sess.pending) {
      clearTimeout(sess.pending);
      sess.pending = null;
      this.send(sess, sock, encodeDone(DONE.ERROR));
    }
    this.send(sess, sock, encodeDone(DONE.ATTN));
  }

  private async request(sess: DoubleSession, sock: Duplex, type: number, payload: Buffer): Promise<void> {
    if (type === PKT.SQL_BATCH) {
      const text = parseSqlBatch(payload);
      const st: DoubleStatement = { spid: sess.spid, login: sess.login, kind: 'batch', text, database: sess.database };
      this.statements.push(st);
      await this.onStatement?.(st);
      const r = this.execute(sess, text);
      if (r.delayMs) {
        sess.pending = setTimeout(() => { sess.pending = null; this.send(sess, sock, encodeDone(DONE.FINAL)); }, r.delayMs);
        return;
      }
      this.send(sess, sock, Buffer.concat([...r.tokens, encodeDone(r.error ? DONE.ERROR : r.count !== null ? DONE.COUNT : DONE.FINAL, r.count ?? 0)]));
      if (r.kill) r.kill();
      return;
    }
    if (type === PKT.RPC) {
      const calls = parseRpc(payload);
      const out: Buffer[] = [];
      for (const c of calls) {
        const base = c.procId !== null ? (PROC_ID[c.procId] ?? '') : baseProcName(c.name);
        const text = c.statement ?? (c.handle !== null ? this.prepared.get(c.handle) ?? '' : c.name);
        const st: DoubleStatement = { spid: sess.spid, login: sess.login, kind: 'rpc', text, proc: c.procId !== null ? base : c.name, params: c.params, database: sess.database };
        this.statements.push(st);
        await this.onStatement?.(st);
        const handleOut = (h: number) => Buffer.concat([Buffer.from([TOKEN.RETURNVALUE]), u16(0), bv('@handle'), Buffer.from([1]), u32(0), u16(0x0001), Buffer.from([0x26, 4]), value('int', h)]);
        let status = 0;
        if (base === 'sp_prepare' || base === 'sp_prepexec') {
          const h = this.nextHandle++;
          this.prepared.set(h, c.statement ?? '');
          out.push(handleOut(h));
          if (base === 'sp_prepexec') out.push(...this.resultTokens(sess, c.statement ?? ''));
        } else if (base === 'sp_unprepare') {
          if (c.handle !== null) this.prepared.delete(c.handle);
        } else if (base === 'sp_executesql' || base === 'sp_execute') {
          out.push(...this.resultTokens(sess, text));
        } else if (/^(dbo\.)?get_orders$/i.test(c.name) || /^sp_who$/i.test(c.name)) {
          out.push(encodeResult(ORDERS.cols, ORDERS.rows), encodeDone(DONE.COUNT | DONE.MORE, ORDERS.rows.length, TOKEN.DONEINPROC));
        } else {
          out.push(encodeError({ number: 2812, class: 16, state: 62, message: `Could not find stored procedure '${c.name}'.`, server: 'double' }));
          status = DONE.ERROR;
        }
        out.push(Buffer.from([TOKEN.RETURNSTATUS, 0, 0, 0, 0]), encodeDone(status, 0, TOKEN.DONEPROC));
      }
      this.send(sess, sock, Buffer.concat(out));
      return;
    }
    if (type === PKT.BULK_LOAD) {
      // Bulk-load data is a token stream of its own (COLMETADATA, ROWs, DONE): count its rows.
      let rows = 0;
      const tr = new ResponseTracker({ onRow: () => { rows++; } });
      tr.feed(payload);
      tr.end();
      this.statements.push({ spid: sess.spid, login: sess.login, kind: 'bulk', text: `${rows} rows`, database: sess.database });
      this.send(sess, sock, encodeDone(tr.lost ? DONE.ERROR : DONE.COUNT, rows));
      return;
    }
    if (type === PKT.TRANSACTION_MANAGER) {
      this.send(sess, sock, encodeDone(DONE.FINAL));
      return;
    }
    sock.destroy();
  }

  /** A statement's tokens inside a procedure (sp_executesql): DONEINPROC instead of DONE. */
  private resultTokens(sess: DoubleSession, text: string): Buffer[] {
    const r = this.execute(sess, text);
    return [...r.tokens, encodeDone((r.error ? DONE.ERROR : 0) | (r.count !== null ? DONE.COUNT : 0) | DONE.MORE, r.count ?? 0, TOKEN.DONEINPROC)];
  }

  /** Run one batch: the provisioning statements exactly, a few queries, everything else a no-op. */
  execute(sess: DoubleSession, text: string): { tokens: Buffer[]; count: number | null; error?: boolean; delayMs?: number; kill?: () => void } {
    const sql = text.trim().replace(/;$/, '');
    const err = (number: number, message: string, cls = 16) => ({ tokens: [encodeError({ number, class: cls, state: 1, message, server: 'double' })], count: null, error: true });
    if (this.failOn && this.failOn.pattern.test(sql)) return err(this.failOn.number, this.failOn.message);
    const NAME = String.raw`\[((?:[^\]]|\]\])+)\]`;
    const LIT = String.raw`N'((?:[^']|'')*)'`;
    const un = (s: string) => s.replace(/\]\]/g, ']');
    const unl = (s: string) => s.replace(/''/g, "'");
    const admin = sess.login === this.adminUser;
    const m = (re: string) => new RegExp(`^${re}$`, 'su').exec(sql);
    let x: RegExpExecArray | null;
    const denied = () => err(15247, 'User does not have permission to perform this action.');
    if ((x = m(`CREATE LOGIN ${NAME} WITH PASSWORD = ${LIT}, CHECK_POLICY = OFF(?:, DEFAULT_DATABASE = ${NAME})?`))) {
      if (!admin) return denied();
      const name = un(x[1]!);
      if (this.logins.has(name)) return err(15025, `The server principal '${name}' already exists.`);
      this.logins.set(name, { password: unl(x[2]!), disabled: false, defaultDatabase: x[3] ? un(x[3]) : null, serverRoles: new Set() });
      return { tokens: [], count: null };
    }
    if ((x = m(`ALTER SERVER ROLE ${NAME} ADD MEMBER ${NAME}`))) {
      if (!admin) return denied();
      const l = this.logins.get(un(x[2]!));
      if (!l) return err(15151, `Cannot add the principal '${un(x[2]!)}', because it does not exist or you do not have permission.`);
      l.serverRoles.add(un(x[1]!));
      return { tokens: [], count: null };
    }
    if ((x = m(`USE ${NAME}`))) {
      const db = un(x[1]!);
      if (!this.users.has(db)) return err(911, `Database '${db}' does not exist. Make sure that the name is entered correctly.`);
      const old = sess.database;
      sess.database = db;
      return { tokens: [encodeEnvChange(ENV.DATABASE, db, old), encodeInfo({ number: 5701, class: 0, state: 1, message: `Changed database context to '${db}'.`, server: 'double' })], count: null };
    }
    if ((x = m(`CREATE USER ${NAME} FOR LOGIN ${NAME}`))) {
      if (!admin) return denied();
      const users = this.users.get(sess.database)!;
      const u = un(x[1]!);
      if (!this.logins.has(un(x[2]!))) return err(15007, `'${un(x[2]!)}' is not a valid login or you do not have permission.`);
      if (users.has(u)) return err(15023, `User, group, or role '${u}' already exists in the current database.`);
      users.set(u, { login: un(x[2]!), roles: new Set() });
      return { tokens: [], count: null };
    }
    if ((x = m(`ALTER ROLE ${NAME} ADD MEMBER ${NAME}`))) {
      if (!admin) return denied();
      const u = this.users.get(sess.database)!.get(un(x[2]!));
      if (!u) return err(15151, `Cannot add the principal '${un(x[2]!)}', because it does not exist or you do not have permission.`);
      u.roles.add(un(x[1]!));
      return { tokens: [], count: null };
    }
    if ((x = m(`ALTER LOGIN ${NAME} DISABLE`))) {
      if (!admin) return denied();
      const l = this.logins.get(un(x[1]!));
      if (!l) return err(15151, `Cannot alter the login '${un(x[1]!)}', because it does not exist or you do not have permission.`);
      l.disabled = true;
      return { tokens: [], count: null };
    }
    if ((x = m(`SELECT session_id FROM sys\\.dm_exec_sessions WHERE login_name = ${LIT}`))) {
      const login = unl(x[1]!);
      const spids = [...this.sessions.values()].filter((s) => s.login === login).map((s) => [s.spid]);
      return { tokens: [encodeResult([{ name: 'session_id', type: 'smallint' }], spids)], count: spids.length };
    }
    if ((x = m('KILL (\\d+)'))) {
      if (!admin) return denied();
      const target = this.sessions.get(Number(x[1]));
      if (!target) return err(6106, `Process ID ${x[1]} is not an active process ID.`);
      return { tokens: [], count: null, kill: () => { this.sessions.delete(target.spid); target.sock.destroy(); } };
    }
    if ((x = m(`DROP USER IF EXISTS ${NAME}`))) {
      if (!admin) return denied();
      this.users.get(sess.database)!.delete(un(x[1]!));
      return { tokens: [], count: null };
    }
    if ((x = m(`DROP LOGIN ${NAME}`))) {
      if (!admin) return denied();
      const name = un(x[1]!);
      if (!this.logins.has(name)) return err(15151, `Cannot drop the login '${name}', because it does not exist or you do not have permission.`);
      if (this.liveSessionsOf(name)) return err(15434, `Could not drop login '${name}' as the user is currently logged in.`);
      this.logins.delete(name);
      return { tokens: [], count: null };
    }
    if (/^SELECT @@VERSION AS v, SUSER_SNAME\(\) AS u$/i.test(sql)) {
      return { tokens: [encodeResult([{ name: 'v', type: 'nvarchar' }, { name: 'u', type: 'nvarchar' }], [['Microsoft SQL Server 2022 (TDS test double)\n\tTollgate tests', sess.login]])], count: 1 };
    }
    if ((x = /^SELECT SUSER_SNAME\(\)(?: AS (\w+))?, DB_NAME\(\)(?: AS (\w+))?$/i.exec(sql))) {
      return { tokens: [encodeResult([{ name: x[1] ?? '', type: 'nvarchar' }, { name: x[2] ?? '', type: 'nvarchar' }], [[sess.login, sess.database]])], count: 1 };
    }
    if ((x = /^SELECT SUSER_SNAME\(\)(?: AS (\w+))?$/i.exec(sql))) {
      return { tokens: [encodeResult([{ name: x[1] ?? '', type: 'nvarchar' }], [[sess.login]])], count: 1 };
    }
    if ((x = /^WAITFOR DELAY '00:00:(\d\d)'$/i.exec(sql))) return { tokens: [], count: null, delayMs: Number(x[1]) * 1000 };
    if (/^SELECT \* FROM (sales\.dbo\.)?orders(?: WHERE id = @id)?$/i.test(sql)) {
      const rows = /@id/.test(sql) ? ORDERS.rows.slice(0, 1) : ORDERS.rows;
      return { tokens: [encodeResult(ORDERS.cols, rows)], count: rows.length };
    }
    if (/^SELECT \* FROM big$/i.test(sql)) {
      const rows = Array.from({ length: BIG_ROWS }, (_, i) => [i, `row ${i} `.padEnd(100, '.')]);
      return { tokens: [encodeResult([{ name: 'n', type: 'int' }, { name: 'text', type: 'nvarcharmax' }], rows)], count: BIG_ROWS };
    }
    if ((x = /^SELECT (-?\d+)(?: AS (\w+))?$/i.exec(sql))) return { tokens: [encodeResult([{ name: x[2] ?? '', type: 'int' }], [[Number(x[1])]])], count: 1 };
    if ((x = /^SELECT N'((?:[^']|'')*)'(?: AS (\w+))?$/i.exec(sql))) return { tokens: [encodeResult([{ name: x[2] ?? '', type: 'nvarchar' }], [[unl(x[1]!)]])], count: 1 };
    if ((x = /^RAISERROR\('([^']*)', (\d+), (\d+)\)$/i.exec(sql))) return err(50000, x[1]!, Number(x[2]));
    if (/^(INSERT|UPDATE|DELETE)\b/i.test(sql)) return { tokens: [], count: 1 };
    return { tokens: [], count: null };
  }
}
