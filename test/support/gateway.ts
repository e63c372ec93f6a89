/**
 * Start a real gateway in-process for end-to-end tests: SQLite in a temp dir (or, with
 * TOLLGATE_TEST_STORE=postgres or `store: 'postgres'`, a database of its own on a PostgreSQL
 * cluster started for the test process), real listeners on free loopback ports, real protocol modules. Users alice (engineers, oncall), bob and dave
 * (approvers), carol (soc) exist as identities with API tokens (test setup writes them to the
 * store; the OIDC flows themselves are tested in test/auth and test/proxy/signin).
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { Clock } from '../../policies/clock.js';
import { moduleMap } from '../../protocols/index.js';
import type { ProtocolModule } from '../../protocols/types.js';
import { validateConfig } from '../../proxy/config.js';
import type { TargetConfig } from '../../protocols/config.js';
import type { PolicyConfig } from '../../policies/config.js';
import { Gateway } from '../../proxy/gateway.js';
import { openStore } from '../../proxy/store/index.js';
import type { GrantRecord, Store } from '../../proxy/store/types.js';
import { testDatabase } from './pg.js';
import { keepDirsForScan, recordDir, recordSecret, scanLogFile } from './secret-registry.js';

export type TestStoreKind = 'sqlite' | 'postgres';

/** The store kind test gateways use unless a test says otherwise: TOLLGATE_TEST_STORE (sqlite | postgres), default sqlite. */
export function testStoreKind(): TestStoreKind {
  const v = process.env['TOLLGATE_TEST_STORE'] ?? 'sqlite';
  if (v !== 'sqlite' && v !== 'postgres') throw new Error(`TOLLGATE_TEST_STORE: expected sqlite or postgres, got ${JSON.stringify(v)}`);
  return v;
}

export const TEST_USERS: Record<string, string[]> = {
  alice: ['engineers', 'oncall'],
  bob: ['approvers'],
  dave: ['approvers', 'security'],
  carol: ['soc'],
  erin: ['engineers'],
};

export const DEFAULT_POLICIES: PolicyConfig[] = [{
  name: 'test', targets: ['*'], roles: ['*'], requesters: ['engineers'], approvers: ['approvers'], escalateTo: ['security'],
  onTimeout: 'deny', rules: [],
} as PolicyConfig];

export interface TestGateway {
  gw: Gateway;
  url: string;
  dataDir: string;
  /** The gateway key file (0600, made on first start in the temp data dir, outside the store). */
  keyFile: string;
  store: Store;
  storeKind: TestStoreKind;
  /** The PostgreSQL URL of its store (postgres only): start another gateway on the same database with `storeUrl`. */
  storeUrl: string | null;
  /** Another handle on the same store (as another gateway would open it); the caller closes it. */
  openStore(): Promise<Store>;
  listener(name: string): { host: string; port: number };
  token(user: string): string;
  api(user: string | null, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }>;
  grant(user: string, target: string, role: string, duration?: string): Promise<GrantRecord>;
  secret(user: string, grantId: string, opts?: { reusable?: boolean; ttl?: string }): Promise<{ id: string; username: string; secret: string; host: string; port: number; expiresAt: string; commands: Record<string, string> }>;
  /** Register an SSH public key for `user`, proving possession with `ssh-keygen -Y sign` as the CLI does. */
  registerKey(user: string, privateKeyFile: string, name?: string): Promise<{ status: number; body: any }>;
  close(): Promise<void>;
}

export type Api = (user: string | null, method: string, path: string, body?: unknown) => Promise<{ status: number; body: any }>;

