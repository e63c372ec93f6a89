/**
 * Identity lifecycle end to end (issue 15, item 3), on a real gateway with the built-in dev IdP,
 * real sign-ins over HTTP (code and device flow) and the in-memory fake protocol module:
 *   - a user disabled at the IdP loses web and token access at the next re-validation, its live
 *     sessions end and its tokens show as suspended; a group removed at the IdP stops approvals,
 *   - an identity lock refuses every API path that creates access,
 *   - API tokens: maximum lifetime, last use, revoking one ends its live sessions,
 *   - break-glass needs a fresh MFA; its review is closed from outside the break-glass groups,
 *   - SSH key registration needs a real `ssh-keygen -Y sign` proof of possession (via the CLI),
 *   - the browser approval page of a native sign-in: what it shows, CSRF, and identity binding.
 */
import t, { type Test } from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManualClock } from '../../policies/clock.js';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { FakeTarget, fakeModule, fakeConnect } from '../support/fake-module.js';
import { browserSignIn, deviceSignIn, decideApproval } from '../support/signin.js';
import { totp } from '../../auth/totp.js';
import { Secret } from '../../auth/secret.js';
import type { ProtocolContext } from '../../protocols/types.js';

const MIN = 60_000;
const DAY = 86_400_000;
const TOTP = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP';
const bin = join(import.meta.dirname, '..', '..', 'proxy', 'bin', 'tollgate.js');

const target = (name: string, risk: string) => ({ name, protocol: 'fake', address: 'in-memory', risk, roles: [{ name: 'user' }, { name: 'admin' }] });
const devUsers = [
  { name: 'alice', password: { value: 'alice-pw' }, groups: ['engineers', 'oncall'], totp: { value: TOTP } },
  { name: 'bob', password: { value: 'bob-pw' }, groups: ['approvers'] },
];

interface Setup { tg: TestGateway; ft: FakeTarget; ctx: ProtocolContext; clock: ManualClock }

async function setup(t: Test, opts: { idp?: boolean } = {}): Promise<Setup> {
  const clock = new ManualClock(Date.now());
  const ft = new FakeTarget();
  const mod = fakeModule(ft);
  const tg = await startTestGateway({
    targets: [target('box', 'low'), target('shop', 'medium')] as never, listeners: ['fake'], clock, modules: new Map([['fake', mod]]),
    ...(opts.idp ? { extra: { idp: { revalidate: '15m', dev: { users: devUsers } } } } : {}),
  });
  t.teardown(() => tg.close());
  return { tg, ft, ctx: mod.ctx!, clock };
}

