/**
 * Shared bench plumbing. Benchmarks use only the CLI and the public API: the gateway runs as
 * `tollgate demo` in its own process (real demo servers), its demo.json gives the API tokens and
 * the demo servers' direct addresses, so every scenario can measure the direct path, the anchor
 * tool and Tollgate side by side in one run.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../protocols/net.js';
import type { HotFunction } from './profile.js';

export { freePort };

export const execFileP = promisify(execFile);
export const root = join(import.meta.dirname, '..');
export const tollgateBin = join(root, 'proxy', 'bin', 'tollgate.js');

export interface BenchRow {
  scenario: string;
  /** What was measured, e.g. "pgbench -S prepared c=16". */
  case: string;
  /** 'tollgate' | 'direct' | 'nginx' | 'pgbouncer' | ... */
  tool: string;
  metric: string;
  value: number;
  unit: string;
  /** Higher is better (throughput) or lower is better (latency, time). */
  better: 'higher' | 'lower';
  note?: string;
}

/** One run as bench/index.ts writes it (bench/results/latest.json) and bench/report.ts renders it. */
export interface BenchResult {
  at: string;
  machine: { cpus: string; cores: number; memoryGiB: number; kernel: string; node: string };
  /** 1-minute load average when the run started and when it ended (other work on the machine). */
  load?: { start: number; end: number };
  smoke: boolean;
  rows: BenchRow[];
  gateway: Record<string, { cpuMs: number; peakRssMiB: number }>;
  errors: Record<string, string>;
  /** Scenarios re-run after the full run (--merge), with when. */
  rerun?: Record<string, string>;
  /** With --profile: self time per function in the gateway, per scenario. */
  profiles?: Record<string, { dir: string; files: number; totalMs: number; functions: HotFunction[] }>;
}

export interface BenchOptions {
  /** A tiny, fast version (tests run it): one short round, smallest cases. */
  smoke: boolean;
  log: (msg: string) => void;
}

export interface Scenario {
  name: string;
  describe: string;
  /** Runs its own gateway (not the shared demo): the demo's CPU and memory are not its figures. */
  ownGateway?: boolean;
  run(opts: BenchOptions, demo: () => Promise<DemoGateway>): Promise<BenchRow[]>;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (!s.length) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** CPU time (ms) and peak resident memory (KiB) of a process, from /proc. */
export function processStats(pid: number): { cpuMs: number; peakRssKiB: number; rssKiB: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
  return { cpuMs: (ticks * 1000) / 100, peakRssKiB: kib('VmHWM'), rssKiB: kib('VmRSS') };
}

/** utime+stime, and the CPU of reaped children (cutime+cstime), of one process, in ms; 0 once it is gone. */
function ownCpuMs(pid: number, reaped: boolean): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12]) + (reaped ? Number(f[13]) + Number(f[14]) : 0)) * 1000) / 100;
  } catch { return 0; }
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      try { out.push(...readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)); } catch { /* gone */ }
    }
  } catch { /* gone */ }
  return out;
}

/**
 * CPU time (ms) of a server and everything under it: the process, its live descendants, and the
 * children it already reaped (a PostgreSQL backend or an sshd session that ended is counted in its
 * parent's cutime/cstime). For servers that fork per connection (postgres, sshd, nginx workers).
 */
export function treeCpuMs(pid: number): number {
  let total = 0;
  const seen = new Set<number>();
  const walk = (p: number) => {
    if (seen.has(p)) return;
    seen.add(p);
    total += ownCpuMs(p, true);
    for (const c of childrenOf(p)) walk(c);
  };
  walk(pid);
  return total;
}

/** The pid of the process listening on a local TCP port (ss -ltnp), or null. */
export async function listenerPid(port: number): Promise<number | null> {
  try {
    const { stdout } = await execFileP('ss', ['-Hltnp', `sport = :${port}`]);
    const m = /pid=(\d+)/.exec(stdout);
    return m ? Number(m[1]) : null;
  } catch { return null; }
}

/** Measures a server's CPU over a stretch of work; `null` pid measures nothing (the row is left out). */
export function cpuMeter(pid: number | null, tree = true): { start(): void; ms(): number } | null {
  if (!pid) return null;
  const read = () => (tree ? treeCpuMs(pid) : processStats(pid).cpuMs);
  let t0 = 0;
  return { start() { t0 = read(); }, ms: () => read() - t0 };
}

