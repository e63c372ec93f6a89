/**
 * Writes the README's Performance block (between <!-- bench:start --> and <!-- bench:end -->) from
 * a full run's results file (bench/results/latest.json): `tollgate bench --write-readme [--from
 * file]`; `npm run bench` does it after a full run. The block has the run's machine and load, a
 * GOALS table (issue 18's goals: met / not met, by how much, and for a goal not met the named costs
 * from the newest profile of that scenario, bench/results/profile-*.json from `tollgate bench
 * <scenario> --profile`), the CPU per unit of work of every tool, and the full ratio table.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { root } from './harness.js';
import type { BenchResult, BenchRow } from './harness.js';
import type { HotFunction } from './profile.js';

export const START = '<!-- bench:start -->';
export const END = '<!-- bench:end -->';
/** The markers of the block before this version; replaced by the new ones on the next write. */
const OLD_START = '<!-- performance:start';
const OLD_END = '<!-- performance:end -->';

type Profiles = NonNullable<BenchResult['profiles']>;

export interface Goal {
  goal: string;
  scenario: string;
  /** The figure and the bound it is held to. */
  measure(rows: BenchRow[]): { value: number; text: string } | null;
  bound: number;
  /** 'min': value ≥ bound is met; 'max': value ≤ bound. */
  kind: 'min' | 'max';
  unit: string;
}

const find = (rows: BenchRow[], scenario: string, kase: RegExp, tool: string, metric: string) =>
  rows.find((r) => r.scenario === scenario && kase.test(r.case) && r.tool === tool && r.metric === metric && Number.isFinite(r.value));

const fmt = (v: number, digits = 3) => (Math.abs(v) >= 1000 ? Math.round(v).toLocaleString('en-US') : String(+v.toPrecision(digits)));

/** Tollgate ÷ anchor on one metric of one case. */
function ratio(scenario: string, kase: RegExp, metric: string, anchor: string): Goal['measure'] {
  return (rows) => {
    const tg = find(rows, scenario, kase, 'tollgate', metric);
    const a = find(rows, scenario, kase, anchor, metric);
    if (!tg || !a || !a.value) return null;
    return { value: tg.value / a.value, text: `${fmt(tg.value)} vs ${anchor} ${fmt(a.value)} ${tg.unit}` };
  };
}

function single(scenario: string, kase: RegExp, metric: string): Goal['measure'] {
  return (rows) => {
    const r = find(rows, scenario, kase, 'tollgate', metric);
    return r ? { value: r.value, text: `${fmt(r.value)} ${r.unit}${/^\d+ idle/.test(r.case) ? ` (${r.case})` : ''}` } : null;
  };
}

/** Issue 18's goals, on the rows of one run. */
export const GOALS: Goal[] = [
  { goal: 'pgbench -S simple c=16 tps ÷ PgBouncer with TLS', scenario: 'postgres', measure: ratio('postgres', /^select-only simple c=16$/, 'tps', 'pgbouncer-tls'), bound: 0.8, kind: 'min', unit: '' },
  { goal: 'pgbench -S prepared c=16 tps ÷ PgBouncer with TLS', scenario: 'postgres', measure: ratio('postgres', /^select-only prepared c=16$/, 'tps', 'pgbouncer-tls'), bound: 0.8, kind: 'min', unit: '' },
  { goal: 'pgbench -S simple c=1 tps ÷ PgBouncer with TLS', scenario: 'postgres', measure: ratio('postgres', /^select-only simple c=1$/, 'tps', 'pgbouncer-tls'), bound: 0.8, kind: 'min', unit: '' },
  { goal: 'pgbench tpc-b prepared c=16 tps ÷ PgBouncer with TLS', scenario: 'postgres', measure: ratio('postgres', /^tpc-b prepared c=16$/, 'tps', 'pgbouncer-tls'), bound: 0.8, kind: 'min', unit: '' },
  { goal: 'PostgreSQL c=1 p50 added per query over PgBouncer with TLS', scenario: 'postgres', measure: single('postgres', /^select-only simple c=1$/, 'p50 added per query over pgbouncer-tls'), bound: 0.1, kind: 'max', unit: ' ms' },
  { goal: 'HTTP keep-alive GET ~50 B c=32 req/s ÷ nginx', scenario: 'http', measure: ratio('http', /^small response/, 'requests/s', 'nginx'), bound: 0.6, kind: 'min', unit: '' },
  { goal: 'HTTP ~50 B server CPU per request ÷ nginx', scenario: 'http', measure: ratio('http', /^small response/, 'server CPU per request', 'nginx'), bound: 3, kind: 'max', unit: '×' },
  { goal: 'HTTP 1 MiB responses c=32 req/s ÷ nginx', scenario: 'http', measure: ratio('http', /^1 MiB response/, 'requests/s', 'nginx'), bound: 0.9, kind: 'min', unit: '' },
  { goal: 'sysbench oltp_point_select threads=8 tps ÷ direct', scenario: 'mysql', measure: ratio('mysql', /^oltp_point_select threads=8$/, 'tps', 'direct'), bound: 0.5, kind: 'min', unit: '' },
  { goal: 'SSH bulk throughput ÷ direct OpenSSH', scenario: 'ssh', measure: ratio('ssh', /^bulk /, 'throughput', 'direct'), bound: 0.6, kind: 'min', unit: '' },
  { goal: 'SSH keystroke echo p99 added over direct OpenSSH', scenario: 'ssh', measure: single('ssh', /^interactive echo/, 'p99 added over direct'), bound: 1, kind: 'max', unit: ' ms' },
  { goal: 'VNC raw full-screen updates/s ÷ direct', scenario: 'vnc', measure: ratio('vnc', /^raw /, 'updates/s', 'direct'), bound: 0.6, kind: 'min', unit: '' },
  { goal: 'VNC ZRLE full-screen updates/s ÷ direct', scenario: 'vnc', measure: ratio('vnc', /^zrle /, 'updates/s', 'direct'), bound: 0.5, kind: 'min', unit: '' },
  { goal: 'idle PostgreSQL sessions per GiB of gateway RSS', scenario: 'scale', measure: single('scale', /idle postgres sessions$/, 'idle sessions per GiB'), bound: 5000, kind: 'min', unit: '' },
  { goal: 'idle SSH sessions per GiB of gateway RSS', scenario: 'scale', measure: single('scale', /idle ssh sessions$/, 'idle sessions per GiB'), bound: 5000, kind: 'min', unit: '' },
];

