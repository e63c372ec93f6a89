/** Test helpers for the ssh module: a real OpenSSH sshd on loopback with the demo accounts, cleaned up in teardown. */
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';

import pino from 'pino';
import { startSshd, createDemoAccounts, removeDemoAccounts, demoTargets, type SshdInstance, type DemoAccounts } from '../../protocols/ssh/demo.js';
import type { TargetConfig } from '../../protocols/types.js';

export const haveSshd = existsSync('/usr/sbin/sshd') && process.getuid?.() === 0;

interface Teardown { teardown(fn: () => unknown): void }

export interface TestSshd {
  sshd: SshdInstance;
  accounts: DemoAccounts;
  dir: string;
  targets: TargetConfig[];
}

/** sshd + demo accounts; target names get a suffix so parallel test files never collide. */
export async function startTestSshd(t: Teardown, names?: { eph: string; cert: string; pw: string }): Promise<TestSshd> {
  const dir = mkdtempSync(join(tmpdir(), 'tg-sshd-'));
  const sshd = await startSshd(join(dir, 'sshd'));
  const accounts = createDemoAccounts();
  const onExit = () => removeDemoAccounts(accounts);
  process.once('exit', onExit);
  t.teardown(async () => {
    process.off('exit', onExit);
    await sshd.stop();
    removeDemoAccounts(accounts);
    rmSync(dir, { recursive: true, force: true });
  });
  return { sshd, accounts, dir, targets: demoTargets(sshd, accounts, names) };
}

export function userExists(name: string): boolean {
  return spawnSync('id', ['-u', name]).status === 0;
}

/** Local accounts whose names start with prefix (ephemeral accounts left behind). */
export function usersWithPrefix(prefix: string): string[] {
  const r = spawnSync('getent', ['passwd'], { encoding: 'utf8' });
  return r.stdout.split('\n').map((l) => l.split(':')[0]!).filter((n) => n && n.startsWith(prefix));
}

export const quietLog = pino({ level: process.env.TG_TEST_LOG ?? 'silent' });


export const SSH_OPTS = ['-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'PubkeyAuthentication=no',
  '-o', 'PreferredAuthentications=password', '-o', 'ConnectTimeout=10'];

export interface RunResult { code: number | null; stdout: string; stderr: string }

/** Run a native client under sshpass (cmd is 'ssh', 'scp' or 'sftp'), with a hard timeout. */
export function runClient(secret: string, cmd: string, args: string[], opts: { input?: string; timeoutMs?: number; extraOpts?: string[]; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return runCmd('sshpass', ['-p', secret, cmd, ...(opts.extraOpts ?? SSH_OPTS), ...args], opts);
}

/** Run a command without blocking the event loop (the gateway under test runs in this process). */
export function runCmd(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env, cwd: opts.cwd });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    const t = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    p.on('close', (code) => { clearTimeout(t); resolve({ code, stdout, stderr }); });
    p.stdin.on('error', () => undefined); // a refused ssh exits before reading its stdin (EPIPE)
    p.stdin.end(opts.input ?? '');
  });
}

