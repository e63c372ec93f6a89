/**
 * Statement rules enforced by the PostgreSQL server itself (issue 26), through the real gateway
 * and a real cluster: DROP run through a DO block, EXECUTE of a built string, a SQL function, a
 * procedure or a superuser's SECURITY DEFINER function is refused by the event trigger with the
 * rule's message, and the tables are still there; the session cannot switch the trigger off or
 * rewrite its rules; other roles are not affected; COPY … PROGRAM and ALTER SYSTEM are stopped by
 * missing privileges; strict rules refuse DO blocks at the gateway; an admin that cannot install
 * the trigger fails the session with `enforceInDatabase: required`.
 */
import t from 'tap';
import pg from 'pg';
import { startTestGateway } from '../support/gateway.js';
import { havePostgres, startTestCluster, waitFor } from '../support/pg.js';

type PgErr = Error & { code?: string; constraint?: string; detail?: string };
const RULES = [
  { kinds: ['DROP', 'TRUNCATE'], action: 'deny', message: 'No DROP or TRUNCATE on prod' },
  { kinds: ['COPY PROGRAM', 'ALTER SYSTEM'], action: 'deny' },
];

if (!havePostgres) {
  t.fail('PostgreSQL binaries are required (apt-get install postgresql postgresql-client)');
} else {
  const pgc = await startTestCluster(t);
  const su = await pgc.su('app');
  t.teardown(() => su.end());
  await su.query('SET ROLE app_owner');
  for (const n of ['t1', 't2', 't3', 't4', 't5', 't6']) await su.query(`CREATE TABLE ${n} (id int)`);
  await su.query('RESET ROLE');
  // A superuser's SECURITY DEFINER function that drops: the caller is still the session role.
  await su.query('CREATE FUNCTION public.su_drop() RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$BEGIN DROP TABLE public.t4; END$$');
  await su.query('CREATE DATABASE other');
  const weakPw = 'weak-admin-pw';
  await su.query(`CREATE ROLE weak_admin LOGIN CREATEROLE PASSWORD '${weakPw}'`);
  await su.query('GRANT pg_signal_backend TO weak_admin');

  const base = pgc.target;
  const weak = (name: string, mode: string) => ({
    ...base, name, roles: [{ name: 'admin', grants: [] }],
    credentials: { admin: { user: 'weak_admin', password: { value: weakPw } }, database: 'other', onEnd: 'drop' },
    options: { enforceInDatabase: mode },
  });
  const targets = [base, { ...base, name: 'nodb', options: { enforceInDatabase: 'off' } }, weak('weak-auto', 'auto'), weak('weak-required', 'required')];
  const tg = await startTestGateway({
    targets, listeners: ['postgres'],
    policies: [
      { name: 'admin', targets: ['*'], roles: ['admin'], requesters: ['engineers'], approvers: ['approvers'], rules: RULES },
      { name: 'read', targets: ['*'], roles: ['read'], requesters: ['engineers'], approvers: ['approvers'], strictRules: true, rules: RULES },
    ],
  });
  t.teardown(() => tg.close());
  const { host, port } = tg.listener('postgres');
  const open = async (target: string, role: string, database = 'app') => {
    const g = await tg.grant('alice', target, role);
    const s = await tg.secret('alice', g.id);
    const c = new pg.Client({ host, port, user: `${target}:${role}`, password: s.secret, database, ssl: { ca: tg.gw.tls.ca } });
    c.on('error', () => undefined);
    await c.connect();
    return { c, grant: g };
  };
  const fails = (c: pg.Client, sql: string) => c.query(sql).then(() => null, (e: PgErr) => e);
  const exists = async (table: string) => (await su.query('SELECT to_regclass($1) AS r', [`public.${table}`])).rows[0].r !== null;
  const sessionOf = (grantId: string) => waitFor(async () => (await tg.store.listSessions({ grantId }))[0], 10_000, 'the session');

  t.test('DROP through indirection is refused by the server with the rule\'s message', async (t) => {
    const { c, grant } = await open('prod-db', 'admin');
    const direct = await fails(c, 'DROP TABLE t1');
    t.equal(direct?.code, '42501');
    t.match(direct?.message, /No DROP or TRUNCATE on prod/, 'the gateway refuses what it sees');
    const viaDo = await fails(c, "DO $$BEGIN EXECUTE 'DR' || 'OP TABLE t2'; END$$");
    t.equal(viaDo?.code, '42501');
    t.equal(viaDo?.message, 'No DROP or TRUNCATE on prod', 'refused by the server with the rule\'s message');
    t.equal(viaDo?.constraint, 'tollgate.deny');
    t.equal(viaDo?.detail, 'Tollgate refused DROP TABLE in the database server');
    t.ok(await exists('t2'), 't2 still exists');
    t.equal((await c.query("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'drop table t3'")).command, 'CREATE', 'creating the function is allowed');
    const viaFn = await fails(c, 'SELECT f()');
    t.equal(viaFn?.message, 'No DROP or TRUNCATE on prod');
    t.ok(await exists('t3'), 't3 still exists');
    await c.query("CREATE PROCEDURE p() LANGUAGE plpgsql AS $$BEGIN EXECUTE 'DROP TABLE t4'; END$$");
    t.equal((await fails(c, 'CALL p()'))?.message, 'No DROP or TRUNCATE on prod', 'a procedure');
    t.equal((await fails(c, 'SELECT su_drop()'))?.message, 'No DROP or TRUNCATE on prod', 'a superuser\'s SECURITY DEFINER function: session_user is still the session role');
    await c.query('SET ROLE app_owner');
    t.equal((await fails(c, "DO $$BEGIN EXECUTE 'DROP TABLE t4'; END$$"))?.message, 'No DROP or TRUNCATE on prod', 'after SET ROLE');
    await c.query('RESET ROLE');
    t.equal((await fails(c, "DO $$BEGIN EXECUTE 'DROP FUNCTION f()'; END$$"))?.code, '42501', 'DROP covers every DROP tag');
    t.ok(await exists('t4'), 't4 still exists');
    // The session cannot switch the enforcement off or rewrite its rules.
    t.match((await fails(c, "DO $$BEGIN EXECUTE format('COMMENT ON ROLE %I IS %L', current_user, 'tollgate:{\"deny\":[]}'); END$$"))?.message, /must have CREATEROLE privilege/, 'its role comment (which holds the rules) is out of reach');
    t.match((await fails(c, "DO $$BEGIN EXECUTE 'ALTER EVENT TRIGGER tollgate_refuse_ddl DISABLE'; END$$"))?.message, /must be owner of event trigger/);
    t.match((await fails(c, "DO $$BEGIN EXECUTE 'DROP EVENT TRIGGER tollgate_refuse_ddl'; END$$"))?.code, /42501/);
    t.match((await fails(c, "CREATE OR REPLACE FUNCTION tollgate.refuse_ddl() RETURNS event_trigger LANGUAGE plpgsql AS 'BEGIN END'"))?.message, /permission denied for schema tollgate/);
    await c.query("SET tollgate.deny = ''");
    t.equal((await fails(c, "DO $$BEGIN EXECUTE 'DROP TABLE t2'; END$$"))?.code, '42501', 'settings change nothing');
    // What event triggers cannot see: privileges stop it.
    t.match((await fails(c, "DO $$BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''true'''; END$$"))?.message, /pg_execute_server_program/, 'COPY PROGRAM: no privilege');
    t.ok(await fails(c, "DO $$BEGIN EXECUTE 'ALTER SYSTEM SET work_mem = ''1MB'''; END$$"), 'ALTER SYSTEM cannot run in a function, and needs a superuser');
    t.equal((await c.query('SELECT count(*)::int AS n FROM t2')).rows[0].n, 0, 'the session goes on');
    await c.end();
    const sess = await sessionOf(grant.id);
    await waitFor(async () => (await tg.store.getSession(sess.id))?.state === 'ended', 10_000, 'the session to end');
    const q = await tg.store.listQueries(sess.id);
    t.ok(q.some((x) => /^DO \$\$BEGIN EXECUTE 'DR'/.test(x.statement) && /refused in the database server: DROP TABLE: No DROP or TRUNCATE on prod/.test(x.error ?? '')), 'the statement log says what the server refused');
    const audit = await tg.store.listAudit({ subject: sess.id });
    const refused = audit.filter((a) => a.action === 'postgres.refused_in_database');
    t.ok(refused.length >= 5, 'each refusal audited');
    t.match(refused[0]!.data, { tag: 'DROP TABLE', message: 'No DROP or TRUNCATE on prod', statement: "DO $$BEGIN EXECUTE 'DR' || 'OP TABLE t2'; END$$" });
    const enf = audit.find((a) => a.action === 'postgres.enforcement')?.data;
    t.equal(enf?.inDatabase, true);
    t.same(enf?.kinds, ['DROP'], 'TRUNCATE is not DDL: the server-side list has DROP only');
    t.same(await pgc.noSessionRoles(), [], 'the role is dropped at the end (the trigger does not stop the admin)');
  });

  t.test('installed once per database, versioned; other roles are not affected', async (t) => {
    const fn = async () => (await su.query("SELECT p.oid, obj_description(p.oid, 'pg_proc') AS note FROM pg_proc p WHERE proname = 'refuse_ddl'")).rows;
    const before = await fn();
    t.same(before.map((r) => r.note), ['tollgate event trigger v1']);
    const { c } = await open('prod-db', 'admin');
    await c.end();
    t.same(await fn(), before, 'the same function: not installed again');
    t.equal((await su.query("SELECT count(*)::int AS n FROM pg_event_trigger WHERE evtname = 'tollgate_refuse_ddl' AND evtenabled = 'A'")).rows[0].n, 1);
    await su.query('CREATE TABLE scratch (id int)');
    await su.query('DROP TABLE scratch');
    t.pass('a superuser (no Tollgate rules) drops as before');
    // enforceInDatabase: off -> the gateway's check alone, which indirection gets around (the control).
    const off = await open('nodb', 'admin');
    await off.c.query("DO $$BEGIN EXECUTE 'DR' || 'OP TABLE t5'; END$$");
    t.notOk(await exists('t5'), 'without the server-side rules the DO block drops t5');
    await off.c.end();
    t.same(await pgc.noSessionRoles(), []);
  });

  t.test('strict rules: a DO block is refused by the gateway; TRUNCATE in one is not DDL', async (t) => {
    const { c } = await open('prod-db', 'read');
    const e = await fails(c, "DO $$BEGIN EXECUTE 'TRUNCATE t6'; END$$");
    t.equal(e?.code, '42501');
    t.match(e?.message, /this statement uses a DO block which the gateway cannot check; strict rules are on for this role/);
    t.equal((await c.query('SELECT 1 AS x')).rows[0].x, 1);
    await c.end();
    t.ok(await exists('t6'));
    t.same(await pgc.noSessionRoles(), []);
  });

  t.test('an admin that cannot install the trigger: required refuses the session, auto goes on and says so', async (t) => {
    const g = await tg.grant('alice', 'weak-required', 'admin');
    const s = await tg.secret('alice', g.id);
    const c = new pg.Client({ host, port, user: 'weak-required:admin', password: s.secret, database: 'other', ssl: { ca: tg.gw.tls.ca } });
    const err = await c.connect().then(() => null, (e: PgErr) => e);
    t.equal(err?.code, '42501');
    t.match(err?.message, /could not enforce the statement rules in database other \(permission denied for database other\); the target requires it/);
    t.same(await pgc.sessionRoles(), [], 'no role was made');
    const auto = await open('weak-auto', 'admin', 'other');
    t.equal((await auto.c.query('SELECT 1 AS x')).rows[0].x, 1, 'auto: the session goes on');
    await auto.c.end();
    const sess = await sessionOf(auto.grant.id);
    await waitFor(async () => (await tg.store.getSession(sess.id))?.state === 'ended', 10_000, 'the session to end');
    const a = (await tg.store.listAudit({ subject: sess.id })).find((x) => x.action === 'postgres.enforcement');
    t.match(a?.data, { inDatabase: false, kinds: ['DROP'], reason: /permission denied/ });
    t.same(await pgc.noSessionRoles(), []);
  });
}