/** Profiles per scenario: the run's own, else the newest bench/results/profile-*.json that has one. */
export function loadProfiles(r: BenchResult, dir = join(root, 'bench', 'results')): Profiles {
  const out: Profiles = {};
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => /^profile-.*\.json$/.test(f)) : [];
  const found = files.map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as BenchResult).sort((a, b) => a.at.localeCompare(b.at));
  for (const p of found) Object.assign(out, p.profiles ?? {});
  return { ...out, ...(r.profiles ?? {}) };
}

/** Module loading (the gateway's start-up under tsx) and unattributed native time: not costs of the data path. */
const startUp = (f: HotFunction) => f.name === '(program)' || /^node:internal\/modules\//.test(f.where) || /node_modules\/tsx\//.test(f.where);

/** The named costs of a profile: its top self-time functions, start-up and unattributed time left out. */
function namedCosts(p: { functions: HotFunction[] } | undefined, n = 3): string {
  if (!p?.functions.length) return 'no profile yet: run `tollgate bench <scenario> --profile`';
  return p.functions.filter((f) => !startUp(f)).slice(0, n).map((f) => `${f.name} ${f.selfPct}% (${f.where.replace(/^node_modules\//, '')})`).join('; ');
}

/** The run's highest 1-minute load average when it was above twice the cores (figures then say more about the machine than about Tollgate). */
export function overloaded(r: BenchResult): number | null {
  const l = r.load ? Math.max(r.load.start, r.load.end) : 0;
  return l > 2 * r.machine.cores ? l : null;
}

export function goalRows(r: BenchResult, profiles: Profiles = r.profiles ?? {}): string[] {
  const lines = ['| goal | measured | bound | result | named costs (profile) |', '| --- | --- | --- | --- | --- |'];
  for (const g of GOALS) {
    const m = g.measure(r.rows);
    const bound = `${g.kind === 'min' ? '≥' : '≤'} ${g.bound}${g.unit}`;
    if (!m) {
      lines.push(`| ${g.goal} | not measured${r.errors[g.scenario] ? ` (${g.scenario} failed)` : ''} | ${bound} | **not met** (no figure) | - |`);
      continue;
    }
    const met = g.kind === 'min' ? m.value >= g.bound : m.value <= g.bound;
    const value = `${fmt(m.value)}${g.unit}`;
    const ratioOf = (a: number, b: number) => (b > 0 ? `${fmt(a / b)}×` : 'n/a');
    let detail: string;
    if (g.kind === 'min') detail = met ? `${ratioOf(m.value, g.bound)} the bound` : `${fmt(g.bound - m.value)}${g.unit} short; ${m.value > 0 ? ratioOf(g.bound, m.value) : 'n/a'} needed`;
    else detail = met ? `${fmt(g.bound - m.value)}${g.unit} to spare` : `${fmt(m.value - g.bound)}${g.unit} over; ${ratioOf(m.value, g.bound)} the bound`;
    const result = met ? (overloaded(r) ? `met in this run only (${detail}): not meaningful at load ${overloaded(r)} on ${r.machine.cores} cores` : `met (${detail})`) : `**not met** (${detail})`;
    lines.push(`| ${g.goal} | ${value} (${m.text}) | ${bound} | ${result} | ${met ? '' : namedCosts(profiles[g.scenario])} |`);
  }
  return lines;
}

