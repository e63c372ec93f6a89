/**
 * Issue 20's workflow half through a real gateway: the REST API, the CLI and live sessions of the
 * in-memory protocol module. Delegation, extension (live sessions continue), exclusive check-out
 * (refused, queued, check-in), working hours ending live sessions, MFA at connect (fresh sign-in,
 * authenticator codes, replays), access reviews (revocation ends live grants, CSV/JSON export),
 * the OpenAPI document and config errors. The engine's rules in detail: test/policies/governance.test.ts.
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ManualClock } from '../../policies/clock.js';
import { totp } from '../../auth/totp.js';
import { Secret } from '../../auth/secret.js';
import { ConfigError, validateConfig } from '../../proxy/config.js';
import { moduleMap } from '../../protocols/index.js';
import type { LiveSession, ProtocolModule } from '../../protocols/types.js';
import { startTestGateway, TEST_USERS, type TestGateway } from '../support/gateway.js';
import { FakeTarget, fakeConnect, fakeModule } from '../support/fake-module.js';
import { until } from '../support/sshd.js';

/** Resolves when the gateway has torn the session down (leases revoked, recording sealed, audited). */
const done = (s: LiveSession) => (s as LiveSession & { done: Promise<void> }).done;
const bin = join(import.meta.dirname, '..', '..', 'proxy', 'bin', 'tollgate.js');
const MIN = 60_000;
const HOUR = 60 * MIN;
const MONDAY_10_UTC = Date.UTC(2026, 10, 23, 10, 0, 0);
const ALICE_TOTP = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP';

/** The fake module, with check-out accounts (credentials.mode: checkout) and the grant-end hook recorded. */
function governedModule(ft: FakeTarget, rotations: string[]): ProtocolModule & { ctx?: import('../../protocols/types.js').ProtocolContext } {
  const mod = fakeModule(ft);
  mod.checkoutAccount = (t) => (t.credentials['mode'] === 'checkout' ? { key: `fake:${String(t.credentials['account'])}`, whenHeld: t.credentials['whenHeld'] === 'queue' ? 'queue' : 'refuse' } : null);
  mod.onGrantEnd = async (_ctx, target, grant) => { if (mod.checkoutAccount!(target)) rotations.push(`${target.name}:${grant.id}`); };
  return mod;
}

const fake = (name: string, risk: string, extra: Record<string, unknown> = {}) => ({ name, protocol: 'fake', address: 'in-memory', risk, roles: [{ name: 'user' }], ...extra });

async function gateway(t: Test, opts: { clock?: ManualClock; policies?: object[]; targets?: object[]; breakGlass?: Record<string, unknown> } = {}) {
  const ft = new FakeTarget();
  const rotations: string[] = [];
  const mod = governedModule(ft, rotations);
  const tg = await startTestGateway({
    modules: new Map([['fake', mod]]), listeners: ['fake'], clock: opts.clock,
    targets: (opts.targets ?? []) as never, policies: opts.policies as never, breakGlass: opts.breakGlass,
    extra: {
      idp: { dev: { users: Object.entries(TEST_USERS).map(([name, groups]) => ({ name, password: { value: `${name}-pw` }, groups, ...(name === 'alice' ? { totp: { value: ALICE_TOTP } } : {}) })) } },
    },
  });
  t.teardown(() => tg.close());
  return { tg, ft, mod, rotations };
}

const cli = (tg: TestGateway, user: string, args: string[], input?: string) => new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
  const p = spawn(process.execPath, [bin, ...args], { env: { ...process.env, TOLLGATE_URL: tg.url, TOLLGATE_TOKEN: tg.token(user), TOLLGATE_CLI_CONFIG: '/nonexistent/cli.json' }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d) => { stdout += d; });
  p.stderr.on('data', (d) => { stderr += d; });
  p.on('close', (code) => resolve({ code, stdout, stderr }));
  p.stdin.on('error', () => undefined); // the CLI may exit before reading its stdin
  p.stdin.end(input ?? '');
});

