/**
 * RDP targets with `credentials: {mode: directory-account}` against a real Samba AD DC: the
 * gateway mints a domain account for the session (in the role's directory groups), logs in to the
 * target with DOMAIN\account and its password, and deletes the account when the session ends — or,
 * after a crash (SIGKILL of the gateway process), when the restarted gateway's reaper runs. The
 * minted password is proved with an LDAPS simple bind (ldapsearch) and smbclient (NTLM, as a Windows
 * logon would) while the session lives, and refused afterwards. The RDP target is the fake target
 * of these tests: it records the credential the gateway logged in with (no Windows host here).
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MINTED_NAME_RE, createMembership, revokeMembership } from '../../protocols/directory-leases.js';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { ADMIN, BASE_DN, DOMAIN, haveSamba, startSambaDc, type SambaDc } from '../support/samba.js';
import { forkGateway } from '../support/gateway-fork.js';
import { recordingRdpTarget, waitFor } from './support.js';

const why = haveSamba();
if (why) {
  t.fail(`the Samba AD DC cannot run here: ${why}`);
  t.end();
} else {
  let dc: SambaDc;
  let tg: TestGateway;
  let fake: Awaited<ReturnType<typeof recordingRdpTarget>>;
  const GROUP = 'tg-rdp-admins';

  const targetsAt = (port: number) => [
    {
      name: 'win', protocol: 'rdp', address: `127.0.0.1:${port}`, credentials: { mode: 'directory-account' },
      options: { nla: false, connectTimeout: 10 }, roles: [{ name: 'admin', directoryGroups: [GROUP] }],
    },
    {
      name: 'win-badgroup', protocol: 'rdp', address: `127.0.0.1:${port}`, credentials: { mode: 'directory-account' },
      options: { nla: false, connectTimeout: 10 }, roles: [{ name: 'admin', directoryGroups: ['no-such-group'] }],
    },
  ];
  const directory = () => ({ url: 'ldaps://127.0.0.1', bind: { dn: ADMIN, password: { value: dc.adminPassword } }, baseDn: BASE_DN, tls: { verify: false } });

  const members = () => dc.tool(['group', 'listmembers', GROUP]).split('\n').map((l) => l.trim()).filter(Boolean);
  const minted = () => dc.tool(['user', 'list']).split('\n').map((l) => l.trim()).filter((l) => l.startsWith('tg-'));

  /** A grant and a secret for user on target (role admin), then connect. */
  const session = async (user: string, target: string) => {
    const grant = await tg.grant(user, target, 'admin');
    const s = await tg.secret(user, grant.id);
    return { grant, ...(await fake.connect(tg.listener('rdp').port, s.username, s.secret)) };
  };

  t.before(async () => {
    dc = await startSambaDc();
    dc.tool(['group', 'add', GROUP]);
    fake = await recordingRdpTarget(() => tg.gw.tls);
    tg = await startTestGateway({ listeners: ['rdp'], targets: targetsAt(fake.port), extra: { directory: directory() } });
  });
  t.teardown(async () => {
    await tg?.close();
    await fake?.close();
    await dc?.stop();
  });

  t.test('the session logs in with a minted domain account that works while it lives and is gone afterwards', async (t) => {
    const c = await session('alice', 'win');
    const grant = c.grant;
    const info = await c.info();
    const user = info.userName;
    const pw = info.password.reveal();
    t.match(user, MINTED_NAME_RE, `a minted name (${user})`);
    t.ok(user.length <= 20, 'within the 20-character sAMAccountName limit');
    t.match(user, /^tg-alice-/);
    t.equal(info.domain, DOMAIN, 'the NetBIOS domain');
    t.ok(pw.length >= 20, 'a long random password');
    const lease = (await tg.store.listLeases({ grantId: grant.id })).find((l) => l.kind === 'directory-account');
    t.equal(lease?.state, 'active');
    t.notOk(JSON.stringify(lease).includes(pw), 'the password is not in the stored lease');

    t.equal(dc.bind(user, pw).code, 0, 'LDAPS bind: the minted password binds');
    t.equal(dc.smb(user, pw).code, 0, 'smbclient: the minted password logs on with NTLM');
    t.equal(dc.bind(user, `${pw}x`).code, 49, 'a wrong password is refused (the check can fail)');
    t.not(dc.smb(user, `${pw}x`).code, 0, 'by smbclient too');
    t.ok(members().includes(user), `member of ${GROUP} during the session`);

    c.sock.destroy();
    await waitFor('the session to end', async () => (await tg.store.listSessions({ grantId: grant.id })).find((x) => x.state === 'ended'), 30_000);
    await waitFor('the lease to be revoked', async () => (await tg.store.listLeases({ grantId: grant.id })).find((l) => l.kind === 'directory-account' && l.state === 'revoked'), 30_000);
    t.equal(dc.bind(user, pw).code, 49, 'LDAPS bind: refused after the session');
    t.not(dc.smb(user, pw).code, 0, 'smbclient: refused after the session');
    t.notOk(members().includes(user), `no longer a member of ${GROUP}`);
    t.notOk(minted().includes(user), 'the account is deleted');
  });

  t.test('a hostile identity name reaches neither a DN nor a filter unescaped', async (t) => {
    const now = Date.now();
    await tg.store.upsertIdentity({ sub: 'erin', email: 'erin@test', name: 'E,CN=Domain Admins)(*\\', groups: ['engineers'], firstSeen: now, lastSeen: now });
    const c = await session('erin', 'win');
    const grant = c.grant;
    const info = await c.info();
    t.match(info.userName, /^tg-ecndomainad-[a-z0-9]{5}$/, 'the name keeps letters and digits only');
    const shown = dc.tool(['user', 'show', info.userName]);
    t.match(shown, new RegExp(`dn: CN=${info.userName},CN=Users,${BASE_DN}`), 'created in CN=Users');
    t.match(shown, /displayName: Tollgate: E,CN=Domain Admins\)\(\*\\/, 'the identity is kept verbatim as an attribute value');
    t.notOk(dc.tool(['group', 'listmembers', 'Domain Admins']).includes(info.userName), 'not a domain admin');
    c.sock.destroy();
    await waitFor('the lease to be revoked', async () => (await tg.store.listLeases({ grantId: grant.id })).find((l) => l.state === 'revoked'), 30_000);
    t.notOk(minted().includes(info.userName), 'deleted');
  });

  t.test('an unknown directory group: a clean refusal, no lease, no account', async (t) => {
    const accounts = minted();
    const c = await session('alice', 'win-badgroup');
    const grant = c.grant;
    await waitFor('the connection to close', () => (c.sock.destroyed || c.sock.readableEnded ? true : null), 30_000);
    await waitFor('the session to end', async () => (await tg.store.listSessions({ grantId: grant.id })).find((x) => x.state === 'ended'), 30_000);
    t.notOk(c.seen(), 'the target never saw a login');
    t.same((await tg.store.listLeases({ grantId: grant.id })).filter((l) => l.state !== 'revoked'), [], 'no live lease');
    t.same(minted(), accounts, 'no account created');
  });

  t.test('directory-group functions: a person\'s own account (found by mail) joins a group and leaves it', async (t) => {
    dc.tool(['user', 'create', 'carol.p', 'Carol-pw-12345!', '--mail-address=carol@tg.test']);
    const ctx = { state: { directory: tg.gw.directory() }, log: tg.gw.log };
    const groupDn = `CN=${GROUP},CN=Users,${BASE_DN}`;
    for (const hostile of ['*', 'carol@tg.test)(mail=*', '*@tg.test', 'carol@tg.test\\']) {
      await t.rejects(createMembership(ctx, { person: hostile, groups: [groupDn] }), /no directory account has mail/, `${JSON.stringify(hostile)} matches nobody`);
    }
    t.notOk(members().includes('carol.p'));
    const { memberDn } = await createMembership(ctx, { person: 'carol@tg.test', groups: [groupDn] });
    t.equal(memberDn, `CN=carol.p,CN=Users,${BASE_DN}`);
    t.ok(members().includes('carol.p'), 'membership appears');
    await createMembership(ctx, { person: 'carol@tg.test', groups: [groupDn] });
    t.ok(members().includes('carol.p'), 'adding twice is fine');
    await t.rejects(revokeMembership(ctx, { id: 'l', data: { person: 'carol@tg.test', memberDn, groups: [`CN=Domain Admins,CN=Users,${BASE_DN}`] } }, [groupDn]), /not a group the configuration elevates to/);
    await revokeMembership(ctx, { id: 'l', data: { person: 'carol@tg.test', memberDn, groups: [groupDn] } }, [groupDn]);
    t.notOk(members().includes('carol.p'), 'membership disappears');
    await revokeMembership(ctx, { id: 'l', data: { person: 'carol@tg.test', groups: [groupDn] } }, [groupDn]);
    t.pass('revoking again (memberDn found again by mail) is a no-op');
    t.equal(dc.bind('carol.p', 'Carol-pw-12345!').code, 0, 'the person\'s own account is untouched');
  });

  t.test('kill -9 of the gateway process, then a restart: the reaper deletes the account from the stored lease', async (t) => {
    const dataDir = mkdtempSync(join(tmpdir(), 'tg-dir-crash-'));
    t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
    const opts = { dataDir, store: 'sqlite' as const, listeners: ['rdp'], targets: targetsAt(fake.port), extra: { directory: directory() } };
    const ready = await forkGateway(t, opts, { user: 'alice', target: 'win', role: 'admin' });
    const c = await fake.connect(ready.listeners['rdp']!.port, ready.secret.username, ready.secret.secret);
    const info = await c.info();
    const user = info.userName;
    const pw = info.password.reveal();
    t.equal(dc.bind(user, pw).code, 0, 'the account works');
    await ready.crash();
    c.sock.destroy();
    t.equal(dc.bind(user, pw).code, 0, 'the crash left the account (nothing ran on the way out)');
    t.ok(members().includes(user), 'and its group membership');

    const again = await startTestGateway(opts);
    t.teardown(() => again.close());
    t.equal(dc.bind(user, pw).code, 49, 'refused after the restart');
    t.notOk(minted().includes(user), 'the reaper deleted the account at start-up');
    t.notOk(members().includes(user), 'and its membership');
    const leases = await again.store.listLeases({ state: ['pending', 'active', 'revoking'] });
    t.same(leases, [], 'no live lease left');
  });
}
