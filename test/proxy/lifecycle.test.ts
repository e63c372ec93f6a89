/**
 * The session lifecycle owned by proxy/: leases stored first and revoked on every ending path,
 * locks, kill, expiry with a warning (injected clock), grant revocation, the reaper, and the
 * connection secret rules (single-use, reusable, never past the grant). The protocol is a fake
 * in-memory module so every account on the "target" is visible to the test.
 */
import t from 'tap';
import { ManualClock } from '../../policies/clock.js';
import { startTestGateway } from '../support/gateway.js';
import { waitFor } from '../support/pg.js';
import { FakeTarget, fakeModule, fakeConnect } from '../support/fake-module.js';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Secret } from '../../auth/secret.js';
import { SessionEndedError, type LiveSession } from '../../protocols/types.js';
import { DEFAULT_REVOKE_RETRY, revokeBackoff } from '../../proxy/sessions.js';

const target = (name = 'box', risk = 'low') => ({ name, protocol: 'fake', address: 'in-memory', risk, roles: [{ name: 'user' }, { name: 'admin' }] });

async function setup(t: { teardown(fn: () => unknown): void }, opts: { clock?: ManualClock; targets?: object[] } = {}) {
  const ft = new FakeTarget();
  const mod = fakeModule(ft);
  const tg = await startTestGateway({ targets: (opts.targets ?? [target()]) as never, listeners: ['fake'], clock: opts.clock, modules: new Map([['fake', mod]]), expiryWarning: '60s' });
  t.teardown(() => tg.close());
  return { ft, mod, tg, ctx: mod.ctx! };
}

t.test('a session mints under a lease and revokes it on normal end', async (t) => {
  const { ft, tg, ctx } = await setup(t);
  const g = await tg.grant('alice', 'box', 'user');
  const s = await tg.secret('alice', g.id);
  t.equal(s.username, 'box');
  t.match(s.commands.fake, /fake --user box/);
  const c = await fakeConnect(ctx, ft, s.username, s.secret);
  t.ok(c.ok, 'connected');
  if (!c.ok) return;
  t.ok(ft.accounts.has(c.account), 'account exists during the session');
  const leases = await tg.store.listLeases({ sessionId: c.session.id });
  t.equal(leases.length, 1);
  t.equal(leases[0]!.state, 'active');
  t.equal(leases[0]!.data['account'], c.account, 'lease data stored');
  const list = await tg.api('carol', 'GET', '/api/v1/sessions?state=active');
  t.equal(list.body.length, 1, 'SOC sees the live session');
  t.equal((await tg.api('erin', 'GET', '/api/v1/sessions?state=active')).body.length, 0, 'others do not');
  await c.session.end({ code: 'client_exit', message: 'bye' });
  t.notOk(ft.accounts.has(c.account), 'account gone after the session');
  t.equal((await tg.store.getLease(leases[0]!.id))!.state, 'revoked');
  const rec = await tg.store.getSession(c.session.id);
  t.equal(rec!.state, 'ended');
  t.match(rec!.endReason, /^client_exit/);
  const again = await fakeConnect(ctx, ft, s.username, s.secret);
  t.notOk(again.ok, 'single-use secret refused the second time');
  if (!again.ok) t.equal(again.code, 'secret_used');
  t.equal(ft.accounts.size, 0, 'refusal created nothing');
});

t.test('marking a grant used never undoes a revoke that landed meanwhile (another gateway, another request)', async (t) => {
  const { ft, tg, ctx } = await setup(t);
  const g = await tg.grant('alice', 'box', 'user');
  const s = await tg.secret('alice', g.id);
  const store = tg.gw.store as unknown as { insertSession: (r: unknown) => Promise<void> };
  const insert = store.insertSession.bind(store);
  // The session has read the grant (active) and is being stored when the revoke commits.
  store.insertSession = async (r) => {
    await insert(r);
    t.equal((await tg.api('bob', 'POST', `/api/v1/grants/${g.id}/revoke`, { reason: 'race' })).status, 200);
  };
  const c = await fakeConnect(ctx, ft, s.username, s.secret).catch((e: Error) => ({ ok: false as const, error: e }));
  store.insertSession = insert;
  t.match(await tg.store.getGrant(g.id), { state: 'revoked', used: true, endReason: 'race' }, 'still revoked; only its used flag was set');
  // The revoke ended the grant's live sessions before this one was live: open() reads the grant again and ends it.
  t.notOk(c.ok, 'the session opened under the revoked grant is not left running');
  if (c.ok) await c.session.end({ code: 'client_exit', message: 'bye' });
  t.equal((await tg.store.listSessions({ grantId: g.id, state: 'active' })).length, 0, 'no live session under the revoked grant');
});

