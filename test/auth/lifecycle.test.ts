// IdP links (auth/lifecycle.ts) against the real dev IdP and the gateway's relying party: re-validation
// at most once per interval (lazily, on use), group changes and disabled users, an unreachable IdP,
// IdP tokens stored only sealed, and what a failed link does to the tokens and web sessions on it.
import t, { type Test } from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { startDevIdp, type DevIdp } from '../../auth/devidp.js';
import { createOidc, type Claims, type Oidc } from '../../auth/oidc.js';
import { IdpLinks, Callers } from '../../auth/lifecycle.js';
import { ApiTokens, WebSessions } from '../../auth/credentials.js';
import { gatewayKey } from '../../auth/keys.js';
import { Secret } from '../../auth/secret.js';
import { ManualClock } from '../../policies/clock.js';
import { openSqliteStore } from '../../proxy/store/sqlite.js';
import type { Store } from '../../proxy/store/types.js';
import { browse, CookieJar } from '../support/signin.js';
import { randomBytes } from 'node:crypto';

const log = pino({ level: 'silent' });
const MIN = 60_000;

async function setup(t: Test) {
  const dir = mkdtempSync(join(tmpdir(), 'tg-lifecycle-'));
  const clock = new ManualClock(Date.now());
  const store: Store = await openSqliteStore(join(dir, 'store.db'));
  const clientSecret = randomBytes(24).toString('base64url');
  const idp: DevIdp = await startDevIdp({
    host: '127.0.0.1', port: 0, log,
    users: [
      { name: 'alice', password: new Secret('alice-pw'), groups: ['engineers', 'oncall'] },
      { name: 'bob', password: new Secret('bob-pw'), groups: ['approvers'] },
    ],
    clients: [{ client_id: 'tollgate', client_secret: clientSecret, redirect_uris: ['http://127.0.0.1:1/cb'], grant_types: ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'] }],
  });
  let oidc: Oidc | null = await createOidc({
    issuer: idp.issuer, clientId: 'tollgate', clientSecret: new Secret(clientSecret), redirectUri: 'http://127.0.0.1:1/cb',
    scopes: ['openid', 'email', 'profile', 'groups'], groupsClaim: 'groups', mfaAcr: 'mfa', log, clock,
  });
  const audits: { actor: string; action: string; subject: string | null; data: Record<string, unknown> }[] = [];
  const failed: string[] = [];
  const key = gatewayKey(randomBytes(32), clock);
  const links = new IdpLinks({
    store, clock, key, oidc: () => oidc, intervalMs: 15 * MIN, log,
    audit: async (actor, action, subject, data) => { audits.push({ actor, action, subject, data }); },
    onFailed: (l) => { failed.push(l.id); },
  });
  const tokens = new ApiTokens(store, clock);
  const web = new WebSessions(store, clock);
  const callers = new Callers(store, tokens, web, links);
  t.teardown(async () => {
    links.stop();
    await idp.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  /** A real device sign-in at the IdP: the claims carry its refresh and access tokens. */
  const signIn = async (user: string, password: string): Promise<Claims> => {
    const d = await oidc!.startDevice();
    await browse(new CookieJar(), new URL(d.verificationUriComplete!), { login: user, password, otp: '' }, (h) => /Sign-in complete/.test(h.body));
    const r = await oidc!.pollDevice(d.handle);
    if (r.status !== 'done') throw new Error(`device sign-in: ${JSON.stringify(r)}`);
    const now = clock.now();
    await store.upsertIdentity({ sub: r.claims.sub, email: r.claims.email, name: r.claims.name, groups: r.claims.groups, firstSeen: now, lastSeen: now });
    return r.claims;
  };
  /** Another gateway on the same store. */
  const otherNode = () => new IdpLinks({ store, clock, key, oidc: () => oidc, intervalMs: 15 * MIN, log, audit: async () => undefined });
  return { dir, clock, store, idp, links, tokens, web, callers, audits, failed, signIn, otherNode, dropOidc: () => { oidc = null; } };
}

t.test('re-validation: at most once per interval, new groups replace the stored ones, a disabled user ends the link', async (t) => {
  const h = await setup(t);
  const claims = await h.signIn('alice', 'alice-pw');
  t.ok(claims.idp?.refresh, 'the dev IdP issued a refresh token');
  const link = (await h.links.create('alice', claims.idp, h.clock.now() + 12 * 60 * MIN))!;
  const { token } = await h.tokens.create('alice', 'cli', 12 * 60 * MIN, null, link.id);
  const { cookie } = await h.web.create('alice', null, 12 * 60 * MIN, link.id);

  // Sealed at rest: neither the refresh nor the access token appears in the store file.
  const db = readFileSync(join(h.dir, 'store.db')).toString('latin1') + readFileSync(join(h.dir, 'store.db-wal')).toString('latin1');
  t.notOk(db.includes(claims.idp!.refresh!.reveal()), 'no refresh token in clear in the store');
  t.notOk(db.includes(claims.idp!.access!.reveal()), 'no access token in clear in the store');
  t.match((await h.store.getIdpLink(link.id))?.refreshSealed, /^v1\./, 'kept sealed with the gateway key');

  for (let i = 0; i < 5; i++) t.equal((await h.callers.fromToken(token)).ok, true);
  h.clock.advance(14 * MIN);
  t.equal((await h.callers.fromCookie(cookie)).ok, true);
  t.equal(h.links.revalidations, 0, 'no IdP round trip within the interval');

  h.idp.setGroups('alice', ['engineers']);
  h.clock.advance(MIN);
  // Concurrent uses at the due time share one round trip.
  const [a, b, c] = await Promise.all([h.callers.fromToken(token), h.callers.fromToken(token), h.callers.fromCookie(cookie)]);
  t.ok(a.ok && b.ok && c.ok, 'still valid after re-validation');
  t.equal(h.links.revalidations, 1, 'one refresh for three concurrent uses');
  t.same((await h.store.getIdentity('alice'))?.groups, ['engineers'], 'the IdP\'s groups replace the stored ones');
  t.same(a.ok && a.principal.groups, ['engineers'], 'the principal carries the new groups');
  const changed = h.audits.find((e) => e.action === 'identity.groups_changed');
  t.same(changed?.data.removed, ['oncall'], 'the change is audited');

  // Two gateways on one store at the due time: one refresh between them (a refresh token may be single-use).
  const node2 = h.otherNode();
  h.clock.advance(15 * MIN);
  const both = await Promise.all([h.links.check(link.id), node2.check(link.id)]);
  t.same(both, [{ ok: true }, { ok: true }]);
  t.equal(h.links.revalidations + node2.revalidations, 2, 'one more round trip, not two');

  h.idp.setDisabled('alice', true);
  h.clock.advance(10 * MIN);
  t.equal((await h.callers.fromToken(token)).ok, true, 'within the interval the earlier answer stands');
  h.clock.advance(5 * MIN);
  const refused = await h.callers.fromToken(token);
  t.equal(refused.ok, false, 'a disabled user is refused at the next re-validation');
  t.match(!refused.ok && refused.message, /this API token is suspended: the sign-in of alice ended: the identity provider refused/);
  const web = await h.callers.fromCookie(cookie);
  t.match(!web.ok && web.message, /sign-in of alice ended/, 'the web session on the same sign-in ends too');
  t.equal(h.links.revalidations + node2.revalidations, 3);
  const rec = (await h.store.getIdpLink(link.id))!;
  t.equal(rec.state, 'failed');
  t.equal(rec.failKind, 'refused');
  t.equal(rec.refreshSealed, null, 'the IdP tokens of a failed link are dropped');
  const failure = h.audits.find((e) => e.action === 'identity.revalidation_failed');
  t.equal(failure?.subject, 'alice');
  t.equal(failure?.data.kind, 'refused');
  await h.links.idle();
  t.same(h.failed, [link.id], 'what depends on the link is ended once');
  t.match(await h.links.refusal('alice'), /refused/, 'the IdP\'s latest word on alice is a refusal');
  h.clock.advance(60 * MIN);
  t.equal((await h.callers.fromToken(token)).ok, false);
  t.equal(h.links.revalidations + node2.revalidations, 3, 'a failed link is never asked about again');

  // Enabled again and signed in afresh: a new link, and the refusal no longer stands.
  h.idp.setDisabled('alice', false);
  const again = await h.signIn('alice', 'alice-pw');
  await h.links.create('alice', again.idp, h.clock.now() + 60 * MIN);
  t.equal(await h.links.refusal('alice'), null);
});

t.test('an unreachable IdP fails closed for the request but ends nothing; no IdP at all cannot re-validate', async (t) => {
  const h = await setup(t);
  const claims = await h.signIn('bob', 'bob-pw');
  const link = (await h.links.create('bob', claims.idp, h.clock.now() + 60 * MIN))!;
  const { token } = await h.tokens.create('bob', 'cli', 60 * MIN, null, link.id);
  await h.idp.close();
  h.clock.advance(16 * MIN);
  const r = await h.callers.fromToken(token);
  t.same(r.ok === false && r.status, 503, 'refused with 503 while the IdP cannot be asked');
  t.equal((await h.store.getIdpLink(link.id))?.state, 'ok', 'the link stays');
  t.same((await h.callers.fromToken(token)).ok, false, 'still refused');
  t.equal(h.links.revalidations, 2, 'and the IdP is asked again on the next use');
  t.same(h.failed, []);
  h.dropOidc();
  const gone = await h.callers.fromToken(token);
  t.same(gone.ok === false && gone.status, 401);
  t.equal((await h.store.getIdpLink(link.id))?.failKind, 'unverifiable');
});

t.test('without a refresh token: userinfo while the access token lasts, then the link is unverifiable', async (t) => {
  const h = await setup(t);
  const claims = await h.signIn('bob', 'bob-pw');
  // As from an IdP that gives 20-minute access tokens and no refresh token.
  const link = (await h.links.create('bob', { refresh: null, access: claims.idp!.access, accessExpiresAt: h.clock.now() + 20 * MIN }, h.clock.now() + 60 * MIN))!;
  const { token } = await h.tokens.create('bob', 'cli', 60 * MIN, null, link.id);
  h.idp.setGroups('bob', ['approvers', 'security']);
  h.clock.advance(15 * MIN);
  // (The IdP runs on real time, so its access token is still good for userinfo.)
  const r = await h.callers.fromToken(token);
  t.equal(r.ok, true, 'userinfo confirmed bob');
  t.same((await h.store.getIdentity('bob'))?.groups, ['approvers', 'security'], 'groups from userinfo');
  t.equal(h.links.revalidations, 1);
  h.clock.advance(15 * MIN);
  const expired = await h.callers.fromToken(token);
  t.equal(expired.ok, false, 'the access token expired (by the gateway clock) and there is no refresh token');
  t.equal((await h.store.getIdpLink(link.id))?.failKind, 'unverifiable');
  t.equal(await h.links.refusal('bob'), null, 'nothing to re-check with is not a refusal by the IdP');
});

t.test('a link with nothing to re-validate with is not created; tokens without a link are not re-validated', async (t) => {
  const h = await setup(t);
  t.equal(await h.links.create('alice', undefined, h.clock.now() + MIN), null);
  t.equal(await h.links.create('alice', { refresh: null, access: null, accessExpiresAt: null }, h.clock.now() + MIN), null);
  const now = h.clock.now();
  await h.store.upsertIdentity({ sub: 'ops', email: null, name: null, groups: ['soc'], firstSeen: now, lastSeen: now });
  const { token } = await h.tokens.create('ops', 'operator token', 60 * MIN, null);
  h.clock.advance(30 * MIN);
  t.equal((await h.callers.fromToken(token)).ok, true);
  t.equal(h.links.revalidations, 0);
});