/** A call made the way a browser makes it: the session cookie, from the gateway's own origin. */
async function asBrowser(tg: TestGateway, cookie: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(tg.url + path, {
    method,
    headers: { cookie: `tg_session=${cookie}`, origin: tg.url, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function withToken(tg: TestGateway, token: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(tg.url + path, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** Run the real CLI against the test gateway with a token. */
function cli(tg: TestGateway, token: string, args: string[], configDir: string): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, '--url', tg.url, ...args], { env: { ...process.env, TOLLGATE_TOKEN: token, TOLLGATE_CLI_CONFIG: join(configDir, 'cli.json') }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('close', (code) => resolve({ code: code ?? 1, out, err }));
  });
}

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'tg-identity-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test('a user disabled at the IdP loses web and token access at the next re-validation', async (t) => {
  const { tg, ft, ctx, clock } = await setup(t, { idp: true });
  const { cookie } = await browserSignIn(tg.url, 'alice', 'alice-pw');
  const device = await deviceSignIn(tg.url, 'alice', 'alice-pw');
  t.equal(device.status, 200, device.status === 200 ? 'the device sign-in completes' : JSON.stringify(device.body)); // the body holds the token: printed only on failure
  const deviceToken: string = device.body.token;
  const fromWeb = await asBrowser(tg, cookie, 'POST', '/api/v1/tokens', { name: 'made in the portal' });
  t.equal(fromWeb.status, 201);
  const webToken: string = fromWeb.body.token;

  // A registered key (alice registers it with her operator-made token) and a live session through it.
  const keyDir = tempDir(t);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(keyDir, 'k')]);
  const key = await tg.registerKey('alice', join(keyDir, 'k'));
  t.equal(key.status, 201, JSON.stringify(key.body));
  await tg.grant('alice', 'shop', 'user');
  const byKey = () => ctx.access.authenticate({ protocol: 'fake', username: 'shop', clientAddr: '127.0.0.1:4', publicKeyFingerprint: key.body.fingerprint });
  const keyAuth = await byKey();
  t.ok(keyAuth.ok, 'the key signs alice in');
  if (!keyAuth.ok) return;
  const keySession = await ctx.sessions.open(keyAuth.auth, { protocol: 'fake', clientAddr: '127.0.0.1:4' });
  const keyEnded: string[] = [];
  keySession.onTerminate((r) => { keyEnded.push(r.code); void keySession.end(r); });

  // A live session and an unused secret, both issued through the device sign-in's token.
  const req = await withToken(tg, deviceToken, 'POST', '/api/v1/requests', { target: 'box', role: 'user', duration: '2h', reason: 'deploy' });
  t.equal(req.body.state, 'approved');
  const s1 = await withToken(tg, deviceToken, 'POST', `/api/v1/grants/${req.body.grantId}/secret`, {});
  const s2 = await withToken(tg, deviceToken, 'POST', `/api/v1/grants/${req.body.grantId}/secret`, { reusable: true, ttl: '1h' });
  const live = await fakeConnect(ctx, ft, 'box', s1.body.secret);
  t.ok(live.ok, 'connected with a secret from the device token');
  if (!live.ok) return;

  for (const [what, call] of [['web session', () => asBrowser(tg, cookie, 'GET', '/api/v1/me')], ['device token', () => withToken(tg, deviceToken, 'GET', '/api/v1/me')], ['token made on the web', () => withToken(tg, webToken, 'GET', '/api/v1/me')]] as const) {
    t.equal((await call()).status, 200, `${what} works`);
  }

  tg.gw.devIdp!.setDisabled('alice', true);
  clock.advance(14 * MIN);
  await tg.gw.links.idle();
  t.equal((await withToken(tg, deviceToken, 'GET', '/api/v1/me')).status, 200, 'within the interval nothing is asked');
  t.equal(tg.gw.links.revalidations, 0, 'no IdP round trip before idp.revalidate');
  t.equal(live.ended.length, 0);

  clock.advance(MIN);
  await tg.gw.links.idle();
  t.equal(tg.gw.links.revalidations, 2, 'both sign-ins (web and device) re-validated once, by the sweep');
  t.equal(live.ended[0]?.code, 'revoked', 'the live session opened through the device token ended without any API call');
  t.match(live.ended[0]?.message, /sign-in of alice ended/);
  t.equal(ft.accounts.size, 0, 'its lease is revoked');

  const web = await asBrowser(tg, cookie, 'GET', '/api/v1/me');
  t.equal(web.status, 401, 'the web session ended');
  t.match(web.body.message, /the sign-in of alice ended: the identity provider refused to renew/);
  for (const token of [deviceToken, webToken]) {
    const r = await withToken(tg, token, 'GET', '/api/v1/me');
    t.equal(r.status, 401);
    t.match(r.body.message, /this API token is suspended/);
  }
  const refused = await fakeConnect(ctx, ft, 'box', s2.body.secret);
  t.notOk(refused.ok, 'a secret the suspended token issued earlier no longer works');
  if (!refused.ok) t.match(refused.reason, /revoked or has ended/);
  t.same(keyEnded, ['revoked'], 'the session opened with her key ended too');
  const keyAgain = await byKey();
  t.notOk(keyAgain.ok, 'the key no longer signs her in');
  if (!keyAgain.ok) t.match(keyAgain.reason, /the identity provider no longer confirms alice .*sign in again before using a key/);

  // The tokens list (seen with alice's operator-made token, which is not tied to the IdP) says why.
  const list = await tg.api('alice', 'GET', '/api/v1/tokens');
  const byName = Object.fromEntries(list.body.map((x: any) => [x.name, x]));
  t.equal(byName['tollgate login'].state, 'suspended');
  t.equal(byName['made in the portal'].state, 'suspended');
  t.match(byName['tollgate login'].suspendedReason, /refused to renew/);
  t.type(byName['tollgate login'].lastUsedAt, 'number', 'last use is listed');
  t.equal(byName['test'].state, 'active', 'the operator-made token is not tied to the IdP');
  t.equal(byName['test'].idpLinked, false);

  const failures = await tg.store.listAudit({ action: 'identity.revalidation_failed' });
  t.equal(failures.length, 2, 'each failed sign-in is audited');
  t.same(failures.map((e) => [e.actor, e.subject, e.data['kind']]), [['system', 'alice', 'refused'], ['system', 'alice', 'refused']]);
  await t.rejects(browserSignIn(tg.url, 'alice', 'alice-pw'), /This account is disabled/, 'a disabled user cannot sign in again');
});