t.test('delegation through the API and the CLI: the delegate decides, both names show; refusals name the field', async (t) => {
  const { tg } = await gateway(t, {
    targets: [fake('sec-box', 'medium')],
    // Only dave (security) approves sec-box; bob approves elsewhere (so he is an approver a delegation may go to).
    policies: [
      { name: 'sec', targets: ['sec-box'], requesters: ['engineers'], approvers: ['security'] },
      { name: 'rest', targets: ['other-*'], requesters: ['engineers'], approvers: ['approvers'] },
    ],
  });
  const bad = await tg.api('dave', 'POST', '/api/v1/delegations', { delegate: 'nobody', duration: '1d', reason: 'x' });
  t.equal(bad.status, 400);
  t.equal(bad.body.field, 'delegate');
  t.equal((await tg.api('dave', 'POST', '/api/v1/delegations', { delegate: 'bob', reason: 'x' })).body.field, 'until');
  t.equal((await tg.api('erin', 'POST', '/api/v1/delegations', { delegate: 'bob', duration: '1d', reason: 'x' })).status, 403, 'only approvers delegate');
  t.equal((await tg.api('dave', 'POST', '/api/v1/delegations', { delegate: 'carol', duration: '1d', reason: 'x' })).status, 400, 'not to a non-approver');

  const made = await cli(tg, 'dave', ['--json', 'delegate', 'bob', '--duration', '7d', '--reason', 'holiday']);
  t.equal(made.code, 0, made.stderr);
  const d = JSON.parse(made.stdout);
  t.match(d, { delegator: 'dave', delegate: 'bob', reason: 'holiday' });
  const listed = await cli(tg, 'bob', ['delegations']);
  t.match(listed.stdout, new RegExp(`${d.id}\\s+dave\\s+bob`), 'the delegate sees it too');
  t.same((await tg.api('erin', 'GET', '/api/v1/delegations')).body, [], 'others do not');
  t.equal((await tg.api('carol', 'GET', '/api/v1/delegations?scope=all')).body.length, 1, 'the SOC sees every delegation');

  const r = await tg.api('alice', 'POST', '/api/v1/requests', { target: 'sec-box', role: 'user', duration: '1h', reason: 'INC-7' });
  t.same((await tg.api('bob', 'GET', '/api/v1/requests?scope=approvable')).body.map((x: any) => x.id), [r.body.id], 'in the delegate\'s queue');
  const ap = await cli(tg, 'bob', ['approve', r.body.id, '-m', 'for dave']);
  t.equal(ap.code, 0, ap.stderr);
  const view = (await tg.api('alice', 'GET', `/api/v1/requests/${r.body.id}`)).body;
  t.equal(view.state, 'approved');
  t.match(view.approvals, [{ approver: 'bob', onBehalfOf: 'dave', comment: 'for dave' }], 'the request shows both names');
  t.match((await tg.store.listAudit({ action: 'request.approved', subject: r.body.id }))[0]?.data, { onBehalfOf: 'dave' });

  const end = await cli(tg, 'bob', ['delegations', 'revoke', d.id]);
  t.equal(end.code, 0, end.stderr);
  const r2 = await tg.api('alice', 'POST', '/api/v1/requests', { target: 'sec-box', role: 'user', duration: '1h', reason: 'again' });
  t.equal((await tg.api('bob', 'POST', `/api/v1/requests/${r2.body.id}/approve`, {})).status, 403, 'ended: bob decides nothing for dave');
  t.ok((await tg.store.listAudit({ action: 'delegation.revoked' })).length === 1);
});

