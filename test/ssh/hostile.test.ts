/**
 * One hostile SSH peer costs only its own session, through the real gateway with a real sshd and
 * ssh2 clients: a second live session keeps echoing keystrokes within 50 ms while another sends the
 * Ctrl-W workload that used to block the gateway for seconds; a session whose SFTP inspector would
 * hold more than limits.sessionBufferBytes ends with resource_limit; a throw while inspecting a
 * session's keystrokes ends that session (reason error), not the gateway.
 */
import t from 'tap';
import { mkdirSync, chmodSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import ssh2 from 'ssh2';
import { startTestGateway, DEFAULT_POLICIES, type TestGateway } from '../support/gateway.js';
import { haveSshd, startTestSshd, until, usersWithPrefix, type TestSshd } from '../support/sshd.js';
import { LineEditor } from '../../protocols/ssh/inspector/line-editor.js';

if (!haveSshd) throw new Error('these tests need root and /usr/sbin/sshd');

// Unique per run: parallel runs of this file never share accounts.
const PREFIX = `t${Math.random().toString(36).slice(2, 6).padEnd(4, '0')}-`;
let env: TestSshd;
let gw: TestGateway;
let port: number;

t.before(async () => {
  env = await startTestSshd(t);
  const eph = env.targets[0]!;
  gw = await startTestGateway({
    targets: [{ ...eph, credentials: { ...eph.credentials, prefix: PREFIX } }],
    listeners: ['ssh'],
    // Denies only a line of exactly 16,000 a's and a space: every b of the workload must have been erased by its Ctrl-W.
    policies: [{ ...DEFAULT_POLICIES[0]!, rules: [{ pattern: '^a{16000} $', action: 'deny', message: 'the hostile line, reconstructed' }] }],
    extra: { limits: { sessionBufferBytes: '2MiB' } },
  });
  port = gw.listener('ssh').port;
});
t.teardown(async () => {
  await gw?.close();
  for (const u of usersWithPrefix(PREFIX)) { spawnSync('pkill', ['-KILL', '-u', u]); spawnSync('userdel', ['-r', '-f', u]); }
});

interface Conn { c: ssh2.Client; closed: Promise<void>; disconnect: () => string }

async function connect(): Promise<Conn & { grantId: string }> {
  const grant = await gw.grant('alice', 'web01', 'user');
  const s = await gw.secret('alice', grant.id);
  let disconnect = '';
  const c = new ssh2.Client();
  const closed = new Promise<void>((r) => c.on('close', () => r()));
  await new Promise<void>((resolve, reject) => {
    c.once('ready', () => resolve());
    c.on('error', reject);
    // The reason the gateway gives in SSH_MSG_DISCONNECT (ssh2 reports it through its debug hook only).
    const debug = (line: string) => { const m = /Received DISCONNECT \(\d+, "([^]*)"\)/.exec(line); if (m) disconnect = m[1]!; };
    c.connect({ host: '127.0.0.1', port, username: s.username, password: s.secret, readyTimeout: 20_000, debug });
  });
  t.teardown(() => c.end());
  return { c, closed, grantId: grant.id, disconnect: () => disconnect };
}

async function shell(c: ssh2.Client): Promise<{ st: ssh2.ClientChannel; out: () => string }> {
  const st = await new Promise<ssh2.ClientChannel>((resolve, reject) => c.shell({ rows: 24, cols: 200, term: 'xterm' }, (err, x) => (err ? reject(err) : resolve(x))));
  let out = '';
  st.on('data', (d: Buffer) => { out += d.toString(); });
  await until(() => /\$ $/m.test(out), 15_000, 'prompt');
  return { st, out: () => out };
}

/** Type one key at a time and time each echo (ms); `load` runs just before each key. */
async function echoTimes(sh: { st: ssh2.ClientChannel; out: () => string }, n: number, load: () => void = () => {}): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    load();
    const before = sh.out().length;
    const t0 = performance.now();
    sh.st.write('x');
    await new Promise<void>((resolve) => {
      const check = () => { if (sh.out().length > before && sh.out().slice(before).includes('x')) { sh.st.off('data', check); resolve(); } };
      sh.st.on('data', check);
      check();
    });
    times.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 10));
  }
  return times;
}

async function sessionEnded(grantId: string) {
  return until(async () => (await gw.store.listSessions({ grantId })).find((s) => s.state === 'ended'), 20_000, 'session ended');
}

