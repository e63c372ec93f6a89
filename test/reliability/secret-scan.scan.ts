/**
 * The secret scan after the whole suite (test/run.js runs it; not a *.test.ts, so tap does not run
 * it inside the suite):
 *
 *   node --import=tsx test/reliability/secret-scan.scan.ts --registry FILE --root DIR [--allow-empty] [--keep]
 *
 * First proves it can fail (secrets planted in every form it looks for must be found, a clean tree
 * must give none), then looks for every secret in the registry in every file under the test root
 * (all temp dirs of the run: data dirs, stores, recordings, logs, the suite's output) and under
 * every directory the registry names. Prints TAP; exits 1 on any failure. Afterwards it removes the
 * test root and the recorded directories (they were kept for it) unless --keep.
 */
import Database from 'better-sqlite3';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readRegistry, scanDirs, type Hit, type RecordedSecret } from './secret-scan.js';

const args = process.argv.slice(2);
const opt = (name: string): string | undefined => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
const registryFile = opt('--registry') ?? process.env['TOLLGATE_SECRET_REGISTRY'];
const root = opt('--root') ?? process.env['TOLLGATE_TEST_ROOT'];
const allowEmpty = args.includes('--allow-empty');
const keep = args.includes('--keep');

let n = 0;
let failed = 0;
function check(ok: boolean, name: string, diag?: Record<string, unknown>): void {
  n++;
  if (!ok) failed++;
  process.stdout.write(`${ok ? 'ok' : 'not ok'} ${n} - ${name}\n`);
  if (diag && !ok) {
    process.stdout.write('  ---\n');
    for (const [k, v] of Object.entries(diag)) process.stdout.write(`  ${k}: ${JSON.stringify(v)}\n`);
    process.stdout.write('  ...\n');
  }
}
/** Where a hit is, never the secret itself: its kind, the form found, and a fingerprint. */
const describeHit = (h: Hit, secrets: RecordedSecret[]): string =>
  `${h.file} @${h.offset}: ${h.kind} (${h.form}, sha256:${createHash('sha256').update(secrets[h.secretIndex]!.value).digest('hex').slice(0, 12)})`;

/** Plant secrets in every form the scan claims to find; each must be found, and nothing in a clean tree. */
function selfTest(): void {
  const dir = mkdtempSync(join(tmpdir(), 'tg-scan-self-'));
  try {
    const planted: RecordedSecret[] = [
      { kind: 'clear', value: randomBytes(18).toString('base64url') },
      { kind: 'b64', value: randomBytes(18).toString('base64url') },
      { kind: 'b64url', value: randomBytes(18).toString('base64url') },
      { kind: 'hex', value: randomBytes(18).toString('base64url') },
      { kind: 'utf16', value: randomBytes(18).toString('base64url') },
      { kind: 'json', value: `-----BEGIN KEY-----\n${randomBytes(30).toString('base64')}\n-----END KEY-----\n` },
      { kind: 'sqlite', value: randomBytes(18).toString('base64url') },
      { kind: 'boundary', value: randomBytes(18).toString('base64url') },
    ];
    const [clear, b64, b64url, hex, utf16, json, sqlite, boundary] = planted.map((p) => p.value) as string[];
    writeFileSync(join(dir, 'gateway.log'), `{"level":30,"msg":"connection secret issued","secret":"${clear}"}\n`);
    writeFileSync(join(dir, 'blob.b64'), Buffer.concat([Buffer.from('x'), Buffer.from(b64!), Buffer.from('yz')]).toString('base64'));
    writeFileSync(join(dir, 'blob.b64url'), Buffer.concat([Buffer.from('ab'), Buffer.from(b64url!)]).toString('base64url'));
    writeFileSync(join(dir, 'dump.hex'), `0x${Buffer.from(`pw=${hex}`).toString('hex')}`);
    writeFileSync(join(dir, 'login7.bin'), Buffer.concat([randomBytes(7), Buffer.from(utf16!, 'utf16le'), randomBytes(5)]));
    writeFileSync(join(dir, 'log.json'), JSON.stringify({ key: json }));
    const db = new Database(join(dir, 'store.db'));
    db.exec('create table t (v text)');
    db.prepare('insert into t values (?)').run(`password ${sqlite}`);
    db.close();
    // Across the scanner's 8 MiB chunk boundary.
    const big = Buffer.alloc(8 * 1024 * 1024 + 100, 0x2e);
    Buffer.from(boundary!).copy(big, 8 * 1024 * 1024 - 10);
    writeFileSync(join(dir, 'recording.cast'), big);
    const r = scanDirs([dir], planted);
    const found = new Set(r.hits.map((h) => h.kind));
    const missing = planted.filter((p) => !found.has(p.kind)).map((p) => p.kind);
    check(missing.length === 0, 'self-test: planted secrets are found (clear log line, base64 and base64url at other alignments, hex, UTF-16LE, JSON-escaped key, in a SQLite file, across a chunk boundary)', { missing });
    const clean = mkdtempSync(join(dir, 'clean-'));
    writeFileSync(join(clean, 'gateway.log'), `{"secret":"<secret>","other":"${randomBytes(18).toString('base64url')}"}\n`);
    const c = scanDirs([clean], planted.filter((p) => p.kind !== 'boundary'));
    check(c.hits.length === 0 && c.files === 1, 'self-test: a tree without the secrets gives no hit', { hits: c.hits.length, files: c.files });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

selfTest();

if (!registryFile) {
  check(false, 'the secret registry is named (--registry or TOLLGATE_SECRET_REGISTRY)');
} else {
  const reg = readRegistry(registryFile);
  const kinds: Record<string, number> = {};
  for (const s of reg.secrets) kinds[s.kind] = (kinds[s.kind] ?? 0) + 1;
  check(reg.secrets.length > 0 || allowEmpty, `the suite recorded ${reg.secrets.length} secrets ${JSON.stringify(kinds)}`, { registry: registryFile });
  const dirs = [...(root ? [root] : []), ...reg.dirs].filter((d) => existsSync(d));
  const started = performance.now();
  const r = scanDirs(dirs, reg.secrets);
  const secs = ((performance.now() - started) / 1000).toFixed(1);
  check(r.hits.length === 0, `no recorded secret in ${r.files} files (${(r.bytes / 1048576).toFixed(1)} MiB) under ${dirs.length} dirs: ${reg.secrets.length} secrets, ${r.patterns} forms, ${secs}s`, {
    hits: r.hits.length,
    first: r.hits.slice(0, 20).map((h) => describeHit(h, reg.secrets)),
  });
  if (r.skippedShort) process.stdout.write(`# ${r.skippedShort} secrets shorter than 8 bytes are only looked for in their longer encodings\n`);
  if (!keep) for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
process.stdout.write(`1..${n}\n`);
process.exit(failed ? 1 : 0);
