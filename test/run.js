#!/usr/bin/env node
// Runs the suite in phases and ends with one line "N passed, N failed" (what CI reads) counting all of them:
//   (a) the tap suite (every test/**/*.test.ts, or the files given as arguments);
//   (b) only with TOLLGATE_SOAK=1: the 5-minute soak, test/soak/run.ts --minutes 5 --tap;
//   (c) the secret scan, test/reliability/secret-scan.scan.ts, over everything the suite left behind.
// Every test temp dir lives under one root (TMPDIR=TOLLGATE_TEST_ROOT); every secret the gateway issued
// is noted in TOLLGATE_SECRET_REGISTRY, a file outside that root. The scan removes the root afterwards.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, createWriteStream, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
let pass = 0;
let fail = 0;

function finish(code) {
  process.stdout.write(`\n${pass} passed, ${fail} failed\n`);
  process.exit(code);
}

// tap applies a changed plugin list (package.json "tap.plugin": no ts-node, tsx instead) only to
// runs after the one that rebuilt it, so build it first: a fresh install then runs right at once.
const built = spawnSync(join(root, 'node_modules', '.bin', 'tap'), ['build'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
if (built.status !== 0) {
  process.stdout.write('tap build failed\n');
  fail = 1;
  finish(1);
}

// Short names: some rigs put Unix sockets under their temp dirs (108-byte limit).
const registryDir = mkdtempSync(join(tmpdir(), 'tgreg-'));
const registry = join(registryDir, 'secrets.jsonl');
writeFileSync(registry, '', { mode: 0o600 });
const testRoot = mkdtempSync(join(tmpdir(), 'tgr-'));
chmodSync(testRoot, 0o1777); // like /tmp: rigs run servers as other users (postgres, samba) in their dirs
const env = {
  ...process.env,
  TOLLGATE_TEST: '1',
  TOLLGATE_SECRET_REGISTRY: registry,
  TOLLGATE_TEST_ROOT: testRoot,
  TMPDIR: testRoot,
};
// Everything the suite prints is a log the scan reads too.
const output = createWriteStream(join(testRoot, 'suite-output.log'));

/** Run a phase; tee its stdout/stderr; resolve with the exit code and the last 20 kB of stdout. */
function run(cmd, argv, phaseEnv, tee = true) {
  return new Promise((resolve) => {
    const child = spawn(cmd, argv, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: phaseEnv });
    let tail = '';
    let all = '';
    child.stdout.on('data', (d) => {
      process.stdout.write(d);
      if (tee) output.write(d);
      const s = d.toString('utf8');
      tail = (tail + s).slice(-20000);
      if (all.length < 4_000_000) all += s;
    });
    child.stderr.on('data', (d) => { process.stderr.write(d); if (tee) output.write(d); });
    child.on('error', (e) => { process.stdout.write(`could not run ${cmd}: ${e.message}\n`); resolve({ code: 1, tail, all }); });
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 1 : 0), tail, all }));
  });
}

/** Count a plain TAP stream's top-level points (a skip or todo is not a pass; a short plan is a failure). */
function countTap(text, code, what) {
  let p = 0;
  let f = 0;
  let planned = null;
  for (const line of text.split('\n')) {
    const m = /^(not ok|ok)\b[^#]*(#\s*(skip|todo)\b)?/i.exec(line);
    if (m) {
      if (m[1] === 'ok' && !m[2]) p++; else f++;
      continue;
    }
    const plan = /^1\.\.(\d+)/.exec(line);
    if (plan) planned = Number(plan[1]);
  }
  if (planned !== null && p + f < planned) f += planned - (p + f);
  if (p + f === 0) {
    process.stdout.write(`# ${what}: no test points\n`);
    f = 1;
  }
  if (code !== 0 && f === 0) f = 1;
  return { p, f };
}

// (a) the tap suite
{
  const r = await run(join(root, 'node_modules', '.bin', 'tap'), ['--reporter=tap', ...args], env);
  // tap's final summary: "# { total: 12, pass: 11, fail: 1, skip: ... }"
  const m = [...r.tail.matchAll(/^# \{ (total: \d+.*?)\}$/gm)].pop();
  let p = 0;
  let f = 0;
  if (m) {
    const fields = Object.fromEntries(m[1].split(',').map((kv) => kv.trim().split(':').map((s) => s.trim())));
    p = Number(fields.pass ?? 0);
    f = Number(fields.fail ?? 0) + Number(fields.todo ?? 0) + Number(fields.skip ?? 0); // a skipped check is not a pass
  } else if (r.code !== 0) {
    f = 1;
  }
  if (r.code !== 0 && f === 0) f = 1;
  pass += p;
  fail += f;
  process.stdout.write(`# phase tap: ${p} passed, ${f} failed\n`);
}

// (b) the soak, on demand
if (process.env['TOLLGATE_SOAK'] === '1') {
  const soak = join(root, 'test', 'soak', 'run.ts');
  if (!existsSync(soak)) {
    process.stdout.write('not ok - soak: test/soak/run.ts does not exist\n');
    fail += 1;
  } else {
    const r = await run(process.execPath, ['--import=tsx', soak, '--minutes', '5', '--tap'], env);
    const { p, f } = countTap(r.all, r.code, 'soak');
    pass += p;
    fail += f;
    process.stdout.write(`# phase soak: ${p} passed, ${f} failed\n`);
  }
}

// (c) the secret scan over everything the suite (and the soak) left behind
{
  await new Promise((res) => output.end(res));
  const scanArgs = ['--import=tsx', join(root, 'test', 'reliability', 'secret-scan.scan.ts'), '--registry', registry, '--root', testRoot];
  if (args.length) scanArgs.push('--allow-empty'); // a chosen few test files may issue no secret at all
  const r = await run(process.execPath, scanArgs, { ...process.env, TOLLGATE_TEST: '1' }, false);
  const { p, f } = countTap(r.all, r.code, 'secret scan');
  pass += p;
  fail += f;
  process.stdout.write(`# phase secret scan: ${p} passed, ${f} failed\n`);
  rmSync(testRoot, { recursive: true, force: true });
  rmSync(registryDir, { recursive: true, force: true });
}

finish(fail ? 1 : 0);
