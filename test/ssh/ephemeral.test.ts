/**
 * End to end through the real gateway: OpenSSH sshd as the target, the real ssh client under
 * sshpass, ephemeral accounts minted per session.
 */
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { ManualClock } from '../../policies/clock.js';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { haveSshd, startTestSshd, runClient, runCmd, Terminal, until, usersWithPrefix, userExists, type TestSshd } from '../support/sshd.js';

// Unique per run: parallel runs of this file (several engineers, CI) never share accounts.
const PREFIX = `t${Math.random().toString(36).slice(2, 6).padEnd(4, '0')}-`;
const acct = (who: string, flags = '') => new RegExp(`${PREFIX}${who}-[a-z0-9]{4}`, flags);
const acctOnly = (who: string) => new RegExp(`^${PREFIX}${who}-[a-z0-9]{4}$`);
const clock = new ManualClock(Date.now());
let env: TestSshd;
let gw: TestGateway;
let port: number;

async function castOf(sessionId: string): Promise<string> {
  const recs = await gw.store.listRecordings({ sessionId });
  let out = '';
  for (const r of recs.filter((x) => x.kind === 'cast')) out += readFileSync((await gw.gw.recorder.pathOf(r.id))!, 'utf8');
  return out;
}
async function eventsOf(sessionId: string): Promise<string> {
  const recs = await gw.store.listRecordings({ sessionId });
  let out = '';
  for (const r of recs.filter((x) => x.kind === 'events')) out += readFileSync((await gw.gw.recorder.pathOf(r.id))!, 'utf8');
  return out;
}
async function endedSession(grantId: string) {
  return until(async () => (await gw.store.listSessions({ grantId })).find((s) => s.state === 'ended'), 15_000, 'session ended');
}

t.before(async () => {
  if (!haveSshd) return;
  env = await startTestSshd(t, { eph: 'web01', cert: 'web01-cert', pw: 'web01-pw' });
  const eph = { ...env.targets[0]!, credentials: { ...env.targets[0]!.credentials, prefix: PREFIX } };
  const down = { ...eph, name: 'down01', address: '127.0.0.1:1' };
  gw = await startTestGateway({
    targets: [eph, down], listeners: ['ssh'], clock, expiryWarning: '60s',
    policies: [{
      name: 'test', targets: ['*'], roles: ['*'], requesters: ['engineers'], approvers: ['approvers'],
      rules: [
        { pattern: '^rm -rf /', action: 'deny', message: 'recursive deletes from / are not allowed' },
        { pattern: '^shutdown', action: 'kill', message: 'shutting the host down ends your session' },
      ],
    }],
  });
  port = gw.listener('ssh').port;
});
let closed = false;
t.teardown(async () => {
  if (!closed) await gw?.close();
  // Safety net so a failed run never leaves accounts on this machine (the last test asserts there are none).
  for (const u of usersWithPrefix(PREFIX)) { spawnSync('pkill', ['-KILL', '-u', u]); spawnSync('userdel', ['-r', '-f', u]); }
});

