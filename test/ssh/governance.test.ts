/**
 * Issue 20 on a real OpenSSH sshd, through the real gateway, with the real ssh/scp clients:
 * kept homes (options.keepHome: scp a file, a later ssh finds it; the account is still minted and
 * deleted per session; one stable uid per identity and target; setuid bits, planted links and a
 * role's extra groups do not survive), exclusive check-out of the `checkout` account (refused,
 * check-in through the CLI rotates the password, then the next identity gets it), and MFA at
 * connect over SSH (a registered key, then keyboard-interactive asks for the authenticator code).
 */
import t from 'tap';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { totp } from '../../auth/totp.js';
import { Secret } from '../../auth/secret.js';
import { startTestGateway, TEST_USERS, type TestGateway } from '../support/gateway.js';
import { haveSshd, startTestSshd, runClient, runCmd, Terminal, until, usersWithPrefix, userExists, type TestSshd } from '../support/sshd.js';

const PREFIX = `t${Math.random().toString(36).slice(2, 6).padEnd(4, '0')}-`;
/** A uid range of this run's own (parallel runs never meet). */
const UID_BASE = 400_000 + Math.floor(Math.random() * 500) * 1000;
const ALICE_TOTP = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP';
const bin = join(import.meta.dirname, '..', '..', 'proxy', 'bin', 'tollgate.js');
let env: TestSshd;
let gw: TestGateway;
let port: number;
let homes: string;
let work: string;

