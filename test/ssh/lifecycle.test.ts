/**
 * Ending paths and channel details through the real gateway: client drop, target drop, window
 * changes, the env allow-list, alert rules and the live bus.
 */
import t from 'tap';
import { readFileSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import ssh2 from 'ssh2';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { haveSshd, startTestSshd, runClient, Terminal, until, usersWithPrefix, userExists, type TestSshd } from '../support/sshd.js';
import type { LiveFrame } from '../../recorder/types.js';

// Unique per run: parallel runs of this file (several engineers, CI) never share accounts.
const PREFIX = `t${Math.random().toString(36).slice(2, 6).padEnd(4, '0')}-`;
const acct = (who: string, flags = '') => new RegExp(`${PREFIX}${who}-[a-z0-9]{4}`, flags);
const acctOnly = (who: string) => new RegExp(`^${PREFIX}${who}-[a-z0-9]{4}$`);
let env: TestSshd;
let gw: TestGateway;
let port: number;

t.before(async () => {
  if (!haveSshd) return;
  env = await startTestSshd(t);
  const eph = env.targets[0]!;
  gw = await startTestGateway({
    targets: [{ ...eph, credentials: { ...eph.credentials, prefix: PREFIX } }],
    listeners: ['ssh'],
    // One test hammers the port with a dozen wrong secrets, the next ones sign in from the same
    // address: keep the failed-secret throttle (tested in test/proxy/throttle.test.ts) out of the way.
    gateway: { maxFailures: 100 },
    policies: [{
      name: 'test', targets: ['*'], roles: ['*'], requesters: ['engineers'], approvers: ['approvers'],
      rules: [{ pattern: '^whoami', action: 'alert', message: 'whoami is watched' }],
    }],
  });
  port = gw.listener('ssh').port;
});
t.teardown(async () => {
  await gw?.close();
  for (const u of usersWithPrefix(PREFIX)) { spawnSync('pkill', ['-KILL', '-u', u]); spawnSync('userdel', ['-r', '-f', u]); }
  void rmSync;
});

/** The gateway as an ssh2 client sees it (for window changes and env, which sshpass cannot drive). */
function connectClient(secret: string, username: string): Promise<ssh2.Client> {
  return new Promise((resolve, reject) => {
    const c = new ssh2.Client();
    c.on('ready', () => resolve(c));
    c.on('error', reject);
    c.connect({ host: '127.0.0.1', port, username, password: secret, readyTimeout: 20_000 });
  });
}

async function sessionOf(grantId: string, state: 'active' | 'ended') {
  return until(async () => (await gw.store.listSessions({ grantId })).find((s) => s.state === state), 15_000, `session ${state}`);
}

t.test('window changes reach the target and the cast; env allow-list; live bus', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const grant = await gw.grant('alice', 'web01', 'user');
  const s = await gw.secret('alice', grant.id, { reusable: true });
  const c = await connectClient(s.secret, s.username);
  t.teardown(() => c.end());
  const live = await sessionOf(grant.id, 'active');
  const frames: LiveFrame[] = [];
  const sub = gw.gw.recorder.live.subscribe(live.id, (f) => frames.push(f));
  t.teardown(() => sub.unsubscribe());
  const stream = await new Promise<ssh2.ClientChannel>((resolve, reject) => c.shell({ rows: 24, cols: 80, term: 'xterm' }, (err, st) => (err ? reject(err) : resolve(st))));
  let out = '';
  stream.on('data', (d: Buffer) => { out += d.toString(); });
  await until(() => /\$ $/m.test(out), 15_000, 'prompt');
  stream.setWindow(30, 100, 0, 0);
  await new Promise((r) => setTimeout(r, 200));
  stream.write('stty size\r');
  await until(() => /[\r\n]30 100\r\n/.test(out), 10_000, 'stty size 30 100');
  t.pass('the target sees the new window size');
  await until(() => frames.some((f) => f.type === 'o' && String(f.data).includes('30 100')), 5_000, 'live output');
  t.ok(frames.some((f) => f.type === 'r'), 'a resize frame on the live bus');
  stream.end('exit\r');
  await new Promise((r) => stream.on('close', r));

  // env: LANG passes the allow-list, FOO does not.
  const envOut = await new Promise<string>((resolve, reject) => {
    c.exec('printf "%s|%s" "$LANG" "$FOO"', { env: { LANG: 'C.UTF-8', FOO: 'bar' } }, (err, st) => {
      if (err) return reject(err);
      let o = '';
      st.on('data', (d: Buffer) => { o += d; });
      st.on('close', () => resolve(o));
    });
  });
  t.equal(envOut, 'C.UTF-8|', 'LANG forwarded, FOO dropped');
  c.end();
  const ended = await sessionOf(grant.id, 'ended');
  const recs = await gw.store.listRecordings({ sessionId: ended.id });
  let cast = '';
  for (const r of recs.filter((x) => x.kind === 'cast')) cast += readFileSync((await gw.gw.recorder.pathOf(r.id))!, 'utf8');
  t.match(cast, /\[[\d.]+,\s*"r",\s*"100x30"\]/, 'the resize is in the cast');
});

