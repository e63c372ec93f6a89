/**
 * The protocol contract, checked the same way for every protocol module (test/contract/<module>.test.ts
 * runs it with that module's adapter and real server; the fake module runs it too). One gateway
 * per module, on an injected clock, through the module's real listener and a real client:
 *
 *   - a lease is minted, and revoked (the credential gone on the target) on every ending path:
 *     client exit, kill, expiry, the target dropping the connection, a failed mint;
 *   - a refusal reaches the client in its protocol: a wrong connection secret, and a connection
 *     the listener's front door refuses over its caps (the module's declared refuse);
 *   - the module declares its lease kinds, each with a revoke; an undeclared kind is refused
 *     before anything is stored, and a stored lease of an unknown kind is never marked revoked;
 *   - a revoke that fails leaves the lease visible (standing privileges: API, dashboard, alert)
 *     and not revoked; it is not retried before its backoff, then it is, and the lease is revoked.
 */
import net from 'node:net';
import type { Test } from 'tap';
import { ManualClock } from '../../policies/clock.js';
import { Secret } from '../../auth/secret.js';
import { UnknownLeaseKindError, type ProtocolModule } from '../../protocols/types.js';
import type { LeaseRecord, SessionRecord } from '../../proxy/store/types.js';
import { DEFAULT_REVOKE_RETRY } from '../../proxy/sessions.js';
import { startTestGateway, type TestGateway } from './gateway.js';

/** One client connection attempt through the gateway. */
export interface ConformanceConn {
  /** The client ends its connection. */
  close(): Promise<void> | void;
  /** Resolves once the gateway ended the connection, with the text the client was shown ('' where the protocol has none). */
  ended: Promise<string>;
}

export interface ConformanceAdapter {
  module: string;
  /** The targets, their real servers started by the test file. */
  targets: Record<string, unknown>[];
  /** The module's TCP listener (none for protocols on the HTTP front). */
  listener?: string;
  /** The target and role of the ending paths. */
  target: string;
  role: string;
  /** A target and role whose mint fails on the (reachable) target, and what its revoke then cleans up. */
  mintFailure: { target: string; role: string; arm?(): void };
  /** Start a client connection with this connection secret (the gateway decides; see ConformanceConn). */
  connect(tg: TestGateway, s: { username: string; secret: string }): Promise<ConformanceConn>;
  /** Called once the session's lease is active (e.g. to note what the credential looks like on the target). */
  minted?(tg: TestGateway, lease: LeaseRecord): Promise<void> | void;
  /** Whether the lease's credential still exists / works on the target (seen directly, not through the gateway). */
  exists(tg: TestGateway, lease: LeaseRecord): Promise<boolean>;
  /** Make the target unreachable for the gateway's admin work (revokes fail); resolves to the undo. */
  breakTarget(tg: TestGateway): Promise<() => Promise<void> | void>;
  /** The target drops the session's connection; a string says why the protocol has no such path. */
  dropTarget: ((tg: TestGateway) => Promise<void> | void) | string;
  /** What the client sees when refused (a wrong connection secret, or no grant where there is no secret). */
  refusal: { attempt?(tg: TestGateway): Promise<string>; expect: RegExp };
  /** A connection over the listener's caps: what the client sends first, and what it must read ('closed': the protocol has no words there). */
  frontDoor?: { greet?(sock: net.Socket): void; expect: RegExp | 'closed' };
  /** The text a killed client is shown (where the protocol can show one). */
  killText?: RegExp;
  /** More gateway options (extra config, module registry). */
  gateway?: Partial<Parameters<typeof startTestGateway>[0]>;
  /** Advance the clock for the client-exit path when the protocol's client exit is an idle timeout. */
  clientExitBy?: 'close' | { idleMs: number };
}

const WAIT_MS = 20_000;

async function waitFor<T>(what: string, fn: () => Promise<T | null | undefined | false> | T | null | undefined | false, ms = WAIT_MS): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v as T;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, rej) => { timer = setTimeout(() => rej(new Error(`timed out waiting for ${what}`)), ms); })]).finally(() => clearTimeout(timer));
}