t.test('ephemeral account: id -un, groups, account deleted at the end', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const grant = await gw.grant('alice', 'web01', 'admin');
  const s = await gw.secret('alice', grant.id);
  const printed = s.commands['ssh (sshpass)'] ?? '';
  t.match(printed, /^curl -fsS \S+\/api\/v1\/ssh\/known_hosts -o tollgate_known_hosts && sshpass -p \S+ ssh -p \d+ -o UserKnownHostsFile=tollgate_known_hosts -o StrictHostKeyChecking=yes /,
    'the printed command checks the gateway host key against known_hosts from the API');
  // As pasted (in an empty directory, no other known_hosts): ssh checks the gateway's key strictly.
  const cwd = mkdtempSync(join(tmpdir(), 'tg-ssh-cmd-'));
  t.teardown(() => rmSync(cwd, { recursive: true, force: true }));
  const r = await runCmd('sh', ['-c', `${printed} 'id -un; id -Gn; echo HOME=$HOME'`], { cwd, env: { ...process.env, HOME: cwd } });
  t.equal(r.code, 0, r.stderr);
  t.match(readFileSync(join(cwd, 'tollgate_known_hosts'), 'utf8'), new RegExp(`^\\[127\\.0\\.0\\.1\\]:${port} ssh-ed25519 AAAA\\S+\\n$`), 'known_hosts from the API names the gateway key');
  const [user, groups] = r.stdout.split('\n');
  t.match(user, acctOnly('alice'), 'logged in as the minted account');
  t.match(groups, /\bsudo\b/, 'the admin role adds the sudo group');
  const sess = await endedSession(grant.id);
  t.match(sess.endReason, /client_exit/);
  t.notOk(userExists(user!), 'account deleted with its home');
  const leases = await gw.store.listLeases({ sessionId: sess.id });
  t.equal(leases.length, 1);
  t.equal(leases[0]!.state, 'revoked');
  t.equal(leases[0]!.data.account, user);
  t.match(await eventsOf(sess.id), /"command":"id -un; id -Gn; echo HOME=\$HOME"/, 'exec command recorded');
  t.match(await castOf(sess.id), acct('alice'), 'exec output in the cast');
});

t.test('interactive shell: cast has keystrokes and output; deny swallows the line; kill ends the session', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const grant = await gw.grant('alice', 'web01', 'user');
  const s = await gw.secret('alice', grant.id);
  const term = new Terminal(s.secret, ['-p', String(port), `${s.username}@127.0.0.1`]);
  t.teardown(() => term.kill());
  await term.waitFor(/\$ $/m);
  term.type('echo hello-$((6*7))\r');
  await term.waitFor(/hello-42/);
  // Backspace editing is followed: "rm -rf /x" typed with a typo fixed.
  let mark = term.out.length;
  term.type('rm -rf /tmp/tollgate-nothing-herX\x7fe\r');
  await term.waitFor(/\[tollgate\] denied: recursive deletes from \/ are not allowed/, 10_000, mark);
  mark = term.out.length;
  term.type('echo still-$((1+1))\r');
  await term.waitFor(/still-2/, 10_000, mark);
  term.type('printf "%s\\n" "$(id -un)"\r');
  await term.waitFor(new RegExp(`${PREFIX}alice-[a-z0-9]{4}\\r?\\n`));
  const user = acct('alice').exec(term.out)![0]!;
  t.ok(userExists(user), 'account exists during the session');
  // '*' in the password field: no password can ever match, yet the account is not locked.
  t.equal(spawnSync('getent', ['shadow', user], { encoding: 'utf8' }).stdout.split(':')[1], '*', 'minted account has no usable password');
  // History recall is a documented limit: the line is marked, and the reconstructed text still checked.
  term.type('echo recalled\r');
  await term.waitFor(/[\r\n]recalled\r\n/);
  mark = term.out.length;
  term.type('\x1b[A\r');
  await term.waitFor(/[\r\n]recalled\r\n/, 10_000, mark);
  term.type('shutdown -h now\r');
  const code = await term.exited(15_000);
  t.not(code, 0, 'ssh exits non-zero when the session is killed');
  t.match(term.out, /shutting the host down ends your session/);
  const sess = await endedSession(grant.id);
  t.match(sess.endReason, /^forbidden/);
  t.notOk(userExists(user), 'account deleted after the kill');
  const cast = await castOf(sess.id);
  const lines = cast.trim().split('\n');
  t.match(JSON.parse(lines[0]!), { version: 2 }, 'asciicast v2 header');
  const frames = lines.slice(1).map((l) => JSON.parse(l) as [number, string, string]);
  const input = frames.filter((f) => f[1] === 'i').map((f) => f[2]).join('');
  const output = frames.filter((f) => f[1] === 'o').map((f) => f[2]).join('');
  t.match(input, /echo hello-\$\(\(6\*7\)\)\r/, 'keystrokes recorded');
  t.match(output, /hello-42/, 'output recorded');
  t.match(output, /\[tollgate\] denied/, 'the denial shown in the cast');
  t.notMatch(output, /No such file/, 'the denied line never ran');
  const recs = await gw.store.listRecordings({ sessionId: sess.id });
  const evFile = recs.find((r) => r.kind === 'events');
  t.match(readFileSync((await gw.gw.recorder.pathOf(evFile!.id))!, 'utf8'), /"type":"shell.line-unverified"/, 'the recalled line is marked as unverified');
  const audit = await gw.store.listAudit({ subject: sess.id });
  t.ok(audit.some((a) => a.action === 'session.rule.deny'), 'deny audited');
  t.ok(audit.some((a) => a.action === 'session.rule.kill'), 'kill audited');
});

