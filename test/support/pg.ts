/** Test helpers for the postgres module: a real PostgreSQL cluster (initdb in a temp dir, scram), cleaned up in teardown. */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { startCluster, demoTarget, findPgBin, type DemoCluster } from '../../protocols/postgres/demo.js';
import type { TargetConfig } from '../../protocols/types.js';

export const havePostgres = findPgBin() !== null;
export const quietLog = pino({ level: process.env.TG_TEST_LOG ?? 'silent' });

interface Teardown { teardown(fn: () => unknown): void }

export interface TestCluster {
  cluster: DemoCluster;
  dir: string;
  target: TargetConfig;
  /** A superuser client (the test's own view of the server). */
  su(database?: string): Promise<pg.Client>;
  /** Session roles (tg_*) that exist right now. */
  sessionRoles(): Promise<string[]>;
  /** Wait until no session role is left (teardown is asynchronous after a disconnect). */
  noSessionRoles(timeoutMs?: number): Promise<string[]>;
}

/** Clusters still running, stopped synchronously if the test process exits or is signalled before teardown. */
const live = new Map<string, { dataDir: string; dir: string }>();
let hooked = false;
function stopAllSync(): void {
  const bin = findPgBin();
  for (const { dataDir, dir } of live.values()) {
    const args = [join(bin ?? '', 'pg_ctl'), '-D', dataDir, '-m', 'immediate', '-w', 'stop'];
    if (process.getuid?.() === 0) spawnSync('runuser', ['-u', 'postgres', '--', ...args], { stdio: 'ignore' });
    else spawnSync(args[0]!, args.slice(1), { stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  }
  live.clear();
}
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.once('exit', stopAllSync);
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.once(sig, () => {
      stopAllSync();
      process.kill(process.pid, sig);
    });
  }
}

