/**
 * Test support for protocols/mssql: the TDS test double as a target, the real clients (FreeTDS
 * tsql, pymssql, tedious), and a raw TDS client for what the real ones do not show (the exact
 * ERROR tokens of an idle session, malformed packets).
 */
import tedious from 'tedious';
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { TdsDouble, type DoubleOptions } from './double.js';
import { run, sleep, waitFor, type RunResult } from '../support/mariadb.js';
import { TDS, buildLogin7, type Login7Fields } from '../../protocols/mssql/login7.js';
import { TdsConn } from '../../protocols/mssql/conn.js';
import { ENCRYPT, buildPrelogin, parsePrelogin, type Prelogin } from '../../protocols/mssql/prelogin.js';
import { PKT, PacketReader, encodeMessage, isEom } from '../../protocols/mssql/packets.js';
import { ResponseTracker, type ServerMessage } from '../../protocols/mssql/tokens.js';
import { loginUpstream } from '../../protocols/mssql/upstream.js';
import { SystemClock } from '../../policies/clock.js';

export { run, sleep, waitFor, type RunResult };

interface Teardown { teardown(fn: () => unknown): void }

export async function startDouble(t: Teardown, opts: DoubleOptions = {}): Promise<TdsDouble> {
  const d = await TdsDouble.start(opts);
  t.teardown(() => d.close());
  return d;
}

/** A target on the double: role read (db_datareader in sales), role admin (sysadmin + db_owner). */
export function doubleTarget(d: TdsDouble, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: 'sales-db',
    protocol: 'mssql',
    address: `127.0.0.1:${d.port}`,
    risk: 'low',
    roles: [
      { name: 'read', databases: [{ name: 'sales', roles: ['db_datareader'] }] },
      { name: 'admin', databases: [{ name: 'sales', roles: ['db_owner'] }], serverRoles: ['sysadmin'] },
    ],
    credentials: { admin: { user: d.adminUser, password: { value: d.adminPassword } } },
    options: { ca: { value: d.ca } },
    ...over,
  };
}

/** FreeTDS tsql with a script on stdin (statements separated by "go" lines). */
export function tsql(host: string, port: number, user: string, secret: string, script: string, extra: string[] = []): Promise<RunResult> {
  return run('tsql', ['-H', host, '-p', String(port), '-U', user, '-P', secret, ...extra], { input: `${script}\nexit\n`, timeoutMs: 30_000 });
}

/** pymssql (Debian python3-pymssql) running a script with `conn` connected; it prints what the test reads. */
export function pymssql(host: string, port: number, user: string, secret: string, body: string): Promise<RunResult> {
  const script = [
    'import json, sys, pymssql',
    'try:',
    `    conn = pymssql.connect(server=${JSON.stringify(host)}, port=${port}, user=${JSON.stringify(user)}, password=${JSON.stringify(secret)}, login_timeout=10)`,
    'except Exception as e:',
    '    print("CONNECT-ERROR", e)',
    '    sys.exit(3)',
    'cur = conn.cursor()',
    ...body.split('\n'),
    'conn.close()',
  ].join('\n');
  return run('/usr/bin/python3', ['-c', script], { timeoutMs: 30_000 });
}

/** A tedious connection through the gateway (TLS, the gateway's CA trusted). */
export function tediousConnect(host: string, port: number, user: string, password: string, options: Partial<tedious.ConnectionOptions> = {}): Promise<tedious.Connection> {
  return new Promise((resolve, reject) => {
    const c = new tedious.Connection({
      server: host,
      authentication: { type: 'default', options: { userName: user, password } },
      options: { port, encrypt: true, trustServerCertificate: true, connectTimeout: 15_000, requestTimeout: 30_000, ...options },
    });
    c.on('error', () => { /* surfaced through requests / 'end' */ });
    c.connect((err) => (err ? reject(err) : resolve(c)));
  });
}

export interface Rows { rows: Record<string, unknown>[]; rowCount: number }

/** Run a request on a tedious connection: exec (execSql: sp_executesql), batch (execSqlBatch) or proc (callProcedure). */
export function tediousRun(c: tedious.Connection, kind: 'exec' | 'batch' | 'proc', sql: string, params: [string, unknown][] = []): Promise<Rows> {
  return new Promise((resolve, reject) => {
    const rows: Record<string, unknown>[] = [];
    const req = new tedious.Request(sql, (err, rowCount) => (err ? reject(err) : resolve({ rows, rowCount: rowCount ?? 0 })));
    for (const [name, v] of params) req.addParameter(name, typeof v === 'number' ? tedious.TYPES.Int : tedious.TYPES.NVarChar, v);
    req.on('row', (cols: { metadata: { colName: string }; value: unknown }[]) => rows.push(Object.fromEntries(cols.map((x, i) => [x.metadata.colName || `c${i}`, x.value]))));
    if (kind === 'exec') c.execSql(req);
    else if (kind === 'batch') c.execSqlBatch(req);
    else c.callProcedure(req);
  });
}

export function tediousEnded(c: tedious.Connection): Promise<void> {
  return new Promise((r) => {
    if ((c as unknown as { closed?: boolean }).closed) return r();
    c.once('end', () => r());
  });
}