t.test('a second session keeps echoing within 50 ms while a hostile one sends the Ctrl-W workload', async (t) => {
  const victim = await shell((await connect()).c);
  const hostileConn = await connect();
  const hostile = await shell(hostileConn.c);
  // The target just swallows the bytes (a canonical tty, no echo): the cost under test is the gateway's.
  hostile.st.write('stty -echo; cat > /dev/null\r');
  await new Promise((r) => setTimeout(r, 300));
  hostile.st.write(`${'a'.repeat(16_000)} `);
  await new Promise((r) => setTimeout(r, 300));
  const baseline = await echoTimes(victim, 5);
  let pairs = 0;
  // The workload, sent right before each of the victim's keys (so every echo waits behind
  // it): b + Ctrl-W after a 16,000-character word; each Ctrl-W took ~360 ms before.
  const during = await echoTimes(victim, 20, () => { hostile.st.write('b\x17'.repeat(5)); pairs += 5; });
  hostile.st.write('\r');
  await until(() => /denied: the hostile line, reconstructed/.test(hostile.out()), 20_000, 'the gateway to check the reconstructed line');
  const pmax = Math.max(...during);
  t.equal(pairs, 100, `${pairs} b + Ctrl-W pairs were sent while measuring`);
  t.comment(`victim echo: quiet ${baseline.map((x) => x.toFixed(1)).join(' ')}; under load ${during.map((x) => x.toFixed(1)).join(' ')}`);
  t.ok(pmax < 50, `victim echo p-max ${pmax.toFixed(1)} ms over 20 keystrokes under load (bound 50 ms; quiet: ${Math.max(...baseline).toFixed(1)} ms)`);
  t.pass('the gateway reconstructed the hostile line exactly (every b erased by its Ctrl-W)');
});

t.test('an SFTP client that makes the inspector hold more than limits.sessionBufferBytes ends with resource_limit; others go on', async (t) => {
  const dest = `/tmp/tg-hostile-${randomBytes(4).toString('hex')}`;
  mkdirSync(dest, { mode: 0o1777 });
  chmodSync(dest, 0o1777);
  t.teardown(() => rmSync(dest, { recursive: true, force: true }));
  const other = await shell((await connect()).c);
  const h = await connect();
  const sftp = await new Promise<ssh2.SFTPWrapper>((resolve, reject) => h.c.sftp((err, s) => (err ? reject(err) : resolve(s))));
  const handle = await new Promise<Buffer>((resolve, reject) => sftp.open(`${dest}/sparse.bin`, 'w', (err, hd) => (err ? reject(err) : resolve(hd))));
  // Writes far ahead of offset 0 wait in the inspector (it hashes in order): 32 KiB each, 4 MiB in all.
  const piece = Buffer.alloc(32 * 1024, 1);
  const writes: Promise<unknown>[] = [];
  for (let k = 0; k < 128; k++) {
    writes.push(new Promise((resolve) => sftp.write(handle, piece, 0, piece.length, 64 * 1024 * 1024 + k * piece.length, (err) => resolve(err))));
  }
  await Promise.race([Promise.all(writes), h.closed]);
  await h.closed;
  const ended = await sessionEnded(h.grantId);
  t.match(ended.endReason, /^resource_limit: Tollgate: the session needed more than 2097152 bytes of gateway memory \(limits\.sessionBufferBytes\)/);
  t.match(h.disconnect(), /limits\.sessionBufferBytes/, 'the client is told why in its disconnect message');
  const audit = await gw.store.listAudit({ subject: ended.id });
  t.ok(audit.some((a) => a.action === 'session.resource_limit' && a.data['limit'] === 2 * 1024 * 1024), 'audited with the budget and its limit');
  t.same((await gw.store.listLeases({ state: ['pending', 'active', 'revoking'] })).filter((l) => l.sessionId === ended.id), [], 'its lease is revoked');
  // The other session, on the same gateway, still answers.
  other.st.write('echo still-$((40+2))\r');
  await until(() => /still-42/.test(other.out()), 10_000, 'the other session to answer');
  t.pass('the other session keeps working');
});

t.test('a throw while inspecting keystrokes ends only that session (reason error), logged and audited', async (t) => {
  const feed = LineEditor.prototype.feed;
  LineEditor.prototype.feed = function (this: LineEditor, chunk: Buffer) {
    if (chunk.includes('\x00planted-bug')) throw new TypeError('planted bug in the line editor');
    return feed.call(this, chunk);
  };
  t.teardown(() => { LineEditor.prototype.feed = feed; });
  const other = await shell((await connect()).c);
  const h = await connect();
  const sh = await shell(h.c);
  sh.st.write('\x00planted-bug');
  await h.closed;
  const ended = await sessionEnded(h.grantId);
  t.match(ended.endReason, /^error: Tollgate: an internal error ended this session \(the gateway keeps running\)/);
  t.match(h.disconnect(), /an internal error ended this session/, 'the client is told in its disconnect message');
  t.match(sh.out(), /Tollgate: an internal error ended this session/, 'and on its terminal');
  const audit = await gw.store.listAudit({ subject: ended.id });
  t.ok(audit.some((a) => a.action === 'session.error' && a.data['error'] === 'TypeError: planted bug in the line editor' && a.data['origin'] === 'handler'), 'audited');
  other.st.write('echo alive-$((6*7))\r');
  await until(() => /alive-42/.test(other.out()), 10_000, 'the other session to answer');
  t.pass('the gateway and the other session keep running');
});