t.before(async () => {
  if (!haveSshd) return;
  env = await startTestSshd(t, { eph: 'kept', cert: 'kept-cert', pw: 'shared' });
  work = mkdtempSync(join(tmpdir(), 'tg-gov-ssh-'));
  chmodSync(work, 0o755); // the kept homes' parents must be traversable by their accounts, as /home is
  homes = join(work, 'homes');
  const [eph, , pw] = env.targets;
  const kept = { ...eph!, credentials: { ...eph!.credentials, prefix: PREFIX }, options: { ...eph!.options, keepHome: true, keepHomeDir: homes, keepHomeUidBase: UID_BASE } };
  const guarded = { ...eph!, name: 'guarded', credentials: { ...eph!.credentials, prefix: PREFIX }, options: { ...eph!.options, mfaAtConnect: true } };
  gw = await startTestGateway({
    targets: [kept, guarded, pw!], listeners: ['ssh'],
    extra: { idp: { dev: { users: Object.entries(TEST_USERS).map(([name, groups]) => ({ name, password: { value: `${name}-pw` }, groups, ...(name === 'alice' ? { totp: { value: ALICE_TOTP } } : {}) })) } } },
  });
  port = gw.listener('ssh').port;
});
t.teardown(async () => {
  await gw?.close();
  for (const u of usersWithPrefix(PREFIX)) { spawnSync('pkill', ['-KILL', '-u', u]); spawnSync('userdel', ['-f', u]); }
  for (const line of spawnSync('getent', ['group'], { encoding: 'utf8' }).stdout.split('\n')) {
    const name = line.split(':')[0];
    if (name?.startsWith(`${PREFIX}home`)) { spawnSync('pkill', ['-KILL', '-U', line.split(':')[2]!]); spawnSync('groupdel', [name]); }
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

const sshArgs = (user: string) => ['-p', String(port), `${user}@127.0.0.1`];
async function sessionsEnded(grantId: string) {
  return until(async () => {
    const list = await gw.store.listSessions({ grantId });
    return list.length > 0 && list.every((s) => s.state === 'ended') ? list : null;
  }, 20_000, 'sessions ended');
}
async function exec(user: string, grantId: string, command: string) {
  const s = await gw.secret(user, grantId);
  const r = await runClient(s.secret, 'ssh', [...sshArgs(s.username), command]);
  return r;
}

t.test('keepHome: scp a file, a later ssh finds it; accounts still come and go; one home and uid per identity', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const grant = await gw.grant('alice', 'kept', 'user', '1h');
  const file = join(work, 'notes.txt');
  writeFileSync(file, 'kept across sessions\n');
  const s1 = await gw.secret('alice', grant.id);
  const up = await runClient(s1.secret, 'scp', ['-P', String(port), file, `${s1.username}@127.0.0.1:`]);
  t.equal(up.code, 0, up.stderr);
  await sessionsEnded(grant.id);
  t.same(usersWithPrefix(PREFIX), [], 'the account is gone after the scp');
  const dirs = readdirSync(homes).filter((d) => !d.startsWith('.'));
  t.equal(dirs.length, 1, 'one kept home');
  t.match(dirs[0], /^alice-[0-9a-f]{16}$/);
  const home = join(homes, dirs[0]!);
  const uid = statSync(home).uid;
  t.ok(uid >= UID_BASE && uid < UID_BASE + 1000, `a uid from the configured base (${uid})`);
  t.equal(statSync(home).mode & 0o777, 0o700, 'the home is private');
  t.equal(statSync(join(home, 'notes.txt')).uid, uid, 'the file belongs to the stable uid');
  t.equal(statSync(homes).uid, 0, 'the homes directory is root\'s');

  const later = await exec('alice', grant.id, 'id -un; id -u; pwd; cat notes.txt');
  t.equal(later.code, 0, later.stderr);
  const [name, laterUid, pwd, content] = later.stdout.split('\n');
  t.match(name, new RegExp(`^${PREFIX}alice-[a-z0-9]{4}$`), 'a fresh account name');
  t.equal(Number(laterUid), uid, 'the same uid');
  t.equal(pwd, home, 'the kept home');
  t.equal(content, 'kept across sessions', 'finds the file');
  await sessionsEnded(grant.id);
  t.notOk(userExists(name!), 'deleted again');
  t.ok(existsSync(join(home, 'notes.txt')), 'the home stays');
  const lease = (await gw.store.listLeases({ grantId: grant.id })).at(-1)!;
  t.match(lease.data, { keepHome: { dir: homes, key: dirs[0] }, uid, home }, 'the lease records the kept home (the reaper can delete the account alone)');

  // Another identity: its own home and uid; alice's files are out of reach.
  const eg = await gw.grant('erin', 'kept', 'user', '1h');
  const erin = await exec('erin', eg.id, `id -u; pwd; cat ${join(home, 'notes.txt')} 2>&1; ls ${home} 2>&1`);
  const [erinUid, erinHome, ...rest] = erin.stdout.split('\n');
  t.not(Number(erinUid), uid, 'another uid');
  t.match(erinHome, new RegExp(`^${homes}/erin-[0-9a-f]{16}$`));
  t.match(rest.join('\n'), /Permission denied[\s\S]*Permission denied/, 'alice\'s home cannot be read');
  await sessionsEnded(eg.id);
});

t.test('keepHome: setuid bits, a planted .ssh link and a role\'s extra groups do not outlive their session', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const admin = await gw.grant('alice', 'kept', 'admin', '1h');
  const canary = join(work, 'canary');
  mkdirSync(canary, { mode: 0o755 });
  // The admin role is in the sudo group: leave a setgid-sudo binary, a setuid copy, a link for .ssh, and a process.
  const plant = await exec('alice', admin.id, [
    'cp /bin/true ./sgid && chgrp sudo ./sgid && chmod 2755 ./sgid',
    'cp /bin/true ./suid && chmod 4755 ./suid',
    `mv .ssh .ssh.old && ln -s ${canary} .ssh`,
    'setsid nohup sleep 300 >/dev/null 2>&1 < /dev/null &',
    'stat -c "%a %G" ./sgid ./suid',
  ].join('\n'));
  t.equal(plant.code, 0, plant.stderr);
  t.match(plant.stdout, /2755 sudo\n4755 /, 'planted (with the admin role\'s group)');
  await sessionsEnded(admin.id);
  const uid = Number((await gw.store.listLeases({ grantId: admin.id })).at(-1)!.data.uid);
  t.ok(uid > 0);
  await until(() => spawnSync('pgrep', ['-U', String(uid)]).status === 1, 10_000, 'no process of the uid');
  t.pass('its processes (the detached sleep too) ended with the last session of the identity there');

  const user = await gw.grant('alice', 'kept', 'user', '1h');
  const check = await exec('alice', user.id, 'stat -c "%a %G" ./sgid ./suid; test -L .ssh && echo link || echo dir; id -Gn');
  t.equal(check.code, 0, `logged in again despite the planted link (${check.stderr})`);
  const [sgid, suid, ssh, groups] = check.stdout.split('\n');
  t.match(sgid, /^755 /, 'the setgid bit is gone');
  t.notMatch(sgid, /sudo/, 'and the file is back in the identity\'s own group');
  t.match(suid, /^755 /, 'the setuid bit is gone');
  t.equal(ssh, 'dir', '.ssh is a real directory again');
  t.same(readdirSync(canary), [], 'nothing was written where the link pointed');
  t.notMatch(groups, /\bsudo\b/, 'the user role has no sudo');
  await sessionsEnded(user.id);

  // Two sessions at once (a user shell, an admin exec): ending the admin one kills only what holds sudo.
  const u2 = await gw.grant('alice', 'kept', 'user', '1h');
  const a2 = await gw.grant('alice', 'kept', 'admin', '1h');
  const su = await gw.secret('alice', u2.id);
  const term = new Terminal(su.secret, sshArgs(su.username));
  t.teardown(() => term.kill());
  await term.waitFor(/\$ $/m);
  const adm = await exec('alice', a2.id, 'setsid nohup sleep 301 >/dev/null 2>&1 < /dev/null & echo started');
  t.match(adm.stdout, /started/);
  await until(async () => (await gw.store.listSessions({ grantId: a2.id })).every((s) => s.state === 'ended'), 20_000, 'admin session ended');
  t.equal(spawnSync('pgrep', ['-f', 'sleep 301']).status, 1, 'the admin session\'s process (with sudo) was killed');
  const mark = term.out.length;
  term.type('echo still-$((40+2))\r');
  await term.waitFor(/still-42/, 10_000, mark);
  t.pass('the user session, without sudo, runs on');
  term.type('exit\r');
  await term.exited();
  await sessionsEnded(u2.id);
  t.same(usersWithPrefix(PREFIX), [], 'no account left');
});

t.test('exclusive check-out on the real checkout account: refused while held; check-in rotates; then the next identity', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const account = env.accounts.checkoutAccount;
  const direct = (pw: string) => runClient(pw, 'ssh', ['-p', String(env.sshd.port), `${account}@127.0.0.1`, 'id -un'], { timeoutMs: 15_000 });
  const held = await gw.grant('alice', 'shared', 'shared', '2h');
  const r = await exec('alice', held.id, 'id -un');
  t.equal(r.stdout.trim(), account);
  const refused = await gw.api('erin', 'POST', '/api/v1/requests', { target: 'shared', role: 'shared', duration: '1h', reason: 'me too' });
  t.equal(refused.status, 409);
  t.match(refused.body.message, /shared is checked out by alice until/);
  const file = join(gw.gw.ctx('ssh').config.dataDir, 'ssh', 'checkout', `shared--${account}`);
  await sessionsEnded(held.id);
  const before = gw.gw.key.unseal<{ p: string }>(readFileSync(file, 'utf8'))!.p;
  const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const p = spawn(process.execPath, [bin, 'checkin', held.id], { env: { ...process.env, TOLLGATE_URL: gw.url, TOLLGATE_TOKEN: gw.token('alice'), TOLLGATE_CLI_CONFIG: '/nonexistent' } });
    let stdout = ''; let stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
  t.equal(out.code, 0, out.stderr);
  await until(() => gw.gw.key.unseal<{ p: string }>(readFileSync(file, 'utf8'))!.p !== before, 15_000, 'rotation at check-in');
  t.not((await direct(before)).code, 0, 'the password before the check-in is dead');
  const eg = await gw.grant('erin', 'shared', 'shared', '1h');
  const er = await exec('erin', eg.id, 'id -un');
  t.equal(er.stdout.trim(), account, 'erin holds it now');
  await sessionsEnded(eg.id);
});