export interface DemoGateway {
  pid: number;
  url: string;
  demo: {
    gatewayUrl: string;
    listeners: Record<string, { host: string; port: number }>;
    users: Record<string, { token: string; groups: string[] }>;
    targets: { name: string; protocol: string; risk: string; roles: string[]; address: string }[];
    direct: Record<string, { address: string; credentials: any }>;
  };
  api(user: string, method: string, path: string, body?: unknown): Promise<any>;
  /** Request (and approve as needed) a grant; returns its id. */
  grant(user: string, target: string, role: string, duration?: string): Promise<string>;
  secret(user: string, grantId: string, reusable?: boolean): Promise<{ secret: string; host: string; port: number; username: string }>;
  stats(): ReturnType<typeof processStats>;
  stop(): Promise<void>;
}

/** Start `tollgate demo` in a temp dir and wait for its demo.json. */
export async function startDemoGateway(log: (m: string) => void, opts: { profileDir?: string } = {}): Promise<DemoGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'tg-bench-'));
  // setpriv --pdeathsig: the demo (and the servers it started) goes away with the bench process.
  // --no-directory: no scenario uses the demo's Samba DC, and it would queue behind (and hold up) other DCs on the machine.
  const child: ChildProcess = spawn('setpriv', ['--pdeathsig', 'SIGTERM', '--', process.execPath, tollgateBin, 'demo', '--dir', dir, '--port', '0', '--no-directory'], {
    stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, TOLLGATE_LOG_LEVEL: 'warn', ...(opts.profileDir ? { TOLLGATE_PROFILE_DIR: opts.profileDir } : {}) },
  });
  let err = '';
  child.stderr!.on('data', (d) => { err = (err + d).slice(-4000); });
  const file = join(dir, 'demo.json');
  for (let i = 0; i < 720 && !existsSync(file); i++) {
    if (child.exitCode !== null) throw new Error(`tollgate demo exited: ${err}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  if (!existsSync(file)) { child.kill('SIGKILL'); throw new Error(`tollgate demo did not start: ${err}`); }
  await new Promise((r) => setTimeout(r, 200));
  const demo = JSON.parse(readFileSync(file, 'utf8')) as DemoGateway['demo'];
  log(`gateway (tollgate demo) pid ${child.pid} at ${demo.gatewayUrl}`);
  const api = async (user: string, method: string, path: string, body?: unknown) => {
    const res = await fetch(demo.gatewayUrl + path, {
      method, headers: { authorization: `Bearer ${demo.users[user]!.token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    }).catch((e: Error & { cause?: Error }) => {
      throw new Error(`${method} ${path}: ${e.message}${e.cause ? ` (${e.cause.message})` : ''}${child.exitCode !== null ? `; the demo gateway exited: ${err.slice(-1500)}` : ''}`);
    });
    const j = await res.json().catch(() => null);
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(j)}`);
    return j;
  };
  return {
    pid: child.pid!, url: demo.gatewayUrl, demo, api,
    async grant(user, target, role, duration = '2h') {
      let r = await api(user, 'POST', '/api/v1/requests', { target, role, duration, reason: 'benchmark' });
      for (const approver of ['bob', 'dave']) {
        if (r.state !== 'pending') break;
        r = await api(approver, 'POST', `/api/v1/requests/${r.id}/approve`, { comment: 'bench' });
      }
      if (!r.grantId) throw new Error(`no grant: ${JSON.stringify(r)}`);
      return r.grantId as string;
    },
    async secret(user, grantId, reusable = false) {
      return api(user, 'POST', `/api/v1/grants/${grantId}/secret`, { reusable, ttl: '2h' });
    },
    stats: () => processStats(child.pid!),
    async stop() {
      child.kill('SIGINT');
      await new Promise((r) => { if (child.exitCode !== null) r(null); else child.once('close', r); });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function splitAddress(a: string): { host: string; port: number } {
  const i = a.lastIndexOf(':');
  return { host: a.slice(0, i), port: Number(a.slice(i + 1)) };
}
