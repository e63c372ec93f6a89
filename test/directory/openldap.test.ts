/**
 * The `ldap` flavour of the directory against a real OpenLDAP (Debian's slapd, in a temp dir on a
 * free loopback port, LDAPS with a self-signed certificate the gateway verifies;
 * protocols/directory-slapd.ts). No Windows is needed: the session is an RDP session to the fake
 * RDP target of the RDP tests (`credentials: {mode: directory-account}`; the target records the
 * credential the gateway logged in with), and directory-group leases are grant-level
 * (`ownAccountGroups`, no session at all).
 *
 * - directory-account: a posixAccount + inetOrgPerson `uid=tg-<identity>-<random>,ou=people` with
 *   uidNumber, gidNumber, homeDirectory, its password set by the Password Modify extended operation
 *   (stored hashed by slapd), in a groupOfNames and a posixGroup (memberUid); gone at session end.
 * - directory-group: the person's own entry (found by mail) joins a groupOfNames and a posixGroup.
 * - kill -9 of the gateway, then a restart: both are removed from the stored leases alone.
 * The minted password is proved with `ldapwhoami` (slapd's own view: the Who-am-I extended op).
 * Group membership is read as the root DN with ldapsearch, not through the gateway's LDAP code.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MINTED_NAME_RE } from '../../protocols/directory-leases.js';
import { slapdMissing, startSlapd, type Slapd } from '../../protocols/directory-slapd.js';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { forkGateway } from '../support/gateway-fork.js';
import { recordingRdpTarget, sleep, waitFor } from '../rdp/support.js';

const why = slapdMissing();
if (why) {
  t.fail(`slapd cannot run here: ${why}`);
  t.end();
} else {
  let ldap: Slapd;
  let tg: TestGateway;
  let fake: Awaited<ReturnType<typeof recordingRdpTarget>>;
  const BASE = 'dc=tg,dc=test';
  const ADMINS = `cn=tg-ldap-admins,ou=groups,${BASE}`;
  const POSIX = `cn=tg-posix-ops,ou=groups,${BASE}`;
  // A group whose cn needs escaping in a DN (`,`) and in a filter (`(`, `)`, `*`); roles name it by its cn.
  const HOSTILE_CN = 'tg ops (x)*, y';
  const HOSTILE = `cn=tg ops (x)*\\, y,ou=groups,${BASE}`;
  const OTHER = `cn=tg-other,ou=groups,${BASE}`;
  const PLACEHOLDER = `cn=nobody,${BASE}`;
  const ALICE = `uid=alice.d,ou=people,${BASE}`;
  const ALICE_PW = 'alice-own-password-1';

  const targetsAt = (port: number) => [{
    name: 'ldapbox', protocol: 'rdp', address: `127.0.0.1:${port}`, credentials: { mode: 'directory-account' }, options: { nla: false, connectTimeout: 10 },
    roles: [
      { name: 'admin', directoryGroups: ['tg-ldap-admins', POSIX, HOSTILE_CN] },
      { name: 'own', ownAccountGroups: ['tg-ldap-admins', 'tg-posix-ops'] },
      { name: 'crash', directoryGroups: ['tg-ldap-admins', 'tg-posix-ops'], ownAccountGroups: ['tg-ldap-admins', 'tg-posix-ops'] },
    ],
  }];
  const directory = () => ({
    url: ldap.url, flavour: 'ldap', bind: { dn: ldap.bindDn, password: { value: ldap.bindPassword } }, baseDn: BASE, tls: { ca: { value: ldap.ca } },
  });

  const lower = (xs: string[] | null) => (xs ?? []).map((x) => x.toLowerCase());
  const members = (g: string) => lower(ldap.values(g, 'member'));
  const memberUids = () => ldap.values(POSIX, 'memberUid') ?? [];
  const minted = () => lower(ldap.find(ldap.usersDn, '(uid=tg-*)'));
  const dnOf = (uid: string) => `uid=${uid},ou=people,${BASE}`;
  /** Nothing of `uid` in any group. */
  const inNoGroup = (uid: string, dn = dnOf(uid)) => ![ADMINS, HOSTILE, OTHER].some((g) => members(g).includes(dn.toLowerCase())) && !memberUids().includes(uid);

  const session = async (user: string, role = 'admin') => {
    const grant = await tg.grant(user, 'ldapbox', role);
    const s = await tg.secret(user, grant.id);
    return { grant, ...(await fake.connect(tg.listener('rdp').port, s.username, s.secret)) };
  };
  const ended = async (grantId: string) => {
    await waitFor('the session to end', async () => (await tg.store.listSessions({ grantId })).find((x) => x.state === 'ended'), 30_000);
    await waitFor('the lease to be revoked', async () => (await tg.store.listLeases({ grantId })).find((l) => l.kind === 'directory-account' && l.state === 'revoked'), 30_000);
  };

  t.before(async () => {
    ldap = await startSlapd({ baseDn: BASE });
    ldap.ldif([
      `dn: ${ADMINS}\nobjectClass: groupOfNames\ncn: tg-ldap-admins\nmember: ${PLACEHOLDER}\n`,
      `dn: ${POSIX}\nobjectClass: posixGroup\ncn: tg-posix-ops\ngidNumber: 5001\n`,
      `dn: ${HOSTILE}\nobjectClass: groupOfNames\ncn: ${HOSTILE_CN}\nmember: ${PLACEHOLDER}\n`,
      `dn: ${OTHER}\nobjectClass: groupOfNames\ncn: tg-other\nmember: ${PLACEHOLDER}\n`,
      // The person's own account (the test identities' emails are <name>@test).
      `dn: ${ALICE}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\ncn: Alice D\nsn: D\nuid: alice.d\nmail: alice@test\nuidNumber: 20001\ngidNumber: 100\nhomeDirectory: /home/alice.d\nuserPassword: ${ALICE_PW}\n`,
    ].join('\n'));
    fake = await recordingRdpTarget(() => tg.gw.tls);
    tg = await startTestGateway({ listeners: ['rdp'], targets: targetsAt(fake.port), extra: { directory: directory() } });
  });
  t.teardown(async () => {
    await tg?.close();
    await fake?.close();
    await ldap?.stop();
  });

  t.test('the rig: slapd answers LDAPS, the root DN and the bind account bind, a wrong password is refused', async (t) => {
    t.equal(ldap.whoami(ldap.rootDn, ldap.rootPassword).code, 0);
    t.equal(ldap.whoami(ldap.bindDn, ldap.bindPassword).code, 0);
    t.equal(ldap.whoami(ldap.bindDn, `${ldap.bindPassword}x`).code, 49, 'refused (the check can fail)');
    t.equal(ldap.whoami(ALICE, ALICE_PW).code, 0, 'the person\'s own account');
  });

  t.test('a session gets a posixAccount that works while it lives, in its groups, and is gone afterwards', async (t) => {
    const c = await session('alice');
    const info = await c.info();
    const user = info.userName;
    const pw = info.password.reveal();
    const dn = dnOf(user);
    t.match(user, MINTED_NAME_RE, `a minted name (${user})`);
    t.match(user, /^tg-alice-/);
    t.equal(info.domain, 'TG', 'the domain the RDP login carries (the first dc= label)');
    t.ok(pw.length >= 20, 'a long random password');
    const lease = (await tg.store.listLeases({ grantId: c.grant.id })).find((l) => l.kind === 'directory-account');
    t.equal(lease?.state, 'active');
    t.equal((lease?.data as { dn?: string }).dn, dn, 'the stored lease names the entry');
    t.notOk(JSON.stringify(lease).includes(pw), 'the password is not in the stored lease');

    const who = ldap.whoami(dn, pw);
    t.equal(who.code, 0, 'ldapwhoami: the minted password binds');
    t.match(who.out, new RegExp(`dn:uid=${user},ou=people,${BASE}`, 'i'), 'as the minted entry');
    t.equal(ldap.whoami(dn, `${pw}x`).code, 49, 'a wrong password is refused (the check can fail)');
    t.same(lower(ldap.values(dn, 'objectClass')).filter((x) => ['posixaccount', 'inetorgperson'].includes(x)).sort(), ['inetorgperson', 'posixaccount']);
    t.equal(ldap.values(dn, 'gidNumber')?.[0], '100');
    t.match(ldap.values(dn, 'uidNumber')?.[0], /^\d+$/);
    t.equal(ldap.values(dn, 'homeDirectory')?.[0], `/home/${user}`);
    const stored = ldap.values(dn, 'userPassword') ?? [];
    t.equal(stored.length, 1);
    t.ok(/^\{SSHA\}/.test(stored[0] ?? ''), 'slapd stored a hash (the Password Modify operation, its own scheme)');
    t.notOk(stored[0]?.includes(pw), 'not the clear password');
    t.ok(members(ADMINS).includes(dn.toLowerCase()), 'member of the groupOfNames (member: DN)');
    t.ok(memberUids().includes(user), 'member of the posixGroup (memberUid: uid)');
    t.ok(members(HOSTILE).includes(dn.toLowerCase()), 'member of the group whose cn needs escaping');
    t.notOk(members(OTHER).includes(dn.toLowerCase()), 'not in a group the role does not name');

    c.sock.destroy();
    await ended(c.grant.id);
    t.equal(ldap.whoami(dn, pw).code, 49, 'ldapwhoami: refused after the session');
    t.equal(ldap.values(dn, 'uid'), null, 'the entry is deleted');
    t.ok(inNoGroup(user), 'and out of every group');
    t.ok(members(ADMINS).includes(PLACEHOLDER), 'the groups keep their other members');
  });

  t.test('a hostile identity name reaches neither a DN nor a filter unescaped', async (t) => {
    const now = Date.now();
    const hostile = 'E,uid=admin)(uid=*\\ #';
    await tg.store.upsertIdentity({ sub: 'erin', email: 'erin@test', name: hostile, groups: ['engineers'], firstSeen: now, lastSeen: now });
    const c = await session('erin');
    const info = await c.info();
    t.match(info.userName, /^tg-euidadminui-[a-z0-9]{5}$/, 'the name keeps letters and digits only');
    const dn = dnOf(info.userName);
    t.equal(ldap.values(dn, 'displayName')?.[0], `Tollgate: ${hostile}`, 'the identity is kept verbatim as an attribute value');
    t.same(ldap.find(BASE, `(uid=${info.userName})`).map((x) => x.toLowerCase()), [dn.toLowerCase()], 'one entry, in ou=people');
    c.sock.destroy();
    await ended(c.grant.id);
    t.notOk(minted().includes(dn.toLowerCase()), 'deleted');
  });

  t.test('directory-group: the person\'s own entry joins the groups for the grant and leaves them at revoke', async (t) => {
    t.ok(inNoGroup('alice.d', ALICE), 'not a member before');
    const grant = await tg.grant('alice', 'ldapbox', 'own');
    await waitFor('alice.d in the groups', async () => (await tg.store.listLeases({ grantId: grant.id })).some((l) => l.kind === 'directory-group' && l.state === 'active')
      && members(ADMINS).includes(ALICE.toLowerCase()) && memberUids().includes('alice.d'), 30_000);
    t.pass('member of the groupOfNames and the posixGroup while the grant runs');
    t.equal(ldap.whoami(ALICE, ALICE_PW).code, 0, 'her own password is untouched');
    const r = await tg.api('bob', 'POST', `/api/v1/grants/${grant.id}/revoke`, { reason: 'done' });
    t.equal(r.status, 200, JSON.stringify(r.body));
    await waitFor('alice.d out of the groups', async () => (await tg.store.listLeases({ grantId: grant.id })).every((l) => l.state === 'revoked') && inNoGroup('alice.d', ALICE), 30_000);
    t.pass('membership gone after the revoke');
    t.equal(ldap.whoami(ALICE, ALICE_PW).code, 0, 'the account still exists');
  });

  t.test('hostile emails match nobody: a clear refusal, nothing filed, nobody joins', async (t) => {
    const now = Date.now();
    for (const email of ['*', 'alice@test)(mail=*', '*@test', 'alice@test\\', 'nobody@test']) {
      await tg.store.upsertIdentity({ sub: 'erin', email, name: 'erin', groups: ['engineers'], firstSeen: now, lastSeen: now });
      const r = await tg.api('erin', 'POST', '/api/v1/requests', { target: 'ldapbox', role: 'own', duration: '1h', reason: 'test' });
      t.equal(r.status, 409, `${JSON.stringify(email)}: refused`);
      t.match(r.body?.message, /the directory has no account with mail/, 'says why');
    }
    t.same((await tg.store.listRequests({ requester: 'erin' })).filter((x) => x.role === 'own'), [], 'nothing was filed');
    t.ok(inNoGroup('alice.d', ALICE), 'nobody joined');
    await tg.store.upsertIdentity({ sub: 'erin', email: 'erin@test', name: 'erin', groups: ['engineers'], firstSeen: now, lastSeen: now });
  });

  t.test('kill -9 of the gateway; a restart removes the session account and the membership from the stored leases alone', async (t) => {
    const dataDir = mkdtempSync(join(tmpdir(), 'tg-ldap-crash-'));
    t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
    const opts = { dataDir, store: 'sqlite' as const, listeners: ['rdp'], targets: targetsAt(fake.port), extra: { directory: directory() } };
    // The grant (20 s: long enough for a slow start-up, connect and mint) was made before the child said it serves.
    const ready = await forkGateway(t, opts, { user: 'alice', target: 'ldapbox', role: 'crash', duration: '20s' });
    const c = await fake.connect(ready.listeners['rdp']!.port, ready.secret.username, ready.secret.secret);
    const info = await c.info();
    const user = info.userName;
    const pw = info.password.reveal();
    const dn = dnOf(user);
    t.equal(ldap.whoami(dn, pw).code, 0, 'the session account works');
    await waitFor('alice.d in the groups', () => members(ADMINS).includes(ALICE.toLowerCase()) && memberUids().includes('alice.d'), 30_000);
    await ready.crash();
    c.sock.destroy();
    t.equal(ldap.whoami(dn, pw).code, 0, 'the crash left the account (nothing ran on the way out)');
    t.ok(members(ADMINS).includes(dn.toLowerCase()) && memberUids().includes(user), 'and its memberships');
    // The grant ends while no gateway runs.
    await sleep(Math.max(0, ready.readyAt + 20_000 + 1_000 - Date.now()));
    t.ok(members(ADMINS).includes(ALICE.toLowerCase()) && memberUids().includes('alice.d'), 'alice.d is still a member after the grant\'s end (no gateway ran)');

    const again = await startTestGateway(opts);
    t.teardown(() => again.close());
    await waitFor('the directory cleaned up after the restart', async () => ldap.values(dn, 'uid') === null && inNoGroup(user) && inNoGroup('alice.d', ALICE)
      && (await again.store.listLeases({ state: ['pending', 'active', 'revoking'] })).length === 0, 60_000).catch(() => false);
    t.equal(ldap.whoami(dn, pw).code, 49, 'the minted password is refused after the restart');
    t.equal(ldap.values(dn, 'uid'), null, 'the reaper deleted the entry');
    t.ok(inNoGroup(user), 'and its memberships (groupOfNames and posixGroup)');
    t.ok(inNoGroup('alice.d', ALICE), 'the grant-level membership is gone too');
    t.same(await again.store.listLeases({ state: ['pending', 'active', 'revoking'] }), [], 'no live lease left');
    t.equal((await again.store.getGrant(ready.grantId))?.state, 'expired');
  });

  t.test('nothing minted is left', async (t) => {
    t.same(minted(), [], 'no tg-* entry below ou=people');
    for (const g of [ADMINS, HOSTILE, OTHER]) t.same(members(g), [PLACEHOLDER], `${g}: only its placeholder`);
    t.same(memberUids(), [], 'the posixGroup is empty');
  });
}
