#!/usr/bin/env node
// Runs the whole suite with tap and ends with one line "N passed, N failed" (what CI reads).
import { spawn, spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
// tap applies a changed plugin list (package.json "tap.plugin": no ts-node, tsx instead) only to
// runs after the one that rebuilt it, so build it first: a fresh install then runs right at once.
const built = spawnSync(join(root, 'node_modules', '.bin', 'tap'), ['build'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
if (built.status !== 0) {
  process.stdout.write('tap build failed\n0 passed, 1 failed\n');
  process.exit(1);
}
const child = spawn(join(root, 'node_modules', '.bin', 'tap'), ['--reporter=tap', ...args], {
  cwd: root,
  stdio: ['ignore', 'pipe', 'inherit'],
  env: { ...process.env, TOLLGATE_TEST: '1' },
});
let tail = '';
let pass = 0;
let fail = 0;
child.stdout.on('data', (d) => {
  process.stdout.write(d);
  tail = (tail + d.toString('utf8')).slice(-20000);
});
child.on('close', (code) => {
  // tap's final summary: "# { total: 12, pass: 11, fail: 1, skip: ... }"
  const m = [...tail.matchAll(/^# \{ (total: \d+.*?)\}$/gm)].pop();
  if (m) {
    const fields = Object.fromEntries(m[1].split(',').map((kv) => kv.trim().split(':').map((s) => s.trim())));
    pass = Number(fields.pass ?? 0);
    fail = Number(fields.fail ?? 0) + Number(fields.todo ?? 0);
    const skip = Number(fields.skip ?? 0);
    if (skip) fail += skip; // a skipped check is not a pass
  } else if (code !== 0) {
    fail = 1;
  }
  if (code !== 0 && fail === 0) fail = 1;
  process.stdout.write(`\n${pass} passed, ${fail} failed\n`);
  process.exit(code ?? 1);
});
