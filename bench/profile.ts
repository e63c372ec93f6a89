/**
 * `tollgate bench <scenario> --profile`: the gateway under the scenario's load runs with
 * `node --cpu-prof`; this reads the .cpuprofile files it writes and sums self time per function,
 * so a run says where the gateway's CPU went (not only how fast it was).
 */
import { existsSync, readdirSync, readFileSync, renameSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = join(import.meta.dirname, '..');

/** Node args for a gateway process started by a bench scenario (empty unless profiling). */
export function profileNodeArgs(): string[] {
  const dir = process.env.TOLLGATE_BENCH_PROFILE_DIR;
  return dir ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : [];
}

interface ProfileNode { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }
interface CpuProfile { nodes: ProfileNode[]; startTime: number; endTime: number; samples?: number[]; timeDeltas?: number[] }

export interface HotFunction { name: string; where: string; selfPct: number; selfMs: number }

/** Self time per function over every profile in dir, biggest first; percentages of the busy (non-idle) time. */
export function summarizeProfiles(dir: string, top = 15): { files: number; totalMs: number; functions: HotFunction[] } {
  const files = (existsSync(dir) ? readdirSync(dir) : []).filter((f) => f.endsWith('.cpuprofile'));
  const self = new Map<string, { name: string; where: string; us: number }>();
  let totalUs = 0;
  for (const f of files) {
    const p = JSON.parse(readFileSync(join(dir, f), 'utf8')) as CpuProfile;
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    const samples = p.samples ?? [];
    const deltas = p.timeDeltas ?? [];
    for (let i = 0; i < samples.length; i++) {
      const n = byId.get(samples[i]!);
      if (!n) continue;
      const us = Math.max(0, deltas[i + 1] ?? deltas[i] ?? 0);
      const { functionName, url, lineNumber } = n.callFrame;
      const name = functionName || '(anonymous)';
      if (name === '(idle)') continue; // waiting for I/O: not CPU time
      const file = url.startsWith('file://') ? relative(root, new URL(url).pathname) : url || '(native)';
      const where = url ? `${file}:${lineNumber + 1}` : file;
      const key = `${name}\u0000${where}`;
      const e = self.get(key) ?? self.set(key, { name, where, us: 0 }).get(key)!;
      e.us += us;
      totalUs += us;
    }
  }
  const functions = [...self.values()].sort((a, b) => b.us - a.us).slice(0, top)
    .map((e) => ({ name: e.name, where: e.where, selfMs: Math.round(e.us / 1000), selfPct: totalUs ? +((100 * e.us) / totalUs).toFixed(1) : 0 }));
  return { files: files.length, totalMs: Math.round(totalUs / 1000), functions };
}

export function renderHot(h: { totalMs: number; functions: HotFunction[] }): string {
  return [
    `self time | ms | function | where  (of ${h.totalMs} ms of sampled CPU time, idle excluded)`,
    ...h.functions.map((f) => `${f.selfPct.toFixed(1)}% | ${f.selfMs} | ${f.name} | ${f.where}`),
  ].join('\n');
}

/**
 * Profiling windows in the long-lived demo gateway (started with TOLLGATE_PROFILE_DIR): SIGUSR2
 * starts its profiler, the next SIGUSR2 stops it and it writes one .cpuprofile, moved here into
 * the scenario's folder.
 */
export class DemoProfiler {
  private running = false;
  constructor(private readonly dir: string) {}

  start(pid: number): void {
    if (this.running) return;
    process.kill(pid, 'SIGUSR2');
    this.running = true;
  }

  async stop(pid: number, into: string): Promise<void> {
    if (!this.running) return;
    const before = new Set(readdirSync(this.dir));
    process.kill(pid, 'SIGUSR2');
    this.running = false;
    for (let i = 0; i < 600; i++) {
      const fresh = readdirSync(this.dir).filter((f) => f.endsWith('.cpuprofile') && !before.has(f));
      if (fresh.length) {
        for (const f of fresh) renameSync(join(this.dir, f), join(into, f));
        return;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('the gateway wrote no profile within 60 s');
  }
}
