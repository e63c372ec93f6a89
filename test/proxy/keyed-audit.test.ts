/**
 * The gateway key outside the store, end to end with real gateways on real SQLite files: the key
 * file made on first start (0600, refused when group/other may read it), the other secret forms,
 * an older data dir whose key sits in the store moved out once, the audit log attacked with DB
 * access only (raw SQL on the file: rewrite and re-chain, tail cut), signed checkpoints to a file
 * and through `logger` to a real UDP syslog receiver, a copy of the store without the key file
 * revealing no usable credential, and rule-hit events redacted like the query log.
 */
import t from 'tap';
import Database from 'better-sqlite3';
import { execFile } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { FakeTarget, fakeConnect, fakeModule } from '../support/fake-module.js';
import { eventHash, GENESIS } from '../../proxy/audit.js';
import { migrations } from '../../proxy/store/schema.js';
import { gatewayKey, readKeyFile } from '../../auth/keys.js';
import { ntHash } from '../../protocols/rdp/nlmp.js';
import { NT_VERIFIER } from '../../protocols/rdp/frontend.js';

const run = promisify(execFile);
const bin = join(import.meta.dirname, '..', '..', 'proxy', 'bin', 'tollgate.js');

const fakeTarget = { name: 'box', protocol: 'fake', address: 'x', risk: 'low', roles: [{ name: 'user' }] };
function fakeGateway(o: { dataDir?: string; gateway?: Record<string, unknown>; extra?: Record<string, unknown>; logSink?: (l: string) => void; policies?: Record<string, unknown>[] } = {}) {
  const ft = new FakeTarget();
  const mod = fakeModule(ft);
  // These tests read and tamper with the SQLite file itself (the store contract suite covers PostgreSQL).
  return startTestGateway({ modules: new Map([['fake', mod]]), listeners: ['fake'], targets: [fakeTarget], store: 'sqlite', ...o }).then((tg) => ({ tg, ft, mod }));
}