export async function conformance(t: Test, a: ConformanceAdapter): Promise<void> {
  const clock = new ManualClock(Date.now());
  const listenerOptions = a.listener ? { [a.listener]: { maxStartups: 1 } } : undefined;
  const tg = await startTestGateway({
    targets: a.targets, listeners: a.listener ? [a.listener] : [], clock, listenerOptions, expiryWarning: '1s', ...(a.gateway ?? {}),
  });
  t.teardown(() => tg.close());
  const mod = tg.gw.modules.get(a.module) as ProtocolModule;

  /** The ids of a target's sessions so far; sessionsSince: the ones that came after (the clock stands still). */
  const known = async (target: string) => new Set((await tg.store.listSessions({ target })).map((s) => s.id));
  const sessionsSince = async (target: string, before: Set<string>): Promise<SessionRecord[]> =>
    (await tg.store.listSessions({ target })).filter((s) => !before.has(s.id));

  /** Grant, secret, connect; resolves when the session's lease is active. */
  const open = async (duration = '1h') => {
    const g = await tg.grant('alice', a.target, a.role, duration);
    const s = await tg.secret('alice', g.id);
    const since = await known(a.target);
    const conn = await a.connect(tg, s);
    let gone = false;
    void conn.ended.then(() => { gone = true; }, () => { gone = true; });
    const { session, lease } = await waitFor('the session and its active lease', async () => {
      if (gone) throw new Error(`the client was ended before its session ran: ${await conn.ended.catch((e: Error) => e.message)}`);
      const [session] = await sessionsSince(a.target, since);
      if (!session) return null;
      const lease = (await tg.store.listLeases({ sessionId: session.id })).find((l) => l.state === 'active');
      return lease ? { session, lease } : null;
    });
    await a.minted?.(tg, lease);
    return { g, conn, session, lease };
  };

  /** The lease ends revoked with its credential gone, and the session ended with this code. */
  const revokedAfter = async (t: Test, lease: LeaseRecord, sessionId: string, code: string | RegExp) => {
    const l = await waitFor(`lease ${lease.id} to be revoked`, async () => {
      const l = await tg.store.getLease(lease.id);
      return l?.state === 'revoked' ? l : null;
    });
    t.equal(l.error, null, 'revoked with no error');
    t.notOk(await a.exists(tg, lease), 'the credential is gone from the target');
    const s = await waitFor('the session to end', async () => {
      const s = await tg.store.getSession(sessionId);
      return s?.state === 'ended' ? s : null;
    });
    t.match(s.endReason, typeof code === 'string' ? new RegExp(`^${code}:`) : code, `the session ended: ${s.endReason}`);
    const ev = await tg.store.listAudit({ action: 'lease.revoked', subject: lease.id });
    t.equal(ev.length, 1, 'lease.revoked audited once');
    t.match(ev[0]?.data, { kind: lease.kind, detail: /\S/ }, 'with what the revoke did');
  };

  t.test('the module declares its lease kinds, each with a revoke, and a refusal in its protocol', async (t) => {
    const kinds = Object.entries(mod.leaseKinds);
    t.ok(kinds.length > 0, `${a.module} declares lease kinds: ${kinds.map(([k]) => k).join(', ')}`);
    for (const [k, v] of kinds) {
      t.type(v.revoke, 'function', `${k} has a revoke`);
      t.ok(v.holds.length > 3, `${k} says what it holds: ${v.holds}`);
    }
    if (a.listener) t.type(mod.refuse, 'function', 'a module with a listener declares refuse');
  });

  t.test('a refusal reaches the client in its protocol', async (t) => {
    const text = a.refusal.attempt ? await a.refusal.attempt(tg) : await (async () => {
      const g = await tg.grant('alice', a.target, a.role);
      const s = await tg.secret('alice', g.id);
      const conn = await a.connect(tg, { username: s.username, secret: `${s.secret}-wrong` });
      return within(conn.ended, WAIT_MS, 'the refusal');
    })();
    t.match(text, a.refusal.expect, `the client was told: ${JSON.stringify(text.slice(0, 300))}`);
    t.equal((await tg.store.listLeases({ target: a.target })).filter((l) => l.state !== 'revoked').length, 0, 'nothing was minted');

    if (a.frontDoor && a.listener) {
      const { host, port } = tg.listener(a.listener);
      // One connection that does not sign in fills the listener's cap (maxStartups: 1); the next is refused at the door.
      // (A connection of the step before may still hold the slot for a moment: then the holder is refused, and tries again.)
      let holder: net.Socket | null = null;
      for (let i = 0; i < 20 && !holder; i++) {
        const h = net.connect({ host, port });
        h.on('error', () => undefined);
        h.on('data', () => undefined);
        let closed = false;
        h.once('close', () => { closed = true; });
        await new Promise<void>((r) => h.once('connect', () => r()));
        await new Promise((r) => setTimeout(r, 500));
        if (closed) continue;
        holder = h;
      }
      if (!holder) throw new Error('no connection could hold the listener\'s only pre-authentication slot');
      const sock = net.connect({ host, port });
      const got: Buffer[] = [];
      sock.on('data', (d: Buffer) => got.push(d));
      sock.on('error', () => undefined);
      await new Promise<void>((r) => sock.once('connect', () => r()));
      a.frontDoor.greet?.(sock);
      await within(new Promise<void>((r) => sock.once('close', () => r())), WAIT_MS, 'the refused connection to close');
      holder.destroy();
      await new Promise((r) => setTimeout(r, 300)); // its slot is free again before the next step
      const seen = Buffer.concat(got);
      if (a.frontDoor.expect === 'closed') t.equal(seen.length, 0, 'closed before any byte: the protocol has no words before its handshake');
      else t.match(seen.toString('latin1'), a.frontDoor.expect, `the front door's refusal reached the client: ${JSON.stringify(seen.toString('latin1').slice(0, 200))}`);
    }
  });

  t.test('client exit: the lease is revoked', async (t) => {
    const { conn, session, lease } = await open();
    t.ok(await a.exists(tg, lease), 'the credential exists while the session runs');
    if (a.clientExitBy && a.clientExitBy !== 'close') clock.advance(a.clientExitBy.idleMs + 1000);
    else await conn.close();
    await revokedAfter(t, lease, session.id, 'client_exit');
  });

  t.test('kill: the lease is revoked and the client is told', async (t) => {
    const { conn, session, lease } = await open();
    const r = await tg.api('carol', 'POST', `/api/v1/sessions/${session.id}/kill`, { reason: 'conformance' });
    t.equal(r.status, 200, 'killed');
    const text = await within(conn.ended, WAIT_MS, 'the client to be ended');
    if (a.killText) t.match(text, a.killText, `the client was told: ${JSON.stringify(text.slice(0, 200))}`);
    await revokedAfter(t, lease, session.id, 'killed');
  });

  t.test('expiry: the lease is revoked at the grant end', async (t) => {
    const { conn, session, lease } = await open('10m');
    clock.advance(10 * 60_000 + 1000);
    await within(conn.ended, WAIT_MS, 'the client to be ended');
    await revokedAfter(t, lease, session.id, 'expired');
  });

  t.test('target drop: the lease is revoked', async (t) => {
    if (typeof a.dropTarget === 'string') {
      t.pass(`not applicable: ${a.dropTarget}`);
      return;
    }
    const { conn, session, lease } = await open();
    await a.dropTarget(tg);
    await within(conn.ended, WAIT_MS, 'the client to be ended');
    await revokedAfter(t, lease, session.id, /^(target_closed|target_error|client_exit):/);
  });

  t.test('mint failure: the client is refused, what the mint left is revoked', async (t) => {
    const g = await tg.grant('alice', a.mintFailure.target, a.mintFailure.role);
    const s = await tg.secret('alice', g.id);
    a.mintFailure.arm?.();
    const since = await known(a.mintFailure.target);
    const conn = await a.connect(tg, s);
    await within(conn.ended, WAIT_MS, 'the refusal');
    const sessions = await waitFor('the session to end', async () => {
      const ss = await sessionsSince(a.mintFailure.target, since);
      return ss.length && ss.every((x) => x.state === 'ended') ? ss : null;
    });
    const leases = (await Promise.all(sessions.map((x) => tg.store.listLeases({ sessionId: x.id })))).flat();
    t.ok(leases.length >= 1, `the lease was stored before the mint ran (${leases.length})`);
    for (const l of leases) {
      const now = await waitFor(`lease ${l.id} to be revoked`, async () => { const x = await tg.store.getLease(l.id); return x?.state === 'revoked' ? x : null; });
      t.equal(now.state, 'revoked', `lease ${l.kind} revoked`);
      t.notOk(await a.exists(tg, l), 'nothing is left on the target');
    }
    t.ok((await tg.store.listAudit({ action: 'lease.mint_failed' })).some((e) => leases.some((l) => l.id === e.subject)), 'the failed mint is audited');
    t.match(sessions[0]!.endReason, /^(error|target_error):/, `the session ended: ${sessions[0]!.endReason}`);
  });

  t.test('a revoke that fails leaves the lease visible and not revoked; it is retried after its backoff', async (t) => {
    const { conn, session, lease } = await open();
    const restore = await a.breakTarget(tg);
    let restored = false;
    t.teardown(async () => { if (!restored) await restore(); });
    await conn.close();
    const failed = await waitFor('the revoke to fail', async () => {
      const l = await tg.store.getLease(lease.id);
      return l && l.attempts === 1 && l.error ? l : null;
    });
    await waitFor('the session to end', async () => (await tg.store.getSession(session.id))?.state === 'ended');
    t.not(failed.state, 'revoked', 'not marked revoked');
    t.equal(failed.state, 'revoking');
    t.ok(failed.retryAt && failed.retryAt > clock.now(), 'a retry is due later');
    const standing = await tg.api('carol', 'GET', '/api/v1/leases?standing=1');
    t.equal(standing.status, 200);
    t.match(standing.body.find((l: { id: string }) => l.id === lease.id), { state: 'revoking', attempts: 1, error: /\S/ }, 'GET /api/v1/leases?standing=1 shows it with its error');
    const dash = await tg.api('carol', 'GET', '/api/v1/portal/dashboard');
    t.ok(dash.body.standingPrivileges.leases.some((l: { id: string; attempts: number }) => l.id === lease.id && l.attempts === 1), 'the dashboard counts it as a standing privilege');
    await waitFor('the alert', async () => (await tg.store.listAudit({ action: 'notify' })).some((e) => e.data['kind'] === 'standing_privilege' && e.data['lease'] === lease.id));
    t.equal((await tg.store.listAudit({ action: 'lease.revoke_failed', subject: lease.id })).length, 1, 'lease.revoke_failed audited');

    const early = await tg.gw.sessions.reap();
    t.equal(early.failed, 0, 'the reaper leaves it alone during its backoff');
    t.equal((await tg.store.getLease(lease.id))!.attempts, 1, 'no attempt before the backoff is over');

    await restore();
    restored = true;
    clock.advance(DEFAULT_REVOKE_RETRY.firstMs + 1000);
    await tg.gw.sessions.reap();
    const done = await waitFor('the retry to revoke it', async () => { const l = await tg.store.getLease(lease.id); return l?.state === 'revoked' ? l : null; });
    t.equal(done.attempts, 2, 'revoked on the second attempt');
    t.notOk(await a.exists(tg, lease), 'the credential is gone from the target');
    t.equal((await tg.api('carol', 'GET', '/api/v1/leases?standing=1')).body.filter((l: { id: string }) => l.id === lease.id).length, 0, 'no longer a standing privilege');
  });

  t.test('an undeclared lease kind is refused; a stored lease of an unknown kind is never marked revoked', async (t) => {
    const g = await tg.grant('alice', a.target, a.role);
    const s = await tg.secret('alice', g.id);
    const ctx = tg.gw.ctx(a.module);
    const out = await ctx.access.authenticate({ protocol: a.module, username: s.username, clientAddr: '127.0.0.1:9', secret: new Secret(s.secret) });
    if (!out.ok) { t.fail(`authenticate: ${out.reason}`); return; }
    const session = await ctx.sessions.open(out.auth, { protocol: a.module, clientAddr: '127.0.0.1:9' });
    let created = false;
    await t.rejects(session.lease('no-such-kind', {}, async () => { created = true; return { credential: 1 }; }), UnknownLeaseKindError, 'lease() throws');
    t.notOk(created, 'nothing was minted');
    t.same(await tg.store.listLeases({ sessionId: session.id }), [], 'nothing was stored');
    await session.end({ code: 'client_exit', message: 'done' });

    const now = clock.now();
    const stray: LeaseRecord = {
      id: `stray-${a.module}`, sessionId: null, grantId: g.id, target: a.target, kind: 'no-such-kind', state: 'active', data: {},
      createdAt: now, activatedAt: now, revokedAt: null, error: null, attempts: 0, retryAt: null,
    };
    await tg.store.insertLease(stray);
    const r = await tg.gw.sessions.reap();
    t.equal(r.failed, 1, 'the reaper could not revoke it');
    const l = (await tg.store.getLease(stray.id))!;
    t.equal(l.state, 'revoking', 'not marked revoked');
    t.match(l.error, /no lease kind "no-such-kind"/, 'the error names the unknown kind');
    t.ok((await tg.api('carol', 'GET', '/api/v1/leases?standing=1')).body.some((x: { id: string }) => x.id === stray.id), 'it stays a standing privilege');
    // Out of the way for whatever runs after (it would stay standing for ever, as it should).
    await tg.store.updateLease({ ...l, state: 'failed', retryAt: null });
  });
}
