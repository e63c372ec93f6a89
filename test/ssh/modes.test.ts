/**
 * Certificate and checkout modes end to end (real sshd, real ssh under sshpass, the real gateway),
 * and revocation from the stored lease alone (what the reaper does after a crash).
 */
import t from 'tap';
import { readFileSync, statSync, writeFileSync, existsSync, mkdirSync, rmSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { haveSshd, startTestSshd, runClient, until, usersWithPrefix, userExists, type TestSshd } from '../support/sshd.js';
import { sshModule } from '../../protocols/ssh/index.js';
import { loadOrCreateCa, mintSessionKey, signCertificate } from '../../protocols/ssh/cert.js';
import { revokeWithModule } from '../../protocols/types.js';

// Unique per run: parallel runs of this file (several engineers, CI) never share accounts.
const PREFIX = `t${Math.random().toString(36).slice(2, 6).padEnd(4, '0')}-`;
let env: TestSshd;
let gw: TestGateway;
let port: number;

t.before(async () => {
  if (!haveSshd) return;
  env = await startTestSshd(t, { eph: 'web01', cert: 'web01-cert', pw: 'web01-pw' });
  const [eph, cert, pw] = env.targets;
  gw = await startTestGateway({
    targets: [{ ...eph!, credentials: { ...eph!.credentials, prefix: PREFIX } }, cert!, pw!],
    listeners: ['ssh'],
  });
  port = gw.listener('ssh').port;
});
t.teardown(async () => {
  await gw?.close();
  for (const u of usersWithPrefix(PREFIX)) { spawnSync('pkill', ['-KILL', '-u', u]); spawnSync('userdel', ['-r', '-f', u]); }
});

async function endedSession(grantId: string) {
  return until(async () => (await gw.store.listSessions({ grantId })).find((s) => s.state === 'ended'), 15_000, 'session ended');
}

t.test('certificate mode: logs in as the role principal; the certificate is valid until the grant ends; the key is revoked after', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const grant = await gw.grant('alice', 'web01-cert', 'ops', '30m');
  const s = await gw.secret('alice', grant.id);
  const r = await runClient(s.secret, 'ssh', ['-p', String(port), `${s.username}@127.0.0.1`, 'id -un']);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout.trim(), env.accounts.certLogin, 'id -un is the certificate principal');
  t.match(readFileSync(env.sshd.trustedCaFile, 'utf8'), /^ssh-ed25519 \S+ tollgate-ssh-ca$/m, 'the gateway installed its CA key in TrustedUserCAKeys');
  t.ok(existsSync(join(gw.gw.ctx('ssh').config.dataDir, 'ssh', 'ca_ed25519')), 'the CA key lives under the data directory');
  t.equal(statSync(join(gw.gw.ctx('ssh').config.dataDir, 'ssh', 'ca_ed25519')).mode & 0o777, 0o600);
  const sess = await endedSession(grant.id);
  const [lease] = await gw.store.listLeases({ sessionId: sess.id });
  t.equal(lease!.kind, 'ssh-certificate');
  t.equal(lease!.state, 'revoked');
  const certFile = join(env.dir, 'session-cert.pub');
  writeFileSync(certFile, String(lease!.data.certificate) + '\n');
  const info = spawnSync('ssh-keygen', ['-L', '-f', certFile], { encoding: 'utf8' });
  t.equal(info.status, 0, info.stderr);
  t.match(info.stdout, new RegExp(`Principals: \\n\\s+${env.accounts.certLogin}\\n`), 'certificate for the role principal only');
  const m = /Valid: from (\S+) to (\S+)/.exec(info.stdout);
  t.ok(m, 'validity printed');
  const to = Date.parse(m![2]! + 'Z');
  t.ok(Math.abs(to - grant.expiresAt) < 120_000, `valid until the grant ends (${m![2]} vs ${new Date(grant.expiresAt).toISOString()})`);
  // The session key is now in the target's RevokedKeys: sshd refuses the certificate's key.
  const revoked = readFileSync(env.sshd.revokedKeysFile, 'utf8');
  t.ok(revoked.includes(String(lease!.data.publicKey)), 'the session key was added to RevokedKeys');
  // What that means on the wire, with the real ssh client: a key + certificate from the same CA
  // logs in, and after revokeLease() names its key, sshd refuses it.
  const ctx = gw.gw.ctx('ssh');
  const ca = loadOrCreateCa(ctx.config.dataDir);
  const { key, publicLine, privateText } = mintSessionKey();
  const now = Math.floor(Date.now() / 1000);
  const c2 = signCertificate(ca.key, { publicKey: key.getPublicSSH(), serial: 99n, keyId: 'probe', principals: [env.accounts.certLogin], validAfter: now - 60, validBefore: now + 600, extensions: ['permit-pty'] });
  const keyFile = join(env.dir, 'probe');
  writeFileSync(keyFile, privateText, { mode: 0o600 });
  writeFileSync(`${keyFile}-cert.pub`, `ssh-ed25519-cert-v01@openssh.com ${c2.toString('base64')}\n`);
  const probe = () => spawnSync('ssh', ['-i', keyFile, '-o', `CertificateFile=${keyFile}-cert.pub`, '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'IdentitiesOnly=yes', '-p', String(env.sshd.port), `${env.accounts.certLogin}@127.0.0.1`, 'id -un'], { encoding: 'utf8', timeout: 15_000 });
  const before = probe();
  t.equal(before.stdout.trim(), env.accounts.certLogin, `OpenSSH ssh accepts a certificate we wrote (${before.stderr.trim()})`);
  await revokeWithModule(sshModule, ctx, ctx.config.target('web01-cert')!, { ...lease!, data: { ...lease!.data, publicKey: publicLine } });
  const after = probe();
  t.not(after.status, 0, 'refused once its key is revoked');
});

t.test('certificate mode: 30 session keys revoked at once reach RevokedKeys in a few admin logins, each key once', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const ctx = gw.gw.ctx('ssh');
  const target = ctx.config.target('web01-cert')!;
  const lease = (await gw.store.listLeases({ target: 'web01-cert' })).find((l) => l.kind === 'ssh-certificate');
  t.ok(lease, 'a certificate lease from the test before');
  const keys = Array.from({ length: 30 }, () => mintSessionKey().publicLine);
  const logins = () => (env.sshd.logs().match(/Accepted publickey for root/g) ?? []).length;
  const before = logins();
  // The same key twice in one burst, and a key already listed: each ends up in the file once.
  const listed = String(lease!.data.publicKey);
  const all = [...keys, keys[0]!, listed];
  const rs = await Promise.all(all.map((k, i) => revokeWithModule(sshModule, ctx, target, { ...lease!, id: `burst-${i}`, data: { ...lease!.data, publicKey: k } })));
  t.ok(rs.every((r) => r.revoked), 'every revoke confirmed');
  const file = readFileSync(env.sshd.revokedKeysFile, 'utf8').split('\n');
  for (const k of [...keys, listed]) if (file.filter((l) => l === k).length !== 1) t.fail(`${k.slice(0, 30)}… listed ${file.filter((l) => l === k).length} times`);
  t.pass(`all ${keys.length + 1} keys listed exactly once`);
  await until(async () => (logins() > before ? true : null), 5_000, 'sshd to log the admin logins');
  const used = logins() - before;
  t.ok(used >= 1 && used <= 3, `${all.length} revokes used ${used} admin logins (one per batch)`);
});