t.test('a reusable secret serves several connections, each its own session', async (t) => {
  const { ft, tg, ctx } = await setup(t);
  const g = await tg.grant('alice', 'box', 'user');
  const s = await tg.secret('alice', g.id, { reusable: true });
  const a = await fakeConnect(ctx, ft, 'box', s.secret);
  const b = await fakeConnect(ctx, ft, 'box', s.secret);
  t.ok(a.ok && b.ok);
  if (!a.ok || !b.ok) return;
  t.not(a.session.id, b.session.id);
  t.equal(ft.accounts.size, 2);
  await a.session.end({ code: 'client_exit', message: '' });
  await b.session.end({ code: 'client_exit', message: '' });
  t.equal(ft.accounts.size, 0);
  const wrongTarget = await tg.api('alice', 'POST', `/api/v1/grants/${g.id}/secret`, { reusable: 'yes' });
  t.equal(wrongTarget.status, 400, 'malformed body is a 400');
  t.equal(wrongTarget.body.field, 'reusable', 'naming the field');
});

t.test('kill, lock and revoke end live sessions and revoke their leases', async (t) => {
  const { ft, tg, ctx } = await setup(t);
  const g = await tg.grant('alice', 'box', 'user');
  const conn = async () => {
    const s = await tg.secret('alice', g.id);
    const c = await fakeConnect(ctx, ft, 'box', s.secret);
    if (!c.ok) throw new Error(c.reason);
    return c;
  };
  const c1 = await conn();
  const forbidden = await tg.api('erin', 'POST', `/api/v1/sessions/${c1.session.id}/kill`, { reason: 'x' });
  t.equal(forbidden.status, 403, 'another engineer may not kill it');
  const t0 = Date.now();
  const k = await tg.api('carol', 'POST', `/api/v1/sessions/${c1.session.id}/kill`, { reason: 'suspicious' });
  t.equal(k.status, 200);
  t.ok(Date.now() - t0 < 1000, 'kill returns once the session ended');
  t.equal(c1.ended[0]?.code, 'killed');
  t.match(c1.ended[0]?.message, /carol: suspicious/);
  t.notOk(ft.accounts.has(c1.account), 'killed session left no account');

  const c2 = await conn();
  const s3 = await tg.secret('alice', g.id);
  const l = await tg.api('carol', 'POST', '/api/v1/locks', { scope: 'identity', value: 'alice', reason: 'investigation' });
  t.equal(l.status, 201);
  t.equal(l.body.sessionsEnded, 1);
  t.equal(c2.ended[0]?.code, 'locked');
  t.equal(ft.accounts.size, 0);
  const noSecret = await tg.api('alice', 'POST', `/api/v1/grants/${g.id}/secret`, {});
  t.equal(noSecret.status, 403, 'a locked identity gets no new secret');
  const refused = await fakeConnect(ctx, ft, 'box', s3.secret);
  t.notOk(refused.ok, 'locked identity refused');
  if (!refused.ok) { t.equal(refused.code, 'locked'); t.match(refused.reason, /investigation/); }
  t.equal(ft.accounts.size, 0, 'nothing created for a refused connection');
  const notSoc = await tg.api('alice', 'POST', '/api/v1/locks', { scope: 'target', value: 'box', reason: 'x' });
  t.equal(notSoc.status, 403);
  t.equal((await tg.api('carol', 'DELETE', `/api/v1/locks/${l.body.id}`)).status, 200, 'lock removed');

  const c4 = await conn();
  const r = await tg.api('alice', 'POST', `/api/v1/grants/${g.id}/revoke`, { reason: 'done' });
  t.equal(r.status, 200);
  t.equal(r.body.state, 'revoked');
  await waitFor(() => c4.ended.length > 0 && ft.accounts.size === 0, 10_000, 'the session ended and its lease revoked');
  t.equal(c4.ended[0]?.code, 'revoked');
  t.equal(ft.accounts.size, 0);
  const s5 = await tg.api('alice', 'POST', `/api/v1/grants/${g.id}/secret`, {});
  t.equal(s5.status, 409, 'no secret for a revoked grant');
  const audit = await tg.api('carol', 'GET', '/api/v1/audit?action=session.ended');
  t.same(audit.body.map((e: any) => e.data.reason), ['killed', 'locked', 'revoked'], 'every end audited with its reason');
});