t.test('exit status and stderr pass through', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const grant = await gw.grant('alice', 'web01', 'user');
  const s = await gw.secret('alice', grant.id);
  const r = await runClient(s.secret, 'ssh', ['-p', String(port), `${s.username}@127.0.0.1`, 'echo out; echo err >&2; exit 7']);
  t.equal(r.code, 7);
  t.equal(r.stdout, 'out\n');
  t.match(r.stderr, /^err$/m);
  await sessionOf(grant.id, 'ended');
});

t.test('alert rule: the command runs and is audited', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const grant = await gw.grant('alice', 'web01', 'user');
  const s = await gw.secret('alice', grant.id);
  const r = await runClient(s.secret, 'ssh', ['-p', String(port), `${s.username}@127.0.0.1`, "whoami # ALTER ROLE x PASSWORD 'pw-in-cmd'"]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout.trim(), acctOnly('alice'));
  const sess = await sessionOf(grant.id, 'ended');
  const audit = await gw.store.listAudit({ subject: sess.id });
  t.ok(audit.some((a) => a.action === 'session.rule.alert'), 'alert audited');
  t.ok(audit.some((a) => a.action === 'ssh.exec' && a.data['command'] === "whoami # ALTER ROLE x PASSWORD '***'"), 'the command audited, redacted');
  t.notOk(JSON.stringify(await gw.store.listAudit({ limit: 10_000 })).includes('pw-in-cmd'), 'no password literal in any audit event');
  const recorded = (await gw.store.listRecordings({ sessionId: sess.id })).map((x) => readFileSync(x.path, 'utf8')).join('\n');
  t.ok(recorded.includes("PASSWORD '***'") && !recorded.includes('pw-in-cmd'), 'nor in the recording (exec event, cast title)');
});

t.test('client drop: the session ends and the account is deleted', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const grant = await gw.grant('alice', 'web01', 'user');
  const s = await gw.secret('alice', grant.id);
  const c = await connectClient(s.secret, s.username);
  const lease = await until(async () => (await gw.store.listLeases({ grantId: grant.id })).find((l) => l.state === 'active'), 15_000, 'lease');
  const account = String(lease.data.account);
  t.ok(userExists(account));
  (c as unknown as { _sock: { destroy(): void } })._sock.destroy();
  const sess = await sessionOf(grant.id, 'ended');
  t.match(sess.endReason, /^client_exit/);
  t.notOk(userExists(account), 'account deleted after the drop');
});