t.test('checkout mode: logs in with the stored password, rotates it afterwards', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const account = env.accounts.checkoutAccount;
  const direct = (pw: string) => runClient(pw, 'ssh', ['-p', String(env.sshd.port), `${account}@127.0.0.1`, 'id -un'], { timeoutMs: 15_000 });
  t.equal((await direct(env.accounts.checkoutPassword)).code, 0, 'the starting password works on the target');
  const grant = await gw.grant('alice', 'web01-pw', 'shared');
  const s = await gw.secret('alice', grant.id);
  const r = await runClient(s.secret, 'ssh', ['-p', String(port), `${s.username}@127.0.0.1`, 'id -un']);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout.trim(), account, 'logged in as the checked-out account');
  const sess = await endedSession(grant.id);
  const [lease] = await gw.store.listLeases({ sessionId: sess.id });
  t.equal(lease!.state, 'revoked');
  t.notOk(JSON.stringify(lease!.data).includes(env.accounts.checkoutPassword), 'no password in the lease data');
  t.not((await direct(env.accounts.checkoutPassword)).code, 0, 'the old password is dead after the session');
  const file = join(gw.gw.ctx('ssh').config.dataDir, 'ssh', 'checkout', `web01-pw--${account}`);
  t.equal(statSync(file).mode & 0o777, 0o600, 'current password kept in a 0600 file');
  const unsealed = (f: string) => gw.gw.key.unseal<{ p: string }>(readFileSync(f, 'utf8'))?.p ?? '';
  const current = unsealed(file);
  t.ok(current, 'sealed with the gateway key');
  t.not(current, env.accounts.checkoutPassword);
  t.equal((await direct(current)).code, 0, 'the rotated password is the one on the target');
  // A file an older version wrote in plaintext is still used, and sealed on the way.
  writeFileSync(file, current, { mode: 0o600 });
  // A second session uses the rotated password, then rotates again.
  const s2 = await gw.secret('alice', grant.id);
  const r2 = await runClient(s2.secret, 'ssh', ['-p', String(port), `${s2.username}@127.0.0.1`, 'id -un']);
  t.equal(r2.stdout.trim(), account);
  await until(async () => (await gw.store.listSessions({ grantId: grant.id })).every((x) => x.state === 'ended'));
  t.not((await direct(current)).code, 0, 'rotated again after the second session');
  const third = unsealed(file);
  t.ok(third && third !== current, 'the new password is sealed in the file again');
  // No password or connection secret in plaintext in the store, the recordings or anything else under the data directory.
  const secrets = [env.accounts.checkoutPassword, current, third, s.secret, s2.secret];
  const leaks: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const f = join(dir, e.name);
      if (e.isDirectory()) walk(f);
      else {
        const body = readFileSync(f);
        for (const x of secrets) if (body.includes(x)) leaks.push(f);
      }
    }
  };
  walk(gw.dataDir);
  t.same(leaks, [], 'no password or secret in the data directory (store, WAL, recordings, the checkout file)');
  // The grant's end rotates too (onGrantEnd), even with no session.
  const before = unsealed(file);
  const rv = await gw.api('alice', 'POST', `/api/v1/grants/${grant.id}/revoke`, { reason: 'done' });
  t.ok(rv.status < 300, `grant revoked (${rv.status})`);
  await until(() => unsealed(file) !== before, 15_000, 'rotation at grant end');
  t.not((await direct(before)).code, 0, 'password rotated when the grant ended');
});