t.test('exec: a denied command never runs', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const grant = await gw.grant('alice', 'web01', 'user');
  const s = await gw.secret('alice', grant.id);
  const r = await runClient(s.secret, 'ssh', ['-p', String(port), `${s.username}@127.0.0.1`, 'rm -rf /tmp/whatever']);
  t.equal(r.code, 1);
  t.match(r.stderr, /command denied: recursive deletes from \/ are not allowed/);
  await endedSession(grant.id);
});

t.test('kill from the API and expiry (ManualClock) end the session', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const grant = await gw.grant('alice', 'web01', 'user', '10m');
  const s1 = await gw.secret('alice', grant.id);
  const term = new Terminal(s1.secret, ['-p', String(port), `${s1.username}@127.0.0.1`]);
  t.teardown(() => term.kill());
  await term.waitFor(/\$ $/m);
  const live = await until(async () => (await gw.store.listSessions({ grantId: grant.id })).find((x) => x.state === 'active'));
  const started = Date.now();
  const k = await gw.api('carol', 'POST', `/api/v1/sessions/${live.id}/kill`, { reason: 'test kill' });
  t.ok(k.status === 200 || k.status === 202 || k.status === 204, `kill accepted (${k.status})`);
  const code = await term.exited(15_000);
  t.ok(Date.now() - started < 3000, 'closed promptly');
  t.not(code, 0);
  t.match(term.out, /session terminated by carol/);

  const s2 = await gw.secret('alice', grant.id);
  const term2 = new Terminal(s2.secret, ['-p', String(port), `${s2.username}@127.0.0.1`]);
  t.teardown(() => term2.kill());
  await term2.waitFor(/\$ $/m);
  clock.advance(grant.expiresAt - clock.now() - 30_000);
  await term2.waitFor(/Tollgate: your access to web01 ends in 60 seconds/);
  clock.advance(31_000);
  const code2 = await term2.exited(15_000);
  t.not(code2, 0);
  t.match(term2.out, /expired; the session is closed/);
  await until(async () => (await gw.store.listSessions({ grantId: grant.id })).every((x) => x.state === 'ended'));
  const leases = await gw.store.listLeases({ grantId: grant.id });
  t.same(leases.map((l) => [l.state, l.error]), [['revoked', null], ['revoked', null]], 'both leases revoked');
  t.same(usersWithPrefix(PREFIX), [], 'accounts gone after kill and expiry');
});