t.test('groups removed at the IdP stop approvals and break-glass at the next re-validation', async (t) => {
  const { tg, clock } = await setup(t, { idp: true });
  const bob = (await browserSignIn(tg.url, 'bob', 'bob-pw')).cookie;
  const r1 = await tg.api('alice', 'POST', '/api/v1/requests', { target: 'shop', role: 'user', duration: '1h', reason: 'INC-1' });
  t.equal(r1.body.state, 'pending');
  const approvable = await asBrowser(tg, bob, 'GET', '/api/v1/requests?scope=approvable');
  t.same(approvable.body.map((r: any) => r.id), [r1.body.id], 'bob (approvers) may approve');

  const alice = (await browserSignIn(tg.url, 'alice', 'alice-pw', { otp: totp(new Secret(TOTP), Date.now()), mfa: true })).cookie;
  const bg = await asBrowser(tg, alice, 'POST', '/api/v1/breakglass', { target: 'shop', role: 'admin', duration: '30m', reason: 'outage' });
  t.equal(bg.status, 201, 'on call, with a fresh MFA: break-glass works');

  tg.gw.devIdp!.setGroups('bob', []);
  tg.gw.devIdp!.setGroups('alice', ['engineers']);
  clock.advance(15 * MIN);
  await tg.gw.links.idle();
  const approve = await asBrowser(tg, bob, 'POST', `/api/v1/requests/${r1.body.id}/approve`, { comment: 'ok' });
  t.equal(approve.status, 403, 'removed from approvers at the IdP: approval refused');
  t.equal(approve.body.error, 'not_approver');
  t.same((await asBrowser(tg, bob, 'GET', '/api/v1/requests?scope=approvable')).body, []);
  t.equal((await asBrowser(tg, bob, 'GET', '/api/v1/me')).body.approver, false);
  t.equal((await tg.store.getRequest(r1.body.id))?.state, 'pending', 'the request is untouched');
  const bg2 = await asBrowser(tg, alice, 'POST', '/api/v1/breakglass', { target: 'shop', role: 'admin', duration: '30m', reason: 'again' });
  t.equal(bg2.status, 403, 'removed from oncall at the IdP: no break-glass');
  t.equal(bg2.body.error, 'not_eligible');
  const changes = await tg.store.listAudit({ action: 'identity.groups_changed' });
  t.same(changes.map((e) => [e.subject, e.data['removed']]).sort(), [['alice', ['oncall']], ['bob', ['approvers']]]);
});