t.test('target drop: the person is told, the session ends, the account is deleted', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const grant = await gw.grant('alice', 'web01', 'user');
  const s = await gw.secret('alice', grant.id);
  const term = new Terminal(s.secret, ['-p', String(port), `${s.username}@127.0.0.1`]);
  t.teardown(() => term.kill());
  await term.waitFor(/\$ $/m);
  const lease = await until(async () => (await gw.store.listLeases({ grantId: grant.id })).find((l) => l.state === 'active'), 15_000, 'lease');
  // Kill the sshd process serving this login on the target: its connection to the gateway drops.
  const pids = spawnSync('pgrep', ['-f', `^sshd: ${String(lease.data.account)}`], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number);
  t.ok(pids.length >= 1, 'found the per-login sshd process');
  for (const pid of pids) process.kill(pid, 'SIGKILL');
  const code = await term.exited(15_000);
  t.not(code, 0);
  const sess = await sessionOf(grant.id, 'ended');
  t.match(sess.endReason, /^target_closed/);
  t.match(term.out, /target closed the connection/);
  t.notOk(userExists(String(lease.data.account)), 'account deleted');
});

t.test('kill, lock and revoke end a live session quickly; wrong secrets in parallel do not disturb it', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const openShell = async (grantId: string) => {
    const s = await gw.secret('alice', grantId);
    const c = await connectClient(s.secret, s.username);
    const st = await new Promise<ssh2.ClientChannel>((resolve, reject) => c.shell({ rows: 24, cols: 80, term: 'xterm' }, (err, x) => (err ? reject(err) : resolve(x))));
    let out = '';
    let exit: number | null = null;
    st.on('data', (d: Buffer) => { out += d; });
    st.on('exit', (code: number) => { exit = code; });
    const closed = new Promise<number>((resolve) => c.on('close', () => resolve(Date.now())));
    await until(() => /\$ $/m.test(out), 15_000, 'prompt');
    return { c, st, closed, out: () => out, exit: () => exit };
  };

  // Wrong secrets hammering the port while a session runs.
  const g0 = await gw.grant('alice', 'web01', 'user');
  const a = await openShell(g0.id);
  const attempts = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => connectClient(`wrong-${i}`, 'web01')));
  t.ok(attempts.every((r) => r.status === 'rejected'), 'every wrong secret refused');
  a.st.write('echo alive-$((20+22))\r');
  await until(() => /alive-42/.test(a.out()), 10_000, 'live session still answers');
  t.pass('the live session kept working');

  const live = await sessionOf(g0.id, 'active');
  const t0 = Date.now();
  const k = await gw.api('carol', 'POST', `/api/v1/sessions/${live.id}/kill`, { reason: 'speed test' });
  t.ok(k.status < 300, `kill accepted (${k.status})`);
  const closedAt = await a.closed;
  t.ok(closedAt - t0 < 1000, `client closed ${closedAt - t0} ms after the kill request`);
  t.equal(a.exit(), 1, 'exit status 1');
  t.match(a.out(), /terminated by carol: speed test/);

  const g1 = await gw.grant('alice', 'web01', 'user');
  const b = await openShell(g1.id);
  const rv = await gw.api('alice', 'POST', `/api/v1/grants/${g1.id}/revoke`, { reason: 'done early' });
  t.ok(rv.status < 300, `grant revoked (${rv.status})`);
  await b.closed;
  t.match(b.out(), /revoked/);
  t.match((await sessionOf(g1.id, 'ended')).endReason, /^revoked/);

  const g2 = await gw.grant('alice', 'web01', 'user');
  const c = await openShell(g2.id);
  const lock = await gw.api('carol', 'POST', '/api/v1/locks', { scope: 'grant', value: g2.id, reason: 'suspicious' });
  t.ok(lock.status < 300, `lock created (${lock.status})`);
  await c.closed;
  t.match(c.out(), /locked/);
  t.match((await sessionOf(g2.id, 'ended')).endReason, /^locked/);
  await until(async () => (await gw.store.listSessions({ state: 'active' })).length === 0, 15_000, 'all ended');
  t.same(usersWithPrefix(PREFIX), [], 'no account left');
});