t.test('expiry warns, then ends the session at the grant end (injected clock)', async (t) => {
  const clock = new ManualClock(Date.now());
  const { ft, tg, ctx } = await setup(t, { clock });
  const g = await tg.grant('alice', 'box', 'user', '10m');
  const s = await tg.secret('alice', g.id, { ttl: '10m' });
  const c = await fakeConnect(ctx, ft, 'box', s.secret);
  if (!c.ok) throw new Error(c.reason);
  clock.advance(8 * 60_000);
  t.same(c.warnings, [], 'no warning yet');
  clock.advance(60_000 + 1);
  t.equal(c.warnings.length, 1, 'warned before the end');
  t.match(c.warnings[0], /ends in \d+ seconds/);
  clock.advance(60_000);
  await waitFor(() => c.ended.length > 0 && ft.accounts.size === 0, 10_000, 'the session ended and its lease revoked');
  t.equal(c.ended[0]?.code, 'expired');
  t.equal(ft.accounts.size, 0);
  t.equal((await tg.store.getGrant(g.id))!.state, 'expired');
  const late = await tg.api('alice', 'POST', `/api/v1/grants/${g.id}/secret`, {});
  t.equal(late.status, 409);
});

t.test('secrets never outlive the grant; a failed mint leaves nothing', async (t) => {
  const { ft, tg, ctx } = await setup(t);
  const g = await tg.grant('alice', 'box', 'user', '2m');
  const s = await tg.secret('alice', g.id, { ttl: '1h', reusable: true });
  t.ok(Date.parse(s.expiresAt) <= g.expiresAt, 'capped at the grant end');
  ft.failMint = true;
  await t.rejects(fakeConnect(ctx, ft, 'box', s.secret), /target refused/);
  const leases = await tg.store.listLeases({ grantId: g.id });
  t.equal(leases.length, 1);
  t.equal(leases[0]!.state, 'revoked', 'the stored lease was revoked after the failed mint');
  t.equal(ft.accounts.size, 0);
  const other = await tg.grant('erin', 'box', 'user');
  const bob = await tg.api('alice', 'POST', `/api/v1/grants/${other.id}/secret`, {});
  t.equal(bob.status, 404, "no secret for someone else's grant");
  const wrong = await fakeConnect(ctx, ft, 'box', 'not-a-secret');
  t.notOk(wrong.ok);
  if (!wrong.ok) t.equal(wrong.code, 'bad_secret');
  // Before sign-in an unknown target reads like a wrong secret (no target names leak); the audit says what it was.
  const unknown = await fakeConnect(ctx, ft, 'nope', s.secret);
  t.notOk(unknown.ok);
  if (!unknown.ok) t.same([unknown.code, unknown.reason], ['bad_secret', 'Tollgate: wrong connection secret for nope.']);
  const audited = (await tg.store.listAudit({ action: 'access.refused' })).at(-1);
  t.match(audited?.data, { code: 'unknown_target', username: 'nope' }, 'audited as unknown_target');
});

t.test('the reaper revokes leases left by a crashed gateway', async (t) => {
  const { ft, tg, ctx } = await setup(t);
  const g = await tg.grant('alice', 'box', 'user');
  const s = await tg.secret('alice', g.id);
  const c = await fakeConnect(ctx, ft, 'box', s.secret);
  if (!c.ok) throw new Error(c.reason);
  // Simulate a crash: a second store handle marks nothing; we forget the live session in memory.
  const sessionId = c.session.id;
  (tg.gw.sessions as unknown as { live: Map<string, unknown> }).live.delete(sessionId);
  const r = await tg.gw.sessions.reap();
  t.equal(r.sessions, 1, 'orphaned session ended');
  t.equal(r.leases, 1, 'its lease revoked');
  t.notOk(ft.accounts.has(c.account), 'account removed by the reaper');
  const rec = await tg.store.getSession(sessionId);
  t.match(rec!.endReason, /gateway_crash/);
  const store2 = await tg.openStore();
  t.equal((await store2.listLeases({ state: ['pending', 'active', 'revoking'] })).length, 0, 'no live lease left in the store');
  await store2.close();
});

