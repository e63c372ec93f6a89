/**
 * Revealing a checked-out password (issue 22, Keeper's "view password") on a real OpenSSH sshd:
 * the holder whose role says `reveal: true`, during the active grant, with a fresh MFA (an
 * authenticator code, or a browser sign-in with MFA within idp.mfaMaxAge) gets the current
 * password, and it logs in with the real ssh client (sshpass) straight to the sshd; everyone else
 * (another identity, a role without reveal, no or stale MFA, a wrong code, an expired grant, too many
 * tries) is refused and audited; the answer is never cached; neither the audit log nor the gateway
 * log holds the password; the password sealed in the data dir is not in clear; and after check-in
 * the revealed password is refused by the sshd.
 */
import t from 'tap';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { totp } from '../../auth/totp.js';
import { Secret } from '../../auth/secret.js';
import { ManualClock } from '../../policies/clock.js';
import { validateSshTarget } from '../../protocols/ssh/config.js';
import { REVEAL_MAX, REVEAL_WINDOW_MS } from '../../proxy/http/routes/checkouts.js';
import { startTestGateway, TEST_USERS, type TestGateway } from '../support/gateway.js';
import { browserSignIn } from '../support/signin.js';
import { haveSshd, startTestSshd, runClient, until, type TestSshd } from '../support/sshd.js';

const ALICE_TOTP = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP';
/** How long a sign-in's MFA counts as fresh in this gateway. */
const MFA_MAX_AGE_MS = 5 * 60_000;
/** The gateway's time (MFA freshness, grant ends, authenticator codes, the reveal window) moves when the test says. */
const clock = new ManualClock(Date.now());
let env: TestSshd;
let gw: TestGateway;
let account: string;
const logLines: string[] = [];
/** A code of a time step not used yet (every code is good once): the gateway's clock moves on 30 s first. */
const code = () => { clock.advance(30_000); return totp(new Secret(ALICE_TOTP), clock.now()); };

t.before(async () => {
  if (!haveSshd) return;
  env = await startTestSshd(t, { eph: 'rv-eph', cert: 'rv-cert', pw: 'vaulted' });
  account = env.accounts.checkoutAccount;
  const pw = env.targets[2]!;
  const target = { ...pw, roles: [{ name: 'shared', reveal: true }, { name: 'look' }] };
  gw = await startTestGateway({
    targets: [target], listeners: ['ssh'], clock,
    logSink: (l) => { logLines.push(l); },
    extra: {
      idp: {
        mfaMaxAge: `${MFA_MAX_AGE_MS / 1000}s`,
        dev: { users: Object.entries(TEST_USERS).map(([name, groups]) => ({ name, password: { value: `${name}-pw` }, groups, ...(name === 'alice' ? { totp: { value: ALICE_TOTP } } : {}) })) },
      },
    },
  });
});
t.teardown(async () => { await gw?.close(); });

const direct = (password: string) => runClient(password, 'ssh', ['-p', String(env.sshd.port), `${account}@127.0.0.1`, 'id -un'], { timeoutMs: 20_000 });
const reveal = (user: string, grantId: string, body: object = {}) => gw.api(user, 'POST', `/api/v1/grants/${grantId}/reveal`, body);
async function asBrowser(cookie: string, method: string, path: string, body?: unknown, headers: Record<string, string> = { origin: gw.url }) {
  const res = await fetch(gw.url + path, { method, headers: { cookie: `tg_session=${cookie}`, ...headers, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, body: body !== undefined ? JSON.stringify(body) : undefined });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : null };
}
async function checkIn(user: string, grantId: string) {
  const r = await gw.api(user, 'POST', `/api/v1/grants/${grantId}/checkin`, {});
  if (r.status !== 200) throw new Error(`check-in: ${r.status} ${JSON.stringify(r.body)}`);
}
/** The sealed file the ssh module keeps the current password in (once it rotated). */
const sealedFile = () => join(gw.gw.ctx('ssh').config.dataDir, 'ssh', 'checkout', `vaulted--${account}`);
const stored = () => gw.gw.key.unseal<{ p: string }>(readFileSync(sealedFile(), 'utf8'))!.p;
/** The current password: the sealed one once it rotated, the configured starting one before. */
const current = () => (existsSync(sealedFile()) ? stored() : env.accounts.checkoutPassword);