t.test('extension and check-out through the API and CLI; live sessions continue; check-in rotates and hands on', async (t) => {
  const clock = new ManualClock(MONDAY_10_UTC);
  const { tg, ft, mod, rotations } = await gateway(t, {
    clock,
    targets: [
      fake('box', 'low'), fake('med', 'medium'),
      fake('shared', 'low', { credentials: { mode: 'checkout', account: 'dbadmin' } }),
      fake('shared-q', 'low', { credentials: { mode: 'checkout', account: 'root', whenHeld: 'queue' } }),
    ],
  });
  // Extension of a low-risk grant: auto-approved, same id, the live session keeps running past the old end.
  const g = await tg.grant('alice', 'box', 'user', '30m');
  const s = await tg.secret('alice', g.id);
  const live = await fakeConnect(mod.ctx!, ft, 'box', s.secret);
  t.ok(live.ok);
  if (!live.ok) return;
  const bad = await tg.api('alice', 'POST', `/api/v1/grants/${g.id}/extend`, { duration: '1h' });
  t.equal(bad.status, 400);
  t.equal(bad.body.field, 'reason');
  t.equal((await tg.api('erin', 'POST', `/api/v1/grants/${g.id}/extend`, { duration: '1h', reason: 'x' })).status, 404, 'not someone else\'s grant');
  const ext = await cli(tg, 'alice', ['extend', g.id, '--duration', '1h', '--reason', 'still on it']);
  t.equal(ext.code, 0, ext.stderr);
  t.match(ext.stdout, new RegExp(`grant ${g.id} extended: now ends ${new Date(g.expiresAt + HOUR).toISOString()}`));
  t.equal((await tg.api('alice', 'GET', `/api/v1/grants/${g.id}`)).body.expiresAt, g.expiresAt + HOUR, 'the grant keeps its id');
  clock.advance(31 * MIN);
  await tg.gw.engine.idle();
  t.equal(live.session.ended, false, 'past the old end the session runs on');
  t.same(live.ended, []);
  t.equal((await tg.api('carol', 'GET', `/api/v1/sessions/${live.session.id}`)).body.grantExpiresAt, g.expiresAt + HOUR, 'the session shows the new end');
  clock.advance(HOUR);
  await tg.gw.engine.idle();
  await done(live.session);
  t.match(live.ended, [{ code: 'expired' }], 'and ends at the new end');

  // A medium-risk extension waits for an approver; a session under it continues once approved.
  const mg = await tg.grant('alice', 'med', 'user', '30m');
  const ms = await fakeConnect(mod.ctx!, ft, 'med', (await tg.secret('alice', mg.id)).secret);
  if (!ms.ok) return;
  const mx = await tg.api('alice', 'POST', `/api/v1/grants/${mg.id}/extend`, { duration: '15m', reason: 'almost done' });
  t.equal(mx.status, 201);
  t.equal(mx.body.state, 'pending');
  t.equal(mx.body.extendsGrant, mg.id);
  t.equal((await tg.api('bob', 'POST', `/api/v1/requests/${mx.body.id}/approve`, {})).body.state, 'approved');
  clock.advance(35 * MIN);
  await tg.gw.engine.idle();
  t.equal(ms.session.ended, false, 'moved by the approval');
  clock.advance(11 * MIN);
  await done(ms.session);

  // Check-out: one holder; refused with the holder and expected end; check-in rotates; then free.
  const held = await tg.grant('alice', 'shared', 'user', '2h');
  const refused = await tg.api('erin', 'POST', '/api/v1/requests', { target: 'shared', role: 'user', duration: '1h', reason: 'me too' });
  t.equal(refused.status, 409);
  t.match(refused.body.message, new RegExp(`shared is checked out by alice until ${new Date(held.expiresAt).toISOString().replace('.', '\\.')}`));
  const asErin = (await tg.api('erin', 'GET', '/api/v1/checkouts')).body;
  t.match(asErin.find((c: any) => c.targets.includes('shared')), { holder: { identity: 'alice', grantId: null, expiresAt: held.expiresAt } }, 'everyone sees who holds it, not the grant id');
  t.equal((await tg.api('carol', 'GET', '/api/v1/checkouts')).body.find((c: any) => c.targets.includes('shared')).holder.grantId, held.id);
  const listed = await cli(tg, 'erin', ['checkouts']);
  t.match(listed.stdout, /shared\s+alice\s+/);
  t.equal((await tg.api('erin', 'POST', `/api/v1/grants/${held.id}/checkin`, {})).status, 403, 'not by someone else');
  const notCheckout = await tg.api('alice', 'POST', `/api/v1/grants/${g.id}/checkin`, {});
  t.equal(notCheckout.status, 400);
  t.match(notCheckout.body.message, /box is not a checked-out account; revoke the grant instead/);
  const ci = await cli(tg, 'alice', ['checkin', held.id]);
  t.equal(ci.code, 0, ci.stderr);
  t.match(ci.stdout, /checked in \(shared\); the password is rotated/);
  t.same(rotations, [`shared:${held.id}`], 'the module\'s grant-end hook ran (it rotates the password)');
  t.match(await tg.store.getGrant(held.id), { state: 'revoked', endReason: 'checked in by alice' });
  t.equal((await tg.api('alice', 'POST', `/api/v1/grants/${held.id}/checkin`, {})).status, 409, 'checked in once');
  t.equal((await tg.api('erin', 'POST', '/api/v1/requests', { target: 'shared', role: 'user', duration: '1h', reason: 'my turn' })).body.state, 'approved');

  // Queue: the second identity waits; the holder's grant end hands it on (and rotates).
  const q1 = await tg.grant('alice', 'shared-q', 'user', '20m');
  const q2 = await tg.api('erin', 'POST', '/api/v1/requests', { target: 'shared-q', role: 'user', duration: '30m', reason: 'after alice' });
  t.equal(q2.status, 201);
  t.equal(q2.body.state, 'queued');
  t.match((await tg.api('erin', 'GET', '/api/v1/checkouts')).body.find((c: any) => c.targets.includes('shared-q')), { holder: { identity: 'alice' }, queue: [{ requester: 'erin', requestId: q2.body.id }] });
  t.equal((await tg.api('erin', 'POST', `/api/v1/grants/${q1.id}/secret`, {})).status, 404);
  clock.advance(20 * MIN);
  await tg.gw.engine.idle();
  const after = (await tg.api('erin', 'GET', `/api/v1/requests/${q2.body.id}`)).body;
  t.equal(after.state, 'approved');
  t.ok(after.grantId);
  t.ok(rotations.includes(`shared-q:${q1.id}`), 'rotated at the holder\'s grant end');
  t.equal((await tg.api('erin', 'POST', `/api/v1/grants/${after.grantId}/secret`, {})).status, 201, 'erin connects now');
  t.ok((await tg.store.listAudit({ action: 'notify' })).some((e) => e.data['kind'] === 'checkout.ready' && (e.data['to'] as { identities: string[] }).identities.includes('erin')), 'she is told');
});

