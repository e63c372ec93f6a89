/**
 * Rotation of the directory's bind password kept in the vault (`directory.bind.password: {vault:
 * true}`, `directory.bind.rotate: 1h`, time from a manual clock) against a real OpenLDAP (slapd,
 * protocols/directory-slapd.ts): the vault sees the bind account as the pseudo-target @directory,
 * field bind.password. After each scheduled rotation slapd refuses the old password (ldapwhoami),
 * takes the new one (read from the vault with the key), and the gateway still mints a
 * directory-account lease with it. A rotation slapd refuses (an ACL takes the account's right to
 * change its own password) keeps the old one, which still binds; it is audited, alerts, and is
 * retried with backoff until it succeeds.
 */
import t from 'tap';
import pino from 'pino';
import { ManualClock } from '../../policies/clock.js';
import { createAccount, planAccount, revokeAccount } from '../../protocols/directory-leases.js';
import { DIRECTORY_VAULT_FIELD, DIRECTORY_VAULT_TARGET } from '../../protocols/directory-rotate.js';
import { slapdMissing, startSlapd } from '../../protocols/directory-slapd.js';
import { startTestGateway } from '../support/gateway.js';
import { waitFor } from '../rdp/support.js';

const HOUR = 3_600_000;
const MIN = 60_000;
const why = slapdMissing();
if (why) {
  t.fail(`slapd cannot run here: ${why}`);
} else {
  const ldap = await startSlapd();
  t.teardown(() => ldap.stop());
  const GROUP = `cn=tg-rot-admins,${ldap.groupsDn}`;
  ldap.ldif(`dn: ${GROUP}\nobjectClass: groupOfNames\ncn: tg-rot-admins\nmember: cn=nobody,${ldap.baseDn}\n`);
  const clock = new ManualClock(Date.now());
  const tg = await startTestGateway({
    clock,
    targets: [{ name: 'ldapbox', protocol: 'rdp', address: '127.0.0.1:1', credentials: { mode: 'directory-account' }, options: { nla: false }, roles: [{ name: 'admin', directoryGroups: ['tg-rot-admins'] }] }],
    extra: {
      directory: { url: ldap.url, flavour: 'ldap', bind: { dn: ldap.bindDn, password: { vault: true }, rotate: '1h' }, baseDn: ldap.baseDn, tls: { ca: { value: ldap.ca } } },
      credentials: { retry: '2m', retryMax: '10m' },
    },
  });
  t.teardown(() => tg.close());
  const path = `/api/v1/targets/${encodeURIComponent(DIRECTORY_VAULT_TARGET)}/credentials`;
  const meta = async () => (await tg.api('carol', 'GET', path)).body[0];
  const current = () => tg.gw.vault.current(DIRECTORY_VAULT_TARGET, DIRECTORY_VAULT_FIELD).then((s) => s.reveal());
  const binds = (pw: string) => ldap.whoami(ldap.bindDn, pw).code;
  const rotateBy = async (ms: number, version: number) => {
    clock.advance(ms);
    return waitFor(`rotated past version ${version}`, async () => { clock.advance(0); const m = await meta(); return m.version > version ? m : null; }, 30_000);
  };
  const failedBy = async (ms: number, failures: number) => {
    clock.advance(ms);
    return waitFor(`failure ${failures}`, async () => { clock.advance(0); const m = await meta(); return m.failures >= failures ? m : null; }, 30_000);
  };
  /** A directory-account lease through the gateway's Directory (which binds with the vault's current password), proved by ldapwhoami, then revoked. */
  const leaseWorks = async () => {
    const ctx = { state: { directory: tg.gw.directory() }, log: pino({ level: 'silent' }) };
    const data = await planAccount(ctx, 'alice', ['tg-rot-admins'], clock.now() + HOUR);
    const id = `rot-${Date.now().toString(36)}`;
    const cred = await createAccount(ctx, id, data);
    const ok = ldap.whoami(data.dn, cred.password.reveal()).code === 0 && (ldap.values(GROUP, 'member') ?? []).some((m) => m.toLowerCase() === data.dn.toLowerCase());
    await revokeAccount(ctx, { id, data: { ...data } });
    return ok && ldap.values(data.dn, 'uid') === null;
  };

  t.test('not set yet: the directory cannot be used; the SOC stores the bind password (verified by a bind)', async (t) => {
    await t.rejects(tg.gw.directory()!.with(async () => undefined), /kept in the vault but not set yet/);
    const wrong = await tg.api('carol', 'PUT', path, { secret: `${ldap.bindPassword}x` });
    t.equal(wrong.status, 409, 'a password the directory refuses is not stored');
    t.match(wrong.body?.message, /refused a login/);
    const r = await tg.api('carol', 'PUT', path, { secret: ldap.bindPassword });
    t.equal(r.status, 200, JSON.stringify(r.body));
    t.match(r.body, { target: DIRECTORY_VAULT_TARGET, field: DIRECTORY_VAULT_FIELD, set: true });
    t.equal(Date.parse(r.body.nextRotationAt), clock.now() + HOUR, 'the next rotation in 1h (directory.bind.rotate)');
    t.ok((await tg.api('carol', 'GET', '/api/v1/credentials')).body.some((m: { target: string }) => m.target === DIRECTORY_VAULT_TARGET), 'listed with the other vault credentials');
    t.ok(await leaseWorks(), 'a lease mints with it');
  });

  t.test('each scheduled rotation: slapd refuses the old bind password, the new one binds, leases still work', async (t) => {
    let version = (await meta()).version;
    for (let round = 1; round <= 2; round++) {
      const old = await current();
      const m = await rotateBy(HOUR + 1000, version);
      version = m.version;
      t.match(m, { rotating: false, failures: 0, lastFailure: null }, `round ${round}: rotated`);
      t.equal(Date.parse(m.nextRotationAt), Date.parse(m.rotatedAt) + HOUR, 'the next one is scheduled');
      const now = await current();
      t.ok(now !== old, 'a new password'); // compared here: a failing t.not would print both
      t.equal(binds(old), 49, `round ${round}: ldapwhoami with the old bind password is refused`);
      t.equal(binds(now), 0, `round ${round}: the new one binds`);
      const stored = ldap.values(ldap.bindDn, 'userPassword') ?? [];
      t.ok(stored.length === 1 && stored[0]!.startsWith('{SSHA}') && !stored[0]!.includes(now), 'slapd keeps a hash (the Password Modify operation), not the clear value');
      t.ok(await leaseWorks(), `round ${round}: a directory-account lease still works`);
    }
    const rotated = (await tg.store.listAudit({ action: 'credential.rotated', subject: DIRECTORY_VAULT_TARGET })).map((e) => e.data);
    t.ok(rotated.length >= 2, 'each rotation is audited');
    t.match(rotated.at(-1), { target: DIRECTORY_VAULT_TARGET, field: DIRECTORY_VAULT_FIELD, recovered: false });
  });

  t.test('a rotation slapd refuses keeps the old password, alerts, and is retried until it succeeds', async (t) => {
    const before = await meta();
    const old = await current();
    // The bind account may no longer change its own password (it still binds, and sets minted accounts' passwords).
    ldap.setAccess([
      `{0}to dn.exact="${ldap.bindDn}" attrs=userPassword by dn.exact="${ldap.bindDn}" read by anonymous auth by * none`,
      `{1}to attrs=userPassword by dn.exact="${ldap.bindDn}" write by self write by anonymous auth by * none`,
      `{2}to * by dn.exact="${ldap.bindDn}" write by users read by anonymous auth by * none`,
    ]);
    t.teardown(() => ldap.setAccess(null));
    const failed = await failedBy(HOUR + 1000, 1);
    t.match(failed, { version: before.version, rotating: false, failures: 1, lastFailure: { reason: /setting the new credential on the target failed: .*refused the new password/ } });
    t.ok(await current() === old, 'the vault keeps the old password');
    t.equal(binds(old), 0, 'slapd still takes it');
    t.ok(await leaseWorks(), 'and leases still work with it');
    t.match((await tg.store.listAudit({ action: 'credential.rotation_failed', subject: DIRECTORY_VAULT_TARGET })).map((e) => e.data).at(-1), { stillOld: true, failures: 1 });
    const alerts = (await tg.store.listAudit({ action: 'notify' })).map((e) => e.data as Record<string, unknown>).filter((d) => d['action'] === 'credential.rotation_failed');
    t.match(alerts.at(-1), { kind: 'alert', target: DIRECTORY_VAULT_TARGET, stillOld: true }, 'an alert went out');
    t.equal(Date.parse(failed.nextRotationAt), Date.parse(failed.lastFailure.at) + 2 * MIN, 'the first retry after credentials.retry');
    const again = await failedBy(2 * MIN + 1000, 2);
    t.equal(Date.parse(again.nextRotationAt), Date.parse(again.lastFailure.at) + 4 * MIN, 'then doubling');
    ldap.setAccess(null);
    const ok = await rotateBy(4 * MIN + 1000, before.version);
    t.match(ok, { failures: 0, lastFailure: null }, 'once slapd allows it again, the retry rotates');
    t.equal(binds(old), 49, 'the old one is refused');
    t.equal(binds(await current()), 0);
    t.ok(await leaseWorks());
  });

  t.test('no secret in the vault rows or the audit', async (t) => {
    const pw = await current();
    const rec = await tg.store.getVaultCredential(`${DIRECTORY_VAULT_TARGET}/${DIRECTORY_VAULT_FIELD}`);
    t.ok(rec?.sealed, 'stored sealed');
    t.notOk(JSON.stringify(rec).includes(pw), 'not in clear in the store');
    const audit = JSON.stringify(await tg.store.listAudit({}));
    t.notOk(audit.includes(pw) || audit.includes(ldap.bindPassword), 'no bind password in the audit');
  });
}