t.test('a locked identity is refused on every API path that creates access', async (t) => {
  const { tg } = await setup(t, { idp: true });
  const grant = await tg.grant('alice', 'box', 'user');
  const pending = await tg.api('erin', 'POST', '/api/v1/requests', { target: 'shop', role: 'user', duration: '1h', reason: 'x' });
  const aliceCookie = (await tg.gw.webSessions.create('alice', tg.gw.clock.now(), 60 * MIN)).cookie.reveal();
  const lock = async (who: string) => {
    const l = await tg.api('carol', 'POST', '/api/v1/locks', { scope: 'identity', value: who, reason: 'investigation INC-7' });
    t.equal(l.status, 201);
    return l.body.id as string;
  };
  const aliceLock = await lock('alice');
  const bobLock = await lock('bob');
  const pub = execFileSync('sh', ['-c', 'd=$(mktemp -d) && ssh-keygen -q -t ed25519 -N "" -f $d/k && cat $d/k.pub && rm -rf $d']).toString().trim();
  const paths: [string, string, string, unknown][] = [
    ['alice', 'POST', '/api/v1/requests', { target: 'box', role: 'user', duration: '1h', reason: 'x' }],
    ['alice', 'POST', '/api/v1/breakglass', { target: 'box', role: 'admin', duration: '30m', reason: 'x' }],
    ['alice', 'POST', `/api/v1/grants/${grant.id}/secret`, {}],
    ['alice', 'POST', '/api/v1/tokens', { name: 'new' }],
    ['alice', 'POST', '/api/v1/keys/challenge', { publicKey: pub }],
    ['alice', 'POST', '/api/v1/keys', { publicKey: pub, challenge: 'x', signature: 'y' }],
    ['bob', 'POST', `/api/v1/requests/${pending.body.id}/approve`, { comment: 'ok' }],
    ['bob', 'POST', `/api/v1/requests/${pending.body.id}/deny`, { comment: 'no' }],
  ];
  for (const [who, method, path, body] of paths) {
    const r = await tg.api(who, method, path, body);
    t.equal(r.status, 403, `${who} ${method} ${path} refused`);
    t.equal(r.body.code, 'locked');
    t.match(r.body.message, new RegExp(`^${who} is locked: investigation INC-7`));
  }
  const viaCookie = await asBrowser(tg, aliceCookie, 'POST', '/api/v1/requests', { target: 'box', role: 'user', duration: '1h', reason: 'x' });
  t.equal(viaCookie.status, 403, 'the web session is refused the same way');
  const me = await tg.api('alice', 'GET', '/api/v1/me');
  t.equal(me.status, 200, 'who-am-I still answers');
  t.equal(me.body.locked.reason, 'investigation INC-7');
  const device = await deviceSignIn(tg.url, 'alice', 'alice-pw');
  t.equal(device.status, 403, 'no token from a device sign-in');
  t.equal(device.body.code, 'locked');
  await t.rejects(browserSignIn(tg.url, 'alice', 'alice-pw'), /Sign-in refused.*alice is locked/, 'no web session from a browser sign-in');
  t.same((await tg.store.listPublicKeys({ identity: 'alice' })), [], 'nothing was created');
  t.equal((await tg.store.listApiTokens('alice')).length, 1, 'no token was created');
  t.equal((await tg.store.getRequest(pending.body.id))?.state, 'pending');
  const refusals = await tg.store.listAudit({ action: 'api.refused' });
  t.equal(refusals.length, paths.length + 1, 'every refusal is audited');
  t.same([...new Set(refusals.map((e) => e.actor))].sort(), ['alice', 'bob']);
  t.equal((await tg.store.listAudit({ action: 'signin.refused' })).length, 2);

  // A locked SOC analyst cannot lift their own lock; another one can.
  const now = tg.gw.clock.now();
  await tg.store.upsertIdentity({ sub: 'sam', email: null, name: 'sam', groups: ['soc'], firstSeen: now, lastSeen: now });
  const sam = (await tg.gw.tokens.create('sam', 'test', DAY, null)).token.reveal();
  const carolLock = await lock('carol');
  t.equal((await tg.api('carol', 'DELETE', `/api/v1/locks/${carolLock}`)).status, 403, 'no self-unlock');
  t.equal((await withToken(tg, sam, 'DELETE', `/api/v1/locks/${carolLock}`)).status, 200);
  t.equal((await tg.api('carol', 'DELETE', `/api/v1/locks/${aliceLock}`)).status, 200);
  t.equal((await tg.api('alice', 'POST', '/api/v1/tokens', { name: 'after the lock' })).status, 201, 'lifted: alice works again');
  t.equal((await tg.api('bob', 'POST', `/api/v1/requests/${pending.body.id}/approve`, {})).status, 403, 'bob is still locked');
  t.equal((await tg.api('carol', 'DELETE', `/api/v1/locks/${bobLock}`)).status, 200);
});