/** The REST API at url as the test users (bearer tokens; JSON bodies). */
export function apiOf(url: string, tokens: Record<string, string>): Api {
  return async (user, method, path, body) => {
    const res = await fetch(url + path, {
      method,
      headers: { ...(user ? { authorization: `Bearer ${tokens[user]}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    let parsed: unknown = text;
    try { parsed = text ? JSON.parse(text) : null; } catch { /* text body */ }
    return { status: res.status, body: parsed };
  };
}

/** Request access as `user` through an API, approve it (bob, then dave where needed) and return the grant id. */
export async function requestAndApprove(api: Api, user: string, target: string, role: string, duration = '1h'): Promise<string> {
  const r = await api(user, 'POST', '/api/v1/requests', { target, role, duration, reason: 'test' });
  if (r.status !== 201) throw new Error(`request failed: ${r.status} ${JSON.stringify(r.body)}`);
  let req = r.body;
  for (const approver of ['bob', 'dave']) {
    if (req.state !== 'pending') break;
    const a = await api(approver, 'POST', `/api/v1/requests/${req.id}/approve`, { comment: 'ok' });
    if (a.status !== 200) throw new Error(`approve failed: ${a.status} ${JSON.stringify(a.body)}`);
    req = a.body;
  }
  if (req.state !== 'approved' || !req.grantId) throw new Error(`request not approved: ${JSON.stringify(req)}`);
  return req.grantId as string;
}

export async function startTestGateway(opts: {
  targets: TargetConfig[] | Record<string, unknown>[];
  policies?: PolicyConfig[] | Record<string, unknown>[];
  listeners?: string[];
  clock?: Clock;
  expiryWarning?: string;
  modules?: Map<string, ProtocolModule>;
  breakGlass?: Record<string, unknown>;
  extra?: Record<string, unknown>;
  /** More gateway.* settings (e.g. maxFailures). */
  gateway?: Record<string, unknown>;
  /** More settings per listener (e.g. { ssh: { loginTimeout: '1s', maxStartupsPerSource: 3 } }). */
  listenerOptions?: Record<string, Record<string, unknown>>;
  /** The http listener: a fixed port (for a publicUrl known before start) and TLS. */
  http?: { port?: number; tls?: unknown };
  /** Receive the gateway's structured log lines (debug level) instead of discarding them. */
  logSink?: (line: string) => void;
  /** Use this data directory (e.g. to restart on one); the caller removes it. Default: a new temp dir, removed by close(). */
  dataDir?: string;
  /** Which store (default: testStoreKind()). Tests that read the SQLite file itself say 'sqlite'. */
  store?: TestStoreKind;
  /** Use this PostgreSQL database (several gateways on one store); the caller drops it. */
  storeUrl?: string;
}): Promise<TestGateway> {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'tg-gw-'));
  const storeKind: TestStoreKind = opts.storeUrl ? 'postgres' : opts.store ?? testStoreKind();
  // A database per data dir, so a restart on the same data dir finds its store again.
  const db = storeKind === 'postgres' && !opts.storeUrl
    ? await testDatabase(`tg_gw_${createHash('sha256').update(dataDir).digest('hex').slice(0, 16)}`)
    : null;
  const storeUrl = opts.storeUrl ?? db?.url ?? null;
  const modules = opts.modules ?? moduleMap();
  const listeners: Record<string, Record<string, unknown>> = { http: { host: '127.0.0.1', port: opts.http?.port ?? 0, ...(opts.http?.tls ? { tls: opts.http.tls } : {}) } };
  for (const l of opts.listeners ?? []) listeners[l] = { host: '127.0.0.1', port: 0 };
  for (const [l, o] of Object.entries(opts.listenerOptions ?? {})) listeners[l] = { ...listeners[l], ...o };
  const config = validateConfig({
    gateway: { dataDir, id: 'test', logLevel: 'silent', expiryWarning: opts.expiryWarning ?? '60s', reaperInterval: '1h', ...(opts.gateway ?? {}) },
    listeners,
    store: storeUrl ? { kind: 'postgres', url: { value: storeUrl } } : { kind: 'sqlite' },
    targets: opts.targets,
    policies: opts.policies ?? DEFAULT_POLICIES,
    breakGlass: opts.breakGlass ?? { groups: ['oncall'], maxDuration: '1h' },
    ...(opts.extra ?? {}),
  }, '<test>', modules);
  const sink = opts.logSink;
  // In a scanned run (test/run.js) the log goes to a file under the test root at debug level, so
  // the secret scan reads what the gateway would have logged.
  const logFile = sink || process.env['TOLLGATE_TEST_LOG'] ? null : scanLogFile('gateway');
  const log = sink
    ? pino({ level: 'trace' }, { write: (l: string) => sink(l) })
    : logFile
      ? pino({ level: 'debug' }, pino.destination({ dest: logFile, sync: true }))
      : pino({ level: process.env['TOLLGATE_TEST_LOG'] ?? 'silent' });
  if (opts.dataDir) recordDir(opts.dataDir);
  // Kept for the secret scan, which removes them afterwards.
  const removeDataDir = !opts.dataDir && !keepDirsForScan();
  const created = new Gateway({ config, clock: opts.clock, log, modules });
  const gw = await created.start().catch(async (e: unknown) => {
    // A gateway that cannot start (a test of bad config) leaves nothing behind either.
    await created.stop().catch(() => undefined);
    if (!opts.dataDir) await db?.drop();
    if (removeDataDir) rmSync(dataDir, { recursive: true, force: true });
    throw e;
  });
  const tokens: Record<string, string> = {};
  for (const [name, groups] of Object.entries(TEST_USERS)) {
    const now = gw.clock.now();
    await gw.store.upsertIdentity({ sub: name, email: `${name}@test`, name, groups, firstSeen: now, lastSeen: now });
    tokens[name] = (await gw.tokens.create(name, 'test', gw.tokens.maxTtlMs, now)).token.reveal();
    recordSecret('api_token', tokens[name]!);
  }
  const url = gw.publicUrl;
  const api = apiOf(url, tokens);
  const tg: TestGateway = {
    gw, url, dataDir, keyFile: (opts.gateway?.['key'] as { file?: string } | undefined)?.file ?? join(dataDir, 'gateway.key'), store: gw.store,
    storeKind, storeUrl,
    openStore: () => openStore(config, { dataDir, mustExist: true }),
    listener(name) {
      const a = gw.listenerAddress(name);
      if (!a) throw new Error(`no listener ${name}`);
      return a;
    },
    token: (u) => tokens[u]!,
    api,
    async grant(user, target, role, duration = '1h') {
      return (await gw.store.getGrant(await requestAndApprove(api, user, target, role, duration)))!;
    },
    async secret(user, grantId, o = {}) {
      const r = await api(user, 'POST', `/api/v1/grants/${grantId}/secret`, o);
      if (r.status !== 201) throw new Error(`secret failed: ${r.status} ${JSON.stringify(r.body)}`);
      recordSecret('connection_secret', r.body.secret);
      return r.body;
    },
    async registerKey(user, keyFile, name = 'key') {
      const publicKey = readFileSync(`${keyFile}.pub`, 'utf8').trim();
      const ch = await api(user, 'POST', '/api/v1/keys/challenge', { publicKey });
      if (ch.status !== 200) return ch;
      const dir = mkdtempSync(join(tmpdir(), 'tg-keyreg-'));
      try {
        writeFileSync(join(dir, 'challenge'), ch.body.challenge);
        execFileSync('ssh-keygen', ['-Y', 'sign', '-n', ch.body.namespace, '-f', keyFile, join(dir, 'challenge')], { stdio: 'pipe' });
        const signature = readFileSync(join(dir, 'challenge.sig'), 'utf8');
        return await api(user, 'POST', '/api/v1/keys', { publicKey, name, challenge: ch.body.challenge, signature });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
    async close() {
      await gw.stop();
      if (!opts.dataDir) await db?.drop();
      if (removeDataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return tg;
}