t.test('refusals: clear message, nothing created on the target', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const before = usersWithPrefix(PREFIX);
  // A wrong secret, several times.
  for (let i = 0; i < 5; i++) {
    const r = await runClient('not-a-secret-' + i, 'ssh', ['-p', String(port), 'web01@127.0.0.1', 'true'], { timeoutMs: 15_000 });
    t.not(r.code, 0);
    if (i === 0) t.match(r.stderr, /Tollgate: /, 'the client reads why');
  }
  // A used single-use secret.
  const grant = await gw.grant('alice', 'web01', 'user');
  const s = await gw.secret('alice', grant.id);
  t.equal((await runClient(s.secret, 'ssh', ['-p', String(port), `${s.username}@127.0.0.1`, 'true'])).code, 0);
  await endedSession(grant.id);
  const again = await runClient(s.secret, 'ssh', ['-p', String(port), `${s.username}@127.0.0.1`, 'true']);
  t.not(again.code, 0);
  t.match(again.stderr, /Tollgate: .*(used|already)/i, 'reused secret refused with a reason');
  // A locked identity (secrets are issued before the lock: a locked identity gets none from the API).
  const s2 = await gw.secret('alice', grant.id);
  const s3 = await gw.secret('alice', grant.id);
  const lock = await gw.api('carol', 'POST', '/api/v1/locks', { scope: 'identity', value: 'alice', reason: 'incident 42' });
  t.ok(lock.status === 201 || lock.status === 200, `lock created (${lock.status})`);
  t.teardown(async () => { if (lock.body?.id) await gw.api('carol', 'DELETE', `/api/v1/locks/${lock.body.id}`); });
  const locked = await runClient(s2.secret, 'ssh', ['-p', String(port), `${s2.username}@127.0.0.1`, 'true']);
  t.not(locked.code, 0);
  t.match(locked.stderr, /Tollgate: .*(lock|incident 42)/i, 'lock refusal says why');
  // An expired secret (ManualClock moves past the secret's lifetime).
  clock.advance(11 * 60_000);
  const expired = await runClient(s3.secret, 'ssh', ['-p', String(port), `${s3.username}@127.0.0.1`, 'true']);
  t.not(expired.code, 0);
  t.match(expired.stderr, /Tollgate: .*expired/i, 'expired secret refused with a reason');
  // Unknown target name.
  const unknown = await runClient('x', 'ssh', ['-p', String(port), 'no-such-target@127.0.0.1', 'true']);
  t.not(unknown.code, 0);
  t.match(unknown.stderr, /Tollgate: /);
  t.same(usersWithPrefix(PREFIX), before, 'no account created by any refusal');
});

t.test('bad input: garbage at the port, a target that is down; the gateway keeps serving', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const net = await import('node:net');
  const reply = await new Promise<string>((resolve) => {
    const c = net.connect(port, '127.0.0.1');
    let got = '';
    c.on('data', (d) => { got += d.toString('latin1'); });
    c.on('connect', () => c.write(Buffer.from('GET / HTTP/1.1\r\n\r\n\x00\xff\xfe garbage \x01\x02'.repeat(50), 'latin1')));
    c.on('close', () => resolve(got));
    c.on('error', () => resolve(got));
    setTimeout(() => c.destroy(), 5000);
  });
  t.match(reply, /^SSH-2\.0-Tollgate/, 'the gateway spoke SSH and then dropped the garbage');
  const grant = await gw.grant('erin', 'down01', 'user');
  const s = await gw.secret('erin', grant.id);
  const r = await runClient(s.secret, 'ssh', ['-p', String(port), `${s.username}@127.0.0.1`, 'true']);
  t.not(r.code, 0);
  t.match(r.stderr, /Tollgate: .*down01 \(127\.0\.0\.1:1\).*ECONNREFUSED/, 'the person reads that the target is down');
  const sess = await endedSession(grant.id);
  t.match(sess.endReason, /target_error/);
  // Still serving.
  const g2 = await gw.grant('alice', 'web01', 'user');
  const s2 = await gw.secret('alice', g2.id);
  const ok = await runClient(s2.secret, 'ssh', ['-p', String(port), `${s2.username}@127.0.0.1`, 'echo served']);
  t.equal(ok.stdout.trim(), 'served');
  await endedSession(g2.id);
});

t.test('gateway shutdown with a live session: the account is deleted, nothing is left', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const grant = await gw.grant('alice', 'web01', 'user');
  const s = await gw.secret('alice', grant.id);
  const term = new Terminal(s.secret, ['-p', String(port), `${s.username}@127.0.0.1`]);
  t.teardown(() => term.kill());
  await term.waitFor(/\$ $/m);
  t.equal(usersWithPrefix(PREFIX).length, 1, 'one live account');
  await gw.close();
  closed = true;
  const code = await term.exited(15_000);
  t.not(code, 0);
  t.match(term.out, /shutting down/);
  t.same(usersWithPrefix(PREFIX), [], 'no ephemeral account left behind by any test');
});
