/**
 * Whom the gateway talks to over SSH, with a real sshd and the real ssh client: without
 * options.hostKeyFingerprint the target's host key is pinned at the first `targets check` (trust on
 * first use, stored, audited); when sshd's host key changes, a session is refused with an SSH
 * disconnect naming the reason and nothing is minted; `tollgate targets repin` (SOC) trusts the
 * new key (audited), after which sessions work again. A checkout target with no pin gets one from
 * an admin connection before its first session.
 */
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { haveSshd, startTestSshd, runClient, until, usersWithPrefix, type TestSshd } from '../support/sshd.js';

const PREFIX = `h${Math.random().toString(36).slice(2, 6).padEnd(4, '0')}-`;
const bin = join(import.meta.dirname, '..', '..', 'proxy', 'bin', 'tollgate.js');
let env: TestSshd;
let gw: TestGateway;
let port: number;

if (!haveSshd) throw new Error('these tests need root and OpenSSH sshd (apt-get install openssh-server)');

t.before(async () => {
  env = await startTestSshd(t, { eph: 'tofu01', cert: 'tofu01-cert', pw: 'tofu01-pw' });
  const [eph, , pw] = env.targets;
  // No hostKeyFingerprint: the gateway must learn (pin) the key itself.
  gw = await startTestGateway({
    targets: [{ ...eph!, options: {}, credentials: { ...eph!.credentials, prefix: PREFIX } }, { ...pw!, options: {} }],
    listeners: ['ssh'],
  });
  port = gw.listener('ssh').port;
});
t.teardown(async () => {
  await gw?.close();
  for (const u of usersWithPrefix(PREFIX)) { spawnSync('pkill', ['-KILL', '-u', u]); spawnSync('userdel', ['-r', '-f', u]); }
});

/** The fingerprint sshd serves now, as the OpenSSH client sees it. */
function served(): string {
  const r = spawnSync('sh', ['-c', `ssh-keyscan -t ed25519 -p ${env.sshd.port} 127.0.0.1 2>/dev/null | ssh-keygen -lf -`], { encoding: 'utf8' });
  return /(SHA256:\S+)/.exec(r.stdout)?.[1] ?? '';
}

/** A new host key for sshd (same address): what a MITM, or a reinstalled host, looks like. */
async function rotateHostKey(): Promise<string> {
  const before = served();
  const key = join(env.sshd.dir, 'ssh_host_ed25519_key');
  rmSync(key, { force: true });
  rmSync(`${key}.pub`, { force: true });
  const r = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'rotated', '-f', key]);
  if (r.status !== 0) throw new Error(`ssh-keygen: ${r.stderr}`);
  process.kill(Number(readFileSync(join(env.sshd.dir, 'sshd.pid'), 'utf8').trim()), 'SIGHUP');
  return until(() => { const now = served(); return now && now !== before ? now : null; }, 15_000, 'sshd to serve its new host key');
}

function cli(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [bin, ...args], { env: { ...process.env, TOLLGATE_URL: gw.url, TOLLGATE_TOKEN: gw.token('carol'), TOLLGATE_CLI_CONFIG: '/nonexistent/cli.json' } });
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => { out += d; });
    c.stderr.on('data', (d) => { err += d; });
    c.on('close', (code) => resolve({ code, out, err }));
  });
}

const pinOf = async (target: string) => {
  const raw = await gw.store.getKv(`protocol:ssh:hostkey:${target}`);
  return raw ? JSON.parse(raw) as { fingerprint: string; keyType: string } : null;
};

t.test('first targets check pins the host key, audited; a session then works', async (t) => {
  const original = env.sshd.hostKeyFingerprint;
  t.equal(await pinOf('tofu01'), null, 'nothing pinned before');
  const check = await gw.api('carol', 'POST', '/api/v1/targets/tofu01/check', {});
  t.equal(check.body.ok, true, check.body.detail);
  t.match(check.body.detail, `host key ${original} (pinned)`);
  t.match(await pinOf('tofu01'), { fingerprint: original, keyType: 'ssh-ed25519' }, 'the pin is stored');
  const audit = await gw.store.listAudit({ action: 'ssh.hostkey.pinned', subject: 'tofu01' });
  t.equal(audit.length, 1, 'pinning is audited once');
  t.match(audit[0]!.data, { fingerprint: original, via: 'admin connection', address: env.targets[0]!.address });
  t.equal(audit[0]!.actor, 'system');

  const grant = await gw.grant('alice', 'tofu01', 'user');
  const s = await gw.secret('alice', grant.id);
  const r = await runClient(s.secret, 'ssh', ['-p', String(port), `${s.username}@127.0.0.1`, 'id -un']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout.trim(), new RegExp(`^${PREFIX}alice-[a-z0-9]{4}$`));
  await until(async () => (await gw.store.listSessions({ grantId: grant.id })).find((x) => x.state === 'ended'), 15_000, 'session ended');
  t.same(usersWithPrefix(PREFIX), [], 'the session account is gone');
  t.equal((await gw.store.listAudit({ action: 'ssh.hostkey.pinned' })).length, 1, 'the later connections did not pin again');
});