t.test('API tokens: maximum lifetime, last use, revoking one ends its live sessions', async (t) => {
  const { tg, ft, ctx, clock } = await setup(t);
  const tooLong = await tg.api('alice', 'POST', '/api/v1/tokens', { name: 'forever', ttl: '31d' });
  t.equal(tooLong.status, 400);
  t.equal(tooLong.body.field, 'ttl');
  t.match(tooLong.body.message, /between 1s and 30d \(gateway.maxTokenTtl\)/);
  const dflt = await tg.api('alice', 'POST', '/api/v1/tokens', { name: 'default' });
  t.equal(Date.parse(dflt.body.expiresAt), clock.now() + 30 * DAY, 'default lifetime is the maximum, 30d');
  await t.rejects(tg.gw.tokens.create('alice', 'direct', 31 * DAY, null), /at most 2592000s \(gateway.maxTokenTtl\)/, 'no path around the maximum');

  const ci = await tg.api('alice', 'POST', '/api/v1/tokens', { name: 'ci', ttl: '2h' });
  t.equal(ci.status, 201);
  const grant = await tg.grant('alice', 'box', 'user');
  const viaCi = await withToken(tg, ci.body.token, 'POST', `/api/v1/grants/${grant.id}/secret`, { reusable: true, ttl: '1d' });
  t.equal(Date.parse(viaCi.body.expiresAt), Math.min(clock.now() + 2 * 3_600_000, grant.expiresAt), 'a secret never outlives the token that asked for it');
  const unused = await withToken(tg, ci.body.token, 'POST', `/api/v1/grants/${grant.id}/secret`, {});
  const other = await tg.secret('alice', grant.id);
  const c1 = await fakeConnect(ctx, ft, 'box', viaCi.body.secret);
  const c2 = await fakeConnect(ctx, ft, 'box', other.secret);
  t.ok(c1.ok && c2.ok, 'two live sessions, one through each token');
  if (!c1.ok || !c2.ok) return;

  const listed = (await tg.api('alice', 'GET', '/api/v1/tokens')).body.find((x: any) => x.id === ci.body.id);
  t.equal(listed.state, 'active');
  t.equal(listed.lastUsedAt, clock.now(), 'last use listed');
  t.equal((await tg.api('bob', 'DELETE', `/api/v1/tokens/${ci.body.id}`)).status, 404, 'not anyone else\'s to revoke');

  const revoked = await tg.api('alice', 'DELETE', `/api/v1/tokens/${ci.body.id}`);
  t.same(revoked.body, { ok: true, sessionsEnded: 1 });
  t.equal(c1.ended[0]?.code, 'revoked', 'the session opened through the revoked token ended');
  t.match(c1.ended[0]?.message, /API token that opened this session was revoked/);
  t.equal(c2.ended.length, 0, 'the session of the other token runs on');
  t.equal(ft.accounts.size, 1);
  t.equal((await withToken(tg, ci.body.token, 'GET', '/api/v1/me')).status, 401);
  const again = await fakeConnect(ctx, ft, 'box', viaCi.body.secret);
  const never = await fakeConnect(ctx, ft, 'box', unused.body.secret);
  t.notOk(again.ok, 'its reusable secret stopped working');
  t.notOk(never.ok, 'its unused secret stopped working');
  t.equal((await tg.api('alice', 'GET', '/api/v1/tokens')).body.find((x: any) => x.id === ci.body.id).state, 'revoked');
  // A principal established out of band through that token (an app hand-off, a browser approval) is refused too.
  const handedOff = { ...(await tg.gw.principalOf('alice', 'token'))!, credential: { kind: 'token' as const, id: ci.body.id, linkId: null } };
  const viaApp = await ctx.access.authenticate({ protocol: 'fake', username: 'box', clientAddr: '127.0.0.1:3', principal: handedOff });
  t.notOk(viaApp.ok);
  if (!viaApp.ok) t.match(viaApp.reason, /has ended \(the API token was revoked\)/);
  const audit = await tg.store.listAudit({ action: 'token.revoked', subject: ci.body.id });
  t.equal(audit[0]?.data['sessionsEnded'], 1);
  const listing = await cli(tg, tg.token('alice'), ['tokens'], tempDir(t));
  t.equal(listing.code, 0, listing.err);
  t.match(listing.out, new RegExp(`${ci.body.id}\\s+ci\\s+revoked`), 'tollgate tokens shows the state');
  t.match(listing.out, /test \(this one\)\s+active/);
  await c2.session.end({ code: 'client_exit', message: 'bye' });
});

