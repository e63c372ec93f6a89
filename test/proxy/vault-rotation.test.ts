/**
 * Scheduled rotation of vault admin credentials against a real PostgreSQL cluster and a real
 * MariaDB server (`credentials.rotate: 1h`, time from a manual clock): after each rotation the old
 * admin password is refused by the server, the new one (read from the vault with the key) works,
 * and sessions still mint through the gateway. A rotation the server refuses (the PostgreSQL admin
 * cannot ALTER ROLE for a while; the MariaDB admin account is locked for a while) keeps the old
 * credential, which the target still takes; it is audited, alerts, and is retried with backoff
 * until it succeeds. A rotation interrupted after the target got the new password (a crash before
 * the vault stored it) is recovered from the pending credential.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { Secret } from '../../auth/secret.js';
import { ManualClock } from '../../policies/clock.js';
import { makeVerifier } from '../../protocols/postgres/scram.js';
import pino from 'pino';
import { vaultId } from '../../proxy/vault.js';
import { VaultRotation } from '../../proxy/vault-rotation.js';
import { startTestGateway } from '../support/gateway.js';
import { startTestMariadb } from '../support/mariadb.js';
import { havePostgres, startTestCluster, waitFor } from '../support/pg.js';

const HOUR = 3_600_000;
const MIN = 60_000;

if (!havePostgres) {
  t.fail('PostgreSQL binaries are required (apt-get install postgresql postgresql-client)');
} else {
  const pgc = await startTestCluster(t, 'rot-pg');
  const db = await startTestMariadb(t);
  if (!db) throw new Error('MariaDB is required (apt-get install mariadb-server)');
  const clock = new ManualClock(Date.now());
  const pgTarget = { ...pgc.target, name: 'rot-pg', credentials: { ...pgc.target.credentials, admin: { user: pgc.cluster.admin.user, password: { vault: true } }, rotate: '1h' } };
  const myTarget = { ...db.target, name: 'rot-my', credentials: { ...db.target.credentials, admin: { user: db.adminUser, password: { vault: true } }, rotate: '1h' } };
  const tg = await startTestGateway({
    targets: [pgTarget, myTarget], listeners: ['postgres', 'mysql'], clock,
    extra: { credentials: { retry: '2m', retryMax: '10m' } },
  });
  t.teardown(() => tg.close());
  const field = 'admin.password';
  const meta = async (target: string) => (await tg.api('carol', 'GET', `/api/v1/targets/${target}/credentials`)).body[0];
  const current = (target: string) => tg.gw.vault.current(target, field).then((s) => s.reveal());

  const pgLogin = async (password: string) => {
    const c = new pg.Client({ host: pgc.cluster.host, port: pgc.cluster.port, user: pgc.cluster.admin.user, password, database: 'app' });
    try { await c.connect(); await c.query('SELECT 1'); return 'ok'; } catch (e) { return String((e as { code?: string }).code ?? (e as Error).message); } finally { await c.end().catch(() => {}); }
  };
  const myLogin = async (password: string) => {
    try {
      const c = await mysql.createConnection({ host: '127.0.0.1', port: db.port, user: db.adminUser, password });
      await c.query('SELECT 1');
      await c.end();
      return 'ok';
    } catch (e) { return String((e as { code?: string }).code ?? (e as Error).message); }
  };
  const pgSession = async () => {
    const g = await tg.grant('alice', 'rot-pg', 'read');
    const s = await tg.secret('alice', g.id);
    const { host, port } = tg.listener('postgres');
    const c = new pg.Client({ host, port, user: s.username, password: s.secret, database: 'app', ssl: { ca: tg.gw.tls.ca } });
    await c.connect();
    try { return (await c.query('SELECT current_user AS u')).rows[0].u as string; } finally { await c.end(); }
  };
  const mySession = async () => {
    const g = await tg.grant('alice', 'rot-my', 'read');
    const s = await tg.secret('alice', g.id);
    const { host, port } = tg.listener('mysql');
    const c = await mysql.createConnection({ host, port, user: s.username, password: s.secret, database: 'shop', ssl: { ca: tg.gw.tls.ca } });
    try { return ((await c.query('SELECT CURRENT_USER() AS u'))[0] as { u: string }[])[0]!.u; } finally { await c.end(); }
  };
  /** Move the clock past the next due rotation and wait until the vault's version of target passes `version`. */
  // advance(0) while waiting fires the sweep a finished sweep re-armed for "now" (the clock only moves when told).
  const rotateBy = async (target: string, ms: number, version: number) => {
    clock.advance(ms);
    return waitFor(async () => { clock.advance(0); const m = await meta(target); return m.version > version ? m : null; }, 30_000, `${target} rotated past version ${version}`);
  };
  const failedBy = async (target: string, ms: number, failures: number) => {
    clock.advance(ms);
    return waitFor(async () => { clock.advance(0); const m = await meta(target); return m.failures >= failures ? m : null; }, 30_000, `${target} failure ${failures}`);
  };

  t.test('the SOC stores both admin passwords; the next rotation is scheduled', async (t) => {
    for (const [name, pw] of [['rot-pg', pgc.cluster.admin.password], ['rot-my', db.adminPassword]] as const) {
      const r = await tg.api('carol', 'PUT', `/api/v1/targets/${name}/credentials`, { secret: pw });
      t.equal(r.status, 200, JSON.stringify(r.body));
      t.equal(Date.parse(r.body.nextRotationAt), clock.now() + HOUR, `${name}: next rotation in 1h`);
    }
  });

  for (const [name, login, session] of [['rot-pg', pgLogin, pgSession], ['rot-my', myLogin, mySession]] as const) {
    t.test(`${name}: each scheduled rotation refuses the old admin password and the new one works; sessions still mint`, async (t) => {
      let version = (await meta(name)).version;
      for (let round = 1; round <= 2; round++) {
        const old = await current(name);
        const m = await rotateBy(name, HOUR + 1000, version);
        version = m.version;
        t.match(m, { rotating: false, failures: 0, lastFailure: null }, `round ${round}: rotated`);
        t.equal(Date.parse(m.nextRotationAt), Date.parse(m.rotatedAt) + HOUR, 'the next one is scheduled');
        const now = await current(name);
        t.not(now, old, 'a new credential');
        t.not(await login(old), 'ok', `round ${round}: the old admin password is refused by the server`);
        t.equal(await login(now), 'ok', `round ${round}: the new one logs in`);
        t.match(await session(), /^tg_alice_/, `round ${round}: a session mints with the rotated admin credential`);
        t.match((await tg.api('carol', 'POST', `/api/v1/targets/${name}/check`)).body, { ok: true });
      }
      const rotated = (await tg.store.listAudit({ action: 'credential.rotated', subject: name })).map((e) => e.data);
      t.ok(rotated.length >= 2, 'each rotation is audited');
      t.match(rotated.at(-1), { target: name, field, recovered: false });
    });
  }

  t.test('rot-pg: a rotation the server refuses (the admin cannot ALTER ROLE) keeps the old one, alerts, and is retried', async (t) => {
    const before = await meta('rot-pg');
    const old = await current('rot-pg');
    const su = await pgc.su();
    t.teardown(() => su.end());
    await su.query(`ALTER ROLE ${pg.escapeIdentifier(pgc.cluster.admin.user)} SET default_transaction_read_only = on`);
    const failed = await failedBy('rot-pg', HOUR + 1000, 1);
    t.match(failed, { version: before.version, rotating: false, failures: 1, lastFailure: { reason: /setting the new credential on the target failed: .*read-only/ } });
    t.equal(await current('rot-pg'), old, 'the vault keeps the old credential');
    t.equal(await pgLogin(old), 'ok', 'the target still takes it');
    t.match((await tg.api('carol', 'POST', '/api/v1/targets/rot-pg/check')).body, { ok: true }, 'the gateway still logs in as the admin with it');
    const audit = (await tg.store.listAudit({ action: 'credential.rotation_failed', subject: 'rot-pg' })).map((e) => e.data);
    t.match(audit.at(-1), { target: 'rot-pg', field, stillOld: true, failures: 1 });
    const alerts = (await tg.store.listAudit({ action: 'notify' })).map((e) => e.data as Record<string, unknown>).filter((d) => d['action'] === 'credential.rotation_failed');
    t.match(alerts.at(-1), { kind: 'alert', target: 'rot-pg', stillOld: true }, 'an alert went out (the notify path)');
    t.equal(Date.parse(failed.nextRotationAt), Date.parse(failed.lastFailure.at) + 2 * MIN, 'the first retry after credentials.retry');
    // Still refused: the retry fails again and backs off further.
    const again = await failedBy('rot-pg', 2 * MIN + 1000, 2);
    t.equal(Date.parse(again.nextRotationAt), Date.parse(again.lastFailure.at) + 4 * MIN, 'then doubling');
    await su.query(`ALTER ROLE ${pg.escapeIdentifier(pgc.cluster.admin.user)} RESET default_transaction_read_only`);
    const ok = await rotateBy('rot-pg', 4 * MIN + 1000, before.version);
    t.match(ok, { failures: 0, lastFailure: null }, 'once the server takes it again, the retry rotates');
    t.not(await pgLogin(old), 'ok', 'and the old one is refused');
    t.equal(await pgLogin(await current('rot-pg')), 'ok');
  });

  t.test('rot-my: a rotation while the admin cannot log in keeps the old one, alerts, and is retried', async (t) => {
    const before = await meta('rot-my');
    const old = await current('rot-my');
    // The account is locked for a while: the test's open admin connection stays, every new admin login is refused.
    await db.admin(`ALTER USER ${mysqlAccount(db.adminUser)} ACCOUNT LOCK`);
    let restored = false;
    t.teardown(async () => { if (!restored) await db.admin(`ALTER USER ${mysqlAccount(db.adminUser)} ACCOUNT UNLOCK`); });
    t.not(await myLogin(old), 'ok', 'while locked, the admin cannot log in');
    const failed = await failedBy('rot-my', HOUR + 1000, 1);
    t.match(failed, { version: before.version, failures: 1, lastFailure: { reason: /setting the new credential on the target failed/ } });
    t.equal(await current('rot-my'), old, 'the vault keeps the old credential');
    t.match((await tg.store.listAudit({ action: 'credential.rotation_failed', subject: 'rot-my' })).at(-1)?.data, { stillOld: true });
    await db.admin(`ALTER USER ${mysqlAccount(db.adminUser)} ACCOUNT UNLOCK`);
    restored = true;
    t.equal(await myLogin(old), 'ok', 'the target still takes the old one');
    const ok = await rotateBy('rot-my', 2 * MIN + 1000, before.version);
    t.match(ok, { failures: 0 }, 'the retry rotates');
    t.not(await myLogin(old), 'ok', 'then the old one is refused');
    t.equal(await myLogin(await current('rot-my')), 'ok');
  });

  t.test('rot-pg: a rotation interrupted after the target took the new password is recovered from the pending one', async (t) => {
    const rec = (await tg.store.getVaultCredential(vaultId('rot-pg', field)))!;
    const old = await current('rot-pg');
    // What a crash between "set on the target" and "stored as current" leaves: the pending one is the target's.
    const next = randomBytes(24).toString('base64url');
    const v = makeVerifier(next, randomBytes(16)).split(':');
    const su = await pgc.su();
    t.teardown(() => su.end());
    await su.query(`ALTER ROLE ${pg.escapeIdentifier(pgc.cluster.admin.user)} PASSWORD ${pg.escapeLiteral(`SCRAM-SHA-256$${v[0]}:${v[1]}$${v[2]}:${v[3]}`)}`);
    t.not(await pgLogin(old), 'ok', 'the vault\'s current one no longer works on the target');
    await tg.store.upsertVaultCredential({ ...rec, pendingSealed: tg.gw.vault.seal('rot-pg', field, new Secret(next)), nextRotationAt: clock.now() + 1000 });
    t.match(await meta('rot-pg'), { rotating: true });
    // A change made behind the gateway's back (as by another node) is noticed at the next sweep (gateway.timerSweep, 60s).
    const m = await rotateBy('rot-pg', 61_000, rec.version);
    t.match(m, { rotating: false, failures: 0 });
    t.equal(await current('rot-pg'), next, 'the pending credential became current');
    t.match((await tg.store.listAudit({ action: 'credential.rotated', subject: 'rot-pg' })).at(-1)?.data, { recovered: true });
    t.match(await pgSession(), /^tg_alice_/, 'sessions mint again');
  });

  t.test('a due rotation fires once when two nodes sweep at the same moment (claimed in the store)', async (t) => {
    const rec = (await tg.store.getVaultCredential(vaultId('rot-my', field)))!;
    const rotatedBefore = (await tg.store.listAudit({ action: 'credential.rotated', subject: 'rot-my' })).length;
    // A second node: its own rotation engine on the same store, key and modules (as another gateway process has).
    const other = new VaultRotation({
      vault: tg.gw.vault, store: tg.store, clock, audit: tg.gw.audit, log: pino({ level: 'silent' }), modules: tg.gw.modules,
      ctx: (p) => tg.gw.ctx(p), targets: () => tg.gw.config.targets, alert: () => undefined, interval: () => HOUR,
      sweepMs: MIN, retryMs: MIN, retryMaxMs: 10 * MIN,
    });
    await tg.store.claim('vault', rec.id, { version: rec.version }, { nextRotationAt: clock.now() });
    const old = await current('rot-my');
    await Promise.all([other.sweep(), tg.gw.rotation.sweep(), other.sweep()]);
    await other.stop();
    const after = await tg.store.getVaultCredential(rec.id);
    t.equal(after!.version, rec.version + 1, 'one rotation, not two');
    t.equal((await tg.store.listAudit({ action: 'credential.rotated', subject: 'rot-my' })).length, rotatedBefore + 1, 'audited once');
    t.not(await myLogin(old), 'ok');
    t.equal(await myLogin(await current('rot-my')), 'ok', 'the stored credential is the one the target has');
  });

  t.test('a manual rotation (API) and the CLI-visible metadata never carry a credential', async (t) => {
    const before = await meta('rot-my');
    const r = await tg.api('carol', 'POST', '/api/v1/targets/rot-my/credentials/rotate', {});
    t.equal(r.status, 200, JSON.stringify(r.body));
    t.equal(r.body.version, before.version + 1);
    const now = await current('rot-my');
    t.notMatch(JSON.stringify(r.body) + JSON.stringify(await tg.api('carol', 'GET', '/api/v1/credentials')), now);
    t.equal(await myLogin(now), 'ok');
    t.equal((await tg.api('alice', 'POST', '/api/v1/targets/rot-my/credentials/rotate', {})).status, 403);
  });
}

function mysqlAccount(user: string): string {
  return `'${user.replace(/'/g, "''")}'@'127.0.0.1'`;
}