/** A raw TDS client logged in through the gateway: send requests, read whole response messages. */
export class RawClient {
  private reader = new PacketReader();
  private messages: Buffer[][] = [];
  private parts: Buffer[] = [];
  private waiters: (() => void)[] = [];
  closed = false;
  readonly done: Promise<void>;

  private constructor(readonly sock: Duplex, rest: Buffer) {
    this.done = new Promise((r) => sock.once('close', () => { this.closed = true; this.wake(); r(); }));
    sock.on('data', (c: Buffer) => this.push(c));
    sock.on('error', () => {});
    if (rest.length) this.push(rest);
    sock.resume();
  }

  static async login(host: string, port: number, user: string, secret: string, opts: { database?: string; tdsVersion?: number } = {}): Promise<{ client: RawClient; loginMessages: ServerMessage[] }> {
    const up = await loginUpstream({
      host, port, clock: new SystemClock(), timeoutMs: 15_000,
      tls: { strict: false, rejectUnauthorized: false },
      login: { tdsVersion: opts.tdsVersion ?? TDS.V7_4, packetSize: 4096, userName: user, password: secret, database: opts.database ?? '', appName: 'raw-test' },
    });
    const infos: ServerMessage[] = [];
    const tr = new ResponseTracker({ onInfo: (m) => infos.push(m) });
    for (const p of up.response) tr.feed(p.payload);
    return { client: new RawClient(up.sock, up.rest), loginMessages: infos };
  }

  private wake() { for (const w of this.waiters.splice(0)) w(); }

  private push(c: Buffer) {
    this.reader.push(c);
    for (let p = this.reader.next(); p; p = this.reader.next()) {
      this.parts.push(p.payload);
      if (isEom(p)) { this.messages.push(this.parts); this.parts = []; }
    }
    this.wake();
  }

  send(type: number, payload: Buffer): void { this.sock.write(encodeMessage(type, payload, 4096)); }
  sendRaw(b: Buffer): void { this.sock.write(b); }
  attention(): void { this.sock.write(encodeMessage(PKT.ATTENTION, Buffer.alloc(0))); }

  /** The next whole response: its errors, infos and DONE tokens. Rejects when the connection closes first. */
  async next(timeoutMs = 10_000): Promise<{ errors: ServerMessage[]; infos: ServerMessage[]; dones: { status: number; rows: number }[] }> {
    const until = Date.now() + timeoutMs;
    while (!this.messages.length) {
      if (this.closed) throw new Error('connection closed');
      if (Date.now() > until) throw new Error('no response');
      await new Promise<void>((r) => { this.waiters.push(r); setTimeout(r, 100); });
    }
    const parts = this.messages.shift()!;
    const out = { errors: [] as ServerMessage[], infos: [] as ServerMessage[], dones: [] as { status: number; rows: number }[] };
    const tr = new ResponseTracker({ onError: (m) => out.errors.push(m), onInfo: (m) => out.infos.push(m), onDone: (_t, status, rows) => out.dones.push({ status, rows }) });
    for (const p of parts) tr.feed(p);
    tr.end();
    return out;
  }

  close(): void { this.sock.destroy(); }
}

/**
 * A hand-made login: a PRELOGIN of the test's choosing (e.g. MARS requested, or no encryption),
 * TLS inside PRELOGIN when the gateway asks for it (and tls is not false), then a LOGIN7; returns
 * the first response message's errors, or 'closed' when the gateway closed first.
 */
export async function customLogin(host: string, port: number, o: {
  prelogin: Prelogin; tls?: boolean;
  /** Without a login the client waits after TLS (for the login grace time to run out). */
  login?: Login7Fields;
  /** Change the LOGIN7 bytes before they go (flags the builder never sets). */
  mutate?: (login7: Buffer) => void;
  onTls?: () => void;
}): Promise<{ encryption: number | undefined; errors: ServerMessage[] } | 'closed'> {
  const raw = await new Promise<net.Socket>((res, rej) => { const s = net.connect({ host, port }, () => res(s)); s.once('error', rej); });
  const conn = new TdsConn(raw, 65535);
  try {
    conn.write(encodeMessage(PKT.PRELOGIN, buildPrelogin(o.prelogin)));
    const pl = await conn.message(65536);
    const encryption = parsePrelogin(pl.payload).encryption;
    if (o.tls !== false && (encryption === ENCRYPT.ON || encryption === ENCRYPT.REQ)) {
      await conn.startTls(true, 'client', (t) => tls.connect({ socket: t, rejectUnauthorized: false, maxVersion: 'TLSv1.2' }));
      o.onTls?.();
    }
    if (o.login) {
      const l7 = buildLogin7(o.login);
      o.mutate?.(l7);
      conn.write(encodeMessage(PKT.LOGIN7, l7));
    }
    const m = await conn.message(1 << 20);
    const errors: ServerMessage[] = [];
    const tr = new ResponseTracker({ onError: (e) => errors.push(e) });
    tr.feed(m.payload);
    return { encryption, errors };
  } catch {
    return 'closed';
  } finally {
    conn.destroy();
  }
}