t.test('break-glass needs a fresh MFA; its review is closed from outside the break-glass groups', async (t) => {
  const { tg, clock } = await setup(t);
  const body = { target: 'box', role: 'admin', duration: '30m', reason: 'prod down' };
  clock.advance(16 * MIN);
  const stale = await tg.api('alice', 'POST', '/api/v1/breakglass', body);
  t.equal(stale.status, 403, 'the test token proved MFA 16 minutes ago: too old');
  t.equal(stale.body.error, 'mfa_required');
  t.match(stale.body.message, /break-glass access needs a fresh MFA sign-in \(within the last 15m\)/);
  t.equal((await tg.store.listReviews()).length, 0, 'nothing granted');
  const plain = (await tg.gw.webSessions.create('alice', null, 60 * MIN)).cookie.reveal();
  t.equal((await asBrowser(tg, plain, 'POST', '/api/v1/breakglass', body)).status, 403, 'a sign-in without MFA is refused');
  const fresh = (await tg.gw.webSessions.create('alice', clock.now() - MIN, 60 * MIN)).cookie.reveal();
  const bg = await asBrowser(tg, fresh, 'POST', '/api/v1/breakglass', body);
  t.equal(bg.status, 201, 'with an MFA a minute old');

  const now = clock.now();
  await tg.store.upsertIdentity({ sub: 'olga', email: null, name: 'olga', groups: ['oncall', 'security'], firstSeen: now, lastSeen: now });
  const olga = (await tg.gw.tokens.create('olga', 'test', DAY, now)).token.reveal();
  const [review] = await tg.store.listReviews({ state: 'open' });
  const close = (who: string | null, token?: string) => (token
    ? withToken(tg, token, 'POST', `/api/v1/reviews/${review!.id}/close`, { comment: 'checked the recording' })
    : tg.api(who, 'POST', `/api/v1/reviews/${review!.id}/close`, { comment: 'checked the recording' }));
  t.equal((await close('alice')).status, 403, 'not by its user');
  const member = await close(null, olga);
  t.equal(member.status, 403, 'not by a break-glass member, even one in security');
  t.match(member.body.message, /outside the break-glass groups \(you are in oncall\)/);
  const approver = await close('bob');
  t.equal(approver.status, 403, 'an approver is not a reviewer');
  t.match(approver.body.message, /only members of security, soc can close/);
  t.equal((await tg.store.getReview(review!.id))?.state, 'open');
  const ok = await close('carol');
  t.equal(ok.status, 200, 'the SOC closes it');
  t.equal(ok.body.closedBy, 'carol');
});

