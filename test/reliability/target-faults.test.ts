/**
 * Target faults, against real servers and real clients through an in-process gateway:
 * - the target dies mid-session (PostgreSQL stopped under a live psql): the client gets an error
 *   in its protocol, the session ends, the lease cannot be revoked and stays a standing privilege
 *   (error, attempts, retry time stored); once the server is back the retry drops the role;
 * - the target refuses the admin credential (PostgreSQL, MariaDB, sshd): the client is told so in
 *   its protocol, and nothing is left: no lease in the store, no role, user or account on the target;
 * - provisioning fails halfway (the role or user is created, its grant is refused: an admin that may
 *   create roles but not grant the one the Tollgate role maps to): the client gets a clear error
 *   and the half-made role or user is gone;
 * - sshd, halfway: the Linux account is created, the next step (its .ssh/authorized_keys) is refused
 *   by the admin's sudo (a non-root admin whose sudoers rule, with `intercept`, allows useradd and
 *   userdel but not install): ssh is told which step failed and the account is gone.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { findPgBin } from '../../protocols/postgres/demo.js';
import { startTestGateway } from '../support/gateway.js';
import { havePostgres, runClient, startTestCluster, waitFor } from '../support/pg.js';
import { startTestMariadb, run as runCmd } from '../support/mariadb.js';
import { haveSshd, runClient as runSsh, startTestSshd, usersWithPrefix } from '../support/sshd.js';
import type { TargetConfig } from '../../protocols/config.js';

if (!haveSshd || !havePostgres) throw new Error('this test needs sshd (as root) and PostgreSQL');

const pgBin = findPgBin()!;
/** pg_ctl on a test cluster, as its owner (the postgres OS user when root). */
function pgCtl(args: string[]): void {
  const cmd = [join(pgBin, 'pg_ctl'), ...args];
  const r = process.getuid?.() === 0 ? spawnSync('runuser', ['-u', 'postgres', '--', ...cmd], { encoding: 'utf8' }) : spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`pg_ctl ${args.join(' ')}: ${r.stderr}${r.stdout}`);
}