t.test('a browser sign-in with MFA is fresh for idp.mfaMaxAge, then stale; cookie calls need the gateway origin', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const held = await gw.grant('alice', 'vaulted', 'shared', '1h');
  const { cookie } = await browserSignIn(gw.url, 'alice', 'alice-pw', { otp: totp(new Secret(ALICE_TOTP), clock.now()), mfa: true });
  const foreign = await asBrowser(cookie, 'POST', `/api/v1/grants/${held.id}/reveal`, {}, { origin: 'https://evil.example' });
  t.equal(foreign.status, 403, 'CSRF: a cookie call from another origin is refused');
  t.equal(foreign.body.error, 'cross_origin');
  t.notOk(JSON.stringify(foreign.body).includes(current()));
  const noOrigin = await asBrowser(cookie, 'POST', `/api/v1/grants/${held.id}/reveal`, {}, {});
  t.equal(noOrigin.status, 403, 'and one without an Origin header');
  const fresh = await asBrowser(cookie, 'POST', `/api/v1/grants/${held.id}/reveal`, {});
  t.equal(fresh.status, 200, fresh.body?.error ?? 'revealed');
  t.equal(fresh.headers.get('cache-control'), 'no-store', 'Cache-Control: no-store');
  t.equal(fresh.body.password, current());
  const login = await direct(fresh.body.password);
  t.equal(login.stdout.trim(), account, `it logs in to the real sshd (${login.stderr.trim()})`);
  t.match((await gw.store.listAudit({ action: 'checkout.revealed' })).at(-1)?.data, { mfa: 'sign-in', by: /^web:/ });
  clock.advance(MFA_MAX_AGE_MS + 60_000);
  const stale = await asBrowser(cookie, 'POST', `/api/v1/grants/${held.id}/reveal`, {});
  t.equal(stale.status, 403, 'the same sign-in after idp.mfaMaxAge: stale MFA');
  t.equal(stale.body.error, 'mfa_required');
  t.notOk(JSON.stringify(stale.body).includes(current()));
  const withCode = await asBrowser(cookie, 'POST', `/api/v1/grants/${held.id}/reveal`, { mfaCode: code() });
  t.equal(withCode.status, 200, 'an authenticator code makes it fresh again');
  t.match((await gw.store.listAudit({ action: 'checkout.revealed' })).at(-1)?.data, { mfa: 'code' });
  await checkIn('alice', held.id);
  await until(() => current() !== fresh.body.password, 20_000, 'rotation at check-in');
});

t.test('the holder with reveal and a fresh MFA gets the current password; it works on the real sshd; check-in kills it', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  // A role without reveal: erin holds the account, cannot reveal, checks in.
  const look = await gw.grant('erin', 'vaulted', 'look', '1h');
  const noRole = await reveal('erin', look.id, { mfaCode: '123456' });
  t.equal(noRole.status, 403);
  t.equal(noRole.body.error, 'not_eligible');
  t.match(noRole.body.message, /role look on vaulted does not allow revealing/);
  const listed = await gw.api('erin', 'GET', '/api/v1/checkouts');
  t.equal(listed.body[0].reveal, false, 'the list says erin cannot reveal');
  await checkIn('erin', look.id);
  // Rotated at every check-in: what is revealed next is a password the gateway chose.
  await until(() => existsSync(sealedFile()), 20_000, 'a rotated password');

  const held = await gw.grant('alice', 'vaulted', 'shared', '1h');
  t.equal((await gw.api('alice', 'GET', '/api/v1/checkouts')).body[0].reveal, true, 'the list offers alice the reveal');
  t.equal((await gw.api('erin', 'GET', '/api/v1/checkouts')).body[0].reveal, false, 'but not erin');

  // Not the holder.
  const other = await reveal('erin', held.id, { mfaCode: code() });
  t.equal(other.status, 404, 'another identity: no such grant of theirs');
  t.notOk(JSON.stringify(other.body).includes(stored()), 'and nothing of the password');
  // No MFA: an API token has none, and no code came with it.
  const noMfa = await reveal('alice', held.id);
  t.equal(noMfa.status, 403);
  t.equal(noMfa.body.error, 'mfa_required');
  t.match(noMfa.body.message, /needs a fresh MFA: give your authenticator code/);
  const valid = [-1, 0, 1].map((d) => totp(new Secret(ALICE_TOTP), clock.now() + d * 30_000));
  const wrong = await reveal('alice', held.id, { mfaCode: ['000000', '111111', '222222', '333333'].find((c) => !valid.includes(c)) });
  t.equal(wrong.status, 403);
  t.match(wrong.body.message, /authenticator code is wrong/);

  // With a code: the current password, never cached, and it logs in straight to the sshd.
  const res = await fetch(`${gw.url}/api/v1/grants/${held.id}/reveal`, { method: 'POST', headers: { authorization: `Bearer ${gw.token('alice')}`, 'content-type': 'application/json' }, body: JSON.stringify({ mfaCode: code() }) });
  t.equal(res.status, 200);
  t.equal(res.headers.get('cache-control'), 'no-store', 'Cache-Control: no-store');
  const body = await res.json() as { password: string; account: string; target: string };
  t.equal(body.account, account);
  t.equal(body.password, stored(), 'the current password (the one the last rotation set)');
  t.not(body.password, env.accounts.checkoutPassword);
  const login = await direct(body.password);
  t.equal(login.code, 0, login.stderr);
  t.equal(login.stdout.trim(), account, 'the revealed password logs in to the real sshd');

  // Audited, without the secret.
  const revealed = await gw.store.listAudit({ action: 'checkout.revealed', subject: held.id });
  t.equal(revealed.length, 1);
  t.match(revealed[0], { actor: 'alice', subject: held.id, data: { grant: held.id, target: 'vaulted', role: 'shared', account, mfa: 'code' } });
  const refused = await gw.store.listAudit({ action: 'checkout.reveal_refused', subject: held.id });
  t.same(refused.map((e) => [e.actor, e.data['code']]), [['alice', 'mfa_required'], ['alice', 'mfa_required']], 'the refusals after the grant was found are audited');
  const all = JSON.stringify(await gw.store.listAudit({ limit: 10_000 }));
  t.notOk(all.includes(body.password), 'no audit event holds the password');
  t.ok(logLines.length > 0, 'the gateway logged (debug level)');
  t.notOk(logLines.some((l) => l.includes(body.password)), 'no gateway log line holds the password');
  // The sealed file and the store hold no clear password.
  t.equal(statSync(sealedFile()).mode & 0o777, 0o600);
  const files = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((f) => (f.isDirectory() ? files(join(dir, f.name)) : f.isFile() ? [join(dir, f.name)] : []));
  const scanned = files(gw.dataDir);
  t.ok(scanned.some((f) => f.endsWith('.db') || /sqlite/.test(f)) || gw.storeKind === 'postgres', `the store is among the files scanned (${scanned.length})`);
  for (const p of scanned) t.notOk(readFileSync(p).includes(body.password), `${p.slice(gw.dataDir.length)} does not hold the password in clear`);

  // After check-in the password rotates: the revealed one is refused by the sshd.
  await checkIn('alice', held.id);
  await until(() => stored() !== body.password, 20_000, 'rotation at check-in');
  const dead = await direct(body.password);
  t.not(dead.code, 0, 'the revealed password is refused after check-in');
  t.match(dead.stderr, /Permission denied/);
  t.equal((await direct(stored())).code, 0, 'the new one (which nobody saw) works');
  const after = await reveal('alice', held.id, { mfaCode: code() });
  t.equal(after.status, 409, 'no reveal after check-in');
  t.match(after.body.message, /the grant is revoked/);
});

