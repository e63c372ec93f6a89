/**
 * The credential vault against a real PostgreSQL cluster: a target whose admin password is
 * `{vault: true}` works only once the SOC stored it (API or CLI, from standard input); the API and
 * the CLI show when and by whom it was set, never the credential; every change is audited; only the
 * SOC may set or read, and a cookie-authenticated change must come from the gateway's own origin.
 * A copy of the store and the data directory without the key file reveals no credential that was
 * set (searched for in clear, base64, base64url and hex), and a sealed credential moved to another
 * target's row does not open.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { gatewayKey, readKeyFile } from '../../auth/keys.js';
import { ManualClock } from '../../policies/clock.js';
import { openSqliteStore } from '../../proxy/store/sqlite.js';
import { Vault, vaultId } from '../../proxy/vault.js';
import { validateConfig } from '../../proxy/config.js';
import { moduleMap } from '../../protocols/index.js';
import { startTestGateway } from '../support/gateway.js';
import { havePostgres, startTestCluster } from '../support/pg.js';

const bin = join(import.meta.dirname, '..', '..', 'proxy', 'bin', 'tollgate.js');

/** Every file under dir (recursively). */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    const st = statSync(p);
    if (st.isDirectory()) out.push(...filesUnder(p));
    else if (st.isFile()) out.push(p);
  }
  return out;
}

/** The ways a secret could sit in a file: clear, base64, base64url, hex (both cases), UTF-16. */
function encodings(secret: string): Buffer[] {
  const b = Buffer.from(secret, 'utf8');
  return [b, Buffer.from(b.toString('base64')), Buffer.from(b.toString('base64url')), Buffer.from(b.toString('hex')), Buffer.from(b.toString('hex').toUpperCase()), Buffer.from(secret, 'utf16le')];
}
function findSecret(files: string[], secret: string): string[] {
  const hits: string[] = [];
  for (const f of files) {
    const data = readFileSync(f);
    for (const enc of encodings(secret)) if (data.includes(enc)) hits.push(`${f} (${enc.length} bytes form)`);
  }
  return hits;
}

function cli(args: string[], env: Record<string, string>, input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = execFile(process.execPath, [bin, ...args], { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0, stdout, stderr });
    });
    p.stdin?.end(input ?? '');
  });
}

t.test('config: {vault: true} only where a target admin credential may be; rotate needs a vault credential that can rotate', async (t) => {
  const modules = moduleMap();
  const pgT = (credentials: Record<string, unknown>) => ({ name: 'db', protocol: 'postgres', address: '127.0.0.1:5432', roles: [{ name: 'read' }], credentials });
  const cfg = (targets: unknown[], extra: Record<string, unknown> = {}) => () => validateConfig({ targets, ...extra }, '<test>', modules);
  const refused = (f: () => unknown): unknown => { try { f(); return 'accepted'; } catch (e) { return e; } };
  t.doesNotThrow(cfg([pgT({ admin: { user: 'a', password: { vault: true } }, rotate: '24h' })]));
  t.doesNotThrow(cfg([pgT({ admin: { user: 'a', password: { vault: true } }, rotate: false })], { credentials: { rotate: '1d' } }));
  t.match(refused(cfg([pgT({ admin: { user: 'a', password: { file: 'x' } }, rotate: '24h' })])), { path: 'targets[0].credentials.rotate', expected: /kept in the vault to rotate/ });
  t.match(refused(cfg([pgT({ admin: { user: 'a', password: { vault: true } }, rotate: 'often' })])), { path: 'targets[0].credentials.rotate' });
  t.match(refused(cfg([pgT({ admin: { user: 'a', password: { vault: true } }, rotate: '10s' })])), { expected: /at least 1m/ });
  t.match(refused(cfg([pgT({ admin: { user: 'a', password: { vault: 'yes' } } })])), { path: 'targets[0].credentials.admin.password' });
  t.match(refused(cfg([], { credentials: { rotate: '5s' } })), { path: 'credentials.rotate' });
  t.match(refused(cfg([], { gateway: { metricsToken: { vault: true } } })), { path: 'gateway.metricsToken' }, 'not a secret reference of the config');
});

