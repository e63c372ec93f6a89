/**
 * directory-group leases against a real Samba AD DC: a role with `ownAccountGroups` puts the
 * person's OWN directory account (found by mail) into privileged groups for the grant, with no
 * session at all, and takes it out when the grant expires, is revoked or locked — and after a kill -9
 * of the gateway, when the restarted gateway finds the grant over. Membership is read with
 * `samba-tool group listmembers` (the DC's own view), not through the gateway's LDAP code.
 */
import t from 'tap';
import { fork, spawnSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { ADMIN, BASE_DN, haveSamba, startSambaDc, type SambaDc } from '../support/samba.js';
import { sleep, waitFor as waitUntil } from '../rdp/support.js';

// The shared poll, with this file's longer default: a DC's group changes are slow under load.
const waitFor = <T>(what: string, fn: () => T | Promise<T>, ms = 90_000) => waitUntil(what, fn, ms);

const why = haveSamba();
if (why) {
  t.fail(`the Samba AD DC cannot run here: ${why}`);
  t.end();
} else {
  let dc: SambaDc;
  let tg: TestGateway;
  const GROUP = 'tg-dom-admins';
  // A group whose cn needs escaping in a DN (`,`) and in a filter (`(`, `)`, `*`); samba-tool names it by its sAMAccountName.
  const HOSTILE_CN = 'tg ops (x)*, y';
  const HOSTILE_GROUP = 'tgopsxy';

  const targets = [{
    name: 'domain', protocol: 'rdp', address: '127.0.0.1:1', credentials: { mode: 'directory-account' }, options: { nla: false, connectTimeout: 5 },
    roles: [{ name: 'domain-admin', ownAccountGroups: [GROUP, HOSTILE_CN] }, { name: 'plain' }],
  }];
  const directory = () => ({ url: 'ldaps://127.0.0.1', bind: { dn: ADMIN, password: { value: dc.adminPassword } }, baseDn: BASE_DN, tls: { verify: false } });
  const members = (g = GROUP) => dc.tool(['group', 'listmembers', g]).split('\n').map((l) => l.trim()).filter(Boolean);
  const isMember = (user: string) => members().includes(user) && members(HOSTILE_GROUP).includes(user);
  const notMember = (user: string) => !members().includes(user) && !members(HOSTILE_GROUP).includes(user);
  const groupLeases = async (store: TestGateway['store'], grantId: string) => (await store.listLeases({ grantId })).filter((l) => l.kind === 'directory-group');

  /** The grant's newest directory-group lease is active and the DC lists the member (samba-tool is slow on a busy machine). */
  const elevated = (grantId: string, who = 'alice.d') => waitFor(`${who} in the groups`, async () => (await groupLeases(tg.store, grantId)).at(-1)?.state === 'active' && isMember(who));
  const dropped = (grantId: string, who = 'alice.d') => waitFor(`${who} out of the groups`, async () => (await groupLeases(tg.store, grantId)).every((l) => l.state === 'revoked') && notMember(who));

  t.before(async () => {
    dc = await startSambaDc();
    dc.tool(['group', 'add', GROUP]);
    // samba-tool cannot make a cn with a comma: ldapadd as Administrator, the DN escaped by hand.
    const add = spawnSync('ldapadd', ['-x', '-H', 'ldaps://127.0.0.1', '-D', ADMIN, '-w', dc.adminPassword], {
      input: `dn: CN=tg ops (x)*\\, y,CN=Users,${BASE_DN}\nobjectClass: group\nsAMAccountName: ${HOSTILE_GROUP}\n`, encoding: 'utf8', env: { ...process.env, LDAPTLS_REQCERT: 'never' },
    });
    if (add.status !== 0) throw new Error(`ldapadd of the hostile group failed: ${add.stdout}${add.stderr}`);
    // The people's own accounts: found by their email (the test identities are <name>@test).
    dc.tool(['user', 'create', 'alice.d', 'Alice-own-pw-1!', '--mail-address=alice@test']);
    dc.tool(['user', 'create', 'erin.d', 'Erin-own-pw-1!', '--mail-address=erin@test']);
    tg = await startTestGateway({ targets, extra: { directory: directory() }, ...(process.env['TG_DIR_LOG'] ? { logSink: (l: string) => appendFileSync(process.env['TG_DIR_LOG']!, l) } : {}) });
  });
  t.teardown(async () => {
    await tg?.close();
    await dc?.stop();
  });

  t.test('membership appears at grant start (no session) and disappears at revoke', async (t) => {
    t.ok(notMember('alice.d'), 'not a member before');
    const grant = await tg.grant('alice', 'domain', 'domain-admin');
    await elevated(grant.id);
    t.pass('alice.d is a member of both groups while the grant runs');
    const [lease] = await groupLeases(tg.store, grant.id);
    t.equal(lease?.state, 'active');
    t.equal(lease?.sessionId, null, 'a grant-level lease');
    t.equal((lease?.data as { memberDn?: string }).memberDn, `CN=alice.d,CN=Users,${BASE_DN}`);
    t.same((await tg.api('carol', 'GET', '/api/v1/leases?standing=1')).body, [], 'a running grant\'s membership is no standing privilege');
    t.ok(dc.bind('alice.d', 'Alice-own-pw-1!').code === 0, 'her own password still works (the account itself is untouched)');

    const r = await tg.api('bob', 'POST', `/api/v1/grants/${grant.id}/revoke`, { reason: 'done' });
    t.equal(r.status, 200, JSON.stringify(r.body));
    await dropped(grant.id);
    t.pass('membership gone after the revoke');
    t.equal((await groupLeases(tg.store, grant.id))[0]?.state, 'revoked');
    t.equal(dc.bind('alice.d', 'Alice-own-pw-1!').code, 0, 'the account still exists');
  });

  t.test('a role without ownAccountGroups changes nothing', async (t) => {
    const grant = await tg.grant('alice', 'domain', 'plain');
    await sleep(1500);
    t.same(await groupLeases(tg.store, grant.id), []);
    t.ok(notMember('alice.d'));
    await tg.api('bob', 'POST', `/api/v1/grants/${grant.id}/revoke`, { reason: 'done' });
  });

  t.test('membership disappears at grant expiry', async (t) => {
    const grant = await tg.grant('alice', 'domain', 'domain-admin', '5s');
    await elevated(grant.id);
    t.pass('member while the 5 s grant runs');
    await dropped(grant.id);
    t.equal((await tg.store.getGrant(grant.id))?.state, 'expired');
  });

  t.test('a lock removes the membership; lifting it while the grant runs restores it', async (t) => {
    const grant = await tg.grant('alice', 'domain', 'domain-admin');
    await elevated(grant.id);
    const lock = await tg.api('carol', 'POST', '/api/v1/locks', { scope: 'identity', value: 'alice', reason: 'suspicious' });
    t.equal(lock.status, 201, JSON.stringify(lock.body));
    await dropped(grant.id);
    t.pass('locked: no membership');
    const lifted = await tg.api('carol', 'DELETE', `/api/v1/locks/${lock.body.lock?.id ?? lock.body.id}`);
    t.ok(lifted.status < 300, JSON.stringify(lifted.body));
    await elevated(grant.id);
    t.pass('the grant still runs: membership again (a new lease)');
    t.equal((await groupLeases(tg.store, grant.id)).map((l) => l.state).join(','), 'revoked,active');
    await tg.api('bob', 'POST', `/api/v1/grants/${grant.id}/revoke`, { reason: 'done' });
    await dropped(grant.id);
  });

  t.test('someone without a directory account is refused clearly; hostile emails match nobody', async (t) => {
    const now = Date.now();
    for (const email of ['nobody@test', '*', 'alice@test)(mail=*', '*@test', 'alice@test\\']) {
      await tg.store.upsertIdentity({ sub: 'erin', email, name: 'erin', groups: ['engineers'], firstSeen: now, lastSeen: now });
      const r = await tg.api('erin', 'POST', '/api/v1/requests', { target: 'domain', role: 'domain-admin', duration: '1h', reason: 'test' });
      t.equal(r.status, 409, `${JSON.stringify(email)}: refused`);
      t.match(r.body?.message, /the directory has no account with mail/, `says why (${r.body?.message})`);
    }
    t.same((await tg.store.listRequests({ requester: 'erin' })), [], 'nothing was filed');
    t.ok(notMember('alice.d') && notMember('erin.d'), 'nobody joined');
    await tg.store.upsertIdentity({ sub: 'erin', email: 'erin@test', name: 'erin', groups: ['engineers'], firstSeen: now, lastSeen: now });
    const ok = await tg.api('erin', 'POST', '/api/v1/requests', { target: 'domain', role: 'plain', duration: '1h', reason: 'test' });
    t.equal(ok.status, 201, 'a role without ownAccountGroups needs no directory account');
  });

  t.test('a tampered lease (another member DN, another group) is refused and left for the SOC', async (t) => {
    const grant = await tg.grant('alice', 'domain', 'domain-admin');
    await elevated(grant.id);
    const [lease] = await groupLeases(tg.store, grant.id);
    const adminDn = `CN=Administrator,CN=Users,${BASE_DN}`;
    const daDn = `CN=Domain Admins,CN=Users,${BASE_DN}`;
    const groupDn = `CN=${GROUP},CN=Users,${BASE_DN}`;
    // Someone with write access to the store points the lease at the Administrator (and at Domain Admins).
    await tg.store.updateLease({ ...lease!, data: { ...lease!.data, memberDn: adminDn, groups: [groupDn] } });
    await tg.api('bob', 'POST', `/api/v1/grants/${grant.id}/revoke`, { reason: 'done' });
    const failed = await waitFor('the revoke to be refused', async () => (await groupLeases(tg.store, grant.id)).find((l) => l.error));
    t.match(failed.error, /is not the account of mail "alice@test"/);
    t.ok(dc.tool(['group', 'listmembers', 'Domain Admins']).includes('Administrator'), 'the Administrator is untouched');
    await tg.store.updateLease({ ...failed, data: { ...lease!.data, groups: [daDn] }, retryAt: null });
    await tg.gw.grantLeases.reconcile();
    const again = (await groupLeases(tg.store, grant.id))[0]!;
    t.match(again.error, /is not a group the configuration elevates to/);
    t.ok(dc.tool(['group', 'listmembers', 'Domain Admins']).includes('Administrator'), 'still untouched');
    const standing = (await tg.api('carol', 'GET', '/api/v1/leases?standing=1')).body as { id: string }[];
    t.ok(standing.some((l) => l.id === again.id), 'shown as a standing privilege');
    // The true data back: the next pass removes alice.d.
    await tg.store.updateLease({ ...again, data: lease!.data, retryAt: null });
    await tg.gw.grantLeases.reconcile();
    t.ok(notMember('alice.d'), 'removed once the stored data is what the gateway wrote');
    t.equal((await groupLeases(tg.store, grant.id))[0]?.state, 'revoked');
  });

  t.test('kill -9 of the gateway; the grant ends while it is down; the restart removes the membership', async (t) => {
    const dataDir = mkdtempSync(join(tmpdir(), 'tg-dirgroup-crash-'));
    t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
    const opts = { dataDir, store: 'sqlite' as const, targets, extra: { directory: directory() } };
    const forked = Date.now();
    const child = fork(join(import.meta.dirname, '..', 'support', 'gateway-child.ts'), [], {
      env: { ...process.env, TG_CHILD: JSON.stringify({ ...opts, session: { user: 'alice', target: 'domain', role: 'domain-admin', duration: '8s' } }) },
      execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
    const ready = await new Promise<{ grantId: string }>((res, rej) => {
      child.once('message', (m) => res(m as never));
      child.once('exit', (code) => rej(new Error(`the gateway child exited with ${code}`)));
    });
    await waitFor('alice.d in the groups', () => isMember('alice.d'));
    const dead = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await dead;
    t.ok(isMember('alice.d'), 'the crash left the membership (nothing ran on the way out)');
    // The grant (8 s, made after `forked`) ends while no gateway runs.
    await sleep(Math.max(0, forked + 8_000 + 1_000 - Date.now()));
    t.ok(isMember('alice.d'), 'still a member after the grant\'s end (no gateway ran)');

    const again = await startTestGateway(opts);
    t.teardown(() => again.close());
    // The start-up pass (and the expiry of the grant that ended while no gateway ran) may finish
    // after startTestGateway returns, on a loaded machine: wait for it, bounded.
    const removed = await waitFor('the membership removed after the restart', async () => notMember('alice.d') && (await again.store.listLeases({ state: ['pending', 'active', 'revoking'] })).length === 0, 60_000).catch(() => false);
    t.ok(removed && notMember('alice.d'), 'the restarted gateway removed the membership, from the stored lease');
    t.same((await again.store.listLeases({ state: ['pending', 'active', 'revoking'] })), [], 'no live lease left');
    t.equal((await again.store.getGrant(ready.grantId))?.state, 'expired');
  });
}