function tempDir(t: { teardown(fn: () => unknown): void }, prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** `tollgate audit verify --config` on a data dir (reads the store, the key file and the checkpoint file). */
async function cliVerify(dir: string, dataDir: string, extra: string[] = []): Promise<{ code: number; out: any }> {
  const cfg = join(dir, 'gateway.yaml');
  writeFileSync(cfg, `gateway:\n  dataDir: ${dataDir}\n  id: test\n`);
  const r = await run(process.execPath, [bin, '--json', 'audit', 'verify', '--config', cfg, ...extra]).then(
    (x) => ({ code: 0, stdout: x.stdout, stderr: x.stderr }), (e) => e as { code: number; stdout: string; stderr: string });
  return { code: r.code, out: r.stdout ? JSON.parse(r.stdout) : r.stderr };
}

/** Generate some history: sign-ins are not needed, requests and grants are audit events. */
async function history(tg: TestGateway): Promise<void> {
  for (let i = 0; i < 3; i++) await tg.grant('alice', 'box', 'user');
}

t.test('first start makes a 0600 key file in the data dir, outside the database', async (t) => {
  const lines: string[] = [];
  const { tg } = await fakeGateway({ logSink: (l) => lines.push(l) });
  t.teardown(() => tg.close());
  t.equal(statSync(tg.keyFile).mode & 0o777, 0o600, 'key file is 0600');
  const raw = readKeyFile(tg.keyFile);
  t.equal(raw.length, 32);
  t.ok(lines.some((l) => /created the gateway key file/.test(l) && l.includes(tg.keyFile)), 'the log says so, with the path');
  t.ok((await tg.store.listAudit({ action: 'gateway.key.created' })).length === 1, 'audited');
  t.equal(await tg.store.getKv('auth.key.gateway'), null, 'no key in the store');
  const db = readFileSync(join(tg.dataDir, 'tollgate.db'));
  for (const enc of [raw.toString('base64'), raw.toString('hex')]) t.equal(db.indexOf(enc), -1, 'the key is not in the database file');
  t.equal(db.indexOf(raw), -1);
  t.ok(existsSync(join(tg.dataDir, 'audit-checkpoints.log')), 'the first event wrote the first checkpoint');
  const v = await tg.api('carol', 'GET', '/api/v1/audit/verify');
  t.match(v.body, { ok: true });
});

t.test('a key file that group or others may read is refused; bad key material too', async (t) => {
  const dataDir = tempDir(t, 'tg-keyperm-');
  writeFileSync(join(dataDir, 'gateway.key'), `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
  chmodSync(join(dataDir, 'gateway.key'), 0o640);
  const e = await fakeGateway({ dataDir }).then(() => null, (x: Error) => x);
  t.match(e?.message, /gateway\.key: the key file .*gateway\.key is accessible to group or others \(mode 0640\); run: chmod 600/);
  t.equal(readdirSync(dataDir).filter((f) => f.startsWith('audit-checkpoints')).length, 0, 'nothing written');
  const other = join(tempDir(t, 'tg-keyref-'), 'k');
  writeFileSync(other, randomBytes(32).toString('hex'), { mode: 0o644 });
  const e2 = await fakeGateway({ dataDir: tempDir(t, 'tg-keyperm2-'), gateway: { key: { file: other } } }).then(() => null, (x: Error) => x);
  t.match(e2?.message, /accessible to group or others \(mode 0644\)/, 'a configured key file too');
  const e3 = await fakeGateway({ dataDir: tempDir(t, 'tg-keyperm3-'), gateway: { key: { value: 'too-short' } } }).then(() => null, (x: Error) => x);
  t.match(e3?.message, /gateway\.key: gateway\.key \(value\) must hold a 32-byte key as base64 \(44 characters\) or hex \(64 digits\)/);
  t.notMatch(e3?.message, /too-short/, 'the bad value is not echoed');
  const e4 = await fakeGateway({ dataDir: tempDir(t, 'tg-keyperm4-'), gateway: { key: { file: join(tmpdir(), 'no-such-tollgate.key') } } }).then(() => null, (x: Error) => x);
  t.match(e4?.message, /the key file .*no-such-tollgate\.key does not exist/, 'a configured key file is never made up');
  const e5 = await fakeGateway({ dataDir: tempDir(t, 'tg-keyperm5-'), gateway: { key: { command: ['sh', '-c', 'echo vault: permission denied >&2; exit 3'] } } }).then(() => null, (x: Error) => x);
  t.match(e5?.message, /gateway\.key: the command sh to print the secret \(exit code 3: vault: permission denied\)/);
  const d6 = tempDir(t, 'tg-keyperm6-');
  const e6 = await fakeGateway({ dataDir: d6, extra: { audit: { checkpoints: { file: '/nonexistent-dir/cp.log' } } } }).then(() => null, (x: Error) => x);
  t.match(e6?.message, /audit\.checkpoints\.file: a file in an existing directory \(\/nonexistent-dir does not exist\)/);
  t.notOk(existsSync(join(d6, 'gateway.key')), 'no key file made when the config is refused');
});

t.test('a lost or replaced key file is refused, never silently replaced', async (t) => {
  const dataDir = tempDir(t, 'tg-keylost-');
  const a = await fakeGateway({ dataDir });
  await a.tg.close();
  const keyFile = join(dataDir, 'gateway.key');
  const original = readFileSync(keyFile);
  rmSync(keyFile);
  const e = await fakeGateway({ dataDir }).then(() => null, (x: Error) => x);
  t.match(e?.message, /gateway\.key: the key file .*gateway\.key is missing, but this store was used with a gateway key: restore the key file from its backup/);
  t.notOk(existsSync(keyFile), 'no new key made');
  writeFileSync(keyFile, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
  const e2 = await fakeGateway({ dataDir }).then(() => null, (x: Error) => x);
  t.match(e2?.message, /this store was used with another gateway key than .*gateway\.key: restore that key/);
  const v = await cliVerify(dataDir, dataDir);
  t.match(v.out, /this store was used with another gateway key/, 'audit verify says so too');
  writeFileSync(keyFile, original, { mode: 0o600 });
  const b = await fakeGateway({ dataDir });
  t.teardown(() => b.tg.close());
  t.match((await b.tg.api('carol', 'GET', '/api/v1/audit/verify')).body, { ok: true }, 'the restored key works');
  t.equal(withDb(dataDir, (db) => (db.prepare(`SELECT count(*) AS n FROM kv WHERE value = ?`).get(original.toString('utf8').trim()) as { n: number }).n), 0, 'the check value is not the key');
});

t.test('env and command (KMS-style) key references; the same key keeps sealed data readable', async (t) => {
  const raw = randomBytes(32);
  const dataDir = tempDir(t, 'tg-keyenv-');
  process.env['TG_TEST_GATEWAY_KEY'] = raw.toString('base64');
  t.teardown(() => { delete process.env['TG_TEST_GATEWAY_KEY']; });
  const a = await fakeGateway({ dataDir, gateway: { key: { env: 'TG_TEST_GATEWAY_KEY' } } });
  const sealed = a.tg.gw.key.seal({ p: 'x' }, Infinity);
  await a.tg.close();
  t.notOk(existsSync(join(dataDir, 'gateway.key')), 'no key file when the key comes from elsewhere');
  const b = await fakeGateway({ dataDir, gateway: { key: { command: ['printf', '%s', raw.toString('hex')] } } });
  t.teardown(() => b.tg.close());
  t.same(b.tg.gw.key.unseal(sealed), { p: 'x' }, 'the command gave the same key (hex)');
  t.match((await b.tg.api('carol', 'GET', '/api/v1/audit/verify')).body, { ok: true });
});

/** A data dir as an older version left it: schema 1, the key in KV, an unkeyed chain with a plain head. */
function legacyDataDir(dir: string, events: number): { raw: Buffer } {
  mkdirSync(dir, { recursive: true });
  const db = new Database(join(dir, 'tollgate.db'));
  db.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
  db.exec(migrations.find((m) => m.version === 1)!.sql);
  db.prepare('INSERT INTO schema_migrations VALUES (1, 0)').run();
  const raw = randomBytes(32);
  db.prepare('INSERT INTO kv VALUES (?, ?)').run('auth.key.gateway', raw.toString('base64'));
  let prev = GENESIS;
  for (let seq = 1; seq <= events; seq++) {
    const e = { seq, at: 1_000 * seq, actor: 'system', action: 'gateway.started', subject: 'old', data: { n: seq } };
    const hash = eventHash(prev, e);
    db.prepare('INSERT INTO audit_events VALUES (?, ?, ?, ?, ?, ?, ?, ?)').run(seq, e.at, e.actor, e.action, e.subject, JSON.stringify(e.data), prev, hash);
    prev = hash;
  }
  db.prepare('INSERT INTO kv VALUES (?, ?)').run('audit.head', `${events}:${prev}`);
  db.close();
  return { raw };
}

t.test('an existing data dir with the key in the store migrates once', async (t) => {
  const dataDir = tempDir(t, 'tg-legacy-');
  const { raw } = legacyDataDir(dataDir, 4);
  const sealedBefore = gatewayKey(raw).seal({ v: 'sealed by the old version' }, Infinity);
  const lines: string[] = [];
  const a = await fakeGateway({ dataDir, logSink: (l) => lines.push(l) });
  t.same(readKeyFile(join(dataDir, 'gateway.key')), raw, 'the store\'s key was written to the key file');
  t.equal(statSync(join(dataDir, 'gateway.key')).mode & 0o777, 0o600);
  t.equal(await a.tg.store.getKv('auth.key.gateway'), null, 'and its KV row deleted');
  t.same(a.tg.gw.key.unseal(sealedBefore), { v: 'sealed by the old version' }, 'data sealed before still unseals');
  const moved = await a.tg.store.listAudit({ action: 'gateway.key.moved' });
  t.equal(moved.length, 1, 'audited');
  t.match(moved[0]!.data, { to: join(dataDir, 'gateway.key'), keyedEvents: 4 });
  t.ok(lines.some((l) => /moved the gateway key out of the store/.test(l)));
  t.match((await a.tg.api('carol', 'GET', '/api/v1/audit/verify')).body, { ok: true }, 'the older events are keyed and verify');
  await a.tg.close();
  const b = await fakeGateway({ dataDir });
  t.equal((await b.tg.store.listAudit({ action: 'gateway.key.moved' })).length, 1, 'moved once only');
  await b.tg.close();
  t.match(await cliVerify(dataDir, dataDir), { code: 0, out: { ok: true } });
  // The same move when gateway.key points at a key file that does not exist yet.
  const d2 = tempDir(t, 'tg-legacy2-');
  const old2 = legacyDataDir(d2, 2);
  const kf = join(tempDir(t, 'tg-keydir-'), 'gw.key');
  const c = await fakeGateway({ dataDir: d2, gateway: { key: { file: kf } } });
  t.teardown(() => c.tg.close());
  t.same(readKeyFile(kf), old2.raw, 'moved to the configured key file');
  t.notOk(existsSync(join(d2, 'gateway.key')));
  // A configured key that differs from the store's is refused (sealed data would be lost silently).
  const d3 = tempDir(t, 'tg-legacy3-');
  legacyDataDir(d3, 1);
  const e = await fakeGateway({ dataDir: d3, gateway: { key: { value: randomBytes(32).toString('base64') } } }).then(() => null, (x: Error) => x);
  t.match(e?.message, /the store holds a different gateway key than gateway\.key \(value\)/);
});

/** Open the gateway's SQLite file directly, as someone with DB access only. */
function withDb<T>(dataDir: string, fn: (db: Database.Database) => T): T {
  const db = new Database(join(dataDir, 'tollgate.db'));
  try { return fn(db); } finally { db.close(); }
}

type Row = { seq: number; at: number; actor: string; action: string; subject: string | null; data: string; mac: string | null };

t.test('DB access only: rewrite event 1, re-chain with plain SHA-256, fix the head: verify fails on the HMAC', async (t) => {
  const dataDir = tempDir(t, 'tg-rewrite-');
  const a = await fakeGateway({ dataDir });
  await history(a.tg);
  await a.tg.close();
  t.match(await cliVerify(dataDir, dataDir), { code: 0, out: { ok: true } }, 'intact before');
  withDb(dataDir, (db) => {
    const rows = db.prepare('SELECT * FROM audit_events ORDER BY seq').all() as Row[];
    rows[0]!.data = JSON.stringify({ file: 'somewhere else' });
    let prev = GENESIS;
    for (const r of rows) {
      const hash = eventHash(prev, { ...r, data: JSON.parse(r.data) });
      db.prepare('UPDATE audit_events SET data = ?, prev_hash = ?, hash = ? WHERE seq = ?').run(r.data, prev, hash, r.seq);
      prev = hash;
    }
    const head = (db.prepare(`SELECT value FROM kv WHERE key = 'audit.head'`).get() as { value: string }).value.split(':');
    db.prepare(`UPDATE kv SET value = ? WHERE key = 'audit.head'`).run(`${rows.at(-1)!.seq}:${prev}:${head[2]}`);
  });
  const v = await cliVerify(dataDir, dataDir);
  t.equal(v.code, 2, 'audit verify exits 2');
  t.match(v.out, { ok: false, check: 'hmac', brokenAt: 1 });
  // Restarting the gateway on the rewritten store does not launder it.
  const b = await fakeGateway({ dataDir });
  t.teardown(() => b.tg.close());
  const api = await b.tg.api('carol', 'GET', '/api/v1/audit/verify');
  t.match(api.body, { ok: false, check: 'hmac', brokenAt: 1 }, 'the API names the same check');
  t.match(api.body.detail, /without the gateway key/);
});

t.test('DB access only: delete the last events and the head row: verify fails; an old head is caught by the checkpoints', async (t) => {
  const dataDir = tempDir(t, 'tg-trunc-');
  const a = await fakeGateway({ dataDir });
  await history(a.tg);
  const oldHead = (await a.tg.store.getKv('audit.head'))!;
  const oldSeq = Number(oldHead.split(':')[0]);
  await a.tg.grant('alice', 'box', 'user');
  await a.tg.close();
  const end = withDb(dataDir, (db) => (db.prepare('SELECT max(seq) AS m FROM audit_events').get() as { m: number }).m);
  t.ok(end > oldSeq + 2, 'events after the old head');
  withDb(dataDir, (db) => {
    db.prepare('DELETE FROM audit_events WHERE seq > ?').run(end - 3);
    db.prepare(`DELETE FROM kv WHERE key = 'audit.head'`).run();
  });
  t.match(await cliVerify(dataDir, dataDir), { code: 2, out: { ok: false, check: 'missing-head' } }, 'a missing head is a failure');
  withDb(dataDir, (db) => {
    db.prepare('DELETE FROM audit_events WHERE seq > ?').run(oldSeq);
    db.prepare(`INSERT INTO kv VALUES ('audit.head', ?)`).run(oldHead);
  });
  const v = await cliVerify(dataDir, dataDir);
  t.match(v, { code: 2, out: { ok: false, check: 'checkpoint-beyond-end', brokenAt: oldSeq + 1 } }, 'a replayed older head: the shutdown checkpoint is beyond the end');
  t.match(v.out.detail, new RegExp(`ends at event ${oldSeq} but a signed checkpoint .*audit-checkpoints\\.log line \\d+\\) records event ${end}`));
});

t.test('periodic checkpoints through `logger` to a real UDP syslog receiver; the copy verifies', async (t) => {
  const received: string[] = [];
  const udp = createSocket('udp4');
  udp.on('message', (m) => received.push(m.toString('utf8')));
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
  t.teardown(() => udp.close());
  const port = udp.address().port;
  const dataDir = tempDir(t, 'tg-syslog-');
  const { tg } = await fakeGateway({
    dataDir,
    extra: { audit: { checkpointInterval: '200ms', checkpoints: { command: ['logger', '-n', '127.0.0.1', '-P', String(port), '-d', '-t', 'tollgate-audit'] } } },
  });
  const oldHead = (await tg.store.getKv('audit.head'))!;
  await tg.grant('alice', 'box', 'user');
  const want = (await tg.store.lastAudit())!.seq;
  const deadline = Date.now() + 15_000;
  while (!received.some((m) => m.includes(`"seq":${want},`)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  t.ok(received.some((m) => m.includes(`"seq":${want},`)), `a checkpoint of event ${want} reached the syslog receiver within the interval`);
  const lines = (readFileSync(join(dataDir, 'audit-checkpoints.log'), 'utf8')).trim().split('\n');
  t.ok(lines.length >= 2, 'the file has the same checkpoints');
  const idle = lines.length;
  await new Promise((r) => setTimeout(r, 700));
  t.equal(readFileSync(join(dataDir, 'audit-checkpoints.log'), 'utf8').trim().split('\n').length, idle, 'no new checkpoint while nothing happens');
  await tg.close();
  const stopSeq = withDb(dataDir, (db) => (db.prepare('SELECT max(seq) AS m FROM audit_events').get() as { m: number }).m);
  while (!received.some((m) => m.includes(`"seq":${stopSeq},`)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  t.ok(received.some((m) => m.includes(`"seq":${stopSeq},`) && m.includes('tollgate-audit')), 'one more checkpoint at shutdown');
  const copy = join(dataDir, 'syslog-copy.log');
  writeFileSync(copy, received.join('\n'));
  const v = await cliVerify(dataDir, dataDir, ['--checkpoints', copy]);
  t.match(v, { code: 0, out: { ok: true } });
  t.ok(v.out.checkpoints >= received.length + lines.length, 'own file and syslog copy compared');
  // Cut the tail back to an older (validly signed) head, and lose the local checkpoint file too: the syslog copy still catches it.
  const oldSeq = Number(oldHead.split(':')[0]);
  withDb(dataDir, (db) => {
    db.prepare('DELETE FROM audit_events WHERE seq > ?').run(oldSeq);
    db.prepare(`UPDATE kv SET value = ? WHERE key = 'audit.head'`).run(oldHead);
  });
  writeFileSync(join(dataDir, 'audit-checkpoints.log'), '');
  const w = await cliVerify(dataDir, dataDir, ['--checkpoints', copy]);
  t.equal(w.code, 2);
  t.equal(w.out.check, 'checkpoint-beyond-end');
  t.match(w.out.detail, /syslog-copy\.log line \d+/, 'named by the syslog copy');
  withDb(dataDir, (db) => {
    const last = db.prepare('SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1').get() as { seq: number; hash: string };
    db.prepare(`UPDATE kv SET value = ? WHERE key = 'audit.head'`).run(`${last.seq}:${last.hash}:${'0'.repeat(64)}`);
  });
  t.equal((await cliVerify(dataDir, dataDir)).out.check, 'head-hmac', 'a head cannot be signed without the key');
});

t.test('a copy of the store and data dir without the key file reveals no usable credential', async (t) => {
  const tg = await startTestGateway({
    store: 'sqlite',
    targets: [
      { name: 'desk', protocol: 'vnc', address: '127.0.0.1:5999', risk: 'low', credentials: { passwordFile: '/nonexistent/vnc.passwd' }, options: { classicAuth: true }, roles: [{ name: 'user' }] },
      { name: 'win', protocol: 'rdp', address: '127.0.0.1:3399', risk: 'low', credentials: { mode: 'local-account' }, roles: [{ name: 'user' }] },
    ],
  });
  t.teardown(() => tg.close());
  const issued: { id: string; secret: string; protocol: string }[] = [];
  for (const [target, protocol] of [['desk', 'vnc'], ['win', 'rdp']] as const) {
    const g = await tg.grant('alice', target, 'user');
    for (const reusable of [false, true]) issued.push({ ...(await tg.secret('alice', g.id, { reusable })), protocol });
  }
  const keyRaw = readKeyFile(tg.keyFile);
  const copy = tempDir(t, 'tg-stolen-');
  await tg.gw.stop();
  cpSync(tg.dataDir, copy, { recursive: true, filter: (src) => src !== tg.keyFile });
  t.notOk(existsSync(join(copy, 'gateway.key')), 'the copy has no key file');
  // Password equivalents: the secret itself (VNC's DES key is the secret), the NT hash (pass-the-hash), the gateway key.
  const needles: [string, Buffer][] = [];
  for (const s of issued) {
    needles.push([`${s.protocol} secret`, Buffer.from(s.secret)]);
    if (s.protocol === 'rdp') {
      const h = ntHash(s.secret);
      needles.push(['NT hash', h], ['NT hash hex', Buffer.from(h.toString('hex'))], ['NT hash HEX', Buffer.from(h.toString('hex').toUpperCase())], ['NT hash base64', Buffer.from(h.toString('base64'))]);
    }
  }
  needles.push(['gateway key', keyRaw], ['gateway key base64', Buffer.from(keyRaw.toString('base64'))], ['gateway key hex', Buffer.from(keyRaw.toString('hex'))]);
  const files = (function walk(d: string): string[] {
    return readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(d, e.name)) : [join(d, e.name)]));
  })(copy);
  t.ok(files.some((f) => f.endsWith('tollgate.db')), 'the copy has the database');
  const leaks: string[] = [];
  for (const f of files) {
    const body = readFileSync(f);
    for (const [what, n] of needles) if (body.includes(n)) leaks.push(`${what} in ${f}`);
  }
  t.same(leaks, [], 'no secret, password equivalent or key anywhere in the copy');
  // Positive control: the verifiers are in the copied store, sealed: the gateway key opens them, another key does not.
  const rows = withDb(copy, (db) => db.prepare('SELECT id, verifiers FROM connection_secrets').all() as { id: string; verifiers: string }[]);
  t.equal(withDb(copy, (db) => db.prepare(`SELECT count(*) AS n FROM kv WHERE key LIKE 'auth.key.%'`).get() as { n: number }).n, 0, 'no key in the KV space');
  const k = gatewayKey(keyRaw);
  const stranger = gatewayKey(randomBytes(32));
  for (const s of issued) {
    const row = rows.find((r) => r.id === s.id)!;
    const v = JSON.parse(row.verifiers) as Record<string, string>;
    const sealed = s.protocol === 'vnc' ? v['vnc-des']! : v[NT_VERIFIER]!;
    const opened = k.unseal<{ k?: string; h?: string }>(sealed);
    t.equal(s.protocol === 'vnc' ? opened?.k : opened?.h, s.protocol === 'vnc' ? s.secret : ntHash(s.secret).toString('hex'), `${s.protocol} verifier sealed with the gateway key`);
    t.equal(stranger.unseal(sealed), null, 'useless without it');
  }
});

t.test('rule-hit audit events and alerts store the statement redacted like the query log', async (t) => {
  const { tg, ft, mod } = await fakeGateway({
    policies: [{
      name: 'p', targets: ['*'], roles: ['*'], requesters: ['engineers'], approvers: ['approvers'],
      rules: [{ kinds: ['ALTER ROLE'], action: 'deny' }, { pattern: 'IDENTIFIED BY', action: 'alert' }, { pattern: 'tollgate_kill', action: 'kill' }],
    }],
  });
  t.teardown(() => tg.close());
  const g = await tg.grant('alice', 'box', 'user');
  const s = await tg.secret('alice', g.id, { reusable: true });
  const c = await fakeConnect(mod.ctx!, ft, 'box', s.secret);
  if (!c.ok) throw new Error(c.reason);
  t.equal(c.session.check("ALTER ROLE x PASSWORD 'p'", { kind: 'ALTER ROLE' }).action, 'deny');
  t.equal(c.session.check("CREATE USER y IDENTIFIED BY 'hunter2'").action, 'alert');
  t.equal(c.session.check("SELECT 'tollgate_kill'; ALTER USER z WITH PASSWORD 'swordfish'").action, 'kill');
  // The kill is under way; end() is idempotent and resolves once teardown (and its audit events) is done.
  await c.session.end({ code: 'forbidden', message: 'test' });
  const events = await tg.store.listAudit({ action: 'session.rule.*' });
  t.same(events.map((e) => e.action), ['session.rule.deny', 'session.rule.alert', 'session.rule.kill']);
  t.equal(events[0]!.data['text'], "ALTER ROLE x PASSWORD '***'");
  t.equal(events[1]!.data['text'], "CREATE USER y IDENTIFIED BY '***'");
  const all = JSON.stringify(await tg.store.listAudit({ limit: 10_000 }));
  for (const p of ["'p'", 'hunter2', 'swordfish']) t.notOk(all.includes(p), `${p} is in no audit event (rule hits, notify)`);
  t.ok((await tg.store.listAudit({ action: 'notify' })).some((e) => String(e.data['text']).includes("IDENTIFIED BY '***'")), 'the alert carries the redacted text');
});