t.test('MFA at connect over SSH: after a registered key, keyboard-interactive asks for the authenticator code', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const keyFile = join(work, 'alice_key');
  spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', keyFile]);
  t.equal((await gw.registerKey('alice', keyFile, 'laptop')).status, 201);
  const grant = await gw.grant('alice', 'guarded', 'user', '1h');
  const opts = ['-i', keyFile, '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'PreferredAuthentications=publickey,keyboard-interactive', '-o', 'NumberOfPasswordPrompts=1', '-o', 'ConnectTimeout=10'];
  const withCode = (code: string) => runCmd('sshpass', ['-P', 'Authenticator code', '-p', code, 'ssh', ...opts, ...sshArgs('guarded'), 'id -un'], { timeoutMs: 30_000 });
  const batch = await runCmd('ssh', [...opts, '-o', 'BatchMode=yes', ...sshArgs('guarded'), 'id -un'], { timeoutMs: 30_000 });
  t.not(batch.code, 0, 'the key alone does not get in');
  t.match(batch.stderr, /Permission denied \(keyboard-interactive\)/, 'the key was accepted as the first factor: only the code is left');
  const cur = totp(new Secret(ALICE_TOTP), Date.now());
  const wrong = await withCode(cur === '123456' ? '654321' : '123456');
  t.not(wrong.code, 0, 'a wrong code is refused');
  t.match((await gw.store.listAudit({ action: 'access.refused' })).at(-1)?.data, { code: 'mfa_required', reason: /authenticator code is wrong/ });
  const ok = await withCode(totp(new Secret(ALICE_TOTP), Date.now() + 30_000));
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout.trim(), new RegExp(`^${PREFIX}alice-[a-z0-9]{4}$`), 'in, with key and code');
  t.match((await gw.store.listAudit({ action: 'access.allowed' })).at(-1)?.data, { via: 'public-key', mfa: 'code' });
  await sessionsEnded(grant.id);
  // A connection secret is MFA enough (it was only issued with one): password sign-in as usual.
  const s = await gw.secret('alice', grant.id);
  const pw = await runClient(s.secret, 'ssh', [...sshArgs(s.username), 'echo fine']);
  t.equal(pw.stdout.trim(), 'fine', pw.stderr);
});