t.test('revokeLease works from the stored lease alone (the reaper after a crash)', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const grant = await gw.grant('alice', 'web01', 'user');
  const s = await gw.secret('alice', grant.id);
  // Keep a session open, then revoke its lease through a fresh context as the reaper would.
  const p = runClient(s.secret, 'ssh', ['-p', String(port), `${s.username}@127.0.0.1`, 'id -un; sleep 20'], { timeoutMs: 30_000 });
  const lease = await until(async () => (await gw.store.listLeases({ grantId: grant.id })).find((l) => l.state === 'active'), 15_000, 'active lease');
  const account = String(lease.data.account);
  t.ok(userExists(account), 'account exists while the session runs');
  const target = gw.gw.ctx('ssh').config.target('web01')!;
  await revokeWithModule(sshModule, gw.gw.ctx('ssh'), target, JSON.parse(JSON.stringify(lease)));
  t.notOk(userExists(account), 'account and its processes gone');
  await revokeWithModule(sshModule, gw.gw.ctx('ssh'), target, JSON.parse(JSON.stringify(lease)));
  t.pass('revoking twice is fine');
  const r = await p;
  t.not(r.code, 0, 'the session died with its account');
  // A lease naming an account the gateway did not mint is refused, never deleted.
  await t.rejects(revokeWithModule(sshModule, gw.gw.ctx('ssh'), target, { ...lease, data: { ...lease.data, account: 'root' } }), /did not mint/);
  await t.rejects(revokeWithModule(sshModule, gw.gw.ctx('ssh'), target, { ...lease, data: { ...lease.data, account: `${PREFIX}x; rm -rf /-abcd` } }), /did not mint/);
  t.ok(userExists('root'));
});