/** An interactive `ssh -tt` under sshpass: type keystrokes, wait for output. */
export class Terminal {
  readonly proc: ChildProcessWithoutNullStreams;
  out = '';
  code: number | null | undefined = undefined;
  private waiters: (() => void)[] = [];
  readonly closed: Promise<number | null>;
  constructor(secret: string, args: string[], extraOpts: string[] = SSH_OPTS) {
    this.proc = spawn('sshpass', ['-p', secret, 'ssh', '-tt', ...extraOpts, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const add = (d: Buffer) => { this.out += d.toString(); for (const w of this.waiters.splice(0)) w(); };
    this.proc.stdout.on('data', add);
    this.proc.stderr.on('data', add);
    this.proc.stdin.on('error', () => undefined); // typing into a session that has just ended
    this.closed = new Promise((resolve) => this.proc.on('close', (code) => { this.code = code; for (const w of this.waiters.splice(0)) w(); resolve(code); }));
  }
  type(s: string): void { this.proc.stdin.write(s); }
  async waitFor(re: RegExp, timeoutMs = 15_000, from = 0): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!re.test(this.out.slice(from))) {
      if (this.code !== undefined) throw new Error(`terminal closed before ${re}; output:\n${this.out}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${re}; output:\n${this.out}`);
      await new Promise<void>((r) => { this.waiters.push(r); setTimeout(r, 200); });
    }
  }
  kill(): void { if (this.code === undefined) this.proc.kill('SIGKILL'); }
  /** The exit code, or a failure (and the client killed) if it does not exit in time. */
  async exited(timeoutMs = 15_000): Promise<number | null> {
    const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), timeoutMs).unref());
    const r = await Promise.race([this.closed, timer]);
    if (r === 'timeout') { this.kill(); throw new Error(`client did not exit within ${timeoutMs} ms; output:\n${this.out}`); }
    return r;
  }
}

/** CPU time this thread (the event loop) has used, in ms (Linux: /proc/thread-self/schedstat). */
export function loopCpuMs(): number {
  return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]) / 1e6;
}

export interface Echoes {
  /** Wall-clock time from each keystroke to its echo (ms). */
  wall: number[];
  /** CPU time the event loop spent meanwhile (ms): the gateway's own share of that wait. */
  cpu: number[];
}

/**
 * Type n printable characters one at a time into an interactive shell and measure, for each, how
 * long until its echo arrives. The gateway under test runs in this process, so a stalled event
 * loop shows up here: as a late echo, and as event-loop CPU time spent before it. The line is
 * cleared (Ctrl-U) afterwards.
 */
export async function echoLatencies(term: Terminal, n: number, gapMs = 20): Promise<Echoes> {
  const out: Echoes = { wall: [], cpu: [] };
  for (let i = 0; i < n; i++) {
    const ch = String.fromCharCode(97 + (i % 26));
    const mark = term.out.length;
    const c0 = loopCpuMs();
    const t0 = performance.now();
    term.type(ch);
    await term.waitFor(new RegExp(ch), 10_000, mark);
    out.wall.push(performance.now() - t0);
    out.cpu.push(loopCpuMs() - c0);
    await new Promise((r) => setTimeout(r, gapMs));
  }
  term.type('\x15');
  return out;
}

const pct = (v: number[], p: number) => { const s = [...v].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * p))]!; };

/**
 * Issue 25's bound for a session sharing the gateway with a hostile one: every keystroke echoes
 * within 50 ms of the gateway's time. The bound is on event-loop CPU time spent while the echo was
 * due (a loop busy with the hostile session's work for longer than that fails it, whatever the
 * machine does); wall-clock echoes on this shared 2-core machine also include time the scheduler
 * gave other processes, so they only have to stay within a generous bound (p90 250 ms, max 1 s)
 * and are reported.
 */
export function assertEcho(t: { ok(v: unknown, m: string): void }, during: Echoes, quiet: Echoes, loopMaxMs: number): void {
  const cpuMax = Math.max(...during.cpu);
  const f = (x: number) => x.toFixed(1);
  t.ok(cpuMax < 50, `echo during the hostile stream: at most ${f(cpuMax)} ms of gateway CPU time before an echo (median ${f(pct(during.cpu, 0.5))} ms); `
    + `wall-clock p90 ${f(pct(during.wall, 0.9))} ms, max ${f(Math.max(...during.wall))} ms, median ${f(pct(during.wall, 0.5))} ms `
    + `(quiet: max ${f(Math.max(...quiet.wall))} ms); event-loop delay max ${f(loopMaxMs)} ms`);
  t.ok(pct(during.wall, 0.9) < 250 && Math.max(...during.wall) < 1000, 'the session keeps echoing (wall-clock p90 < 250 ms, max < 1 s)');
}

export async function until<T>(fn: () => Promise<T | null | undefined | false> | T | null | undefined | false, timeoutMs = 15_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
