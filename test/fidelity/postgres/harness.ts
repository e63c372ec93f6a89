/**
 * The PostgreSQL half of the fidelity suite: one real cluster, one real gateway in front of it,
 * and two ways to run a regression case — psql as pg_regress runs it, and node-postgres driving
 * the extended protocol by hand (named statement, Describe, Bind, Execute with a row limit until
 * the portal is no longer suspended, Close, Sync). Each run starts from a fresh copy of the same
 * template database (`regression`, created from `fid_template`, which test_setup.sql filled).
 *
 * Direct runs log in as `fd_alice_000000`, a role made like a minted one (same attributes, member of
 * the same group role `fid_owner`, same name length so psql's aligned tables have the same width);
 * gateway runs log in with a connection secret and the gateway mints `tg_alice_xxxxxx`.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, cpSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { BackendMessage } from 'pg-protocol/dist/messages.js';
import { DEFAULT_POLICIES, startTestGateway, type TestGateway } from '../../support/gateway.js';
import { startTestCluster, type TestCluster } from '../../support/pg.js';
import { nameRule, type Rule } from '../common.js';
import { splitPsqlScript, type ScriptStatement } from './script.js';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const SQL_DIR = join(HERE, 'sql');
/** Same shape and length as the role the gateway mints for alice (tg_alice_ + 6 hex digits). */
export const DIRECT_ROLE = 'fd_alice_000000';
export const GROUP_ROLE = 'fid_owner';
export const SCRATCH_DB = 'regression';
/** Execute's row limit in the extended run: small, so most results are fetched over several suspensions. */
export const ROW_LIMIT = 3;

export type Via = 'direct' | 'gateway';

interface Teardown { teardown(fn: () => unknown): void }

export interface RunOptions {
  timeoutMs?: number;
  /**
   * The Tollgate role for gateway runs: 'fid' (default) or 'tampered', whose policy denies any
   * statement naming the table `booltbl2` — a gateway that answers differently, to prove the
   * comparison notices.
   */
  role?: 'fid' | 'tampered';
}

/** What pg_regress sets for every test (pg_regress.c), so the cases run as they do upstream. */
const REGRESS_ENV = { PGTZ: 'PST8PDT', PGDATESTYLE: 'Postgres, MDY', PGCLIENTENCODING: 'UTF8', PGAPPNAME: 'pg_regress', LC_ALL: 'C' };

export const PG_RULES: Rule[] = [
  nameRule(DIRECT_ROLE, '<session role>', 'the direct run logs in as its own role'),
  { pattern: /\btg_alice_[0-9a-f]{6}\b/, with: '<session role>', why: 'the gateway mints a role per session' },
  { pattern: /\bpg_(toast_)?temp_\d+\b/, renumber: 'pg_temp', why: 'temporary schemas are named after the backend slot' },
  // Names made from the OID of an object the case created (OIDs of the template's and the
  // system's objects are the same in both runs and stay as they are).
  { pattern: /\bpg_toast_(?:1[6-9]\d{3}|[2-9]\d{4}|\d{6,})(?=\b|_)/, renumber: 'pg_toast', why: 'a new table\'s TOAST table is named after its OID' },
  { pattern: /\bRI_ConstraintTrigger_[ac]_\d+\b/, renumber: 'RI_trigger', why: 'foreign-key triggers are named after their OID' },
];

/** The extended run's transcript also names the OIDs of the case's own tables and types. */
export const EXTENDED_RULES: Rule[] = [
  ...PG_RULES,
  { pattern: /%oid\d+/, renumber: 'oid', why: 'tables and types the case created get new OIDs in every run' },
];

export interface Endpoint { host: string; port: number; user: string; password: string; database: string; ca?: string }

export interface Fidelity {
  pgc: TestCluster;
  tg: TestGateway;
  dataRoot: string;
  /** Where a run connects: the server as the direct role, or the gateway (TLS, `ca`) with a fresh single-use secret. */
  endpoint(via: Via, role?: 'fid' | 'tampered'): Promise<Endpoint>;
  /** Drop and re-create the scratch database from the template. */
  freshDb(): Promise<void>;
  /** After a gateway run: wait until the minted role is gone. */
  settle(via: Via): Promise<void>;
  /** Run one case with psql (pg_regress's way); the output with stderr interleaved, not normalised. */
  psql(caseFile: string, via: Via, opts?: RunOptions): Promise<string>;
  /** Run a case's statements through the extended protocol; a transcript of every backend message. */
  extended(statements: ScriptStatement[], via: Via, opts?: RunOptions): Promise<string>;
}

async function suExec(pgc: TestCluster, sql: string[], db = 'postgres'): Promise<void> {
  const c = await pgc.su(db);
  try {
    for (const s of sql) await c.query(s);
  } finally {
    await c.end();
  }
}

