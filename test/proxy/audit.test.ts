import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SqliteStore } from '../../proxy/store/sqlite.js';
import { AuditLog, canonicalJson } from '../../proxy/audit.js';
import { ManualClock } from '../../policies/clock.js';

const run = promisify(execFile);
const bin = join(import.meta.dirname, '..', '..', 'proxy', 'bin', 'tollgate.js');

async function fresh(t: { teardown(fn: () => unknown): void }) {
  const dir = mkdtempSync(join(tmpdir(), 'tg-audit-'));
  const store = new SqliteStore(join(dir, 'data', 'tollgate.db'));
  await store.migrate();
  const log = new AuditLog(store, new ManualClock(1_000));
  for (let i = 0; i < 5; i++) await log.append('alice', 'request.created', `r${i}`, { n: i, password: 'hunter2' });
  t.teardown(async () => { await store.close(); rmSync(dir, { recursive: true, force: true }); });
  return { dir, store, log };
}

t.test('canonical JSON ignores key order', async (t) => {
  t.equal(canonicalJson({ b: 1, a: { d: [1, { f: 2, e: 3 }], c: null } }), canonicalJson({ a: { c: null, d: [1, { e: 3, f: 2 }] }, b: 1 }));
});

t.test('an intact chain verifies; secrets are redacted before hashing', async (t) => {
  const { log, store } = await fresh(t);
  const v = await log.verify();
  t.ok(v.ok);
  t.equal(v.count, 5);
  const rows = await store.listAudit({});
  t.equal(rows[0]!.data['password'], '<redacted>', 'secret-looking fields never stored');
  t.equal(rows[1]!.prevHash, rows[0]!.hash, 'each event carries the previous hash');
});

t.test('an altered row is the first broken link', async (t) => {
  const { log, store } = await fresh(t);
  store.rawForTests(`UPDATE audit_events SET actor = 'mallory' WHERE seq = 3`);
  const v = await log.verify();
  t.notOk(v.ok);
  if (!v.ok) { t.equal(v.brokenAt, 3); t.match(v.detail, /altered/); }
});

t.test('a deleted row, and deleted newest rows, are caught', async (t) => {
  const a = await fresh(t);
  a.store.rawForTests('DELETE FROM audit_events WHERE seq = 2');
  const v = await a.log.verify();
  t.notOk(v.ok);
  if (!v.ok) t.equal(v.brokenAt, 2);
  const b = await fresh(t);
  b.store.rawForTests('DELETE FROM audit_events WHERE seq = 5');
  const w = await b.log.verify();
  t.notOk(w.ok, 'truncation detected through the stored head');
});

t.test('`tollgate audit verify` and `audit export` on a gateway store', async (t) => {
  const { dir, store } = await fresh(t);
  const cfg = join(dir, 'gateway.yaml');
  writeFileSync(cfg, `gateway:\n  dataDir: ${join(dir, 'data')}\n`);
  const ok = await run(process.execPath, [bin, 'audit', 'verify', '--config', cfg]);
  t.match(ok.stdout, /audit chain OK: 5 events/);
  const out = join(dir, 'export.ndjson');
  await run(process.execPath, [bin, 'audit', 'export', '--config', cfg, '--out', out]);
  const lines = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  t.equal(lines.length, 5);
  t.same(lines.map((l) => l.seq), [1, 2, 3, 4, 5]);
  store.rawForTests(`UPDATE audit_events SET data = '{"n":99}' WHERE seq = 4`);
  const bad = await run(process.execPath, [bin, 'audit', 'verify', '--config', cfg]).then(() => null, (e) => e as { code: number; stdout: string });
  t.ok(bad, 'exits non-zero');
  t.equal(bad!.code, 2);
  t.match(bad!.stdout, /BROKEN at event 4/);
});

t.test('config errors name the file, the key path and what was expected', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-cfg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cfg = join(dir, 'bad.yaml');
  writeFileSync(cfg, 'targets:\n  - name: web01\n    protocol: ssh\n    address: 127.0.0.1:22\n    risk: extreme\n    roles: [{name: user}]\n');
  const r = await run(process.execPath, [bin, 'serve', '--config', cfg]).then(() => null, (e) => e as { stderr: string });
  t.ok(r);
  t.match(r!.stderr, new RegExp(`${cfg.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: targets\\[0\\]\\.risk: expected one of "low", "medium", "high", "critical"`));
  writeFileSync(cfg, 'idp:\n  clientSecret: hunter2\n');
  const r2 = await run(process.execPath, [bin, 'serve', '--config', cfg]).then(() => null, (e) => e as { stderr: string });
  t.match(r2!.stderr, /idp\.clientSecret: a secret reference/);
  t.notMatch(r2!.stderr, /hunter2/, 'the bad value is not echoed');
});
