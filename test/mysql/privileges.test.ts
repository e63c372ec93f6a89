/**
 * Statement rules enforced by MariaDB's privileges (issue 26), through the real gateway and a real
 * server: kinds the rules deny lose their privileges in the minted user's grants, so DROP through
 * PREPARE … FROM @var, EXECUTE IMMEDIATE, a stored procedure or an event is refused by the server;
 * PREPARE … FROM '…' text is checked like a query; a PREPARE from a variable is uncertain (refused
 * with strict rules). Plus the pure grant reduction (protocols/mysql/privileges.ts).
 */
import t from 'tap';
import mysql from 'mysql2/promise';
import { startTestGateway } from '../support/gateway.js';
import { startTestMariadb, waitFor } from '../support/mariadb.js';
import { reduceGrant, withheldPrivileges } from '../../protocols/mysql/privileges.js';

type MyErr = Error & { errno?: number };
const RULES = [{ kinds: ['DROP', 'TRUNCATE'], action: 'deny', message: 'No DROP or TRUNCATE on prod' }];

t.test('grant reduction, pure', async (t) => {
  const w = withheldPrivileges([
    { kinds: ['DROP', 'truncate'], action: 'deny' },
    { kinds: ['LOAD DATA'], action: 'kill' },
    { kinds: ['DELETE'], action: 'alert' },
    { kinds: ['UPDATE'], pattern: 'users', action: 'deny' },
  ]);
  t.same(w, ['DROP', 'ALTER ROUTINE', 'TRIGGER', 'EVENT', 'INDEX', 'CREATE USER', 'FILE'], 'deny/kill kinds only, without other conditions');
  t.same(reduceGrant('ALL PRIVILEGES', 'shop.*', w), { privs: 'ALL PRIVILEGES', revoke: ['DROP', 'ALTER ROUTINE', 'TRIGGER', 'EVENT', 'INDEX'], withheld: ['DROP', 'ALTER ROUTINE', 'TRIGGER', 'EVENT', 'INDEX'] }, 'database level: what exists there');
  t.same(reduceGrant('ALL', '*.*', w).revoke, w, 'global: every privilege');
  t.same(reduceGrant('ALL', 'shop.orders', w).revoke, ['DROP', 'TRIGGER', 'INDEX'], 'table level');
  t.same(reduceGrant('ALL', 'PROCEDURE shop.p', w).revoke, ['ALTER ROUTINE'], 'routine level');
  t.same(reduceGrant('SELECT, drop, INSERT (a, b)', 'shop.*', w), { privs: 'SELECT, INSERT (a, b)', revoke: [], withheld: ['DROP'] });
  t.same(reduceGrant('DROP', 'shop.*', w), { privs: null, revoke: [], withheld: ['DROP'] }, 'nothing left to grant');
  t.same(reduceGrant('ALL', 'shop.*', []), { privs: 'ALL', revoke: [], withheld: [] });
});