t.test('SSH keys are registered only with a proof of possession made by ssh-keygen -Y sign', async (t) => {
  const { tg, ft, ctx, clock } = await setup(t);
  const dir = tempDir(t);
  const keygen = (name: string, args = ['-t', 'ed25519']) => {
    execFileSync('ssh-keygen', ['-q', '-N', '', '-C', `${name}@laptop`, '-f', join(dir, name), ...args]);
    return { file: join(dir, name), pub: readFileSync(join(dir, `${name}.pub`), 'utf8').trim() };
  };
  const sign = (keyFile: string, text: string, ns = 'tollgate-key-registration') => {
    const f = join(dir, `msg-${Math.random().toString(36).slice(2)}`);
    writeFileSync(f, text);
    execFileSync('ssh-keygen', ['-Y', 'sign', '-n', ns, '-f', keyFile, f], { stdio: 'pipe' });
    return readFileSync(`${f}.sig`, 'utf8');
  };
  const mine = keygen('mine');
  const other = keygen('other');
  const challenge = async (user: string, pub: string) => (await tg.api(user, 'POST', '/api/v1/keys/challenge', { publicKey: pub })).body.challenge as string;
  const register = (user: string, pub: string, c: string, signature: string) => tg.api(user, 'POST', '/api/v1/keys', { publicKey: pub, name: 'laptop', challenge: c, signature });

  const none = await tg.api('alice', 'POST', '/api/v1/keys', { publicKey: mine.pub, name: 'laptop' });
  t.equal(none.status, 400, 'no proof: refused');
  t.equal(none.body.field, 'signature');
  t.match(none.body.message, /proof of possession is required/);
  const c1 = await challenge('alice', mine.pub);
  const cases: [string, Promise<{ status: number; body: any }>, RegExp][] = [
    ['signed by another key', register('alice', mine.pub, c1, sign(other.file, c1)), /the signature was made with another key/],
    ['another namespace', register('alice', mine.pub, c1, sign(mine.file, c1, 'file')), /namespace "file"/],
    ['another message', register('alice', mine.pub, c1, sign(mine.file, `${c1}x`)), /does not verify/],
    ['garbage', register('alice', mine.pub, c1, 'not a signature'), /not an SSH signature/],
    ['a challenge for another key', register('alice', mine.pub, await challenge('alice', other.pub), sign(mine.file, c1)), /issued for another key/],
    ['a challenge issued to bob', register('alice', mine.pub, await challenge('bob', mine.pub), sign(mine.file, c1)), /issued to another identity/],
    ['a forged challenge', register('alice', mine.pub, 'v1.forged', sign(mine.file, 'v1.forged')), /not issued by this gateway/],
  ];
  for (const [what, p, msg] of cases) {
    const r = await p;
    t.equal(r.status, 400, `${what}: refused`);
    t.match(r.body.message, msg, what);
  }
  const old = await challenge('alice', mine.pub);
  const oldSig = sign(mine.file, old);
  clock.advance(6 * MIN);
  t.match((await register('alice', mine.pub, old, oldSig)).body.message, /challenge: expired/, 'a challenge lasts 5 minutes');
  const weak = keygen('weak', ['-t', 'rsa', '-b', '1024']);
  t.match((await tg.api('alice', 'POST', '/api/v1/keys/challenge', { publicKey: weak.pub })).body.message, /at least 2048 bits/);
  t.equal((await tg.store.listPublicKeys({})).length, 0, 'nothing registered so far');
  t.equal((await tg.store.listAudit({ action: 'key.refused' })).length, cases.length + 2, 'refusals are audited');

  // The CLI signs the challenge with the real ssh-keygen and registers the key.
  const added = await cli(tg, tg.token('alice'), ['keys', 'add', `${mine.file}.pub`], dir);
  t.equal(added.code, 0, added.err);
  t.match(added.out, /^registered SHA256:\S+ as "mine@laptop"/);
  const keys = await tg.api('alice', 'GET', '/api/v1/keys');
  t.equal(keys.body.length, 1);
  t.equal(keys.body[0].publicKey, mine.pub.split(' ').slice(0, 2).join(' '));
  t.equal((await tg.store.listAudit({ action: 'key.registered' }))[0]?.data['proof'], 'sshsig');
  const c2 = await challenge('bob', mine.pub);
  t.equal((await register('bob', mine.pub, c2, sign(mine.file, c2))).status, 409, 'a key belongs to one identity');

  // The registered key signs alice in (the protocol proved the key; Tollgate maps it to alice).
  await tg.grant('alice', 'box', 'user');
  const auth = await ctx.access.authenticate({ protocol: 'fake', username: 'box', clientAddr: '127.0.0.1:2', publicKeyFingerprint: keys.body[0].fingerprint });
  t.ok(auth.ok, 'key sign-in works');
  if (auth.ok) {
    t.equal(auth.auth.principal.sub, 'alice');
    t.same(auth.auth.principal.credential, { kind: 'key', id: keys.body[0].id, linkId: null });
  }
  t.equal(ft.accounts.size, 0);
});