t.test('the reaper deletes an account left by a crashed gateway (lease without a live session)', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const grant = await gw.grant('alice', 'web01', 'user');
  const account = `${PREFIX}alice-zz${Math.random().toString(36).slice(2, 4).padEnd(2, '0')}`;
  // What a crash right after useradd leaves: the account on the target and an active lease in the store.
  t.equal(spawnSync('useradd', ['-m', '-U', '-s', '/bin/bash', account]).status, 0);
  const sleeper = spawnSync('su', ['-s', '/bin/sh', account, '-c', 'nohup sleep 300 >/dev/null 2>&1 & echo $!'], { encoding: 'utf8' });
  t.match(sleeper.stdout.trim(), /^\d+$/, 'a process of the account is running');
  await gw.store.insertLease({
    id: `crash-${account}`, sessionId: null, grantId: grant.id, target: 'web01', kind: 'linux-account', state: 'active',
    data: { mode: 'ephemeral-account', account, prefix: PREFIX, groups: [] }, createdAt: Date.now(), activatedAt: Date.now(), revokedAt: null, error: null,
  });
  const reaped = await gw.gw.sessions.reap();
  t.ok(reaped.leases >= 1, `reaper revoked ${reaped.leases} lease(s)`);
  t.notOk(userExists(account), 'account deleted from the stored lease data alone');
  const stat = existsSync(`/proc/${sleeper.stdout.trim()}/stat`) ? readFileSync(`/proc/${sleeper.stdout.trim()}/stat`, 'utf8') : '';
  t.ok(stat === '' || / Z /.test(stat), `its processes are gone (killed; at most an unreaped zombie: ${stat.slice(0, 40)})`);
  t.equal((await gw.store.getLease(`crash-${account}`))!.state, 'revoked');
});

t.test('a non-root admin works through sudo -n', { skip: (!haveSshd || !existsSync('/usr/bin/sudo')) && 'needs root, sshd and sudo' }, async (t) => {
  const admin = `${PREFIX}adm`;
  const sudoers = `/etc/sudoers.d/${admin}`;
  t.equal(spawnSync('useradd', ['-m', '-U', '-s', '/bin/sh', admin]).status, 0);
  t.teardown(() => { rmSync(sudoers, { force: true }); spawnSync('userdel', ['-r', '-f', admin]); });
  spawnSync('usermod', ['-p', '*', admin]);
  const keyFile = join(env.dir, 'sudo_admin');
  spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', keyFile]);
  mkdirSync(`/home/${admin}/.ssh`, { recursive: true, mode: 0o700 });
  writeFileSync(`/home/${admin}/.ssh/authorized_keys`, readFileSync(`${keyFile}.pub`));
  spawnSync('chown', ['-R', `${admin}:${admin}`, `/home/${admin}/.ssh`]);
  writeFileSync(sudoers, `${admin} ALL=(root) NOPASSWD: /bin/sh, /usr/bin/sh\n`, { mode: 0o440 });
  const ctx = gw.gw.ctx('ssh');
  const base = ctx.config.target('web01')!;
  const target = { ...base, name: 'web01-sudo', credentials: { ...base.credentials, admin: { username: admin, privateKey: { file: keyFile } } } };
  const check = await sshModule.checkTarget!(ctx, target);
  t.equal(check.ok, true, check.detail);
  t.match(check.detail, new RegExp(`logged in as ${admin}`));
  // Mint and revoke an account exactly as a session does, through the non-root admin.
  const fakeSession = {
    id: 'sudo-test', principal: { sub: 'alice', name: 'alice', email: null, groups: [], mfaAt: null, via: 'secret' as const },
    log: ctx.log, lease: async (kind: string, data: Record<string, unknown>, create: (id: string) => Promise<{ credential: unknown; data?: Record<string, unknown> }>) => {
      const r = await create('lease-sudo');
      leaseRec = { id: 'lease-sudo', sessionId: null, grantId: 'g', target: target.name, kind, state: 'active', data: { ...data, ...(r.data ?? {}) }, createdAt: 0, activatedAt: 0, revokedAt: null, error: null };
      return r.credential;
    },
  };
  let leaseRec: import('../../proxy/store/types.js').LeaseRecord | null = null;
  const { ephemeralProvisioner } = await import('../../protocols/ssh/provisioners/ephemeral.js');
  const cred = await ephemeralProvisioner.mint(ctx, fakeSession as never, target, { name: 'user' });
  t.match(cred.username, new RegExp(`^${PREFIX}alice-[a-z0-9]{4}$`));
  t.ok(userExists(cred.username), 'account created through sudo');
  await revokeWithModule(sshModule, ctx, target, leaseRec!);
  t.notOk(userExists(cred.username), 'account deleted through sudo');
});

