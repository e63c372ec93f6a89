/**
 * The secret scan can fail: its engine finds secrets in every form it claims, and the scan that
 * test/run.js runs after the suite (secret-scan.scan.ts) reports "not ok" and exits 1 when a
 * recorded secret was planted in the tree it scans, passes on a clean one, and removes the tree.
 * Its own registry and tree (not the suite's: nothing here is noted in TOLLGATE_SECRET_REGISTRY).
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { patternsOf, readRegistry, scanDirs } from './secret-scan.js';

const scanScript = join(import.meta.dirname, 'secret-scan.scan.ts');

t.test('the engine finds each form and only the recorded secrets', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-scan-unit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const s = randomBytes(20).toString('base64url');
  const other = randomBytes(20).toString('base64url');
  for (let k = 0; k < 3; k++) {
    writeFileSync(join(dir, `b64-${k}`), Buffer.concat([randomBytes(k), Buffer.from(s), randomBytes(2)]).toString('base64'));
  }
  writeFileSync(join(dir, 'nested.txt'), `nothing here: ${other}`);
  const r = scanDirs([dir], [{ kind: 'unit', value: s }]);
  t.equal(r.files, 4, 'every file read');
  t.same([...new Set(r.hits.map((h) => h.file))].sort(), [0, 1, 2].map((k) => join(dir, `b64-${k}`)).sort(), 'base64 at every alignment is found, the unrelated file is not');
  t.ok(patternsOf([{ kind: 'x', value: 'short' }]).patterns.every((p) => p.bytes.length >= 8), 'no pattern shorter than 8 bytes');
});

t.test('secret-scan.scan.ts fails on a planted secret, passes on a clean tree, and removes what it scanned', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'tg-scan-run-'));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  const registry = join(base, 'registry.jsonl');
  const planted = randomBytes(18).toString('base64url');
  const clean = randomBytes(18).toString('base64url');
  writeFileSync(registry, `${JSON.stringify({ kind: 'connection_secret', value: planted })}\n${JSON.stringify({ kind: 'api_token', value: clean })}\n`);
  t.same(readRegistry(registry).secrets.map((s) => s.kind), ['connection_secret', 'api_token'], 'registry read');
  const env = { ...process.env, TOLLGATE_SECRET_REGISTRY: '', TOLLGATE_TEST_ROOT: '' };
  const run = (root: string) => spawnSync(process.execPath, ['--import=tsx', scanScript, '--registry', registry, '--root', root], { env, encoding: 'utf8', timeout: 120_000 });

  const dirty = join(base, 'dirty');
  mkdirSync(join(dirty, 'data', 'recordings'), { recursive: true });
  writeFileSync(join(dirty, 'data', 'recordings', 's.cast'), `[1.0,"o","password: ${planted}\\r\\n"]\n`);
  const bad = run(dirty);
  t.equal(bad.status, 1, 'exit 1 with a planted secret');
  t.match(bad.stdout, /^not ok \d+ - no recorded secret in 1 files/m, 'reported as not ok');
  t.match(bad.stdout, /s\.cast @\d+: connection_secret \(clear/, 'the hit names the file, the kind and the form');
  t.notMatch(bad.stdout + bad.stderr, planted, 'the report does not print the secret');
  t.match(bad.stdout, /^ok 1 - self-test/m, 'self-test passed');

  const good = join(base, 'good');
  mkdirSync(good);
  writeFileSync(join(good, 'gateway.log'), '{"msg":"connection secret issued","secret":"<secret>"}\n');
  const ok = run(good);
  t.equal(ok.status, 0, `exit 0 on a clean tree\n${ok.stdout}${ok.stderr}`);
  t.match(ok.stdout, /^1\.\.4$/m, 'four checks');
  t.notOk(existsSync(good), 'the scanned tree is removed afterwards');
});
