/**
 * The README Performance block rendered from a results file (a fixture, no benchmark runs and no
 * timing): the markers, the goals table (met / not met, by how much, named costs from a profile),
 * the CPU-per-unit table, replacing either generation of markers, and `tollgate bench
 * --write-readme --from` refusing a file that is not there.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { END, START, goalRows, loadProfiles, renderPerformance, replaceBlock, updateReadme } from '../../bench/report.js';
import type { BenchResult } from '../../bench/harness.js';

const fixtureFile = join(import.meta.dirname, 'fixtures', 'results.json');
const fixture = () => JSON.parse(readFileSync(fixtureFile, 'utf8')) as BenchResult & { table: string };
const line = (lines: string[], goal: string) => lines.find((l) => l.startsWith(`| ${goal} |`)) ?? '';

t.test('goals: met, not met and by how much, named costs for the ones not met', async (t) => {
  const lines = goalRows(fixture());
  const simple16 = line(lines, 'pgbench -S simple c=16 tps ÷ PgBouncer with TLS');
  t.match(simple16, /\| 0\.31\d* \(12,100 vs pgbouncer-tls 39,000 tx\/s\) \| ≥ 0\.8 \| \*\*not met\*\* \(0\.49 short; 2\.58× needed\)/);
  t.match(simple16, /writeBuffer 40\.1% \(\(native\)\); finishStatement 7% \(protocols\/postgres\/relay\.ts:10\); flush 6%/, 'the top three functions of the postgres profile');
  t.notMatch(simple16, /gc 5%/, 'three costs, not the whole profile');
  const added = line(lines, 'PostgreSQL c=1 p50 added per query over PgBouncer with TLS');
  t.match(added, /\| 0\.08 ms .*\| ≤ 0\.1 ms \| met \(0\.02 ms to spare\) \|  \|$/, 'a met bound: no costs');
  const cpu = line(lines, 'HTTP ~50 B server CPU per request ÷ nginx');
  t.match(cpu, /9\.23×.*\*\*not met\*\* \(6\.23× over; 3\.08× the bound\)/);
  t.match(cpu, /no profile yet: run `tollgate bench <scenario> --profile`/, 'no profile for http in the fixture');
  t.match(line(lines, 'HTTP 1 MiB responses c=32 req/s ÷ nginx'), /0\.937.*\| met \(1\.04× the bound\)/);
  t.match(line(lines, 'SSH keystroke echo p99 added over direct OpenSSH'), /1\.5 ms.*\*\*not met\*\* \(0\.5 ms over; 1\.5× the bound\)/);
  t.match(line(lines, 'idle PostgreSQL sessions per GiB of gateway RSS'), /7,000 \(7,000 sessions\/GiB \(150 idle postgres sessions\)\) \| ≥ 5000 \| met/);
  t.match(line(lines, 'idle SSH sessions per GiB of gateway RSS'), /not measured \| ≥ 5000 \| \*\*not met\*\* \(no figure\)/);
  t.match(line(lines, 'VNC raw full-screen updates/s ÷ direct'), /not measured \(vnc failed\)/);
});

t.test('an overloaded run: a met goal is not a claim', async (t) => {
  const r = { ...fixture(), load: { start: 40, end: 12 } };
  t.match(line(goalRows(r), 'HTTP 1 MiB responses c=32 req/s ÷ nginx'), /met in this run only \(1\.04× the bound\): not meaningful at load 40 on 2 cores/);
  t.match(renderPerformance(r), /\*\*This run ran at a load average of 40 on 2 cores/);
  t.notMatch(renderPerformance(fixture()), /This run ran at a load average/, 'load 2.25 on 2 cores is not flagged');
});

t.test('profiles from earlier --profile runs fill in the named costs', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-bench-report-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const prof = { ...fixture(), at: '2026-12-01T10:00:00.000Z', rows: [], profiles: { http: { dir: '/tmp/h', files: 1, totalMs: 10, functions: [{ name: 'cork', where: 'node_modules/uWebSockets.js/uws.js:1', selfPct: 27, selfMs: 3 }] } } };
  writeFileSync(join(dir, 'profile-http.json'), JSON.stringify(prof));
  writeFileSync(join(dir, 'latest.json'), '{}');
  const r = fixture();
  const profiles = loadProfiles(r, dir);
  t.same(Object.keys(profiles).sort(), ['http', 'postgres'], "the run's own profile and the file's");
  t.match(line(goalRows(r, profiles), 'HTTP ~50 B server CPU per request ÷ nginx'), /cork 27% \(uWebSockets\.js\/uws\.js:1\)/);
});

t.test('the block: markers, machine and load, CPU per unit, the full table, failures', async (t) => {
  const block = renderPerformance(fixture());
  t.ok(block.startsWith(`${START}\n`) && block.endsWith(END));
  t.match(block, /Measured 2026-12-02 07:00 UTC on 2 × Fixture CPU, 23 GiB, Linux 6\.1\.0, Node v20\.0\.0/);
  t.match(block, /1-minute load average 1\.5 at the start and 2\.25 at the end/);
  t.match(block, /Scenarios with rows in this file: postgres, http, ssh, scale\./);
  t.match(block, /### CPU per unit of work/);
  t.match(block, /\| postgres \| select-only simple c=16 \| pgbouncer-tls \| proxy CPU per transaction \| 21 \|/);
  t.match(block, /\| postgres \| tpc-b prepared c=16 \| direct \| PostgreSQL CPU per transaction \| 40 \|/);
  t.match(block, /\| ssh \| bulk 1024 MiB through ssh cat \| tollgate \| proxy CPU per MiB \| 9,000 \|/);
  t.match(block, /fixture \| table \| row/);
  t.match(block, /\| postgres \| 1234 \| 210 \|/);
  t.match(block, /Scenarios that failed in that run: vnc \(the demo has no VNC target\)/);
});

t.test('replacing the block: new markers, the old ones, or a new section; the rest stays', async (t) => {
  const block = `${START}\nnew\n${END}`;
  t.equal(replaceBlock(`# T\n\n${START}\nold\n${END}\n\ntail\n`, block), `# T\n\n${block}\n\ntail\n`);
  t.equal(replaceBlock('# T\n<!-- performance:start (generated) -->\nold\n<!-- performance:end -->\ntail\n', block), `# T\n${block}\ntail\n`);
  t.equal(replaceBlock('# T\n', block), `# T\n\n## Performance\n\n${block}\n`);
  const dir = mkdtempSync(join(tmpdir(), 'tg-bench-readme-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const readme = join(dir, 'README.md');
  writeFileSync(readme, `# T\n\n${START}\nold\n${END}\n\nafter\n`);
  t.ok(updateReadme(fixtureFile, readme));
  const once = readFileSync(readme, 'utf8');
  t.match(once, /### Goals \(issue 18\)/);
  t.match(once, /\n\nafter\n$/);
  t.ok(updateReadme(fixtureFile, readme));
  t.equal(readFileSync(readme, 'utf8'), once, 'regenerating from the same file changes nothing');
  writeFileSync(join(dir, 'smoke.json'), JSON.stringify({ ...fixture(), smoke: true }));
  t.notOk(updateReadme(join(dir, 'smoke.json'), readme), 'a smoke run never goes into the README');
  t.notOk(updateReadme(join(dir, 'missing.json'), readme));
});

t.test('tollgate bench --write-readme --from a missing file fails and says so', async (t) => {
  const bin = join(import.meta.dirname, '..', '..', 'proxy', 'bin', 'tollgate.js');
  const err = await promisify(execFile)(process.execPath, [bin, 'bench', '--write-readme', '--from', join(tmpdir(), 'tg-no-such-results.json')]).then(() => null, (e: { code: number; stderr: string }) => e);
  t.ok(err && err.code !== 0, 'exits non-zero');
  t.match(err?.stderr, /no full \(non-smoke\) results file at .*tg-no-such-results\.json/);
});

t.test('a separate run of some scenarios merged into the full run (tollgate bench --merge-from)', async (t) => {
  const { mergeFile } = await import('../../bench/index.js');
  const dir = mkdtempSync(join(tmpdir(), 'tg-bench-merge-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const latest = join(dir, 'latest.json');
  writeFileSync(latest, JSON.stringify(fixture()));
  const part = { ...fixture(), at: '2026-12-02T07:30:00.000Z', rows: [{ scenario: 'postgres', case: 'select-only simple c=16', tool: 'tollgate', metric: 'tps', value: 20000, unit: 'tx/s', better: 'higher' }], gateway: { postgres: { cpuMs: 9, peakRssMiB: 9 } }, errors: {} };
  writeFileSync(join(dir, 'pg.json'), JSON.stringify(part));
  t.same(mergeFile(join(dir, 'pg.json'), latest), ['postgres']);
  const merged = JSON.parse(readFileSync(latest, 'utf8')) as BenchResult & { table: string };
  t.equal(merged.at, fixture().at, "the full run's date stays");
  t.same(merged.rerun, { postgres: '2026-12-02T07:30:00.000Z' });
  t.same(merged.rows.filter((r) => r.scenario === 'postgres').map((r) => r.value), [20000], "the re-run's postgres rows replace the old ones");
  t.ok(merged.rows.some((r) => r.scenario === 'http'), 'the other scenarios stay');
  t.same(merged.gateway.postgres, { cpuMs: 9, peakRssMiB: 9 });
  t.match(merged.table, /postgres \| select-only simple c=16 \| tps \| 20000 tx\/s/);
  t.match(renderPerformance(merged), /Re-run afterwards and merged in: postgres \(07:30 UTC\)/);
  writeFileSync(join(dir, 'smoke.json'), JSON.stringify({ ...part, smoke: true }));
  t.throws(() => mergeFile(join(dir, 'smoke.json'), latest), /is a smoke run/);
});