t.test('checkTarget dials with the admin credential', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const ctx = gw.gw.ctx('ssh');
  const ok = await sshModule.checkTarget!(ctx, ctx.config.target('web01')!);
  t.same(ok.ok, true, ok.detail);
  t.match(ok.detail, /logged in as root/);
  const bad = await sshModule.checkTarget!(ctx, { ...ctx.config.target('web01')!, address: '127.0.0.1:1' });
  t.equal(bad.ok, false);
  t.match(bad.detail, /ECONNREFUSED/);
  const wrongKey = await sshModule.checkTarget!(ctx, { ...ctx.config.target('web01')!, credentials: { mode: 'ephemeral-account', admin: { username: 'root', password: { value: 'nope' } } } });
  t.equal(wrongKey.ok, false);
  t.match(wrongKey.detail, /admin credential was refused/);
  t.notMatch(wrongKey.detail, /nope/, 'the credential never appears in the detail');
  t.match(ctx.config.target('web01')!.options.hostKeyFingerprint, /^SHA256:/, 'the demo targets pin the sshd host key');
  const impostor = await sshModule.checkTarget!(ctx, { ...ctx.config.target('web01')!, options: { hostKeyFingerprint: 'SHA256:' + 'A'.repeat(43) } });
  t.equal(impostor.ok, false);
  t.match(impostor.detail, /host key does not match/, 'a different host key is refused before any credential is sent');
});

t.test('demo(): a real sshd set up for the three modes, removed by stop()', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const dir = join(env.dir, 'demo');
  const demo = await sshModule.demo!(dir, gw.gw.ctx('ssh').log);
  t.ok(demo, 'demo started');
  const targets = demo!.targets;
  t.same(targets.map((x) => [x.name, x.credentials.mode]), [['web01', 'ephemeral-account'], ['web01-cert', 'certificate'], ['web01-pw', 'checkout']]);
  for (const x of targets) t.equal(sshModule.validateTarget!(x), null, `${x.name} validates`);
  const login = String(targets[1]!.roles[0]!.login);
  const account = String(targets[2]!.credentials.account);
  t.ok(userExists(login) && userExists(account), 'demo accounts exist');
  const ctx = gw.gw.ctx('ssh');
  const check = await sshModule.checkTarget!(ctx, targets[0]!);
  t.equal(check.ok, true, check.detail);
  await demo!.stop();
  t.notOk(userExists(login) || userExists(account), 'stop() removed the demo accounts');
  t.equal((await sshModule.checkTarget!(ctx, targets[0]!)).ok, false, 'sshd stopped');
});
