import t from 'tap';
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { Secret } from '../../auth/secret.js';
import type { ProtocolContext, TargetConfig } from '../../protocols/types.js';
import { createSessionRole, dropSessionRole, roleExists, sessionRoleName } from '../../protocols/postgres/provisioner.js';
import { postgresModule } from '../../protocols/postgres/index.js';
import { havePostgres, quietLog, startTestCluster } from '../support/pg.js';
import { revokeWithModule } from '../../protocols/types.js';

if (!havePostgres) {
  t.fail('PostgreSQL binaries are required (apt-get install postgresql)');
} else {
  // The provisioner only needs the secret references and the admin credential from the context; everything else is the real server.
  const resolveSecret = (ref: unknown) => {
    const r = ref as { file?: string; value?: string };
    return new Secret(r.file ? readFileSync(r.file, 'utf8').trim() : r.value!);
  };
  const ctx = {
    log: quietLog,
    config: {
      resolveSecret,
      async credential(target: { credentials: { admin?: { password?: unknown } } }) { return resolveSecret(target.credentials.admin?.password); },
    },
  } as unknown as ProtocolContext;

  const c = await startTestCluster(t);
  const hostile = ['we"ird\'; DROP ROLE tollgate_admin; --', 'back\\slash role', 'ünïcode role'];
  const su = await c.su();
  for (const h of hostile) await su.query(`CREATE ROLE ${pg.escapeIdentifier(h)} NOLOGIN`);
  await su.end();

  t.test('session role name is safe whatever the subject', async (t) => {
    const n = sessionRoleName('Robert"); DROP TABLE students;--@example.com');
    t.match(n, /^tg_[a-z0-9_]+_[0-9a-f]{6}$/);
    t.ok(n.length <= 63);
    t.match(sessionRoleName(''), /^tg_user_/);
  });

  t.test('create: login works with SCRAM, memberships granted (hostile names), VALID UNTIL set; drop removes everything', async (t) => {
    const name = sessionRoleName('alice');
    const until = new Date(Date.now() + 3600_000);
    const role = await createSessionRole(ctx, c.target, name, ['app_owner', ...hostile], until);
    t.ok(await roleExists(ctx, c.target, name));
    const client = new pg.Client({ host: c.cluster.host, port: c.cluster.port, user: role.user, password: role.password, database: 'app' });
    await client.connect();
    const r = await client.query('SELECT count(*)::int AS n FROM accounts');
    t.equal(r.rows[0].n, 3, 'membership in app_owner lets the role read the table');
    await client.query('CREATE TABLE made_by_session (x int)');
    const s = await c.su();
    const m = await s.query(`SELECT b.rolname FROM pg_auth_members a JOIN pg_roles b ON b.oid = a.roleid JOIN pg_roles u ON u.oid = a.member WHERE u.rolname = $1 ORDER BY 1`, [name]);
    t.same(m.rows.map((x) => x.rolname).sort(), ['app_owner', ...hostile].sort());
    const v = await s.query('SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1', [name]);
    t.ok(Math.abs(new Date(v.rows[0].rolvaliduntil).getTime() - until.getTime()) < 1000, 'VALID UNTIL is the given time');
    const pw = await s.query('SELECT rolpassword FROM pg_authid WHERE rolname = $1', [name]);
    t.match(pw.rows[0].rolpassword, /^SCRAM-SHA-256\$4096:/, 'stored as a SCRAM verifier');
    t.ok(await roleExists(ctx, c.target, 'tollgate_admin'), 'hostile name did not inject');

    const ended = new Promise<void>((res) => client.on('error', () => res()));
    await dropSessionRole(ctx, c.target, name);
    await ended;
    t.notOk(await roleExists(ctx, c.target, name), 'role dropped while it had a live backend and owned a table');
    const app = await c.su('app');
    const tbl = await app.query("SELECT to_regclass('made_by_session') AS r");
    t.equal(tbl.rows[0].r, null, 'owned objects dropped (onEnd: drop)');
    await app.end();
    await s.end();
    await dropSessionRole(ctx, c.target, name);
    t.pass('dropping again is a no-op (idempotent)');
  });

  t.test('onEnd reassign hands objects to reassignTo (hostile name)', async (t) => {
    const target: TargetConfig = { ...c.target, credentials: { ...c.target.credentials, onEnd: 'reassign', reassignTo: hostile[0] } };
    t.equal(postgresModule.validateTarget!(target), null);
    const name = sessionRoleName('bob');
    const role = await createSessionRole(ctx, target, name, ['app_owner'], new Date(Date.now() + 60_000));
    const client = new pg.Client({ host: c.cluster.host, port: c.cluster.port, user: role.user, password: role.password, database: 'app' });
    await client.connect();
    await client.query('CREATE TABLE kept_table (x int)');
    await client.end();
    await revokeWithModule(postgresModule, ctx, target, { id: 'l1', sessionId: null, grantId: 'g', target: target.name, kind: 'postgres-role', state: 'active', data: { role: name }, createdAt: 0, activatedAt: 0, revokedAt: null, error: null });
    t.notOk(await roleExists(ctx, target, name));
    const app = await c.su('app');
    const r = await app.query("SELECT pg_get_userbyid(relowner) AS o FROM pg_class WHERE relname = 'kept_table'");
    t.equal(r.rows[0]?.o, hostile[0], 'table now owned by reassignTo');
    await app.end();
  });

  t.test('a least-privilege admin (CREATEROLE + pg_signal_backend, no superuser) can mint and revoke', async (t) => {
    const s = await c.su();
    await s.query("CREATE ROLE lp_admin LOGIN CREATEROLE PASSWORD 'lp-admin-pw' IN ROLE pg_signal_backend");
    await s.query('GRANT app_owner TO lp_admin WITH ADMIN OPTION');
    await s.end();
    const target: TargetConfig = { ...c.target, credentials: { ...c.target.credentials, admin: { user: 'lp_admin', password: { value: 'lp-admin-pw' } }, onEnd: 'reassign', reassignTo: 'app_owner' } };
    const name = sessionRoleName('erin');
    const role = await createSessionRole(ctx, target, name, ['app_owner', 'pg_read_all_data'], new Date(Date.now() + 60_000));
    const client = new pg.Client({ host: c.cluster.host, port: c.cluster.port, user: role.user, password: role.password, database: 'app' });
    client.on('error', () => {});
    await client.connect();
    await client.query('CREATE TABLE lp_table (x int)');
    await dropSessionRole(ctx, target, name);
    t.notOk(await roleExists(ctx, c.target, name), 'dropped by the non-superuser admin, with a live backend and owned objects');
    const app = await c.su('app');
    const r = await app.query("SELECT pg_get_userbyid(relowner) AS o FROM pg_class WHERE relname = 'lp_table'");
    t.equal(r.rows[0]?.o, 'app_owner');
    await app.end();
  });

  t.test('objects in another database with a hostile name are dropped too', async (t) => {
    const dbName = 'we"ird db\'; --';
    const s = await c.su();
    await s.query(`CREATE DATABASE ${pg.escapeIdentifier(dbName)}`);
    await s.end();
    const sd = await c.su(dbName);
    await sd.query('GRANT CREATE ON SCHEMA public TO PUBLIC');
    await sd.end();
    const name = sessionRoleName('frank');
    const role = await createSessionRole(ctx, c.target, name, [], new Date(Date.now() + 60_000));
    const client = new pg.Client({ host: c.cluster.host, port: c.cluster.port, user: role.user, password: role.password, database: dbName });
    client.on('error', () => {});
    await client.connect();
    await client.query('CREATE TABLE elsewhere (x int)');
    await client.end();
    await dropSessionRole(ctx, c.target, name);
    t.notOk(await roleExists(ctx, c.target, name));
    const check = await c.su(dbName);
    t.equal((await check.query("SELECT to_regclass('elsewhere') AS r")).rows[0].r, null, 'table in the other database dropped');
    await check.end();
  });

  t.test('config validation and checkTarget', async (t) => {
    t.same(postgresModule.validateTarget!({ ...c.target, credentials: {} }), { path: 'credentials.admin', expected: 'Invalid input: expected object, received undefined' });
    t.match(postgresModule.validateTarget!({ ...c.target, credentials: { ...c.target.credentials, onEnd: 'reassign' } }), { path: 'credentials.reassignTo' });
    const ok = await postgresModule.checkTarget!(ctx, c.target);
    t.equal(ok.ok, true, ok.detail);
    const bad = await postgresModule.checkTarget!(ctx, { ...c.target, credentials: { ...c.target.credentials, admin: { user: 'tollgate_admin', password: { value: 'wrong' } } } });
    t.equal(bad.ok, false);
    t.match(bad.detail, /password authentication failed/);
    t.notMatch(bad.detail, /wrong/);
  });

  t.test('module.demo starts a cluster whose target validates and checks out, and stop() removes it', async (t) => {
    const { mkdtempSync, existsSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'tg-pgdemo-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const d = await postgresModule.demo!(join(dir, 'targets', 'postgres'), quietLog);
    t.ok(d, 'PostgreSQL installed');
    if (!d) return;
    t.teardown(() => d.stop());
    const target = d.targets[0]!;
    t.equal(target.name, 'prod-db');
    t.same(target.roles.map((r) => r.name), ['read', 'admin']);
    t.equal(postgresModule.validateTarget!(target), null);
    const check = await postgresModule.checkTarget!(ctx, target);
    t.ok(check.ok, check.detail);
    await d.stop();
    const { default: net } = await import('node:net');
    const port = Number(target.address.split(':')[1]);
    const refused = await new Promise<boolean>((res) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => { s.destroy(); res(false); });
      s.on('error', () => res(true));
    });
    t.ok(refused, 'server stopped');
    t.notOk(existsSync(join(dir, 'targets', 'postgres', 'postgres')), 'cluster directory removed');
  });
}