t.test('PostgreSQL: target dies mid-session, admin refused, grant refused halfway', async (t) => {
  const pgc = await startTestCluster(t, 'tf-db');
  const limPw = randomBytes(12).toString('hex');
  {
    const su = await pgc.su();
    try {
      // An admin that may create roles but not grant a superuser role; the Tollgate role maps to one.
      await su.query(`CREATE ROLE lim_admin LOGIN CREATEROLE PASSWORD '${limPw}'`);
      await su.query('CREATE ROLE tf_super NOLOGIN SUPERUSER');
      await su.query('GRANT CONNECT ON DATABASE app TO lim_admin');
    } finally { await su.end(); }
  }
  const creds = pgc.target.credentials as Record<string, unknown>;
  const targets = [
    pgc.target,
    { ...pgc.target, name: 'tf-badadmin', credentials: { ...creds, admin: { user: 'tollgate_admin', password: { value: 'not-the-password' } } } },
    { ...pgc.target, name: 'tf-half', roles: [{ name: 'read', grants: ['tf_super'] }], credentials: { ...creds, admin: { user: 'lim_admin', password: { value: limPw } } } },
  ];
  const tg = await startTestGateway({ targets, listeners: ['postgres'] });
  t.teardown(() => tg.close());
  const { host, port } = tg.listener('postgres');
  const dir = mkdtempSync(join(tmpdir(), 'tg-tf-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, tg.gw.tls.ca);
  const psql = (user: string, secret: string, sql: string) => runClient('psql', ['-X', '-A', '-t',
    `host=${host} port=${port} user=${user} dbname=app password=${secret} sslmode=verify-full sslrootcert=${caFile}`, '-c', sql], { timeoutMs: 30_000 });
  const leasesOf = async (target: string) => tg.store.listLeases({ target });

  await t.test('the admin credential is refused: a clear error, no lease, no role', async (t) => {
    const g = await tg.grant('alice', 'tf-badadmin', 'read');
    const s = await tg.secret('alice', g.id);
    const r = await psql(s.username, s.secret, 'SELECT 1');
    t.not(r.code, 0, 'psql fails');
    t.match(r.stderr, /could not create the session role on tf-badadmin: the database server refused the admin connection \(28P01: password authentication failed/, `psql says why: ${r.stderr.trim()}`);
    t.notMatch(r.stderr, /not-the-password/, 'the admin password is not in the error');
    t.same(await leasesOf('tf-badadmin'), [], 'no lease was stored (nothing to retry, nothing standing)');
    t.same(await pgc.sessionRoles(), [], 'no role on the target');
    const [sess] = (await tg.store.listSessions({})).filter((x) => x.target === 'tf-badadmin');
    t.match(sess, { state: 'ended' }, 'the session is ended');
  });

  await t.test('provisioning fails halfway (role created, grant refused): a clear error, the role is gone', async (t) => {
    const g = await tg.grant('alice', 'tf-half', 'read');
    const s = await tg.secret('alice', g.id);
    const r = await psql(s.username, s.secret, 'SELECT 1');
    t.not(r.code, 0, 'psql fails');
    t.match(r.stderr, /could not create the session role on tf-half: .*superuser/i, `psql says why: ${r.stderr.trim()}`);
    const leases = await leasesOf('tf-half');
    t.equal(leases.length, 1, 'the lease was stored before the role was made');
    t.match(leases[0], { state: 'revoked', error: null }, 'and is revoked: the half-made role was dropped');
    t.same(await pgc.sessionRoles(), [], 'no role left on the target');
    t.equal((await tg.store.listAudit({ action: 'lease.mint_failed', subject: leases[0]!.id })).length, 1, 'the failed mint is audited');
  });

  await t.test('the target dies mid-session: the client gets an error, the lease stands and is retried, revoked once the server is back', async (t) => {
    const g = await tg.grant('alice', 'tf-db', 'read');
    const s = await tg.secret('alice', g.id);
    const client = new pg.Client({ host, port, user: s.username, password: s.secret, database: 'app', ssl: { ca: tg.gw.tls.ca } });
    const errors: Error[] = [];
    client.on('error', (e) => errors.push(e));
    await client.connect();
    t.equal((await client.query('SELECT count(*)::int AS n FROM accounts')).rows[0].n, 3, 'the session works');
    const roles = await pgc.sessionRoles();
    t.equal(roles.length, 1, 'its role exists');

    const dataDir = pgc.cluster.dataDir;
    pgCtl(['-D', dataDir, '-m', 'immediate', '-w', 'stop']);
    const failed = await client.query('SELECT 1').then(() => null, (e: Error) => e);
    t.ok(failed ?? errors[0], `the client gets an error: ${(failed ?? errors[0])?.message}`);
    await client.end().catch(() => undefined);
    const lease = await waitFor(async () => {
      const l = (await leasesOf('tf-db'))[0];
      return l && (l.attempts ?? 0) >= 1 && l.error ? l : null;
    }, 30_000, 'the revoke to fail');
    t.not(lease.state, 'revoked', `the lease is not revoked while the server is down (${lease.state})`);
    t.ok(lease.retryAt && lease.retryAt > lease.createdAt, 'a retry is scheduled');
    t.match(lease.error, /ECONNREFUSED|connect|terminat/i, `the failure is stored: ${lease.error}`);
    t.ok((await tg.store.listAudit({ action: 'lease.revoke_failed', subject: lease.id })).length >= 1, 'the failed revoke is audited');
    const sess = await waitFor(async () => {
      const [x] = (await tg.store.listSessions({})).filter((y) => y.target === 'tf-db');
      return x?.state === 'ended' ? x : null;
    }, 30_000, 'the session to end');
    t.match(sess, { state: 'ended', endReason: /target|upstream|server|terminat|closed/i }, `the session is ended: ${sess.endReason}`);
    t.ok((await tg.gw.sessions.standing()).some((l) => l.id === lease.id), 'its lease is reported as a standing privilege');

    // The server is back (same data, same port): the scheduled retry drops the role.
    const base = dirname(dataDir);
    pgCtl(['-D', dataDir, '-l', join(base, 'server.log'), '-w', '-t', '60', '-o', `-p ${pgc.cluster.port} -k ${join(base, 'sock')} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off`, 'start']);
    t.same(await pgc.sessionRoles(), roles, 'the role survived the outage (it is a standing privilege)');
    const done = await waitFor(async () => {
      const l = (await leasesOf('tf-db'))[0];
      return l?.state === 'revoked' ? l : null;
    }, 60_000, 'the retried revoke');
    t.match(done, { state: 'revoked', error: null }, `revoked on a retry (attempts: ${done.attempts})`);
    t.same(await pgc.sessionRoles(), [], 'the role is gone from the target');
    t.same(await tg.gw.sessions.standing(), [], 'nothing is standing');
  });
});

t.test('MariaDB: admin refused, grant refused halfway', async (t) => {
  const my = await startTestMariadb(t);
  if (!my) throw new Error('this test needs MariaDB');
  const limPw = randomBytes(12).toString('hex');
  // An admin that may create users but grants nothing on shop.
  await my.admin(`CREATE USER 'tf_lim'@'%' IDENTIFIED BY '${limPw}'`);
  await my.admin("GRANT CREATE USER ON *.* TO 'tf_lim'@'%'");
  const base = my.target;
  const targets = [
    { ...base, name: 'tf-my-badadmin', credentials: { ...base.credentials, admin: { user: my.adminUser, password: { value: 'not-the-password' } } } },
    { ...base, name: 'tf-my-half', credentials: { ...base.credentials, admin: { user: 'tf_lim', password: { value: limPw } } } },
  ];
  const tg = await startTestGateway({ targets, listeners: ['mysql'] });
  t.teardown(() => tg.close());
  const { host, port } = tg.listener('mysql');
  const dir = mkdtempSync(join(tmpdir(), 'tg-tf-my-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, tg.gw.tls.ca);
  const mariadb = (user: string, secret: string) => runCmd('mariadb', ['-h', host, '-P', String(port), '-u', user, `-p${secret}`, `--ssl-ca=${caFile}`, 'shop', '-e', 'SELECT 1'], { timeoutMs: 30_000 });
  const leasesOf = async (target: string) => tg.store.listLeases({ target });

  await t.test('the admin credential is refused: a clear error, no lease, no user', async (t) => {
    const g = await tg.grant('alice', 'tf-my-badadmin', 'read');
    const s = await tg.secret('alice', g.id);
    const r = await mariadb(s.username, s.secret);
    t.not(r.code, 0, 'the mariadb client fails');
    t.match(r.stderr, /could not create a database user for this session: the database server of tf-my-badadmin refused the admin credential/, `it says why: ${r.stderr.trim()}`);
    t.notMatch(r.stderr, /not-the-password/);
    t.same(await leasesOf('tf-my-badadmin'), [], 'no lease was stored');
    t.same(await my.sessionUsers(), [], 'no user on the target');
  });

  await t.test('provisioning fails halfway (user created, grant refused): a clear error, the user is gone', async (t) => {
    const g = await tg.grant('alice', 'tf-my-half', 'read');
    const s = await tg.secret('alice', g.id);
    const r = await mariadb(s.username, s.secret);
    t.not(r.code, 0, 'the mariadb client fails');
    t.match(r.stderr, /could not create a database user for this session on tf-my-half: .*(denied|1044|1045|1227)/i, `it says why: ${r.stderr.trim()}`);
    const leases = await leasesOf('tf-my-half');
    t.equal(leases.length, 1, 'the lease was stored before the user was made');
    t.match(leases[0], { state: 'revoked', error: null }, 'and is revoked: the half-made user was dropped');
    t.same(await my.sessionUsers(), [], 'no user left on the target');
  });
});

/** A gateway for `target` alone and an ssh session through it (as alice, role user) that must fail. */
async function sshThatFails(t: Test, target: TargetConfig, timeoutMs: number) {
  const tg = await startTestGateway({ targets: [target], listeners: ['ssh'] });
  t.teardown(() => tg.close());
  const { port } = tg.listener('ssh');
  const g = await tg.grant('alice', target.name, 'user');
  const s = await tg.secret('alice', g.id);
  const r = await runSsh(s.secret, 'ssh', ['-p', String(port), `${s.username}@127.0.0.1`, 'echo opened-ok'], { timeoutMs });
  t.not(r.code, 0, 'ssh fails');
  t.notMatch(r.stdout, /opened-ok/);
  return { tg, r };
}

t.test('sshd: the admin credential is refused: the client is told, no lease, no account', async (t) => {
  const prefix = `f${randomBytes(3).toString('hex')}-`;
  const sshd = await startTestSshd(t, { eph: 'tf-box', cert: 'tf-box-cert', pw: 'tf-box-pw' });
  const dir = mkdtempSync(join(tmpdir(), 'tg-tf-ssh-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // A key the target does not know, as the admin's.
  const key = join(dir, 'wrong_key');
  spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
  const box = sshd.targets[0]!;
  const creds = box.credentials as Record<string, unknown>;
  const target = { ...box, credentials: { ...creds, prefix, admin: { ...(creds['admin'] as object), privateKey: { file: key } } } };
  const { tg, r } = await sshThatFails(t, target, 30_000);
  t.match(r.stderr, /admin credential was refused/, `ssh says why: ${r.stderr.trim().slice(0, 300)}`);
  t.same(await tg.store.listLeases({ target: 'tf-box' }), [], 'no lease was stored');
  t.same(usersWithPrefix(prefix), [], 'no account on the target');
});

t.test('sshd: provisioning fails halfway (account created, its authorized_keys refused by sudo): the client is told, no account', async (t) => {
  const tag = randomBytes(3).toString('hex');
  const prefix = `g${tag}-`;
  const adminUser = `tfadm${tag}`;
  const sudoers = `/etc/sudoers.d/tollgate-test-${adminUser}`;
  const sh = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  };
  const sshd = await startTestSshd(t, { eph: 'tf-half-box', cert: 'tf-half-cert', pw: 'tf-half-pw' });
  t.teardown(() => {
    rmSync(sudoers, { force: true });
    for (const u of [...usersWithPrefix(prefix), adminUser]) {
      spawnSync('pkill', ['-KILL', '-u', u]);
      spawnSync('userdel', ['-r', '-f', u]);
    }
  });
  // A non-root admin (key login, password field '*' so sshd lets it in) whose sudo runs the
  // provisioner's `sh -s` with intercept: every command that shell runs is checked against the rule,
  // which allows what creates and deletes an account but not install (the .ssh directory).
  sh('useradd', ['-m', '-s', '/bin/sh', '-p', '*', '-c', 'tollgate test, restricted admin', adminUser]);
  const home = `/home/${adminUser}`;
  mkdirSync(join(home, '.ssh'), { recursive: true, mode: 0o700 });
  writeFileSync(join(home, '.ssh', 'authorized_keys'), readFileSync(`${sshd.sshd.adminKeyFile}.pub`), { mode: 0o600 });
  sh('chown', ['-R', `${adminUser}:${adminUser}`, join(home, '.ssh')]);
  writeFileSync(sudoers, [
    `Defaults:${adminUser} intercept`,
    `${adminUser} ALL=(root) NOPASSWD: /usr/bin/sh -s, /usr/sbin/useradd, /usr/sbin/userdel, /usr/bin/getent, /usr/bin/cut, /usr/bin/id, /usr/bin/pkill, /usr/bin/sleep`,
    '',
  ].join('\n'), { mode: 0o440 });
  chmodSync(sudoers, 0o440);
  sh('visudo', ['-cf', sudoers]);

  const box = sshd.targets[0]!;
  const creds = box.credentials as Record<string, unknown>;
  const target = { ...box, credentials: { ...creds, prefix, admin: { username: adminUser, privateKey: { file: sshd.sshd.adminKeyFile }, sudo: true } } };
  const { tg, r } = await sshThatFails(t, target, 60_000);
  t.match(r.stderr, new RegExp(`could not create account ${prefix}alice-[a-z0-9]{4} on tf-half-box: .*install: Permission denied`), `ssh says which step failed: ${r.stderr.trim().slice(0, 300)}`);
  const leases = await tg.store.listLeases({ target: 'tf-half-box' });
  t.equal(leases.length, 1, 'the lease was stored before the account was made');
  const account = leases[0]!.data['account'] as string;
  t.match(leases[0], { state: 'revoked', error: null }, 'and is revoked: the half-made account was deleted');
  t.equal((await tg.store.listAudit({ action: 'lease.mint_failed', subject: leases[0]!.id })).length, 1, 'the failed mint is audited');
  t.same(usersWithPrefix(prefix), [], `no account left on the target (${account})`);
  t.equal(spawnSync('getent', ['group', account]).status, 2, 'nor its group');
  t.notOk(spawnSync('test', ['-e', `/home/${account}`]).status === 0, 'nor its home');
});