function spawnPsql(args: string[], env: Record<string, string>, input: string, out: string, timeoutMs: number): Promise<{ code: number | null; output: string }> {
  const inFd = openSync(input, 'r');
  const outFd = openSync(out, 'w');
  return new Promise((resolve, reject) => {
    const p = spawn('psql', args, { stdio: [inFd, outFd, outFd], env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: tmpdir(), ...env } });
    closeSync(inFd);
    closeSync(outFd);
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('error', (e) => { clearTimeout(timer); reject(e); });
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      if (signal) return reject(new Error(`psql ${signal === 'SIGKILL' ? `timed out after ${timeoutMs} ms` : `killed by ${signal}`}`));
      resolve({ code, output: readFileSync(out, 'utf8') });
    });
  });
}

export async function startFidelity(t: Teardown): Promise<Fidelity> {
  const pgc = await startTestCluster(t, 'fid-db');
  // Data files for server-side COPY in test_setup.sql, where the server's OS user can read them.
  const dataRoot = mkdtempSync(join(tmpdir(), 'tg-fid-pg-'));
  t.teardown(() => rmSync(dataRoot, { recursive: true, force: true }));
  chmodSync(dataRoot, 0o755);
  cpSync(join(SQL_DIR, 'data'), join(dataRoot, 'data'), { recursive: true });
  const directPassword = randomBytes(18).toString('base64url');
  await suExec(pgc, [
    // Nothing may change the template's statistics between two runs of a case (plans, row order).
    'ALTER SYSTEM SET autovacuum = off',
    'SELECT pg_reload_conf()',
    `CREATE ROLE ${GROUP_ROLE} NOLOGIN`,
    `CREATE ROLE ${DIRECT_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD '${directPassword}' VALID UNTIL '${new Date(Date.now() + 86_400_000).toISOString()}'`,
    `GRANT ${GROUP_ROLE} TO ${DIRECT_ROLE}`,
    `CREATE DATABASE fid_template OWNER ${GROUP_ROLE}`,
    // test_setup.sql and a few cases (aggregates, arrays, jsonb, tsearch) load data files with
    // server-side COPY, as pg_regress's superuser does.
    `GRANT pg_read_server_files TO ${GROUP_ROLE}`,
  ]);
  const work = mkdtempSync(join(tmpdir(), 'tg-fid-run-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const { cluster } = pgc;
  const baseEnv = { ...REGRESS_ENV, PG_ABS_SRCDIR: dataRoot, PG_ABS_BUILDDIR: work, PG_LIBDIR: '/nonexistent', PG_DLSUFFIX: '.so' };
  const setup = await spawnPsql(['-X', '-q', '-d', `host=${cluster.host} port=${cluster.port} user=${cluster.superuser.user} dbname=fid_template options='-c role=${GROUP_ROLE}'`],
    { ...baseEnv, PGPASSWORD: cluster.superuser.password }, join(SQL_DIR, 'test_setup.sql'), join(work, 'setup.out'), 120_000);
  if (setup.code !== 0 || /FATAL|could not open file/.test(setup.output)) throw new Error(`test_setup.sql failed: ${setup.output.slice(0, 2000)}`);
  const check = await pgc.su('fid_template');
  try {
    const n = (await check.query('SELECT count(*)::int AS n FROM tenk1')).rows[0].n as number;
    if (n !== 10_000) throw new Error(`test_setup.sql loaded ${n} rows into tenk1, not 10000`);
  } finally {
    await check.end();
  }

  const target = {
    ...pgc.target, name: 'fid-db', description: 'PostgreSQL regression cases',
    roles: [
      { name: 'fid', description: 'Owner of the scratch database', grants: [GROUP_ROLE] },
      { name: 'tampered', description: 'As fid, with a deny rule (the suite must notice)', grants: [GROUP_ROLE] },
    ],
    credentials: { ...(pgc.target.credentials as Record<string, unknown>), database: 'postgres' },
  };
  const policies = [{ ...DEFAULT_POLICIES[0], rules: [{ pattern: '\\bbooltbl2\\b', action: 'deny', roles: ['tampered'], message: 'blocked by Tollgate policy: booltbl2 is off limits' }] }];
  const tg = await startTestGateway({ targets: [target], policies, listeners: ['postgres'] });
  t.teardown(() => tg.close());
  const grants = new Map<string, string>();
  /** Every gateway run signs in with its own single-use connection secret, as a person would. */
  const secret = async (role: string) => {
    let id = grants.get(role);
    if (!id) { id = (await tg.grant('alice', 'fid-db', role, '8h')).id; grants.set(role, id); }
    return (await tg.secret('alice', id)).secret;
  };
  const gw = tg.listener('postgres');

  const freshDb = () => suExec(pgc, [`DROP DATABASE IF EXISTS ${SCRATCH_DB} WITH (FORCE)`, `CREATE DATABASE ${SCRATCH_DB} TEMPLATE fid_template OWNER ${GROUP_ROLE}`]);
  /** After a gateway run the session's teardown drops the minted role (and what it owns) asynchronously. */
  const settle = async (via: Via) => {
    if (via !== 'gateway') return;
    const left = await pgc.noSessionRoles(30_000);
    if (left.length) throw new Error(`session roles left after the run: ${left.join(', ')}`);
  };
  const endpoint = async (via: Via, role = 'fid'): Promise<Endpoint> => via === 'direct'
    ? { host: cluster.host, port: cluster.port, user: DIRECT_ROLE, password: directPassword, database: SCRATCH_DB }
    : { host: gw.host, port: gw.port, user: `fid-db:${role}`, password: await secret(role), database: SCRATCH_DB, ca: tg.gw.tls.ca };

  return {
    pgc, tg, dataRoot, endpoint, freshDb, settle,
    async psql(caseFile, via, { timeoutMs = 180_000, role = 'fid' } = {}) {
      await freshDb();
      const e = await endpoint(via, role);
      const info = `host=${e.host} port=${e.port} user=${e.user} dbname=${e.database} sslmode=${e.ca ? 'require' : 'disable'}`;
      try {
        const r = await spawnPsql(['-X', '-a', '-q', '-d', info, '-v', 'HIDE_TABLEAM=on', '-v', 'HIDE_TOAST_COMPRESSION=on'],
          { ...baseEnv, PGPASSWORD: e.password }, caseFile, join(work, `${via}.out`), timeoutMs);
        return r.output;
      } finally {
        await settle(via);
      }
    },
    async extended(statements, via, { timeoutMs = 180_000, role = 'fid' } = {}) {
      await freshDb();
      // pg_regress's time zone and date style, as start-up options (psql sends them as parameters).
      const options = '-c TimeZone=PST8PDT -c DateStyle=Postgres,MDY';
      const { ca, ...e } = await endpoint(via, role);
      const c = new pg.Client({ ...e, options, ssl: ca ? { ca } : false });
      c.on('error', () => { /* the transcript shows the server's last words; the run stops there */ });
      let ended = false;
      c.on('end', () => { ended = true; });
      const out: string[] = [];
      const until = Date.now() + timeoutMs;
      // The start-up as the client sees it: authentication steps, every ParameterStatus, notices,
      // the transaction status (BackendKeyData's values and SASL payloads differ by nature).
      out.push('#start-up');
      const con = (c as unknown as { connection: PgConnection }).connection;
      const startup = (m: BackendMessage) => {
        out.push(describeMessage(m));
        if (m.name === 'readyForQuery') con.removeListener('message', startup);
      };
      con.on('message', startup);
      try {
        await c.connect();
        for (const st of statements) {
          if (Date.now() > until) throw new Error(`extended run timed out after ${timeoutMs} ms`);
          out.push(`#${st.line}: ${oneLine(st.text)}`);
          const r = await runPortal(c, st, Math.max(1000, until - Date.now()));
          out.push(...r.lines);
          if (r.closed || ended) { out.push('connection closed'); break; }
        }
      } finally {
        await c.end().catch(() => {});
        await settle(via);
      }
      return out.join('\n') + '\n';
    },
  };
}

function oneLine(s: string): string {
  const l = s.replace(/\s+/g, ' ').trim();
  return l.length > 100 ? l.slice(0, 100) + '…' : l;
}

/** Column types and tables of objects the case created have fresh OIDs each run: marked for renumbering (EXTENDED_RULES). */
const typeOid = (oid: number) => (oid >= 16384 ? `%oid${oid}` : String(oid));

/** One backend message as a transcript line (every field a client could see; pids left out). */
export function describeMessage(m: BackendMessage): string {
  const a = m as unknown as Record<string, unknown>;
  switch (m.name) {
    case 'rowDescription': {
      const fields = a['fields'] as { name: string; tableID: number; columnID: number; dataTypeID: number; dataTypeSize: number; dataTypeModifier: number; format: string }[];
      return `RowDescription ${fields.map((f) => `${JSON.stringify(f.name)}:${typeOid(f.dataTypeID)}/${f.dataTypeSize}/${f.dataTypeModifier}/${f.format}@${f.tableID ? `%oid${f.tableID}` : 0}.${f.columnID}`).join(' ')}`;
    }
    case 'parameterDescription': return `ParameterDescription ${(a['dataTypeIDs'] as number[]).map(typeOid).join(',')}`;
    case 'dataRow': return `DataRow ${(a['fields'] as (string | null)[]).map((v) => (v === null ? 'NULL' : JSON.stringify(v))).join(' | ')}`;
    case 'commandComplete': return `CommandComplete ${String(a['text'])}`;
    case 'readyForQuery': return `ReadyForQuery ${String(a['status'])}`;
    case 'parameterStatus': return `ParameterStatus ${String(a['parameterName'])}=${String(a['parameterValue'])}`;
    case 'notification': return `Notification ${String(a['channel'])} ${JSON.stringify(a['payload'])}`;
    case 'copyData': return `CopyData ${JSON.stringify((a['chunk'] as Buffer).toString('utf8'))}`;
    case 'copyInResponse': case 'copyOutResponse': return `${m.name} ${a['binary'] ? 'binary' : 'text'} ${(a['columnTypes'] as number[]).join(',')}`;
    case 'error': case 'notice': {
      const keys = ['severity', 'code', 'message', 'detail', 'hint', 'position', 'internalPosition', 'internalQuery', 'where', 'schema', 'table', 'column', 'dataType', 'constraint', 'file', 'line', 'routine'];
      return `${m.name === 'error' ? 'ErrorResponse' : 'NoticeResponse'} ${keys.filter((k) => a[k] !== undefined).map((k) => `${k}=${JSON.stringify(a[k])}`).join(' ')}`;
    }
    default: return m.name.charAt(0).toUpperCase() + m.name.slice(1);
  }
}

/**
 * One statement through the extended protocol on node-postgres's connection: Parse (named),
 * Describe S, Bind (named portal), Describe P, Execute with ROW_LIMIT rows and Flush until the
 * portal completes, then Close both and Sync. A pg "submittable", the way pg-cursor drives a portal.
 */
function runPortal(c: pg.Client, st: ScriptStatement, timeoutMs: number): Promise<{ lines: string[]; closed: boolean }> {
  const con = (c as unknown as { connection: PgConnection }).connection;
  const lines: string[] = [];
  const stmt = `fid_s${st.line}`;
  const portal = `fid_p${st.line}`;
  return new Promise((resolve, reject) => {
    let finished = false;
    const done = (e?: Error, closed = false) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      con.removeListener('message', onMessage);
      c.removeListener('end', onEnd);
      if (e) reject(e); else resolve({ lines, closed });
    };
    const onEnd = () => done(undefined, true);
    c.once('end', onEnd);
    const timer = setTimeout(() => done(new Error(`statement at line ${st.line} timed out`)), timeoutMs);
    const onMessage = (m: BackendMessage) => {
      lines.push(describeMessage(m));
      if (m.name === 'readyForQuery') done();
    };
    con.on('message', onMessage);
    const finish = () => {
      con.close({ type: 'P', name: portal });
      con.close({ type: 'S', name: stmt });
      con.sync();
    };
    const submittable = {
      submit(connection: PgConnection) {
        connection.parse({ name: stmt, text: st.text, types: [] });
        connection.describe({ type: 'S', name: stmt });
        connection.bind({ portal, statement: stmt, values: [] });
        connection.describe({ type: 'P', name: portal });
        connection.execute({ portal, rows: ROW_LIMIT });
        connection.flush();
      },
      handleRowDescription() {},
      handleDataRow() {},
      handlePortalSuspended(connection: PgConnection) {
        connection.execute({ portal, rows: ROW_LIMIT });
        connection.flush();
      },
      handleCommandComplete() { finish(); },
      handleEmptyQuery() { finish(); },
      handleCopyInResponse(connection: PgConnection) {
        if (st.copyData) connection.sendCopyFromChunk(Buffer.from(st.copyData, 'utf8'));
        connection.endCopyFrom();
        // In the extended protocol the server holds CommandComplete until Flush (or Sync).
        connection.flush();
      },
      handleCopyData() {},
      handleError(err: Error & { name?: string }, connection?: PgConnection) {
        // A server ErrorResponse: the server skips to Sync. Anything else: the connection is gone.
        if ((err as { severity?: string }).severity !== undefined) connection?.sync();
        else if (!/Connection terminated/.test(err.message)) done(err);
      },
      handleReadyForQuery() {},
    };
    c.query(submittable as unknown as pg.QueryConfig);
  });
}

interface PgConnection {
  on(ev: 'message', fn: (m: BackendMessage) => void): void;
  removeListener(ev: 'message', fn: (m: BackendMessage) => void): void;
  parse(q: { name: string; text: string; types: number[] }): void;
  describe(m: { type: 'S' | 'P'; name: string }): void;
  bind(m: { portal: string; statement: string; values: unknown[] }): void;
  execute(m: { portal: string; rows: number }): void;
  close(m: { type: 'S' | 'P'; name: string }): void;
  flush(): void;
  sync(): void;
  sendCopyFromChunk(b: Buffer): void;
  endCopyFrom(): void;
}

/** A case's statements for the extended run (psql-only parts left out, see script.ts). */
export function caseStatements(caseFile: string): ScriptStatement[] {
  return splitPsqlScript(readFileSync(caseFile, 'utf8')).statements;
}