t.test('a revoke that does not confirm, or of an unknown kind, never marks the lease revoked', async (t) => {
  const { ft, tg, ctx } = await setup(t);
  const g = await tg.grant('alice', 'box', 'user');
  const s = await tg.secret('alice', g.id);
  const c = await fakeConnect(ctx, ft, 'box', s.secret);
  if (!c.ok) throw new Error(c.reason);
  ft.silentRevoke = true;
  await c.session.end({ code: 'client_exit', message: 'bye' });
  const [lease] = await tg.store.listLeases({ sessionId: c.session.id });
  t.equal(ft.revokeCalls.length, 1, 'the revoke ran');
  t.equal(lease!.state, 'revoking', 'but it said nothing: not revoked');
  t.match(lease!.error, /did not confirm/, 'the error says why');
  t.equal((await tg.store.listAudit({ action: 'lease.revoked', subject: lease!.id })).length, 0, 'no lease.revoked event');
  t.ok((await tg.gw.sessions.standing()).some((l) => l.id === lease!.id), 'a standing privilege');
  // A store row whose kind the module no longer declares: the reaper tries, fails, keeps it.
  const now = tg.gw.clock.now();
  await tg.store.insertLease({ ...lease!, id: 'old-kind', kind: 'fake-account-v0', state: 'active', error: null, attempts: 0, retryAt: null, createdAt: now });
  const r = await tg.gw.sessions.reap();
  t.ok(r.failed >= 1);
  const old = (await tg.store.getLease('old-kind'))!;
  t.equal(old.state, 'revoking');
  t.match(old.error, /no lease kind "fake-account-v0"/);
  ft.silentRevoke = false;
});

