/**
 * The keyed audit log against a real store (a SQLite file, or a PostgreSQL database with
 * TOLLGATE_TEST_STORE=postgres): hash chain, per-event HMAC, signed head and signed checkpoints
 * outside the store. Every attack here uses only write access to the database (raw SQL on the
 * store the gateway uses), except where it says the attacker also has the key.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pino from 'pino';
import { SqliteStore } from '../../proxy/store/sqlite.js';
import { openPostgresStore } from '../../proxy/store/postgres.js';
import { Secret } from '../../auth/secret.js';
import { testStoreKind } from '../support/gateway.js';
import { testDatabase } from '../support/pg.js';
import { AUDIT_KEY_LABEL, AuditLog, canonicalJson, eventHash, GENESIS } from '../../proxy/audit.js';
import { gatewayKey } from '../../auth/keys.js';
import { ManualClock } from '../../policies/clock.js';
import type { AuditEventRecord, Store } from '../../proxy/store/types.js';

const run = promisify(execFile);
const bin = join(import.meta.dirname, '..', '..', 'proxy', 'bin', 'tollgate.js');
const quiet = pino({ level: 'silent' });

/** A store with raw SQL for the attacker (`?` placeholders on both dialects). */
type RawStore = Store & { rawForTests(sql: string, ...args: unknown[]): unknown };
interface Fixture { dir: string; store: RawStore; log: AuditLog; gatewayRaw: Buffer; key: Buffer; file: string; clock: ManualClock; storeYaml: string }

async function fresh(t: { teardown(fn: () => unknown): void }, opts: { events?: number; checkpointFile?: boolean } = {}): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'tg-audit-'));
  let store: RawStore;
  let storeYaml = '';
  let drop = async () => undefined as unknown;
  if (testStoreKind() === 'postgres') {
    const db = await testDatabase();
    drop = () => db.drop();
    mkdirSync(join(dir, 'data'));
    store = await openPostgresStore({ url: new Secret(db.url) });
    storeYaml = `store: {kind: postgres, url: {value: "${db.url}"}}\n`;
  } else {
    store = new SqliteStore(join(dir, 'data', 'tollgate.db'));
    await store.migrate();
  }
  const gatewayRaw = randomBytes(32);
  const key = gatewayKey(gatewayRaw).deriveKey(AUDIT_KEY_LABEL);
  const file = join(dir, 'data', 'audit-checkpoints.log');
  const clock = new ManualClock(1_000);
  const log = new AuditLog(store, clock, { key, checkpoints: opts.checkpointFile === false ? undefined : { file, gatewayId: 'gw1', log: quiet } });
  for (let i = 0; i < (opts.events ?? 5); i++) { clock.advance(1000); await log.append('alice', 'request.created', `r${i}`, { n: i, password: 'hunter2' }); }
  t.teardown(async () => { await store.close(); await drop(); rmSync(dir, { recursive: true, force: true }); });
  return { dir, store, log, gatewayRaw, key, file, clock, storeYaml };
}

/** What someone with DB write access can do: rewrite rows and re-chain them with plain SHA-256. */
async function rechain(store: RawStore, rows: AuditEventRecord[], keepMacs: boolean): Promise<void> {
  let prev = GENESIS;
  for (const r of rows) {
    const hash = eventHash(prev, r);
    await store.rawForTests('UPDATE audit_events SET prev_hash = ?, hash = ?, mac = ? WHERE seq = ?', prev, hash, keepMacs ? r.mac : null, r.seq);
    prev = hash;
  }
}

const failed = (v: Awaited<ReturnType<AuditLog['verify']>>) => (v.ok ? { check: 'ok', brokenAt: 0, detail: '' } : v);

t.test('canonical JSON ignores key order', async (t) => {
  t.equal(canonicalJson({ b: 1, a: { d: [1, { f: 2, e: 3 }], c: null } }), canonicalJson({ a: { c: null, d: [1, { e: 3, f: 2 }] }, b: 1 }));
});

t.test('an intact chain verifies; every event is keyed; secrets are redacted before hashing', async (t) => {
  const { log, store, file } = await fresh(t);
  const v = await log.verify();
  t.ok(v.ok, JSON.stringify(v));
  t.equal(v.count, 5);
  const rows = await store.listAudit({});
  t.equal(rows[0]!.data['password'], '<redacted>', 'secret-looking fields never stored');
  t.equal(rows[1]!.prevHash, rows[0]!.hash, 'each event carries the previous hash');
  t.ok(rows.every((r) => /^[0-9a-f]{64}$/.test(r.mac ?? '')), 'each event carries an HMAC');
  t.ok(existsSync(file), 'the first event wrote the first checkpoint');
  t.equal(readFileSync(file, 'utf8').trim().split('\n').length, 1);
  const cp = await log.checkpoint();
  t.equal(cp?.seq, 5, 'a checkpoint of the head');
  t.equal(await log.checkpoint(), null, 'none while the head has not moved');
  const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  t.same(lines.map((l) => l.seq), [1, 5]);
  t.same(Object.keys(lines[1]).sort(), ['at', 'gateway', 'hash', 'mac', 'seq', 'type']);
  const w = await log.verify();
  t.ok(w.ok && w.checkpoints === 2, 'both checkpoints compared');
});