t.test('working hours end live sessions at the window\'s close, after the expiry warning; break-glass goes on', async (t) => {
  const clock = new ManualClock(MONDAY_10_UTC);
  const { tg, ft, mod } = await gateway(t, {
    clock,
    targets: [fake('office', 'low'), fake('any', 'low')],
    policies: [
      { name: 'office-hours', targets: ['office'], requesters: ['engineers'], hours: { days: ['mon'], from: '08:00', to: '11:00', tz: 'UTC' } },
      { name: 'rest', targets: ['*'], requesters: ['engineers'] },
    ],
    breakGlass: { groups: ['oncall'], maxDuration: '2h' },
  });
  const g = await tg.grant('alice', 'office', 'user', '4h');
  const a = await fakeConnect(mod.ctx!, ft, 'office', (await tg.secret('alice', g.id)).secret);
  const other = await fakeConnect(mod.ctx!, ft, 'any', (await tg.secret('erin', (await tg.grant('erin', 'any', 'user', '4h')).id)).secret);
  const bgGrant = (await tg.api('alice', 'POST', '/api/v1/breakglass', { target: 'office', role: 'user', duration: '2h', reason: 'outage' })).body;
  if (!a.ok || !other.ok) { t.fail('sessions did not open'); return; }
  // Break-glass needs a fresh MFA: the test token carries one from the gateway start.
  t.equal(bgGrant.breakGlass, true);
  const bg = await fakeConnect(mod.ctx!, ft, 'office', (await tg.secret('alice', bgGrant.id)).secret);
  if (!bg.ok) { t.fail(`break-glass session: ${bg.reason}`); return; }
  clock.advance(59 * MIN - 1);
  t.same(a.warnings, [], 'no warning yet');
  clock.advance(1);
  t.match(a.warnings, [/the working hours for office \(mon 08:00-11:00 UTC\) end in 60 seconds; the session will be closed then/], 'the expiry warning, 60 s before the close');
  t.same(other.warnings, [], 'sessions under other policies are not warned');
  t.same(bg.warnings, [], 'nor break-glass');
  clock.advance(MIN);
  await done(a.session);
  t.match(a.ended, [{ code: 'expired', message: /working hours for this access \(mon 08:00-11:00 UTC\) are over/ }]);
  t.equal(other.session.ended, false);
  t.equal(bg.session.ended, false, 'break-glass is not bound by hours');
  t.match(await until(async () => (await tg.store.listAudit({ action: 'policy.hours_closed' }))[0]?.data), { policy: 'office-hours', sessionsEnded: 1 }, 'audited');
  t.equal((await tg.store.getGrant(g.id))?.state, 'active', 'the grant stays; new connections are refused until the hours open again');
  const again = await fakeConnect(mod.ctx!, ft, 'office', (await tg.secret('alice', g.id)).secret);
  t.match(again, { ok: false, code: 'outside_hours' });
  for (const s of [other, bg]) { s.session.end({ code: 'client_exit', message: 'done' }); await done(s.session); }
});