t.test('the SSH browser-approval page shows what is approved and binds it to the identity that opens it', async (t) => {
  const { tg, ctx } = await setup(t);
  await tg.grant('alice', 'box', 'user');
  const alice = (await tg.gw.webSessions.create('alice', null, 60 * MIN)).cookie.reveal();
  const bob = (await tg.gw.webSessions.create('bob', null, 60 * MIN)).cookie.reveal();
  const get = (url: string, cookie?: string) => fetch(url, { headers: cookie ? { cookie: `tg_session=${cookie}` } : {}, redirect: 'manual' });
  const post = (url: string, cookie: string, form: Record<string, string>, headers: Record<string, string> = {}) => fetch(url, {
    method: 'POST', redirect: 'manual', body: new URLSearchParams(form).toString(),
    headers: { cookie: `tg_session=${cookie}`, 'content-type': 'application/x-www-form-urlencoded', ...headers },
  });

  const approval = ctx.access.beginBrowserApproval({ protocol: 'ssh', username: 'box:user', clientAddr: '203.0.113.9:50022' });
  const outcome = approval.wait(60_000);
  t.match(approval.url, new RegExp(`^${tg.url}/approve-login/[0-9a-f-]{36}$`));
  const anon = await get(approval.url);
  t.equal(anon.status, 302, 'not signed in: sign in first');
  t.equal(anon.headers.get('location'), `/auth/login?returnTo=${encodeURIComponent(new URL(approval.url).pathname)}`);

  const page = await (await get(approval.url, alice)).text();
  t.match(page, /<code id="client-addr">203\.0\.113\.9:50022<\/code>/, 'client address shown');
  t.match(page, /<strong id="target">box<\/strong>/, 'target shown');
  t.match(page, /<strong id="role">user<\/strong>/, 'role shown');
  t.match(page, /<strong id="identity">alice<\/strong>/, 'the identity the session will run as');
  t.match(page, /id="elsewhere">The client connects from 203\.0\.113\.9, but this browser from 127\.0\.0\.1/, 'a client elsewhere is pointed out');
  t.match(page, /If someone sent you this link, choose Deny/);
  const csrf = /name="csrf" value="([^"]+)"/.exec(page)?.[1] ?? '';
  t.ok(csrf.length >= 40, 'the form carries a CSRF token');

  const bobPage = await get(approval.url, bob);
  t.equal(bobPage.status, 403, 'another identity cannot open it once alice did');
  t.match(await bobPage.text(), /opened by another identity first/);
  t.equal((await post(approval.url, bob, { csrf, decision: 'approve', confirm: 'yes' })).status, 403, 'nor decide it with alice\'s token');
  const bobCsrf = /name="csrf" value="([^"]+)"/.exec(await (await get(approval.url, alice)).text())?.[1];
  t.equal(bobCsrf, csrf, 'the token is stable for alice\'s session');

  t.equal((await post(approval.url, alice, { decision: 'approve', confirm: 'yes' })).status, 403, 'no CSRF token: refused');
  t.equal((await post(approval.url, alice, { csrf, decision: 'approve', confirm: 'yes' }, { origin: 'http://evil.example' })).status, 403, 'a foreign Origin: refused');
  t.equal((await post(approval.url, alice, { csrf, decision: 'approve', confirm: 'yes' }, { 'sec-fetch-site': 'same-site' })).status, 403, 'from a sibling (app) site: refused');
  t.equal((await post(approval.url, alice, { csrf, decision: 'approve', confirm: 'yes' }, { 'content-type': 'text/plain' })).status, 403, 'not a form: refused');
  const unconfirmed = await post(approval.url, alice, { csrf, decision: 'approve' });
  t.equal(unconfirmed.status, 400, 'approving needs the confirmation box');
  t.equal((await tg.store.listAudit({ action: 'approval.refused' })).length, 5);

  const done = await post(approval.url, alice, { csrf, decision: 'approve', confirm: 'yes' }, { origin: tg.url, 'sec-fetch-site': 'same-origin' });
  t.equal(done.status, 200);
  t.match(await done.text(), /Approved: the client is signing in to box as user, as alice/);
  const out = await outcome;
  t.ok(out.ok, 'the native client is let in');
  if (out.ok) {
    t.equal(out.auth.principal.sub, 'alice', 'as the identity that opened and approved it');
    t.equal(out.auth.principal.credential?.kind, 'web', 'through her web session (it ends with it)');
  }
  t.equal((await get(approval.url, alice)).status, 404, 'decided once');

  // Someone without a grant opens an approval first: it stays theirs, and approving gets nothing.
  const second = ctx.access.beginBrowserApproval({ protocol: 'ssh', username: 'box', clientAddr: '127.0.0.1:40000' });
  const secondOutcome = second.wait(60_000);
  const bobSees = await (await get(second.url, bob)).text();
  t.match(bobSees, /you hold no active grant for it, so approving will be refused/);
  t.notMatch(bobSees, /id="elsewhere"/, 'same address as the browser: no warning');
  t.equal((await get(second.url, alice)).status, 403, 'alice cannot take over what bob opened');
  const r = await decideApproval(second.url, { cookie: `tg_session=${bob}` }, 'approve');
  t.equal(r.status, 200);
  t.match(r.page, /Not approved/);
  const o2 = await secondOutcome;
  t.notOk(o2.ok, 'bob has no grant for box');
  if (!o2.ok) t.equal(o2.code, 'no_grant');
});