t.test('an altered row and a deleted row are the first broken link', async (t) => {
  const a = await fresh(t);
  await a.store.rawForTests(`UPDATE audit_events SET actor = 'mallory' WHERE seq = 3`);
  const v = failed(await a.log.verify());
  t.equal(v.check, 'content');
  t.equal(v.brokenAt, 3);
  t.match(v.detail, /altered/);
  const b = await fresh(t);
  await b.store.rawForTests('DELETE FROM audit_events WHERE seq = 2');
  const w = failed(await b.log.verify());
  t.equal(w.check, 'sequence');
  t.equal(w.brokenAt, 2);
});

t.test('rewrite event 1, re-chain with plain SHA-256 and fix the head: the HMAC check fails', async (t) => {
  for (const keepMacs of [true, false]) {
    const { log, store } = await fresh(t);
    const rows = await store.listAudit({});
    rows[0]!.actor = 'nobody';
    rows[0]!.data = { n: 0, note: 'rewritten' };
    await store.rawForTests(`UPDATE audit_events SET actor = 'nobody', data = ? WHERE seq = 1`, JSON.stringify(rows[0]!.data));
    await rechain(store, rows, keepMacs);
    const last = (await store.listAudit({})).at(-1)!;
    const oldHead = (await store.getKv('audit.head'))!;
    // The attacker fixes the head: the new hash, and the old HMAC (the only one they have).
    await store.setKv('audit.head', `${last.seq}:${last.hash}:${oldHead.split(':')[2]}`);
    const v = failed(await log.verify());
    t.equal(v.check, 'hmac', `caught with ${keepMacs ? 'the old HMACs kept' : 'the HMACs removed'}`);
    t.equal(v.brokenAt, 1);
    t.match(v.detail, /without the gateway key/);
  }
});

t.test('the head: missing, forged, or behind the rows', async (t) => {
  const a = await fresh(t);
  await a.store.rawForTests('DELETE FROM audit_events WHERE seq >= 4');
  await a.store.rawForTests(`DELETE FROM kv WHERE key = 'audit.head'`);
  t.equal(failed(await a.log.verify()).check, 'missing-head', 'tail cut and head deleted: a missing head is a failure');

  const b = await fresh(t);
  await b.store.rawForTests('DELETE FROM audit_events WHERE seq >= 4');
  const last = (await b.store.listAudit({})).at(-1)!;
  await b.store.setKv('audit.head', `${last.seq}:${last.hash}`);
  t.equal(failed(await b.log.verify()).check, 'head-hmac', 'a head without a valid HMAC is refused');

  const c = await fresh(t);
  await c.store.rawForTests('DELETE FROM audit_events WHERE seq = 5');
  const v = failed(await c.log.verify());
  t.equal(v.check, 'head-mismatch', 'rows deleted behind the head');
  t.match(v.detail, /ends at event 4 but event 5 was written/);
});

t.test('tail truncation with an older head restored is caught by the checkpoint file', async (t) => {
  const f = await fresh(t, { events: 3 });
  const oldHead = (await f.store.getKv('audit.head'))!;
  for (let i = 0; i < 3; i++) await f.log.append('bob', 'request.approved', `r${i}`);
  await f.log.checkpoint();
  await f.store.rawForTests('DELETE FROM audit_events WHERE seq > 3');
  await f.store.setKv('audit.head', oldHead);
  const v = failed(await f.log.verify());
  t.equal(v.check, 'checkpoint-beyond-end');
  t.match(v.detail, /ends at event 3 but a signed checkpoint .* records event 6/);
});

t.test('an insider with the key but not the checkpoints: the rewrite differs from a checkpoint', async (t) => {
  const f = await fresh(t);
  await f.log.checkpoint();
  const copy = join(f.dir, 'syslog-copy.log');
  writeFileSync(copy, readFileSync(f.file, 'utf8').split('\n').filter(Boolean).map((l) => `<14>1 2026-01-01T00:00:00Z gw tollgate-audit - - - ${l}\nunrelated syslog line`).join('\n'));
  // Rewrite event 2 and re-chain with valid HMACs (made with the stolen key), head included.
  const clone = new AuditLog(f.store, f.clock, { key: f.key });
  const rows = await f.store.listAudit({});
  await f.store.rawForTests(`UPDATE audit_events SET subject = 'r-other' WHERE seq = 2`);
  rows[1]!.subject = 'r-other';
  await rechain(f.store, rows, false);
  const last = (await f.store.listAudit({})).at(-1)!;
  await f.store.setKv('audit.head', `${last.seq}:${last.hash}`);
  t.same(await clone.adoptUnkeyed(), { keyed: 5 });
  t.ok((await clone.verify()).ok, 'without checkpoints the forged chain looks fine');
  const v = failed(await f.log.verify());
  t.equal(v.check, 'checkpoint-mismatch', 'the own checkpoint file disagrees');
  t.equal(v.brokenAt, 5);
  rmSync(f.file);
  const w = failed(await clone.verify({ checkpointFiles: [copy] }));
  t.equal(w.check, 'checkpoint-mismatch', 'an external copy (syslog lines) disagrees too');
  t.match(w.detail, /syslog-copy\.log line/);
});