t.test('a failed revoke is retried with growing backoff, and by the reaper of the next start', async (t) => {
  const clock = new ManualClock(Date.now());
  const ft = new FakeTarget();
  const dataDir = mkdtempSync(join(tmpdir(), 'tg-retry-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const start = () => startTestGateway({ targets: [target()] as never, listeners: ['fake'], clock, modules: new Map([['fake', fakeModule(ft)]]), dataDir, store: 'sqlite' });
  let tg = await start();
  const ctx = (tg.gw.modules.get('fake') as ReturnType<typeof fakeModule>).ctx!;
  const g = await tg.grant('alice', 'box', 'user');
  const s = await tg.secret('alice', g.id);
  const c = await fakeConnect(ctx, ft, 'box', s.secret);
  if (!c.ok) throw new Error(c.reason);
  ft.failRevoke = true;
  await c.session.end({ code: 'client_exit', message: 'bye' });
  const id = (await tg.store.listLeases({ sessionId: c.session.id }))[0]!.id;
  const attempts = async () => (await tg.store.getLease(id))!.attempts;
  t.equal(await attempts(), 1);
  clock.advance(revokeBackoff(1) - 1000);
  t.equal(await attempts(), 1, 'nothing before the first backoff is over');
  clock.advance(2000);
  await waitFor(async () => (await attempts()) === 2, 5000, 'the second attempt');
  clock.advance(revokeBackoff(2) - 1000);
  t.equal(await attempts(), 2, 'the second backoff is longer');
  t.equal(revokeBackoff(2), 2 * revokeBackoff(1), 'doubling');
  t.equal(revokeBackoff(40), DEFAULT_REVOKE_RETRY.maxMs, 'capped');
  t.equal((await tg.store.listAudit({ action: 'notify' })).filter((e) => e.data['kind'] === 'standing_privilege').length, 1, 'alerted once, on the first failure');
  await tg.close();
  // The next start: its reaper finds the lease due and revokes it.
  ft.failRevoke = false;
  clock.advance(revokeBackoff(2));
  tg = await start();
  t.teardown(() => tg.close());
  const l = (await tg.store.getLease(id))!;
  t.equal(l.state, 'revoked', 'revoked by the reaper at start-up');
  t.equal(l.attempts, 3);
  t.notOk(ft.accounts.has(c.account));
});

t.test('a kill while the credential is being minted: teardown waits, the fresh credential is revoked', async (t) => {
  const { ft, tg, ctx } = await setup(t);
  const g = await tg.grant('alice', 'box', 'user');
  const s = await tg.secret('alice', g.id);
  const out = await ctx.access.authenticate({ protocol: 'fake', username: 'box', clientAddr: '127.0.0.1:1', secret: new Secret(s.secret) });
  if (!out.ok) throw new Error(out.reason);
  const session = await ctx.sessions.open(out.auth, { protocol: 'fake', clientAddr: '127.0.0.1:1' });
  let release!: () => void;
  let started!: () => void;
  const slow = new Promise<void>((r) => { release = r; });
  const inCreate = new Promise<void>((r) => { started = r; });
  const minting = session.lease('fake-account', { account: 'tg-slow' }, async () => {
    started();
    await slow;
    ft.accounts.add('tg-slow');
    return { credential: 'tg-slow' };
  });
  const rejected = t.rejects(minting, SessionEndedError, 'the mint reports that the session ended');
  await inCreate;
  const ended = session.end({ code: 'killed', message: 'killed while minting' });
  let endedYet = false;
  void ended.then(() => { endedYet = true; });
  await new Promise((r) => setTimeout(r, 50));
  t.notOk(endedYet, 'teardown waits for the mint in flight');
  release();
  await rejected;
  await ended;
  t.notOk(ft.accounts.has('tg-slow'), 'the account made after the kill is gone');
  t.equal((await tg.store.listLeases({ sessionId: session.id }))[0]!.state, 'revoked');
  // Ended before the lease was even stored: nothing is made, the lease row ends revoked.
  const g2 = await tg.grant('alice', 'box', 'user');
  const s2 = await tg.secret('alice', g2.id);
  const out2 = await ctx.access.authenticate({ protocol: 'fake', username: 'box', clientAddr: '127.0.0.1:1', secret: new Secret(s2.secret) });
  if (!out2.ok) throw new Error(out2.reason);
  const early = await ctx.sessions.open(out2.auth, { protocol: 'fake', clientAddr: '127.0.0.1:1' });
  let made = false;
  const p = early.lease('fake-account', { account: 'tg-early' }, async () => { made = true; return { credential: 1 }; });
  await Promise.all([t.rejects(p, SessionEndedError), early.end({ code: 'killed', message: 'at once' })]);
  t.notOk(made, 'create never ran');
  t.same((await tg.store.listLeases({ sessionId: early.id })).map((l) => l.state), ['revoked']);
});

t.test('withSession ends the session on every path', async (t) => {
  const { ft, tg, ctx } = await setup(t);
  const auth = async () => {
    const g = await tg.grant('alice', 'box', 'user');
    const s = await tg.secret('alice', g.id);
    const out = await ctx.access.authenticate({ protocol: 'fake', username: 'box', clientAddr: '127.0.0.1:1', secret: new Secret(s.secret) });
    if (!out.ok) throw new Error(out.reason);
    return out.auth;
  };
  const mint = (s: LiveSession) => s.lease('fake-account', { account: `tg-ws-${s.id.slice(0, 4)}` }, async () => { ft.accounts.add(`tg-ws-${s.id.slice(0, 4)}`); return { credential: 1 }; });
  let id = '';
  await ctx.sessions.withSession(await auth(), { protocol: 'fake', clientAddr: '127.0.0.1:1' }, async (s) => { id = s.id; await mint(s); });
  t.match((await tg.store.getSession(id))!.endReason, /^client_exit:/, 'return: ended');
  await t.rejects(ctx.sessions.withSession(await auth(), { protocol: 'fake', clientAddr: '127.0.0.1:1' }, async (s) => { id = s.id; await mint(s); throw new Error('boom'); }), /boom/);
  t.match((await tg.store.getSession(id))!.endReason, /^error: the session failed: boom/, 'throw: ended as error, rethrown');
  const client = new EventEmitter();
  let stuck!: () => void;
  const running = ctx.sessions.withSession(await auth(), { protocol: 'fake', clientAddr: '127.0.0.1:1', client }, async (s) => {
    id = s.id;
    await mint(s);
    await new Promise<void>((r) => { stuck = r; });
  });
  await waitFor(async () => (await tg.store.listLeases({ state: ['active'] })).length === 1, 5000, 'the mint');
  client.emit('close');
  await waitFor(async () => (await tg.store.getSession(id))?.state === 'ended', 5000, 'the session to end after the client closed');
  t.match((await tg.store.getSession(id))!.endReason, /^client_exit: the client disconnected/, 'client drop: ended while fn still ran');
  stuck();
  await running;
  t.equal(ft.accounts.size, 0, 'every account revoked');
  t.equal((await tg.store.listLeases({ state: ['pending', 'active', 'revoking'] })).length, 0);
});
