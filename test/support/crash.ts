/**
 * The crash-recovery rig: `tollgate serve` as a child process on a config file (so SIGKILL is a
 * real crash), restarted on the same data, with the API as a person would use it (bearer tokens
 * made once in-process on the same data) and the checks every crashed session must pass.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import pino from 'pino';
import type tap from 'tap';
import { moduleMap } from '../../protocols/index.js';
import { loadConfigFile } from '../../proxy/config.js';
import { Gateway } from '../../proxy/gateway.js';
import { TEST_USERS } from './gateway.js';

const root = join(import.meta.dirname, '..', '..');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Rounds of a crash test: TOLLGATE_CRASH_ROUNDS, 2 by default (what `npm test` runs), 20 for the full run. */
export const CRASH_ROUNDS = Number(process.env['TOLLGATE_CRASH_ROUNDS'] ?? 2);
/** The bound: every lease the crash left is revoked within this long of the SIGKILL, restart included. */
export const REVOKE_BOUND_MS = 10_000;

/**
 * A free port below the kernel's ephemeral range (32768+): the gateway listens on the same ports
 * after each restart, and while it is down no outgoing connection on the machine can take them
 * as its source port (which one from freePort() could: EADDRINUSE at the restart).
 */
export async function stablePort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const free = await new Promise<boolean>((r) => {
      const srv = createServer().once('error', () => r(false)).listen(port, '127.0.0.1', () => srv.close(() => r(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port below 32000');
}

export interface Serve { proc: ChildProcess; url: string; exit: Promise<number | null>; output: () => string }

export async function serve(cfg: string): Promise<Serve> {
  const proc = spawn(process.execPath, [join(root, 'proxy/bin/tollgate.js'), 'serve', '--config', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => { out += d; });
  proc.stderr!.on('data', (d) => { out += d; });
  const exit = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  // Generous: on a loaded machine the start-up alone can take a minute (the revoke bound is measured, not this).
  const deadline = Date.now() + 180_000;
  for (;;) {
    const m = /Tollgate is running at (\S+)/.exec(out);
    if (m) return { proc, url: m[1]!, exit, output: () => out };
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`serve did not start:\n${out}`);
    }
    await sleep(50);
  }
}

interface Teardown { teardown(fn: () => unknown): void }
type Api = (user: string, method: string, path: string, body?: unknown) => Promise<{ status: number; body: any }>;

export interface CrashRig {
  /** The running child. */
  readonly gw: Serve;
  /** The gateway's CA (its TLS listeners). */
  ca: string;
  /** alice's gateway web session cookie value (what her browser holds). */
  webCookie: string;
  tokens: Record<string, string>;
  api: Api;
  /** SIGKILL the child; resolves once it is gone. */
  kill(): Promise<void>;
  /**
   * Restart at once, then poll `gone` (every lease revoked on its target) until it holds or 15 s
   * have passed since the kill: how long after the SIGKILL it held, and the restart's share of it.
   */
  restartUntilGone(killedAt: number, gone: () => boolean | Promise<boolean>): Promise<{ gone: boolean; revokedMs: number; startMs: number }>;
  /** A grant for alice (approved by bob and dave when the policy asks). */
  grant(target: string, role: string): Promise<string>;
  secret(grantId: string): Promise<{ username: string; secret: string }>;
}

/** Identities and tokens made in-process on the config's data, then `tollgate serve` started on it. */
export async function crashRig(t: Teardown, cfg: string): Promise<CrashRig> {
  const tokens: Record<string, string> = {};
  let ca: string;
  let webCookie: string;
  {
    const gw = await new Gateway({ config: loadConfigFile(cfg, moduleMap()), log: pino({ level: 'silent' }) }).start();
    for (const [name, groups] of Object.entries(TEST_USERS)) {
      const now = gw.clock.now();
      await gw.store.upsertIdentity({ sub: name, email: `${name}@test`, name, groups, firstSeen: now, lastSeen: now });
      tokens[name] = (await gw.tokens.create(name, 'test', gw.tokens.maxTtlMs, now)).token.reveal();
    }
    ca = gw.tls.ca;
    webCookie = (await gw.webSessions.create('alice', null, 6 * 3_600_000)).cookie.reveal();
    await gw.stop();
  }
  let current = await serve(cfg);
  t.teardown(() => { if (current.proc.exitCode === null) current.proc.kill('SIGKILL'); });
  const api: Api = async (user, method, path, body) => {
    const res = await fetch(current.url + path, { method, headers: { authorization: `Bearer ${tokens[user]}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
  return {
    get gw() { return current; },
    ca, webCookie, tokens, api,
    async kill() {
      current.proc.kill('SIGKILL');
      await current.exit;
    },
    async restartUntilGone(killedAt, gone) {
      const restartedAt = Date.now();
      current = await serve(cfg);
      const startMs = Date.now() - restartedAt;
      let ok = false;
      while (!ok && Date.now() - killedAt < REVOKE_BOUND_MS + 5000) {
        ok = await gone();
        if (!ok) await sleep(50);
      }
      return { gone: ok, revokedMs: Date.now() - killedAt, startMs };
    },
    async grant(target, role) {
      const r = await api('alice', 'POST', '/api/v1/requests', { target, role, duration: '2h', reason: 'crash test' });
      let req = r.body;
      for (const approver of ['bob', 'dave']) if (req.state === 'pending') req = (await api(approver, 'POST', `/api/v1/requests/${req.id}/approve`, { comment: 'ok' })).body;
      if (!req.grantId) throw new Error(`not approved: ${JSON.stringify(req)}`);
      return req.grantId as string;
    },
    async secret(g) {
      const r = await api('alice', 'POST', `/api/v1/grants/${g}/secret`, {});
      if (r.status !== 201) throw new Error(`secret: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body as { username: string; secret: string };
    },
  };
}

type Checks = Pick<typeof tap, 'equal' | 'ok' | 'match' | 'same'>;

/**
 * What every session a crash cut must show after the restart: ended `gateway_crash`, recordings
 * sealed, marked cut by a crash and verifying against their seal, audited once as ended
 * gateway_crash; and the audit chain verifies. Returns each session's recordings for the
 * protocol's own content checks (`file(kind)` fetches one through the API).
 */
export async function checkCrashed(t: Checks, rig: CrashRig, round: number, live: { id: string; protocol: string }[]): Promise<Map<string, { kinds: string[]; file(kind: string): Promise<string> }>> {
  const out = new Map<string, { kinds: string[]; file(kind: string): Promise<string> }>();
  for (const l of live) {
    const r = (await rig.api('carol', 'GET', `/api/v1/sessions/${l.id}`)).body;
    t.equal(r.state, 'ended', `round ${round}: ${l.protocol} session ended`);
    t.match(r.endReason, /^gateway_crash: /, `round ${round}: ${l.protocol} ended gateway_crash`);
    t.ok(r.recordings.length >= 1, `round ${round}: ${l.protocol} has recordings`);
    for (const rec of r.recordings) {
      t.match(rec, { state: 'sealed', cut: 'gateway_crash' }, `round ${round}: ${l.protocol} ${rec.kind} sealed, marked cut by a crash`);
      t.match((await rig.api('carol', 'GET', `/api/v1/recordings/${rec.id}/verify`)).body, { ok: true }, `round ${round}: ${rec.kind} verifies against its seal`);
    }
    const ended = (await rig.api('carol', 'GET', `/api/v1/audit?action=session.ended&subject=${l.id}`)).body as { data: { reason: string } }[];
    t.same(ended.map((e) => e.data.reason), ['gateway_crash'], `round ${round}: ${l.protocol} audited once, as ended gateway_crash`);
    out.set(l.id, {
      kinds: r.recordings.map((x: { kind: string }) => x.kind),
      async file(kind: string) {
        const rec = r.recordings.find((x: { kind: string }) => x.kind === kind);
        if (!rec) throw new Error(`${l.protocol} session ${l.id} has no ${kind} recording`);
        const res = await fetch(`${rig.gw.url}/api/v1/recordings/${rec.id}`, { headers: { authorization: `Bearer ${rig.tokens['carol']}` } });
        return res.text();
      },
    });
  }
  t.match((await rig.api('carol', 'GET', '/api/v1/audit/verify')).body, { ok: true }, `round ${round}: the audit chain verifies`);
  return out;
}
