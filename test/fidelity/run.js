#!/usr/bin/env node
// `npm run test:fidelity`: every case of the database wire-fidelity suite (TOLLGATE_FIDELITY=full),
// through test/run.js (tap, "N passed, N failed"), then each database's summary: N/N identical, and
// each accepted difference with its reason. Arguments narrow the files (default: all of test/fidelity).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const dir = mkdtempSync(join(tmpdir(), 'tg-fidelity-'));
const report = join(dir, 'summary.jsonl');
const files = process.argv.slice(2);
const targets = files.length ? files : readdirSync(join(root, 'test', 'fidelity'), { recursive: true })
  .map(String).filter((f) => f.endsWith('.test.ts')).sort().map((f) => join('test', 'fidelity', f));
// The full PostgreSQL run takes minutes on a busy 2-core machine: more than tap's default file timeout.
const child = spawn(process.execPath, [join(root, 'test', 'run.js'), '--timeout=3600', ...targets], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, TOLLGATE_FIDELITY: process.env.TOLLGATE_FIDELITY || 'full', TOLLGATE_FIDELITY_REPORT: report },
});
child.on('close', (code) => {
  const lines = existsSync(report) ? readFileSync(report, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
  rmSync(dir, { recursive: true, force: true });
  process.stdout.write('\nDatabase wire fidelity (direct vs through the gateway):\n');
  if (!lines.length) process.stdout.write('  no summary was reported (did the suite start?)\n');
  for (const s of lines) {
    const pass = s.identical + s.accepted.length;
    process.stdout.write(`  ${s.db} ${s.mode}: ${s.identical}/${s.total} identical${s.accepted.length ? `, ${s.accepted.length} accepted (${pass}/${s.total})` : ''}${s.run === 'full' ? '' : ` [${s.run} subset]`}\n`);
    for (const a of s.accepted) process.stdout.write(`    accepted difference: ${a.case}: ${a.reason}\n`);
    for (const d of s.different) process.stdout.write(`    DIFFERENT: ${d}\n`);
    for (const f of s.failed) process.stdout.write(`    FAILED: ${f.case}: ${f.reason}\n`);
    for (const st of s.stale) process.stdout.write(`    STALE accepted difference (now identical): ${st}\n`);
  }
  process.exit(code ?? 1);
});