t.test('MFA at connect: a secret needs a fresh MFA or an authenticator code, lives no longer than it; the CLI prompts', async (t) => {
  const clock = new ManualClock(MONDAY_10_UTC);
  const { tg, ft, mod } = await gateway(t, { clock, targets: [fake('guarded', 'low', { options: { mfaAtConnect: true } }), fake('open', 'low')] });
  const g = await tg.grant('alice', 'guarded', 'user', '2h');
  // The test tokens carry an MFA from their creation (now): fresh, and the secret ends when it stops being fresh.
  const fresh = await tg.api('alice', 'POST', `/api/v1/grants/${g.id}/secret`, { reusable: true, ttl: '1h' });
  t.equal(fresh.status, 201);
  t.equal(Date.parse(fresh.body.expiresAt), MONDAY_10_UTC + 15 * MIN, 'a reusable secret for an hour is cut to the MFA\'s 15 minutes');
  t.match((await tg.store.listAudit({ action: 'secret.issued' })).at(-1)?.data, { mfa: 'sign-in' });
  clock.advance(16 * MIN);
  const stale = await tg.api('alice', 'POST', `/api/v1/grants/${g.id}/secret`, {});
  t.equal(stale.status, 403);
  t.equal(stale.body.error, 'mfa_required');
  t.match(stale.body.message, /guarded needs MFA to connect: give your authenticator code \(mfaCode\), or sign in again/);
  const wrong = await tg.api('alice', 'POST', `/api/v1/grants/${g.id}/secret`, { mfaCode: '000000' === totp(new Secret(ALICE_TOTP), clock.now()) ? '111111' : '000000' });
  t.equal(wrong.status, 403);
  t.match(wrong.body.message, /the authenticator code is wrong/);
  t.match((await tg.store.listAudit({ action: 'secret.refused' })).at(-1)?.data, { code: 'mfa_required', reason: 'wrong' });
  const code = totp(new Secret(ALICE_TOTP), clock.now());
  const ok = await tg.api('alice', 'POST', `/api/v1/grants/${g.id}/secret`, { mfaCode: code });
  t.equal(ok.status, 201);
  t.match((await tg.store.listAudit({ action: 'secret.issued' })).at(-1)?.data, { mfa: 'code' });
  const replay = await tg.api('alice', 'POST', `/api/v1/grants/${g.id}/secret`, { mfaCode: code });
  t.equal(replay.status, 403);
  t.match(replay.body.message, /already used/, 'a code works once');
  t.equal((await tg.api('alice', 'POST', `/api/v1/grants/${(await tg.grant('alice', 'open', 'user')).id}/secret`, {})).status, 201, 'targets without it: no MFA asked');
  // erin has no authenticator the gateway knows: she is told to step up at the IdP.
  const eg = await tg.grant('erin', 'guarded', 'user');
  clock.advance(16 * MIN);
  const erin = await tg.api('erin', 'POST', `/api/v1/grants/${eg.id}/secret`, { mfaCode: '123456' });
  t.match(erin.body.message, /cannot check an authenticator code for you; sign in again with MFA/);

  // The CLI asks for the code and tries again.
  clock.advance(31_000);
  const cliCode = totp(new Secret(ALICE_TOTP), clock.now());
  const out = await cli(tg, 'alice', ['--json', 'secret', g.id], `${cliCode}\n`);
  t.equal(out.code, 0, out.stderr);
  t.match(out.stderr, /guarded needs MFA to connect[\s\S]*Authenticator code: /, 'it says why and prompts');
  t.ok(JSON.parse(out.stdout).secret, 'then prints the secret');
  const noCode = await cli(tg, 'alice', ['secret', g.id], '\n');
  t.equal(noCode.code, 1);
  t.match(noCode.stderr, /no authenticator code given/);

  // A sign-in that is not a connection secret (an HTTP app's web session, a browser approval) must bring a fresh MFA itself.
  const who = { sub: 'alice', email: null, name: 'alice', groups: ['engineers', 'oncall'], mfaAt: null, via: 'web' as const };
  const noMfa = await mod.ctx!.access.authenticate({ protocol: 'fake', username: 'guarded', clientAddr: '127.0.0.1:9', principal: who });
  t.match(noMfa, { ok: false, code: 'mfa_required' });
  const withCode = await mod.ctx!.access.authenticate({ protocol: 'fake', username: 'guarded', clientAddr: '127.0.0.1:9', principal: who, mfaCode: new Secret(totp(new Secret(ALICE_TOTP), clock.now() + 30_000)) });
  t.match(withCode, { ok: true }, 'a typed code does');
  const withFresh = await mod.ctx!.access.authenticate({ protocol: 'fake', username: 'guarded', clientAddr: '127.0.0.1:9', principal: { ...who, mfaAt: clock.now() } });
  t.match(withFresh, { ok: true }, 'so does a fresh MFA sign-in');
  t.match((await tg.store.listAudit({ action: 'access.allowed' })).slice(-2).map((e) => e.data['mfa']), ['code', 'sign-in']);
  // A connection secret issued under MFA works as it is.
  clock.advance(60_000);
  const s = await tg.api('alice', 'POST', `/api/v1/grants/${g.id}/secret`, { mfaCode: totp(new Secret(ALICE_TOTP), clock.now()) });
  t.equal(s.status, 201, 'a code of a later time step');
  const conn = await fakeConnect(mod.ctx!, ft, 'guarded', s.body.secret);
  t.ok(conn.ok, 'the secret is the MFA');
  if (conn.ok) { conn.session.end({ code: 'client_exit', message: 'done' }); await done(conn.session); }
});