t.test('an expired grant reveals nothing; too many reveals are refused for a while', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const short = await gw.grant('alice', 'vaulted', 'shared', '2s');
  clock.advance(3_000);
  await until(async () => (await gw.store.getGrant(short.id))!.state === 'expired', 15_000, 'the grant marked expired');
  const expired = await reveal('alice', short.id, { mfaCode: code() });
  t.equal(expired.status, 409);
  t.match(expired.body.message, /the grant is expired/);

  clock.advance(REVEAL_WINDOW_MS); // earlier reveals out of the window
  const held = await gw.grant('alice', 'vaulted', 'shared', '1h');
  for (let i = 1; i <= REVEAL_MAX; i++) {
    const r = await reveal('alice', held.id, { mfaCode: code() });
    t.equal(r.status, 200, `reveal ${i} of ${REVEAL_MAX} within ${REVEAL_WINDOW_MS / 60_000} minutes`);
  }
  const over = await reveal('alice', held.id, { mfaCode: code() });
  t.equal(over.status, 429, 'one more is refused');
  t.equal(over.body.error, 'rate_limited');
  t.notOk(JSON.stringify(over.body).includes(current()));
  t.equal((await gw.store.listAudit({ action: 'checkout.reveal_refused', subject: held.id })).filter((e) => e.data['code'] === 'rate_limited').length, 1, 'audited');
  clock.advance(REVEAL_WINDOW_MS);
  t.equal((await reveal('alice', held.id, { mfaCode: code() })).status, 200, 'after the window, allowed again');
  await checkIn('alice', held.id);
});

t.test('config: roles[].reveal is a boolean, and only on checkout targets', async (t) => {
  const admin = { username: 'root', password: { value: 'x' } };
  const base = { name: 'c', protocol: 'ssh', address: '127.0.0.1:22', risk: 'medium' as const, options: {} };
  const checkout = { ...base, credentials: { mode: 'checkout', admin, account: 'deploy', password: { value: 'p' } } };
  t.equal(validateSshTarget({ ...checkout, roles: [{ name: 'r', reveal: true }] }), null, 'reveal: true on a checkout target');
  t.match(validateSshTarget({ ...checkout, roles: [{ name: 'r', reveal: 'yes' }] }), { path: 'roles[0].reveal', expected: 'true or false' });
  t.match(validateSshTarget({ ...base, credentials: { mode: 'ephemeral-account', admin }, roles: [{ name: 'r', reveal: true }] }), { path: 'roles[0].reveal', expected: /only with credentials.mode checkout/ });
});