/** CPU per unit of work, every tool in every scenario (rows whose metric says CPU per …). */
export function cpuRows(r: BenchResult): string[] {
  const rows = r.rows.filter((x) => /CPU per /.test(x.metric) && Number.isFinite(x.value));
  if (!rows.length) return [];
  const lines = ['| scenario | case | tool | what | µs |', '| --- | --- | --- | --- | --- |'];
  for (const x of rows) lines.push(`| ${x.scenario} | ${x.case} | ${x.tool} | ${x.metric} | ${fmt(x.value)} |`);
  return lines;
}

export function renderPerformance(r: BenchResult & { table: string }, profiles: Profiles = r.profiles ?? {}): string {
  const m = r.machine;
  const gw = Object.entries(r.gateway).map(([k, v]) => `| ${k} | ${v.cpuMs} | ${v.peakRssMiB} |`).join('\n');
  const cpu = cpuRows(r);
  return [
    START,
    '<!-- generated by `tollgate bench --write-readme` (bench/report.ts) from bench/results/latest.json; do not edit by hand -->',
    `Measured ${r.at.slice(0, 16).replace('T', ' ')} UTC on ${m.cores} × ${m.cpus}, ${m.memoryGiB} GiB, Linux ${m.kernel}, Node ${m.node}`,
    'with `npm run bench` (every scenario side by side in one run, median of rounds). Ratios are',
    'Tollgate ÷ anchor: above 1 is better for throughput, below 1 is better for times and CPU.',
    ...(r.rerun && Object.keys(r.rerun).length ? [`Re-run afterwards and merged in: ${Object.entries(r.rerun).map(([n, at]) => `${n} (${at.slice(11, 16)} UTC)`).join(', ')}.`] : []),
    `Scenarios with rows in this file: ${[...new Set(r.rows.map((x) => x.scenario))].join(', ') || 'none'}.`,
    ...(r.load ? [`1-minute load average ${r.load.start} at the start and ${r.load.end} at the end (${m.cores} cores, shared with other work); both sides of each ratio ran under the same load, absolute figures swing with it.`] : []),
    '',
    '### Goals (issue 18)',
    '',
    ...(overloaded(r) ? [`**This run ran at a load average of ${overloaded(r)} on ${m.cores} cores: its figures describe an overloaded machine, not Tollgate; a goal met here is not a claim (bench/README.md).**`, ''] : []),
    ...goalRows(r, profiles),
    '',
    'Named costs: the top self-time functions of the gateway in the newest `tollgate bench <scenario> --profile` run (bench/results/profile-*.json), not of this run unless it was profiled.',
    '',
    ...(cpu.length ? ['### CPU per unit of work', '', 'From /proc/<pid>/stat (user + system time) of the named processes over each measured stretch: the proxy (gateway, PgBouncer, nginx) and the server behind it (PostgreSQL, MariaDB, sshd, x11vnc, the app), including children that ended meanwhile.', '', ...cpu, ''] : []),
    '### All rows',
    '',
    r.table,
    '',
    '| scenario | gateway CPU time (ms) | gateway peak memory (MiB) |',
    '| --- | --- | --- |',
    gw,
    '',
    'CPU time and peak memory are those of the shared demo gateway; http, vnc and rdp start a gateway of',
    'their own (http reports its server CPU per request in the table above).',
    ...(Object.keys(r.errors).length ? ['', `Scenarios that failed in that run: ${Object.entries(r.errors).map(([k, v]) => `${k} (${v})`).join('; ')}.`] : []),
    END,
  ].join('\n');
}

/** Replace the Performance block of a README text (either marker generation), or append a section. */
export function replaceBlock(text: string, block: string): string {
  for (const [s, e] of [[START, END], [OLD_START, OLD_END]] as const) {
    const i = text.indexOf(s);
    const j = text.indexOf(e, i);
    if (i >= 0 && j > i) return text.slice(0, i) + block + text.slice(j + e.length);
  }
  return `${text.trimEnd()}\n\n## Performance\n\n${block}\n`;
}

export function updateReadme(file = join(root, 'bench', 'results', 'latest.json'), readme = join(root, 'README.md')): boolean {
  if (!existsSync(file)) return false;
  const r = JSON.parse(readFileSync(file, 'utf8')) as BenchResult & { table: string };
  if (r.smoke) return false;
  writeFileSync(readme, replaceBlock(readFileSync(readme, 'utf8'), renderPerformance(r, loadProfiles(r))));
  return true;
}
