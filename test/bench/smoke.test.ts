/**
 * Benchmarks are not timed tests: this only checks that a tiny smoke version of every scenario
 * runs end to end and produces finite figures for Tollgate and its anchors (numbers are not asserted).
 */
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBench } from '../../bench/index.js';

const here = join(import.meta.dirname, '..', '..', 'bench');
const scenarios = ['postgres', 'mysql', 'ssh', 'setup', 'kill', 'scale', ...['http', 'vnc', 'rdp'].filter((n) => existsSync(join(here, `${n}.ts`)))];

t.test(`bench smoke: ${scenarios.join(', ')}`, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-bench-smoke-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const out = join(dir, 'smoke.json');
  const lines: string[] = [];
  const r = await runBench(scenarios, { smoke: true, out, log: (m) => lines.push(m) });
  t.same(r.errors, {}, `every scenario ran (${lines.join(' | ')})`);
  for (const s of scenarios) {
    const rows = r.rows.filter((x) => x.scenario === s);
    t.ok(rows.length > 0, `${s} produced rows`);
    t.ok(rows.some((x) => x.tool === 'tollgate'), `${s} measured Tollgate`);
    for (const row of rows) t.ok(Number.isFinite(row.value), `${s} ${row.case} ${row.tool} ${row.metric} is a number`);
  }
  for (const s of ['postgres', 'mysql', 'ssh']) {
    t.ok(r.rows.some((x) => x.scenario === s && x.tool !== 'tollgate'), `${s} measured an anchor side by side`);
  }
  // CPU per unit of work for every tool of the data-path scenarios (Tollgate, anchors, direct).
  for (const s of ['postgres', 'mysql', 'ssh', 'http', 'vnc'].filter((x) => scenarios.includes(x))) {
    const tools = new Set(r.rows.filter((x) => x.scenario === s && x.metric !== 'bytes/update').map((x) => x.tool));
    for (const tool of tools) t.ok(r.rows.some((x) => x.scenario === s && x.tool === tool && /CPU per /.test(x.metric)), `${s}: CPU per unit of work for ${tool}`);
  }
  for (const s of ['postgres', 'ssh']) t.ok(r.rows.some((x) => x.scenario === s && x.tool === 'tollgate-2w'), `${s}: a tollgate-2w row (gateway.workers: 2)`);
  t.ok(r.rows.some((x) => x.scenario === 'postgres' && x.metric === 'p50 added per query over pgbouncer-tls'), 'PostgreSQL c=1 latency added over PgBouncer with TLS');
  t.ok(r.rows.some((x) => x.scenario === 'ssh' && x.metric === 'p99 added over direct'), 'SSH echo latency added over direct');
  for (const p of ['postgres', 'ssh']) t.ok(r.rows.some((x) => x.scenario === 'scale' && x.case.endsWith(`idle ${p} sessions`) && x.metric === 'sessions live' && x.value > 0), `scale: idle ${p} sessions held open`);
  const json = JSON.parse(readFileSync(out, 'utf8'));
  t.match(json.table, /ratio \(tollgate \/ anchor\)/);
  t.ok(json.gateway.postgres.cpuMs >= 0 && json.gateway.postgres.peakRssMiB > 0, 'gateway CPU and peak memory recorded');
});
