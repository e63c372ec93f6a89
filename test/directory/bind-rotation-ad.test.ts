/**
 * Rotation of the directory's bind password kept in the vault, AD flavour, against a real Samba AD
 * DC (one DC start; test/directory/bind-rotation.test.ts covers failures and retries on slapd): the
 * bind account (a Domain Admin made for the test, bound by its UPN) replaces its own unicodePwd over
 * LDAPS; after each scheduled rotation the DC refuses the old password (an LDAPS simple bind), takes
 * the new one, and a directory-account lease still mints and is deleted.
 */
import t from 'tap';
import pino from 'pino';
import { ManualClock } from '../../policies/clock.js';
import { createAccount, planAccount, revokeAccount } from '../../protocols/directory-leases.js';
import { DIRECTORY_VAULT_FIELD, DIRECTORY_VAULT_TARGET } from '../../protocols/directory-rotate.js';
import { startTestGateway } from '../support/gateway.js';
import { BASE_DN, haveSamba, startSambaDc } from '../support/samba.js';
import { waitFor } from '../rdp/support.js';

const HOUR = 3_600_000;
const why = haveSamba();
if (why) {
  t.fail(`the Samba AD DC cannot run here: ${why}`);
} else {
  // A Samba DC takes the previous password for `old password allowed period` (default 60 min) after a
  // change, LDAP simple binds included: 0 here, so the test sees the rotation take effect at once.
  const dc = await startSambaDc(['old password allowed period = 0']);
  t.teardown(() => dc.stop());
  const BIND = 'tg-bind';
  const BIND_PW = `Bind-${Math.random().toString(36).slice(2, 10)}-1!`;
  dc.tool(['user', 'create', BIND, BIND_PW]);
  dc.tool(['group', 'addmembers', 'Domain Admins', BIND]);
  dc.tool(['group', 'add', 'tg-rot-ad']);
  const clock = new ManualClock(Date.now());
  const tg = await startTestGateway({
    clock,
    targets: [{ name: 'win', protocol: 'rdp', address: '127.0.0.1:1', credentials: { mode: 'directory-account' }, options: { nla: false }, roles: [{ name: 'admin', directoryGroups: ['tg-rot-ad'] }] }],
    extra: { directory: { url: 'ldaps://127.0.0.1', bind: { dn: `${BIND}@tg.test`, password: { vault: true }, rotate: '1h' }, baseDn: BASE_DN, tls: { verify: false } } },
  });
  t.teardown(() => tg.close());
  const path = `/api/v1/targets/${encodeURIComponent(DIRECTORY_VAULT_TARGET)}/credentials`;
  const meta = async () => (await tg.api('carol', 'GET', path)).body[0];
  const current = () => tg.gw.vault.current(DIRECTORY_VAULT_TARGET, DIRECTORY_VAULT_FIELD).then((s) => s.reveal());
  const members = () => dc.tool(['group', 'listmembers', 'tg-rot-ad']).split('\n').map((l) => l.trim()).filter(Boolean);
  const leaseWorks = async () => {
    const ctx = { state: { directory: tg.gw.directory() }, log: pino({ level: 'silent' }) };
    const data = await planAccount(ctx, 'alice', ['tg-rot-ad'], clock.now() + HOUR);
    const id = `rot-${Date.now().toString(36)}`;
    const cred = await createAccount(ctx, id, data);
    const ok = dc.bind(data.sam, cred.password.reveal()).code === 0 && members().includes(data.sam);
    await revokeAccount(ctx, { id, data: { ...data } });
    return ok && !members().includes(data.sam) && dc.bind(data.sam, cred.password.reveal()).code === 49;
  };

  t.test('the SOC stores the bind password (verified by a bind); leases work with it', async (t) => {
    t.equal((await tg.api('carol', 'PUT', path, { secret: `${BIND_PW}x` })).status, 409, 'a password the DC refuses is not stored');
    const r = await tg.api('carol', 'PUT', path, { secret: BIND_PW });
    t.equal(r.status, 200, JSON.stringify(r.body));
    t.ok(await leaseWorks());
  });

  t.test('each scheduled rotation: the DC refuses the old bind password, the new one binds, leases still work', async (t) => {
    let version = (await meta()).version;
    for (let round = 1; round <= 2; round++) {
      const old = await current();
      clock.advance(HOUR + 1000);
      const m = await waitFor(`rotated past version ${version}`, async () => { clock.advance(0); const x = await meta(); return x.version > version ? x : null; }, 60_000);
      version = m.version;
      t.match(m, { failures: 0, lastFailure: null }, `round ${round}: rotated`);
      const now = await current();
      t.ok(now !== old, 'a new password'); // compared here: a failing t.not would print both
      t.equal(dc.bind(BIND, old).code, 49, `round ${round}: LDAPS bind with the old password is refused`);
      t.equal(dc.bind(BIND, now).code, 0, `round ${round}: the new one binds`);
      t.ok(await leaseWorks(), `round ${round}: a directory-account lease still works`);
    }
  });
}
