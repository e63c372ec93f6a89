/**
 * The process safety net, in child processes: an error raised in a session's scope (right in its
 * handler, or later in a timer or promise the handler started) ends only that session, logged and
 * audited, and the gateway keeps serving; an error outside any session is logged, audited as
 * gateway.crashed, and the process exits non-zero, after which a restarted gateway's reaper revokes
 * the leases of the sessions it lost. `tollgate serve` itself installs the net.
 */
import t from 'tap';
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { openSqliteStore } from '../../proxy/store/sqlite.js';
import { validateConfig } from '../../proxy/config.js';
import { Gateway } from '../../proxy/gateway.js';
import { fakeModule, FakeTarget } from '../support/fake-module.js';

const root = join(import.meta.dirname, '..', '..');

interface Child { proc: ChildProcess; stderr: () => string; next(pred: (m: any) => boolean): Promise<any>; exit: Promise<number | null> }

function startChild(): Child {
  const proc = fork(join(root, 'test/support/safety-child.ts'), [], { execArgv: ['--import=tsx'], stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  let err = '';
  proc.stderr!.on('data', (d) => { err += d; });
  proc.stdout!.resume();
  const inbox: any[] = [];
  const waiters: (() => void)[] = [];
  proc.on('message', (m) => { inbox.push(m); for (const w of waiters.splice(0)) w(); });
  const exit = new Promise<number | null>((r) => proc.on('exit', (code) => { for (const w of waiters.splice(0)) w(); r(code); }));
  return {
    proc, stderr: () => err, exit,
    async next(pred) {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const i = inbox.findIndex(pred);
        if (i >= 0) return inbox.splice(i, 1)[0];
        if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`no such message from the child (exit ${proc.exitCode}); stderr:\n${err}`);
        await new Promise<void>((r) => { waiters.push(r); setTimeout(r, 100); });
      }
    },
  };
}

async function stateOf(c: Child): Promise<{ state: Record<string, boolean>; accounts: number }> {
  c.proc.send({ cmd: 'state' });
  return c.next((m) => 'state' in m);
}

async function untilState(c: Child, want: Record<string, boolean>): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const s = await stateOf(c);
    if (Object.entries(want).every(([k, v]) => s.state[k] === v)) return;
    if (Date.now() > deadline) throw new Error(`sessions: ${JSON.stringify(s.state)}, wanted ${JSON.stringify(want)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

t.test('errors in a session end that session only; an error outside any session exits, and the reaper cleans up after', async (t) => {
  const c = startChild();
  t.teardown(() => { if (c.proc.exitCode === null) c.proc.kill('SIGKILL'); });
  const { dataDir } = await c.next((m) => m.ready);
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  t.same((await stateOf(c)).state, { a: false, b: false, c: false, d: false }, 'four live sessions');

  c.proc.send({ cmd: 'throw-later', session: 'a' });
  await untilState(c, { a: true });
  c.proc.send({ cmd: 'reject-later', session: 'b' });
  await untilState(c, { b: true });
  c.proc.send({ cmd: 'throw-now', session: 'c' });
  await untilState(c, { c: true });
  const mid = await stateOf(c);
  t.same(mid.state, { a: true, b: true, c: true, d: false }, 'each error ended its own session; d still runs');
  t.equal(mid.accounts, 1, "the ended sessions' leases were revoked; d's account exists");
  t.equal(c.proc.exitCode, null, 'the gateway process keeps running');

  c.proc.send({ cmd: 'throw-outside' });
  const code = await c.exit;
  t.equal(code, 1, 'an error outside any session exits non-zero');
  t.match(c.stderr(), /tollgate: fatal uncaughtException: Error: boom outside any session/);

  const store = await openSqliteStore(join(dataDir, 'tollgate.db'));
  const errors = await store.listAudit({ action: 'session.error' });
  t.same(errors.map((e) => [e.data['origin'], e.data['error']]).sort(), [
    ['handler', 'TypeError: boom now in c'],
    ['uncaughtException', 'Error: boom later in a'],
    ['unhandledRejection', 'Error: rejected in b'],
  ], 'each attributed error is audited with where it came from');
  const ended = await store.listAudit({ action: 'session.ended' });
  t.same(ended.map((e) => e.data['reason']), ['error', 'error', 'error'], 'the three sessions ended with reason error');
  const crashed = await store.listAudit({ action: 'gateway.crashed' });
  t.equal(crashed.length, 1);
  t.match(crashed[0]!.data, { origin: 'uncaughtException', error: 'Error: boom outside any session' });
  const live = await store.listLeases({ state: ['pending', 'active', 'revoking'] });
  t.equal(live.length, 1, "d's lease is left by the crash");
  await store.close();

  // The supervisor restarts the gateway on the same data: the reaper revokes what the crash left.
  const target = new FakeTarget();
  const config = validateConfig({
    gateway: { dataDir, id: 'test', logLevel: 'silent', reaperInterval: '1h' },
    listeners: { http: { host: '127.0.0.1', port: 0 } },
    targets: [{ name: 'box', protocol: 'fake', address: 'mem', roles: [{ name: 'user' }] }],
  }, '<test>', new Map([['fake', fakeModule(target)]]));
  const gw = await new Gateway({ config, log: pino({ level: 'silent' }), modules: new Map([['fake', fakeModule(target)]]) }).start();
  t.teardown(() => gw.stop());
  t.same(await gw.store.listLeases({ state: ['pending', 'active', 'revoking'] }), [], 'the reaper revoked the lost lease at start-up');
  t.equal(target.revokeCalls.length, 1);
});

t.test('`tollgate serve` installs the net: a crash outside any session is audited before the process exits', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-serve-crash-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cfg = join(dir, 'gateway.yaml');
  writeFileSync(cfg, `gateway:\n  dataDir: ${join(dir, 'data')}\n  logLevel: error\nlisteners:\n  http: {host: 127.0.0.1, port: 0}\n`);
  const trigger = join(dir, 'crash-now');
  // The preload is test code: it throws from a timer of its own once the trigger file exists.
  const preload = join(dir, 'crash.mjs');
  writeFileSync(preload, `import { existsSync } from 'node:fs';\nsetInterval(() => { if (existsSync(${JSON.stringify(trigger)})) throw new Error('planted crash'); }, 50).unref();\n`);
  const p = spawn(process.execPath, ['--import', preload, join(root, 'proxy/bin/tollgate.js'), 'serve', '--config', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => { if (p.exitCode === null) p.kill('SIGKILL'); });
  let out = '';
  let err = '';
  p.stdout.on('data', (d) => { out += d; });
  p.stderr.on('data', (d) => { err += d; });
  const exit = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
  const deadline = Date.now() + 60_000;
  while (!/Tollgate is running at/.test(out)) {
    if (p.exitCode !== null || Date.now() > deadline) throw new Error(`serve did not start:\n${out}\n${err}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  writeFileSync(trigger, '');
  t.equal(await exit, 1, 'exits non-zero');
  t.match(err, /tollgate: fatal uncaughtException: Error: planted crash/);
  t.match(out + err, /internal error outside any session: exiting/, 'logged');
  const store = await openSqliteStore(join(dir, 'data', 'tollgate.db'));
  t.teardown(() => store.close());
  const crashed = await store.listAudit({ action: 'gateway.crashed' });
  t.equal(crashed.length, 1, 'gateway.crashed is in the audit log');
  t.match(crashed[0]!.data, { origin: 'uncaughtException', error: 'Error: planted crash' });
});