t.test('access reviews through the API and CLI: revoke ends live grants, the eligibility is excluded; CSV and JSON export', async (t) => {
  const { tg, ft, mod } = await gateway(t, { targets: [fake('box', 'medium')] });
  const g = await tg.grant('erin', 'box', 'user', '2h');
  const live = await fakeConnect(mod.ctx!, ft, 'box', (await tg.secret('erin', g.id)).secret);
  if (!live.ok) { t.fail(live.reason); return; }
  t.equal((await tg.api('erin', 'POST', '/api/v1/access-reviews', { policy: 'test' })).status, 403, 'only the SOC starts one');
  t.equal((await tg.api('carol', 'POST', '/api/v1/access-reviews', { policy: 'nope' })).body.field, 'policy');
  const started = await cli(tg, 'carol', ['--json', 'access-reviews', 'start', 'test', '--due-in', '7d']);
  t.equal(started.code, 0, started.stderr);
  const v = JSON.parse(started.stdout);
  t.same(v.reviewers, ['approvers'], 'by default the policy\'s approvers review it');
  t.same(v.lines.map((l: any) => `${l.kind}:${l.identity}`).sort(), ['breakglass:alice', 'eligibility:alice', 'eligibility:erin']);
  t.equal((await tg.api('erin', 'GET', `/api/v1/access-reviews/${v.id}`)).status, 404, 'not for those reviewed');
  t.same((await tg.api('erin', 'GET', '/api/v1/access-reviews')).body, []);
  t.match((await tg.api('bob', 'GET', '/api/v1/access-reviews')).body, [{ id: v.id, mayDecide: true, counts: { total: 3, decided: 0 } }]);
  const erinLine = v.lines.find((l: any) => l.identity === 'erin');
  const noComment = await tg.api('bob', 'POST', `/api/v1/access-reviews/${v.id}/lines/${erinLine.id}/decide`, { decision: 'revoke' });
  t.equal(noComment.status, 400);
  t.equal(noComment.body.field, 'comment');
  t.equal((await tg.api('carol', 'POST', `/api/v1/access-reviews/${v.id}/lines/${erinLine.id}/decide`, { decision: 'confirm' })).status, 403, 'the SOC sees it but is not a reviewer of it');
  const rv = await cli(tg, 'bob', ['access-reviews', 'revoke', v.id, erinLine.id, '-m', 'left the team']);
  t.equal(rv.code, 0, rv.stderr);
  await done(live.session);
  t.match(live.ended, [{ code: 'revoked' }], 'her live session ended with the grant');
  t.equal((await tg.store.getGrant(g.id))?.state, 'revoked');
  t.equal((await tg.api('erin', 'POST', '/api/v1/requests', { target: 'box', role: 'user', duration: '1h', reason: 'x' })).status, 403, 'no longer eligible');
  t.same((await tg.api('erin', 'GET', '/api/v1/targets')).body, [], 'and the portal offers her nothing');
  const aliceLines = v.lines.filter((l: any) => l.identity === 'alice');
  for (const l of aliceLines) t.equal((await tg.api('dave', 'POST', `/api/v1/access-reviews/${v.id}/lines/${l.id}/decide`, { decision: 'confirm', comment: 'still on call' })).status, 200);
  t.match((await tg.api('bob', 'GET', `/api/v1/access-reviews/${v.id}`)).body, { state: 'completed', counts: { total: 3, decided: 3, revoked: 1 } });

  const csv = await fetch(`${tg.url}/api/v1/access-reviews/${v.id}/export`, { headers: { authorization: `Bearer ${tg.token('bob')}` } });
  t.equal(csv.status, 200);
  t.equal(csv.headers.get('content-type'), 'text/csv; charset=utf-8');
  t.match(csv.headers.get('content-disposition'), /attachment; filename="access-review-test-\d{4}-\d\d-\d\d\.csv"/);
  const rows = (await csv.text()).trim().split('\r\n');
  t.equal(rows.length, 4);
  t.ok(rows.some((r) => /,eligibility,erin,,.*,revoke,bob,[^,]+,left the team$/.test(r)), 'erin\'s revocation is a row');
  const json = await cli(tg, 'carol', ['access-reviews', 'export', v.id, '--format', 'json']);
  t.equal(JSON.parse(json.stdout).counts.revoked, 1);
  t.equal((await fetch(`${tg.url}/api/v1/access-reviews/${v.id}/export?format=xml`, { headers: { authorization: `Bearer ${tg.token('bob')}` } })).status, 400);

  const ex = (await tg.api('carol', 'GET', '/api/v1/exclusions?active=1')).body;
  t.match(ex, [{ identity: 'erin', scope: 'policy', policy: 'test', reason: 'left the team', createdBy: 'bob' }]);
  t.equal((await tg.api('bob', 'GET', '/api/v1/exclusions')).status, 403, 'exclusions are the SOC\'s');
  t.equal((await tg.api('carol', 'POST', `/api/v1/exclusions/${ex[0].id}/lift`, {})).body.field, 'reason');
  t.equal((await tg.api('carol', 'POST', `/api/v1/exclusions/${ex[0].id}/lift`, { reason: 'rejoined' })).status, 200);
  t.equal((await tg.api('erin', 'GET', '/api/v1/targets')).body.length, 1, 'eligible again');
});