t.test('the checkpoint file itself: forged lines, garbage, missing', async (t) => {
  const a = await fresh(t);
  const line = JSON.parse(readFileSync(a.file, 'utf8').trim().split('\n')[0]!);
  appendFileSync(a.file, `${JSON.stringify({ ...line, seq: 2 })}\n`);
  t.equal(failed(await a.log.verify()).check, 'checkpoint-hmac', 'a line not signed with the key');
  const b = await fresh(t);
  appendFileSync(b.file, 'garbage\n');
  t.equal(failed(await b.log.verify()).check, 'checkpoint-file');
  const c = await fresh(t);
  rmSync(c.file);
  t.equal(failed(await c.log.verify()).check, 'checkpoint-file', 'a missing checkpoint file is a failure');
  const d = await fresh(t, { events: 0 });
  t.ok((await d.log.verify()).ok, 'an empty log with no checkpoints verifies');
  writeFileSync(d.file, readFileSync(a.file, 'utf8').split('\n')[0] + '\n');
  t.equal(failed(await d.log.verify()).check, 'checkpoint-hmac', 'another key\'s checkpoint is not ours');
});

t.test('verification needs the key; another key fails at event 1', async (t) => {
  const f = await fresh(t, { checkpointFile: false });
  const other = new AuditLog(f.store, f.clock, { key: randomBytes(32) });
  const v = failed(await other.verify());
  t.equal(v.check, 'hmac');
  t.equal(v.brokenAt, 1);
});

t.test('adoptUnkeyed keys an intact older chain once, and refuses a broken one', async (t) => {
  const f = await fresh(t, { checkpointFile: false });
  await f.store.rawForTests('UPDATE audit_events SET mac = NULL');
  const [s, h] = (await f.store.getKv('audit.head'))!.split(':');
  await f.store.setKv('audit.head', `${s}:${h}`);
  t.equal(failed(await f.log.verify()).check, 'hmac', 'unkeyed events do not verify');
  t.same(await f.log.adoptUnkeyed(), { keyed: 5 });
  t.ok((await f.log.verify()).ok);
  const g = await fresh(t, { checkpointFile: false });
  await g.store.rawForTests('UPDATE audit_events SET mac = NULL');
  await g.store.rawForTests(`UPDATE audit_events SET actor = 'x' WHERE seq = 2`);
  const r = await g.log.adoptUnkeyed();
  t.equal(r.keyed, 0);
  t.match('broken' in r ? r.broken : '', /event 2 was altered/);
});

t.test('`tollgate audit verify` and `audit export` read the store with the key file', async (t) => {
  const { dir, store, gatewayRaw, log, storeYaml } = await fresh(t);
  await log.checkpoint();
  const cfg = join(dir, 'gateway.yaml');
  writeFileSync(join(dir, 'data', 'gateway.key'), `${gatewayRaw.toString('base64')}\n`, { mode: 0o600 });
  writeFileSync(cfg, `gateway:\n  dataDir: ${join(dir, 'data')}\n  id: gw1\n${storeYaml}`);
  const ok = await run(process.execPath, [bin, 'audit', 'verify', '--config', cfg]);
  t.match(ok.stdout, /audit chain OK: 5 events, head [0-9a-f]{64}, 2 signed checkpoints match/);
  const out = join(dir, 'export.ndjson');
  await run(process.execPath, [bin, 'audit', 'export', '--config', cfg, '--out', out]);
  const lines = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  t.same(lines.map((l) => l.seq), [1, 2, 3, 4, 5]);
  await store.rawForTests(`UPDATE audit_events SET data = '{"n":99}' WHERE seq = 4`);
  const bad = await run(process.execPath, [bin, 'audit', 'verify', '--config', cfg]).then(() => null, (e) => e as { code: number; stdout: string });
  t.equal(bad?.code, 2, 'exits 2');
  t.match(bad!.stdout, /BROKEN at event 4 \(check: content\)/);
  const json = await run(process.execPath, [bin, '--json', 'audit', 'verify', '--config', cfg]).then(() => null, (e) => e as { stdout: string });
  t.match(JSON.parse(json!.stdout), { ok: false, check: 'content', brokenAt: 4 });
  rmSync(join(dir, 'data', 'gateway.key'));
  const nokey = await run(process.execPath, [bin, 'audit', 'verify', '--config', cfg]).then(() => null, (e) => e as { code: number; stderr: string });
  t.equal(nokey?.code, 1);
  t.match(nokey!.stderr, /no gateway key at .*gateway\.key: the audit log cannot be verified without it/);
  t.notOk(existsSync(join(dir, 'data', 'gateway.key')), 'verify never makes a key');
  await run(process.execPath, [bin, 'audit', 'export', '--config', cfg, '--out', out]);
  t.equal(readFileSync(out, 'utf8').trim().split('\n').length, 5, 'export needs no key');
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