if (!havePostgres) {
  t.fail('PostgreSQL binaries are required (apt-get install postgresql postgresql-client)');
} else {
  const pgc = await startTestCluster(t, 'vault-db');
  const adminPassword = pgc.cluster.admin.password;
  const vaultTarget = (name: string) => ({ ...pgc.target, name, credentials: { ...pgc.target.credentials, admin: { user: pgc.cluster.admin.user, password: { vault: true } } } });
  const logs: string[] = [];
  const clock = new ManualClock(Date.now());
  const tg = await startTestGateway({
    targets: [vaultTarget('vault-db'), vaultTarget('other-db'), { ...pgc.target, name: 'file-db' }], listeners: ['postgres'], clock, store: 'sqlite',
    logSink: (l) => logs.push(l),
  });
  t.teardown(() => tg.close());
  const audit = async (action: string) => (await tg.store.listAudit({ action })).map((e) => e.data as Record<string, unknown>);
  const marker = `tg-marker-${randomBytes(12).toString('hex')}`;
  const wrong = `tg-wrong-${randomBytes(12).toString('base64url')}`;

  t.test('a vault credential that is not set yet: the target check says so', async (t) => {
    const r = await tg.api('carol', 'POST', '/api/v1/targets/vault-db/check');
    t.equal(r.status, 200);
    t.equal(r.body.ok, false);
    t.match(r.body.detail, /not set yet: run tollgate credentials set vault-db/);
    const show = await tg.api('carol', 'GET', '/api/v1/targets/vault-db/credentials');
    t.match(show.body, [{ target: 'vault-db', field: 'admin.password', set: false, version: 0 }]);
  });

  t.test('only the SOC sets or reads vault credentials; cookie changes only from the gateway origin', async (t) => {
    for (const who of ['alice', 'bob']) {
      t.equal((await tg.api(who, 'PUT', '/api/v1/targets/vault-db/credentials', { secret: marker, verify: false })).status, 403, `${who} may not set`);
      t.equal((await tg.api(who, 'GET', '/api/v1/targets/vault-db/credentials')).status, 403, `${who} may not read`);
      t.equal((await tg.api(who, 'POST', '/api/v1/targets/vault-db/credentials/rotate', {})).status, 403, `${who} may not rotate`);
      t.equal((await tg.api(who, 'GET', '/api/v1/credentials')).status, 403);
    }
    t.equal((await tg.api(null, 'PUT', '/api/v1/targets/vault-db/credentials', { secret: marker, verify: false })).status, 401, 'signed out: 401');
    const { cookie } = await tg.gw.webSessions.create('carol', null, 3_600_000);
    const asBrowser = (origin: string) => fetch(`${tg.url}/api/v1/targets/vault-db/credentials`, {
      method: 'PUT', headers: { cookie: `tg_session=${encodeURIComponent(cookie.reveal())}`, origin, 'content-type': 'application/json' },
      body: JSON.stringify({ secret: marker, verify: false }),
    });
    t.equal((await asBrowser('http://evil.example')).status, 403, "carol's cookie from a foreign origin: refused (CSRF)");
    t.equal((await tg.store.listVaultCredentials()).length, 0, 'nothing was stored by the refused calls');
    t.same(await audit('credential.set'), [], 'and nothing audited as set');
  });

  t.test('a credential the target refuses is not stored (verify), and the refusal is audited', async (t) => {
    const r = await tg.api('carol', 'PUT', '/api/v1/targets/vault-db/credentials', { secret: wrong });
    t.equal(r.status, 409);
    t.equal(r.body.code, 'verify_failed');
    t.notMatch(JSON.stringify(r.body), wrong, 'the refusal does not echo the credential');
    t.equal(await tg.store.getVaultCredential(vaultId('vault-db', 'admin.password')), null);
    t.match(await audit('credential.set_refused'), [{ target: 'vault-db', field: 'admin.password' }]);
  });

  t.test('the SOC sets the credential: metadata only, audited; the target checks out and sessions mint with it', async (t) => {
    const r = await tg.api('carol', 'PUT', '/api/v1/targets/vault-db/credentials', { secret: adminPassword });
    t.equal(r.status, 200, JSON.stringify(r.body));
    t.match(r.body, { target: 'vault-db', field: 'admin.password', set: true, setBy: 'carol', version: 1, rotating: false, nextRotationAt: null });
    t.notMatch(JSON.stringify(r.body), adminPassword, 'the answer does not hold the credential');
    const show = await tg.api('carol', 'GET', '/api/v1/targets/vault-db/credentials');
    t.match(show.body, [{ set: true, setBy: 'carol', version: 1 }]);
    t.notMatch(JSON.stringify(show.body), adminPassword, 'show never holds the credential');
    const all = await tg.api('carol', 'GET', '/api/v1/credentials');
    t.same(all.body.map((x: { target: string }) => x.target).sort(), ['other-db', 'vault-db'], 'every vault field, set or not');
    t.match(await audit('credential.set'), [{ target: 'vault-db', field: 'admin.password', version: 1, replaced: false, via: /^token:/ }]);

    const check = await tg.api('carol', 'POST', '/api/v1/targets/vault-db/check');
    t.match(check.body, { ok: true, detail: /credentials work/ }, 'the admin login uses the vault credential');

    const g = await tg.grant('alice', 'vault-db', 'read');
    const s = await tg.secret('alice', g.id);
    const { host, port } = tg.listener('postgres');
    const c = new pg.Client({ host, port, user: s.username, password: s.secret, database: 'app', ssl: { ca: tg.gw.tls.ca } });
    await c.connect();
    const rows = (await c.query('SELECT count(*)::int AS n FROM accounts')).rows;
    await c.end();
    t.ok(rows[0].n >= 0, 'a session minted with the vault credential runs a query');
  });

  t.test('bad requests: a target without vault fields, an unknown field, an empty credential', async (t) => {
    t.equal((await tg.api('carol', 'PUT', '/api/v1/targets/file-db/credentials', { secret: marker })).status, 409, 'file-db keeps its credential in the config');
    t.equal((await tg.api('carol', 'PUT', '/api/v1/targets/nope/credentials', { secret: marker })).status, 404);
    const f = await tg.api('carol', 'PUT', '/api/v1/targets/vault-db/credentials', { secret: marker, field: 'admin.user', verify: false });
    t.equal(f.status, 400);
    t.equal(f.body.field, 'field');
    t.equal((await tg.api('carol', 'PUT', '/api/v1/targets/vault-db/credentials', { secret: '' })).status, 400);
    t.equal((await tg.api('carol', 'PUT', '/api/v1/targets/vault-db/credentials', { secret: marker, extra: 1 })).status, 400, 'unknown body keys are refused');
  });

  t.test('the CLI sets from standard input (never argv) and shows metadata', async (t) => {
    const env = { TOLLGATE_URL: tg.url, TOLLGATE_TOKEN: tg.token('carol'), TOLLGATE_CLI_CONFIG: join(tg.dataDir, 'no-cli.json') };
    const set = await cli(['credentials', 'set', 'other-db', '--no-verify'], env, `${marker}\n`);
    t.equal(set.code, 0, set.stderr);
    t.match(set.stdout, /stored other-db admin\.password in the vault \(version 1\)/);
    const rec = await tg.store.getVaultCredential(vaultId('other-db', 'admin.password'));
    const vault = tg.gw.vault;
    t.equal(vault.open('other-db', 'admin.password', rec!.sealed)?.reveal(), marker, 'the stored credential is what came on stdin, without its newline');
    const show = await cli(['--json', 'credentials', 'show', 'other-db'], env);
    t.equal(show.code, 0, show.stderr);
    t.match(JSON.parse(show.stdout), [{ target: 'other-db', set: true, setBy: 'carol', version: 1 }]);
    t.notMatch(show.stdout + set.stdout + set.stderr, marker, 'the CLI never prints the credential');
    const denied = await cli(['credentials', 'show', 'other-db'], { ...env, TOLLGATE_TOKEN: tg.token('alice') });
    t.not(denied.code, 0, 'alice may not');
  });

  t.test('a sealed credential is bound to its target and field; another key opens nothing', async (t) => {
    const mine = (await tg.store.getVaultCredential(vaultId('vault-db', 'admin.password')))!;
    const other = (await tg.store.getVaultCredential(vaultId('other-db', 'admin.password')))!;
    const vault = tg.gw.vault;
    t.equal(vault.open('vault-db', 'admin.password', other.sealed), null, "other-db's ciphertext does not open as vault-db's");
    t.equal(vault.open('vault-db', 'admin.privateKey', mine.sealed), null, 'nor as another field');
    const stranger = new Vault({ store: tg.store, key: gatewayKey(randomBytes(32)), clock, audit: { append: async () => [] as never }, targets: () => [], rotationInterval: () => null });
    t.equal(stranger.open('vault-db', 'admin.password', mine.sealed), null, 'another gateway key opens nothing');
    // Moved onto vault-db's row, the other ciphertext makes the admin login fail closed (it never logs in as something else).
    await tg.store.upsertVaultCredential({ ...mine, sealed: other.sealed });
    const check = await tg.api('carol', 'POST', '/api/v1/targets/vault-db/check');
    t.match(check.body, { ok: false, detail: /does not open with this gateway key/ });
    await tg.store.upsertVaultCredential(mine);
    t.match((await tg.api('carol', 'POST', '/api/v1/targets/vault-db/check')).body, { ok: true });
  });

  t.test('a copy of the store and the data dir without the key file reveals no credential that was set', async (t) => {
    const secrets = [adminPassword, marker, wrong];
    const copy = mkdtempSync(join(tmpdir(), 'tg-vault-copy-'));
    t.teardown(() => rmSync(copy, { recursive: true, force: true }));
    // The SQLite file with its WAL (what a backup or a stolen disk would hold), minus the key file.
    for (const f of readdirSync(tg.dataDir)) {
      const p = join(tg.dataDir, f);
      if (statSync(p).isFile() && f !== 'gateway.key' && !f.endsWith('-shm')) copyFileSync(p, join(copy, f));
    }
    t.ok(existsSync(join(copy, 'tollgate.db')), 'the store file was copied');
    const files = [...filesUnder(copy), ...filesUnder(tg.dataDir).filter((f) => !f.endsWith('gateway.key'))];
    for (const s of secrets) t.same(findSecret(files, s), [], 'no trace of a credential in the store copy or the data dir');
    t.same(logs.filter((l) => secrets.some((s) => l.includes(s))), [], 'nor in the gateway log');
    // The search itself finds what it looks for (a control): the key file holds the key in base64.
    const key = readKeyFile(join(tg.dataDir, 'gateway.key'));
    t.ok(readFileSync(join(tg.dataDir, 'gateway.key')).includes(Buffer.from(key.toString('base64'))), 'control: the base64 form is found where it is');
    t.ok(findSecret(filesUnder(copy), 'admin.password').length > 0, 'control: the search finds text the store copy does hold (a field name)');
    // The copy opened as a store holds the sealed rows; only the key file opens them.
    const store = await openSqliteStore(join(copy, 'tollgate.db'));
    t.teardown(() => store.close());
    const rows = await store.listVaultCredentials();
    t.equal(rows.length, 2, 'the copy has both sealed credentials');
    const withKey = new Vault({ store, key: gatewayKey(key), clock, audit: { append: async () => [] as never }, targets: () => [], rotationInterval: () => null });
    t.equal(withKey.open('vault-db', 'admin.password', rows.find((r) => r.target === 'vault-db')!.sealed)?.reveal(), adminPassword, 'with the key file they open (the copy is complete)');
  });
}