t.test('the OpenAPI document lists the new endpoints; config errors name the key', async (t) => {
  const { tg } = await gateway(t, { targets: [fake('box', 'low')] });
  const doc = (await tg.api(null, 'GET', '/api/v1/openapi.json')).body;
  for (const [path, method] of [
    ['/api/v1/delegations', 'post'], ['/api/v1/delegations/{id}/revoke', 'post'], ['/api/v1/access-reviews', 'post'],
    ['/api/v1/access-reviews/{id}/lines/{line}/decide', 'post'], ['/api/v1/access-reviews/{id}/export', 'get'], ['/api/v1/exclusions/{id}/lift', 'post'],
    ['/api/v1/grants/{id}/extend', 'post'], ['/api/v1/grants/{id}/checkin', 'post'], ['/api/v1/checkouts', 'get'],
  ]) t.ok(doc.paths[path!]?.[method!], `${method!.toUpperCase()} ${path}`);
  t.ok(doc.paths['/api/v1/grants/{id}/secret'].post.requestBody.content['application/json'].schema.properties.mfaCode, 'the secret body documents mfaCode');

  const mods = moduleMap();
  const ssh = (extra: Record<string, unknown>) => ({ name: 'web', protocol: 'ssh', address: '127.0.0.1:22', roles: [{ name: 'u' }], credentials: { mode: 'ephemeral-account', admin: { username: 'root', password: { value: 'x' } } }, ...extra });
  const cases: [Record<string, unknown>, string][] = [
    [{ policies: [{ name: 'p' }], reviews: [{ policy: 'q', every: '90d', reviewers: ['leads'] }] }, 'reviews[0].policy'],
    [{ policies: [{ name: 'p' }], reviews: [{ policy: 'p', every: '90d', reviewers: [] }] }, 'reviews[0].reviewers'],
    [{ policies: [{ name: 'p' }], reviews: [{ policy: 'p', every: '10m', reviewers: ['l'] }] }, 'reviews[0].every'],
    [{ policies: [{ name: 'p' }], reviews: [{ policy: 'p', every: '90d', reviewers: ['l'] }, { policy: 'p', every: '30d', reviewers: ['l'] }] }, 'reviews[1].policy'],
    [{ policies: [{ name: 'p', mfaAtConnect: 'yes' }] }, 'policies[0].mfaAtConnect'],
    [{ targets: [ssh({ options: { mfaAtConnect: 1 } })] }, 'targets[0].options.mfaAtConnect'],
    [{ targets: [ssh({ options: { keepHome: 'yes' } })] }, 'targets[0].options.keepHome'],
    [{ targets: [ssh({ options: { keepHomeDir: '/home/../etc' } })] }, 'targets[0].options.keepHomeDir'],
    [{ targets: [ssh({ options: { keepHomeUidBase: 12 } })] }, 'targets[0].options.keepHomeUidBase'],
    [{ targets: [ssh({ credentials: { mode: 'certificate', admin: { username: 'root', password: { value: 'x' } } }, roles: [{ name: 'u', login: 'ops' }], options: { keepHome: true } })] }, 'targets[0].options.keepHome'],
    [{ targets: [ssh({ credentials: { mode: 'checkout', account: 'dba', password: { value: 'p' }, whenHeld: 'wait', admin: { username: 'root', password: { value: 'x' } } } })] }, 'targets[0].credentials.whenHeld'],
  ];
  for (const [raw, path] of cases) {
    try {
      validateConfig(raw, 'gateway.yaml', mods);
      t.fail(`accepted: ${path}`);
    } catch (e) {
      t.ok(e instanceof ConfigError && e.message.startsWith(`gateway.yaml: ${path}: `), `${path}: ${(e as Error).message}`);
    }
  }
  t.doesNotThrow(() => validateConfig({ policies: [{ name: 'p', mfaAtConnect: true }], reviews: [{ policy: 'p', every: '90d', reviewers: ['leads'] }], targets: [ssh({ options: { keepHome: true, keepHomeDir: '/srv/homes' } })] }, 'gateway.yaml', mods));
});
