/**
 * `npm run bench [-- <name> ...] [-- --smoke]`: runs each scenario against Tollgate and the tool
 * users would use instead, side by side in one run, prints one table with ratios and writes it as
 * JSON (bench/results/latest.json). Gateway CPU time and peak memory are recorded per scenario.
 */
import { mkdirSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { cpus, totalmem, release, loadavg } from 'node:os';
import { join } from 'node:path';
import { writeFileSync as wf } from 'node:fs';
import { root, startDemoGateway, type BenchResult, type BenchRow, type DemoGateway, type Scenario } from './harness.js';

export type { BenchResult };
import { DemoProfiler, renderHot, summarizeProfiles } from './profile.js';

const SCENARIOS: Record<string, () => Promise<Scenario>> = {
  postgres: async () => (await import('./postgres.js')).scenario,
  mysql: async () => (await import('./mysql.js')).scenario,
  ssh: async () => (await import('./ssh.js')).scenario,
  setup: async () => (await import('./setup.js')).scenario,
  kill: async () => (await import('./kill.js')).scenario,
  scale: async () => (await import('./scale.js')).scenario,
  http: async () => wrapExternal('http', 'keep-alive GETs through Tollgate vs nginx vs direct', './http.js'),
  vnc: async () => (await import('./vnc.js')).scenario,
  rdp: async () => (await import('./rdp.js')).scenario,
};

/** Scenarios written by protocol modules export run({ smoke }) and manage their own servers. */
async function wrapExternal(name: string, describe: string, path: string): Promise<Scenario> {
  const file = join(import.meta.dirname, path.replace(/\.js$/, '.ts'));
  return {
    name, describe, ownGateway: true,
    async run(opts) {
      if (!existsSync(file)) throw new Error(`bench/${name}.ts is not written yet`);
      const mod = await import(path) as { run(o: { smoke: boolean }): Promise<Partial<BenchRow>[]> };
      return (await mod.run({ smoke: opts.smoke })).map((r) => ({ scenario: name, better: 'higher', unit: '', metric: '', case: '', tool: '', value: NaN, ...r }) as BenchRow);
    },
  };
}

export const scenarioNames = Object.keys(SCENARIOS);


function ratioTable(rows: BenchRow[]): string {
  const lines: string[] = [];
  const keyOf = (r: BenchRow) => `${r.scenario}\u0000${r.case}\u0000${r.metric}`;
  const groups = new Map<string, BenchRow[]>();
  for (const r of rows) (groups.get(keyOf(r)) ?? groups.set(keyOf(r), []).get(keyOf(r))!).push(r);
  lines.push(['scenario', 'case', 'metric', 'tollgate', 'anchors', 'ratio (tollgate / anchor)'].join(' | '));
  lines.push('--- | --- | --- | --- | --- | ---');
  for (const g of groups.values()) {
    // Tollgate's rows: one gateway process (tollgate) and, where measured, gateway.workers: 2 (tollgate-2w).
    const tgs = g.filter((r) => r.tool === 'tollgate' || r.tool === 'tollgate-2w');
    const anchors = g.filter((r) => !tgs.includes(r));
    const fmt = (r: BenchRow) => `${Number.isFinite(r.value) ? +r.value.toPrecision(4) : 'n/a'} ${r.unit}`;
    const ratios = tgs.flatMap((tg) => anchors.map((a) => `${tgs.length > 1 ? `${tg.tool} ÷ ` : ''}${a.tool}: ${Number.isFinite(tg.value / a.value) ? (tg.value / a.value).toFixed(2) : 'n/a'}${a.better === 'higher' ? '' : ' (lower is better)'}`));
    const tgText = tgs.map((tg) => (tg.tool === 'tollgate' ? fmt(tg) : `${tg.tool} ${fmt(tg)}`)).join(', ');
    lines.push([g[0]!.scenario, g[0]!.case, g[0]!.metric, tgText || '-', anchors.map((a) => `${a.tool} ${fmt(a)}`).join(', ') || '-', ratios.join(', ') || '-'].join(' | '));
  }
  return lines.join('\n');
}

/**
 * Re-run scenarios of the last full run: their rows replace the old ones in `out`; the run keeps
 * the full run's date and says which scenarios were re-run when. True when every scenario then has
 * rows or an error (a complete run to write the README from).
 */
export function mergeInto(out: string, result: BenchResult, picked: string[]): boolean {
  const prev = JSON.parse(readFileSync(out, 'utf8')) as BenchResult;
  const rerun = { ...(prev.rerun ?? {}), ...Object.fromEntries(picked.map((n) => [n, result.at])) };
  const merged: BenchResult = {
    ...prev,
    rerun,
    rows: [...prev.rows.filter((r) => !picked.includes(r.scenario)), ...result.rows]
      .sort((a, b) => scenarioNames.indexOf(a.scenario) - scenarioNames.indexOf(b.scenario)),
    gateway: Object.fromEntries(scenarioNames.flatMap((n) => { const g = picked.includes(n) ? result.gateway[n] : prev.gateway[n]; return g ? [[n, g]] : []; })),
    errors: { ...Object.fromEntries(Object.entries(prev.errors).filter(([n]) => !picked.includes(n))), ...result.errors },
  };
  writeFileSync(out, JSON.stringify({ ...merged, table: ratioTable(merged.rows) }, null, 2));
  return scenarioNames.every((n) => merged.rows.some((r) => r.scenario === n) || merged.errors[n]);
}

/** `tollgate bench --merge-from <file>`: a separate run of some scenarios (bench -o <file>) merged into the full run. */
export function mergeFile(from: string, into = join(root, 'bench', 'results', 'latest.json')): string[] {
  const part = JSON.parse(readFileSync(from, 'utf8')) as BenchResult;
  if (part.smoke) throw new Error(`${from} is a smoke run`);
  const picked = [...new Set([...part.rows.map((r) => r.scenario), ...Object.keys(part.errors)])];
  mergeInto(into, part, picked);
  return picked;
}

export async function runBench(names: string[], opts: { smoke: boolean; out?: string; profile?: boolean; merge?: boolean; log?: (m: string) => void }): Promise<BenchResult> {
  const log = opts.log ?? ((m: string) => process.stderr.write(`[bench] ${m}\n`));
  const picked = names.length ? names : scenarioNames;
  for (const n of picked) if (!SCENARIOS[n]) throw new Error(`unknown scenario ${n}; known: ${scenarioNames.join(', ')}`);
  let profileDir: string | null = null;
  if (opts.profile) {
    profileDir = join(root, 'bench', 'results', `profile-${picked.join('-')}-${Date.now()}`);
    mkdirSync(profileDir, { recursive: true });
  }
  // Profiling: the demo gateway profiles between two SIGUSR2 (proxy/profiling.ts), one window per
  // scenario, so its start-up is not counted; gateways a scenario starts itself (http's `tollgate
  // serve`) run under --cpu-prof into the scenario's folder (TOLLGATE_BENCH_PROFILE_DIR).
  const profiler = profileDir ? new DemoProfiler(profileDir) : null;
  let demo: DemoGateway | null = null;
  let starting: Promise<DemoGateway> | null = null;
  // Started once, on first use; a failed start fails every scenario that needs it, quickly.
  const getDemo = () => (starting ??= startDemoGateway(log, profileDir ? { profileDir } : {}).then((d) => {
    demo = d;
    profiler?.start(d.pid);
    return d;
  }));
  const result: BenchResult = {
    at: new Date().toISOString(),
    machine: { cpus: cpus()[0]?.model ?? 'unknown', cores: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30), kernel: release(), node: process.version },
    load: { start: +loadavg()[0]!.toFixed(2), end: NaN },
    smoke: opts.smoke, rows: [], gateway: {}, errors: {},
  };
  try {
    for (const n of picked) {
      const sc = await SCENARIOS[n]!();
      log(`scenario ${n}: ${sc.describe}`);
      const before = demo ? (demo as DemoGateway).stats() : null;
      if (demo) { try { wf(`/proc/${(demo as DemoGateway).pid}/clear_refs`, '5'); } catch { /* not permitted */ } }
      const scenarioProfileDir = profileDir ? join(profileDir, n) : null;
      if (scenarioProfileDir) {
        mkdirSync(scenarioProfileDir, { recursive: true });
        process.env.TOLLGATE_BENCH_PROFILE_DIR = scenarioProfileDir;
        if (demo) profiler!.start((demo as DemoGateway).pid);
      }
      // Smoke: postgres and ssh also start a 2-worker gateway and sign in through Chromium; on a loaded
      // machine (load 50) they took more than 240 s.
      const limitMs = opts.smoke ? 600_000 : 45 * 60_000;
      let timer: NodeJS.Timeout | undefined;
      try {
        const rows = await Promise.race([
          sc.run({ smoke: opts.smoke, log }, getDemo),
          new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`did not finish within ${limitMs / 1000} s`)), limitMs); }),
        ]);
        result.rows.push(...rows);
      } catch (e) {
        result.errors[n] = (e as Error).message;
        log(`scenario ${n} failed: ${(e as Error).message}`);
      } finally {
        clearTimeout(timer);
      }
      if (demo && !sc.ownGateway) {
        const after = (demo as DemoGateway).stats();
        result.gateway[n] = { cpuMs: Math.round(after.cpuMs - (before?.cpuMs ?? 0)), peakRssMiB: Math.round(after.peakRssKiB / 1024) };
      }
      if (scenarioProfileDir) {
        delete process.env.TOLLGATE_BENCH_PROFILE_DIR;
        if (demo) await profiler!.stop((demo as DemoGateway).pid, scenarioProfileDir).catch((e: Error) => log(`profile of ${n}: ${e.message}`));
        const hot = summarizeProfiles(scenarioProfileDir);
        if (hot.files) {
          (result.profiles ??= {})[n] = { dir: scenarioProfileDir, ...hot };
          process.stdout.write(`\nGateway CPU profile of ${n} (${hot.files} file(s) in ${scenarioProfileDir}):\n${renderHot(hot)}\n`);
        }
      }
    }
  } finally {
    if (demo) await (demo as DemoGateway).stop();
  }
  result.load!.end = +loadavg()[0]!.toFixed(2);
  const table = ratioTable(result.rows);
  process.stdout.write(`\n${table}\n\nGateway CPU time / peak memory per scenario: ${Object.entries(result.gateway).map(([k, v]) => `${k} ${v.cpuMs} ms / ${v.peakRssMiB} MiB`).join('; ') || '-'}\n`);
  if (Object.keys(result.errors).length) process.stdout.write(`Failed: ${Object.entries(result.errors).map(([k, v]) => `${k}: ${v}`).join('; ')}\n`);
  // A profiled run is not a full run's figures: it goes to its own file, which the README's goals
  // table reads the named costs from (bench/report.ts loadProfiles).
  const out = opts.out ?? join(root, 'bench', 'results', opts.smoke ? 'smoke.json' : opts.profile ? `profile-${picked.join('-')}.json` : 'latest.json');
  mkdirSync(join(out, '..'), { recursive: true });
  let covers = picked.length === scenarioNames.length;
  if (opts.merge && !opts.smoke && existsSync(out) && !covers) {
    covers = mergeInto(out, result, picked);
    log(`merged into ${out} (re-run: ${picked.join(', ')})`);
  } else {
    writeFileSync(out, JSON.stringify({ ...result, table }, null, 2));
  }
  if (!opts.smoke && !opts.profile && (!opts.out || opts.merge) && covers) {
    const { updateReadme } = await import('./report.js');
    if (updateReadme(out)) log('README.md Performance section updated from this run');
  }
  return result;
}