export async function startTestCluster(t: Teardown, name = 'prod-db'): Promise<TestCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'tg-pg-'));
  hookExit();
  live.set(dir, { dataDir: join(dir, 'postgres', 'data'), dir });
  let cluster: DemoCluster | null;
  try {
    cluster = await startCluster(dir, quietLog);
  } catch (e) {
    live.delete(dir);
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  if (!cluster) throw new Error('PostgreSQL is not installed');
  live.set(dir, { dataDir: cluster.dataDir, dir });
  t.teardown(async () => {
    live.delete(dir);
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const su = async (database = 'postgres') => {
    const c = new pg.Client({ host: cluster.host, port: cluster.port, user: cluster.superuser.user, password: cluster.superuser.password, database });
    await c.connect();
    return c;
  };
  const sessionRoles = async () => {
    const c = await su();
    try {
      return (await c.query("SELECT rolname FROM pg_roles WHERE rolname LIKE 'tg\\_%' ORDER BY 1")).rows.map((r) => r.rolname as string);
    } finally {
      await c.end();
    }
  };
  return {
    cluster, dir, target: demoTarget(cluster, name), su, sessionRoles,
    async noSessionRoles(timeoutMs = 10_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const left = await sessionRoles();
        if (!left.length || Date.now() > until) return left;
        await sleep(100);
      }
    },
  };
}

let shared: Promise<TestCluster> | null = null;
/**
 * One PostgreSQL cluster per test process for stores (not a target): started on first use, stopped
 * by the exit hook above (pg_ctl stop, temp dir removed) when the test file ends.
 */
export function sharedStoreCluster(): Promise<TestCluster> {
  shared ??= startTestCluster({ teardown: () => undefined }, 'store-db');
  return shared;
}

/** The role test stores connect as: it owns its databases and is no superuser. */
const STORE_ROLE = 'tollgate_store';
const STORE_PASSWORD = randomBytes(18).toString('base64url');
const rolesMade = new WeakMap<TestCluster, Promise<void>>();

export interface TestDatabase {
  name: string;
  /** postgres://tollgate_store:…@127.0.0.1:port/name */
  url: string;
  /** Drop it (every connection to it is closed first). */
  drop(): Promise<void>;
}

/** A fresh database on the shared store cluster (or the one given), owned by a role without superuser rights. */
export async function testDatabase(name = `tg_store_${randomBytes(6).toString('hex')}`, c?: TestCluster): Promise<TestDatabase> {
  const cl = c ?? await sharedStoreCluster();
  const su = await cl.su();
  try {
    if (!rolesMade.has(cl)) rolesMade.set(cl, su.query(`CREATE ROLE ${STORE_ROLE} LOGIN PASSWORD ${pg.escapeLiteral(STORE_PASSWORD)}`).then(() => undefined));
    await rolesMade.get(cl);
    const exists = (await su.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])).rowCount;
    if (!exists) await su.query(`CREATE DATABASE ${pg.escapeIdentifier(name)} OWNER ${STORE_ROLE}`);
  } finally {
    await su.end();
  }
  return {
    name,
    url: `postgres://${STORE_ROLE}:${STORE_PASSWORD}@${cl.cluster.host}:${cl.cluster.port}/${name}`,
    async drop() {
      const s = await cl.su();
      try { await s.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`); } finally { await s.end(); }
    },
  };
}

/** How many session roles (tg_*) run a statement containing `text` on the cluster right now (a session past its start-up). */
export async function runningStatements(c: TestCluster, text: string): Promise<number> {
  const su = await c.su();
  try {
    return (await su.query("SELECT 1 FROM pg_stat_activity WHERE usename LIKE 'tg\\_%' AND strpos(query, $1) > 0 AND pid <> pg_backend_pid()", [text])).rowCount ?? 0;
  } finally {
    await su.end();
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor<T>(fn: () => Promise<T | null | undefined | false> | T | null | undefined | false, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

export interface RunResult { code: number | null; signal: string | null; stdout: string; stderr: string }

/** Run a native client (psql, pgbench) with a time limit; never rejects. */
export function runClient(cmd: string, args: string[], opts: { env?: Record<string, string>; input?: string; timeoutMs?: number; onSpawn?: (p: ReturnType<typeof spawn>) => void } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { env: { ...process.env, PGCONNECT_TIMEOUT: '10', ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    p.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr }); });
    p.on('error', (e) => { clearTimeout(timer); resolve({ code: -1, signal: null, stdout, stderr: stderr + e.message }); });
    p.stdin.on('error', () => undefined); // the client may exit before reading its stdin
    p.stdin.end(opts.input ?? '');
    opts.onSpawn?.(p);
  });
}

/**
 * Turn on TLS in a test cluster with a fresh self-signed certificate (SAN 127.0.0.1, localhost)
 * and require it for every role but the test's own superuser. Returns the certificate PEM (the CA).
 */
export async function requireServerTls(c: TestCluster): Promise<string> {
  const { execFileSync } = await import('node:child_process');
  const { readFileSync, writeFileSync, chownSync, statSync } = await import('node:fs');
  const cert = join(c.cluster.dataDir, 'server.crt');
  const key = join(c.cluster.dataDir, 'server.key');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-keyout', key, '-out', cert,
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
  const st = statSync(c.cluster.dataDir);
  for (const f of [cert, key]) chownSync(f, st.uid, st.gid);
  const su = await c.su();
  try {
    await su.query('ALTER SYSTEM SET ssl = on');
    const hba = (await su.query('SHOW hba_file')).rows[0].hba_file as string;
    writeFileSync(hba, [
      'local all all scram-sha-256',
      'host all postgres 127.0.0.1/32 scram-sha-256',
      'hostssl all all 127.0.0.1/32 scram-sha-256',
      'hostnossl all all 127.0.0.1/32 reject',
      '',
    ].join('\n'));
    await su.query('SELECT pg_reload_conf()');
  } finally {
    await su.end();
  }
  await sleep(300);
  return readFileSync(cert, 'utf8');
}

/** A gateway with the postgres listener in front of a test cluster, and the helpers the e2e tests share. */
export async function startPgGateway(t: Teardown) {
  const { ManualClock } = await import('../../policies/clock.js');
  const { DEFAULT_POLICIES, startTestGateway } = await import('./gateway.js');
  const { writeFileSync } = await import('node:fs');
  const clock = new ManualClock(Date.now());
  const pgc = await startTestCluster(t);
  const plain = { ...pgc.target, name: 'plain-db', options: { allowPlain: true } };
  const pwdb = { ...pgc.target, name: 'pw-db', options: { clientAuth: 'password' } };
  const policies = [{
    ...DEFAULT_POLICIES[0],
    rules: [
      { kinds: ['DROP', 'TRUNCATE'], action: 'deny', message: 'blocked by Tollgate policy: no DROP or TRUNCATE here' },
      { kinds: ['COPY PROGRAM'], action: 'deny' },
      { pattern: 'tollgate_kill_me', action: 'kill', message: 'Tollgate: forbidden statement, session closed' },
      { pattern: 'tollgate_alert_me', action: 'alert' },
      { kinds: ['FUNCTION'], action: 'deny', roles: ['admin'], message: 'blocked by Tollgate policy: no fast-path calls as admin' },
    ],
  }];
  const tg = await startTestGateway({ targets: [pgc.target, plain, pwdb], policies, listeners: ['postgres'], clock, expiryWarning: '2s' });
  t.teardown(() => tg.close());
  const { host, port } = tg.listener('postgres');
  const caFile = join(pgc.dir, 'gateway-ca.pem');
  writeFileSync(caFile, tg.gw.tls.ca);

  const connect = async (user: string, password: string, opts: Partial<pg.ClientConfig> = {}) => {
    const c = new pg.Client({ host, port, user, password, database: 'app', ssl: { ca: tg.gw.tls.ca }, ...opts });
    const errors: (Error & { code?: string })[] = [];
    const notices: { message?: string }[] = [];
    const notifications: pg.Notification[] = [];
    c.on('error', (e) => errors.push(e));
    c.on('notice', (n) => notices.push(n));
    c.on('notification', (n) => notifications.push(n));
    await c.connect();
    return { c, errors, notices, notifications, ended: new Promise<void>((res) => c.on('end', () => res())) };
  };
  const secretFor = async (target = 'prod-db', role = 'read', reusable = false) => {
    const g = await tg.grant('alice', target, role);
    return { grant: g, ...(await tg.secret('alice', g.id, { reusable })) };
  };
  /** Teardown is asynchronous after a disconnect: wait until no session is live any more. */
  const settle = () => waitFor(async () => (await tg.store.listSessions({ state: 'active' })).length === 0, 10_000, 'sessions to end');
  const allQueries = async (target = 'prod-db') => {
    const out = [];
    for (const s of await tg.store.listSessions({ target })) out.push(...await tg.store.listQueries(s.id));
    return out;
  };
  const liveSession = async (target = 'prod-db') => waitFor(async () => {
    const r = await tg.api('carol', 'GET', `/api/v1/sessions?state=active&target=${target}`);
    return r.body[0] as { id: string } | undefined;
  }, 10_000, 'a live session');
  return { clock, pgc, tg, host, port, caFile, connect, secretFor, settle, allQueries, liveSession };
}