const db = await startTestMariadb(t);
if (!db) {
  t.fail('MariaDB is required (apt-get install mariadb-server mariadb-client)');
} else {
  for (const n of ['t1', 't2', 't3', 't4', 't5']) await db.admin(`CREATE TABLE shop.${n} (id int)`);
  const strictTarget = { ...db.target, name: 'app-db-strict' };
  const tg = await startTestGateway({
    targets: [db.target, strictTarget], listeners: ['mysql'],
    policies: [
      { name: 'loose', targets: ['app-db'], roles: ['*'], requesters: ['engineers'], approvers: ['approvers'], rules: RULES },
      { name: 'strict', targets: ['app-db-strict'], roles: ['*'], requesters: ['engineers'], approvers: ['approvers'], strictRules: true, rules: RULES },
    ],
  });
  t.teardown(() => tg.close());
  const { host, port } = tg.listener('mysql');
  const open = async (target: string) => {
    const g = await tg.grant('alice', target, 'admin');
    const s = await tg.secret('alice', g.id);
    const c = await mysql.createConnection({ host, port, user: target, password: s.secret, database: 'shop', ssl: { ca: tg.gw.tls.ca } });
    c.on('error', () => undefined);
    return { c, grant: g };
  };
  const fails = (c: mysql.Connection, sql: string) => c.query(sql).then(() => null, (e: MyErr) => e);
  const tables = async () => ((await db.admin("SELECT table_name AS n FROM information_schema.tables WHERE table_schema = 'shop' AND table_name LIKE 't_' ORDER BY 1")) as { n: string }[]).map((r) => r.n);
  const noUsersLeft = () => waitFor(async () => (await db.sessionUsers()).length === 0, 10_000, 'session users dropped');

  t.test('indirection cannot run what the rules deny: the server refuses it', async (t) => {
    const { c, grant } = await open('app-db');
    const [grants] = await c.query('SHOW GRANTS');
    const text = (grants as Record<string, string>[]).map((r) => Object.values(r)[0]).join('\n');
    t.notMatch(text, /\bDROP\b|ALL PRIVILEGES/, `no DROP in the minted user's grants:\n${text}`);
    t.match(text, /SELECT, INSERT, UPDATE, DELETE, CREATE/, 'the rest of ALL PRIVILEGES is there');
    const direct = await fails(c, 'DROP TABLE t1');
    t.match(direct?.message, /No DROP or TRUNCATE on prod/, 'the gateway refuses what it sees');
    const literal = await fails(c, "PREPARE s FROM 'DR' 'OP TABLE t1'");
    t.match(literal?.message, /No DROP or TRUNCATE on prod/, 'PREPARE … FROM a literal is checked like a query');
    await c.query("SET @q = CONCAT('DR', 'OP TABLE t2')");
    await c.query('PREPARE s FROM @q');
    const exec = await fails(c, 'EXECUTE s');
    t.equal(exec?.errno, 1142, `PREPARE from a variable then EXECUTE: refused by the server (${exec?.message})`);
    t.match(exec?.message, /DROP command denied/);
    t.equal((await fails(c, "EXECUTE IMMEDIATE CONCAT('TRUNC', 'ATE TABLE t2')"))?.errno, 1142, 'EXECUTE IMMEDIATE: TRUNCATE needs DROP');
    await c.query('CREATE PROCEDURE p() BEGIN DROP TABLE t3; END');
    const call = await fails(c, 'CALL p()');
    t.equal(call?.errno, 1142, `a procedure doing DROP (${call?.message})`);
    const ev = await fails(c, 'CREATE EVENT e ON SCHEDULE AT CURRENT_TIMESTAMP + INTERVAL 1 HOUR DO DROP TABLE t4');
    t.ok(ev && [1044, 1142, 1227].includes(ev.errno ?? 0), `no EVENT privilege: events cannot drop later (${ev?.message})`);
    await c.query('INSERT INTO t5 VALUES (1)');
    t.equal(((await c.query('SELECT COUNT(*) AS n FROM t5'))[0] as { n: number }[])[0]!.n, 1, 'what the rules allow still works');
    t.same(await tables(), ['t1', 't2', 't3', 't4', 't5'], 'every table is still there');
    await c.end();
    await noUsersLeft();
    const sess = (await tg.store.listSessions({ grantId: grant.id }))[0]!;
    const audit = await tg.store.listAudit({ subject: sess.id });
    t.match(audit.find((a) => a.action === 'mysql.privileges')?.data, {
      privileges: ['DROP', 'ALTER ROUTINE', 'TRIGGER', 'EVENT', 'INDEX', 'CREATE USER'],
      grants: [{ grant: 'ALL PRIVILEGES ON shop.*', withheld: ['DROP', 'ALTER ROUTINE', 'TRIGGER', 'EVENT', 'INDEX'] }],
    });
    const unc = audit.filter((a) => a.action === 'session.rule.uncertain');
    t.same(unc.map((a) => a.data.uncertain), [['PREPARE s FROM @q'], ["EXECUTE IMMEDIATE CONCAT('TRUNC', 'ATE TABLE t2…"]], 'uncertain statements audited (long ones shortened)');
    t.equal(unc[0]!.data.text, 'PREPARE s FROM @q', 'with their text (SQL, not a terminal line)');
  });

  t.test('strict rules: PREPARE from a variable is refused by the gateway', async (t) => {
    const { c } = await open('app-db-strict');
    await c.query("SET @q = 'SELECT 1'");
    const e = await fails(c, 'PREPARE s FROM @q');
    t.match(e?.message, /Tollgate: this statement uses PREPARE s FROM @q which the gateway cannot check; strict rules are on for this role/);
    await c.query("PREPARE s2 FROM 'SELECT 1'");
    t.pass('a literal it can read is fine');
    await c.end();
    await noUsersLeft();
  });
}