t.test('a changed host key is refused: SSH disconnect with the reason, nothing minted, audited as an alert', async (t) => {
  const pinned = (await pinOf('tofu01'))!.fingerprint;
  const now = await rotateHostKey();
  t.not(now, pinned);
  const grant = await gw.grant('alice', 'tofu01', 'user');
  const s = await gw.secret('alice', grant.id);
  const r = await runClient(s.secret, 'ssh', ['-p', String(port), `${s.username}@127.0.0.1`, 'id -un']);
  t.not(r.code, 0, 'the client fails');
  t.match(r.stderr, /Tollgate: refusing to connect to tofu01: its SSH host key changed \(pinned SHA256:\S+, now offered SHA256:\S+\); if the key was rotated on purpose, re-pin it: tollgate targets repin tofu01/,
    'the person reads why, on the SSH connection');
  const sess = await until(async () => (await gw.store.listSessions({ grantId: grant.id })).find((x) => x.state === 'ended'), 15_000, 'session ended');
  t.match(sess.endReason, /^target_error: refusing to connect to tofu01/);
  t.same(await gw.store.listLeases({ sessionId: sess.id }), [], 'no lease: nothing was created on the impostor');
  t.same(usersWithPrefix(PREFIX), [], 'no account anywhere');
  const refused = await gw.store.listAudit({ action: 'ssh.hostkey.refused', subject: 'tofu01' });
  t.equal(refused.length, 1);
  t.match(refused[0]!.data, { expected: pinned, offered: now, source: 'pin', via: 'admin connection' });
  const alert = (await gw.store.listAudit({ action: 'notify' })).find((a) => a.data.action === 'ssh.hostkey.refused');
  t.ok(alert, 'the refusal raised an alert');
  t.equal((await pinOf('tofu01'))!.fingerprint, pinned, 'the pin did not move');

  // A client without a channel (ssh -N) gets the reason as the SSH disconnect message itself.
  const s2 = await gw.secret('alice', grant.id);
  const n = await runClient(s2.secret, 'ssh', ['-N', '-p', String(port), `${s2.username}@127.0.0.1`]);
  t.not(n.code, 0);
  t.match(n.stderr, /Received disconnect from 127\.0\.0\.1 port \d+:11: Tollgate: refusing to connect to tofu01: its SSH host key changed/, 'as an SSH disconnect');

  const check = await gw.api('carol', 'POST', '/api/v1/targets/tofu01/check', {});
  t.equal(check.body.ok, false);
  t.match(check.body.detail, /its SSH host key changed/);
});

t.test('repin: SOC only, with an optional expected fingerprint, audited; sessions work again', async (t) => {
  const pinned = (await pinOf('tofu01'))!.fingerprint;
  const now = served();
  const denied = await gw.api('alice', 'POST', '/api/v1/targets/tofu01/repin', {});
  t.equal(denied.status, 403, 'not for engineers');
  const bad = await gw.api('carol', 'POST', '/api/v1/targets/tofu01/repin', { fingerprint: 'not-a-fingerprint' });
  t.equal(bad.status, 400);
  const wrong = await gw.api('carol', 'POST', '/api/v1/targets/tofu01/repin', { fingerprint: `SHA256:${'A'.repeat(43)}` });
  t.equal(wrong.status, 409);
  t.match(wrong.body.message, `offers the host key ${now}, not SHA256:AAAA`);
  t.equal((await pinOf('tofu01'))!.fingerprint, pinned, 'a mismatching repin changes nothing');
  t.ok((await gw.store.listAudit({ action: 'target.repin_failed', subject: 'tofu01' })).length, 'the failed attempt is audited');

  const r = await cli(['targets', 'repin', 'tofu01', '--fingerprint', now]);
  t.equal(r.code, 0, r.err);
  t.match(r.out, `tofu01: host key ${now} pinned (was ${pinned})`);
  t.equal((await pinOf('tofu01'))!.fingerprint, now);
  const audit = await gw.store.listAudit({ action: 'target.repinned', subject: 'tofu01' });
  t.equal(audit.length, 1);
  t.equal(audit[0]!.actor, 'carol');
  t.match(audit[0]!.data, { previous: pinned, pinned: now });

  const grant = await gw.grant('alice', 'tofu01', 'user');
  const s = await gw.secret('alice', grant.id);
  const ok = await runClient(s.secret, 'ssh', ['-p', String(port), `${s.username}@127.0.0.1`, 'echo back']);
  t.equal(ok.code, 0, ok.stderr);
  t.equal(ok.stdout.trim(), 'back');
});

t.test('a checkout target without a pin: the first session pins through an admin connection, then logs in', async (t) => {
  t.equal(await pinOf('tofu01-pw'), null);
  const grant = await gw.grant('alice', 'tofu01-pw', 'shared');
  const s = await gw.secret('alice', grant.id);
  const r = await runClient(s.secret, 'ssh', ['-p', String(port), `${s.username}@127.0.0.1`, 'id -un']);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout.trim(), env.accounts.checkoutAccount);
  t.equal((await pinOf('tofu01-pw'))?.fingerprint, served(), 'pinned to what sshd serves');
  const audit = await gw.store.listAudit({ action: 'ssh.hostkey.pinned', subject: 'tofu01-pw' });
  t.equal(audit.length, 1);
  t.equal(audit[0]!.data.via, 'admin connection', 'the session connection itself never pins');
  await until(async () => (await gw.store.listSessions({ grantId: grant.id })).find((x) => x.state === 'ended'), 15_000, 'session ended');
});
