/**
 * Real drivers through the gateway with a minted account: the mariadb CLI, mysql2, MariaDB's
 * `mariadb` connector, PyMySQL and MariaDB Connector/J. Each runs the same four steps - a
 * prepared statement (server-side where the driver has them; PyMySQL binds on the client), a
 * 1,000-row result, an error and a transaction (one rolled back, one committed) - and each step
 * must be in the session's statement log. Then bad input: a client that sends malformed packets
 * after a real login gets a protocol error in MySQL's own terms while other sessions go on.
 */
import t, { type Test } from 'tap';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import mysql from 'mysql2/promise';
import * as mariadb from 'mariadb';
import { DEFAULT_POLICIES, startTestGateway, type TestGateway } from '../support/gateway.js';
import { startTestMariadb, run, waitFor, type TestMariadb } from '../support/mariadb.js';
import { RawClient, comQuery, describe } from './raw-client.js';
import { COM, parseErr } from '../../protocols/mysql/packets.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const JDBC_JAR = '/usr/share/java/mariadb-java-client.jar';
const PREPARED = 'SELECT id, v FROM items WHERE id > ? ORDER BY id';
const MANY = "SELECT seq, CONCAT('row ', seq) AS label FROM seq_1_to_1000";
const BAD = 'SELECT * FROM no_such_table';

interface Steps {
  prepared: { rows: [number, string][] };
  many: { count: number; sum: number; last: string };
  error: { code: number; message?: string };
  tx: { rolledBack: number; committed: number };
}

const db: TestMariadb | null = await startTestMariadb(t);
if (!db) {
  t.fail('MariaDB is required (apt-get install mariadb-server mariadb-client)');
} else {
  await db.admin('CREATE DATABASE drv');
  await db.admin('CREATE TABLE drv.items (id INT PRIMARY KEY, v VARCHAR(40)) ENGINE=InnoDB');
  await db.admin("INSERT INTO drv.items SELECT seq, CONCAT('item ', seq) FROM drv.seq_1_to_1000");
  const drivers = ['cli', 'mysql2', 'mariadb', 'pymysql', 'jdbc', 'raw'];
  const targets = drivers.map((d) => ({
    ...db.target, name: `drv-${d}`,
    options: { allowPlain: true }, // the raw client speaks no TLS; the drivers' TLS is tested in e2e.test.ts
    roles: [{ name: 'rw', grants: ['SELECT, INSERT, UPDATE, DELETE ON drv.*'], database: 'drv' }],
  }));
  const tg: TestGateway = await startTestGateway({ targets, policies: DEFAULT_POLICIES, listeners: ['mysql'] });
  t.teardown(() => tg.close());
  const { host, port } = tg.listener('mysql');
  const secretFor = async (target: string, reusable = false) => {
    const g = await tg.grant('alice', target, 'rw');
    return (await tg.secret('alice', g.id, { reusable })).secret;
  };
  const noUsersLeft = () => waitFor(async () => (await db.sessionUsers()).length === 0, 15_000, 'session users dropped');

  /** The four steps' answers as the driver saw them, then the statement log of its one session. */
  const verify = async (t: Test, target: string, steps: Steps, opts: { preparedText: RegExp; serverPrepared: boolean }) => {
    t.same(steps.prepared.rows, [[996, 'item 996'], [997, 'item 997'], [998, 'item 998'], [999, 'item 999'], [1000, 'item 1000']], 'prepared statement: its 5 rows');
    t.same([steps.many.count, steps.many.sum, steps.many.last], [1000, 500500, 'row 1000'], '1,000 rows, all of them');
    t.equal(steps.error.code, 1146, "the server's error, as the server said it");
    t.same({ rolledBack: Number(steps.tx.rolledBack), committed: Number(steps.tx.committed) }, { rolledBack: 0, committed: 1 }, 'transaction: the rolled back row is not there, the committed one is');
    await noUsersLeft();
    const sessions = await tg.store.listSessions({ target });
    t.equal(sessions.length, 1, 'one session');
    const sess = await waitFor(async () => { const s = await tg.store.getSession(sessions[0]!.id); return s?.state === 'ended' ? s : null; }, 10_000, 'the session to end');
    t.match(sess.endReason, /^client_exit/, 'ended by the client');
    const q = await tg.store.listQueries(sess.id);
    const prepared = q.filter((x) => opts.preparedText.test(x.statement) && x.rows === 5);
    t.ok(prepared.length >= 1, `prepared statement logged with its 5 rows (${opts.serverPrepared ? 'server-side: the text with ?' : 'bound by the client'})`);
    if (opts.serverPrepared) t.ok(prepared.some((x) => x.params === 1), 'with its parameter count');
    t.ok(q.some((x) => x.statement.includes('seq_1_to_1000') && x.rows === 1000), '1,000-row result logged with its row count');
    t.ok(q.some((x) => x.statement.includes('no_such_table') && /^1146 \(42S02\)/.test(x.error ?? '')), 'the error logged with the server\'s code');
    t.ok(q.some((x) => /ROLLBACK/i.test(x.statement)) || q.some((x) => /rollback/i.test(x.kind ?? '')), 'ROLLBACK logged');
    t.ok(q.some((x) => /COMMIT/i.test(x.statement)), 'COMMIT logged');
    t.ok(q.some((x) => /INSERT INTO items VALUES \(2001, 'committed'\)/.test(x.statement) && x.rows === 1), 'the committed INSERT logged with 1 affected row');
    await db.admin('DELETE FROM drv.items WHERE id >= 2000');
  };
  const lines = (out: string) => Object.fromEntries(out.trim().split('\n').filter((l) => l.startsWith('{')).map((l) => { const o = JSON.parse(l); return [o.step, o]; })) as unknown as Steps;

  t.test('mariadb CLI (libmariadb)', async (t) => {
    const secret = await secretFor('drv-cli');
    const sql = [
      `PREPARE s FROM '${PREPARED}'`, 'SET @min = 995', 'EXECUTE s USING @min', 'DEALLOCATE PREPARE s',
      MANY, `${BAD}`,
    ].join(';\n');
    // a script on standard input; --force: go on after the error
    const r = await run('mariadb', ['-h', host, '-P', String(port), '-u', 'drv-cli', `-p${secret}`, '--batch', '--skip-column-names', '--force', 'drv'], {
      input: `${sql};\nSTART TRANSACTION; INSERT INTO items VALUES (2000, 'rolled back'); ROLLBACK; SELECT COUNT(*) FROM items WHERE id = 2000;\nBEGIN; INSERT INTO items VALUES (2001, 'committed'); COMMIT; SELECT COUNT(*) FROM items WHERE id = 2001;\n`,
    });
    const out = r.stdout.trim().split('\n');
    t.equal(r.stderr.trim().split('\n').filter((l) => l.startsWith('ERROR')).length, 1, `one error, the one asked for: ${r.stderr.trim()}`);
    const prepared = out.slice(0, 5).map((l) => l.split('\t')).map(([id, v]) => [Number(id), v] as [number, string]);
    const many = out.slice(5, 1005).map((l) => l.split('\t'));
    const err = /ERROR (\d+) \((\w+)\)/.exec(r.stderr);
    await verify(t, 'drv-cli', {
      prepared: { rows: prepared },
      many: { count: many.length, sum: many.reduce((s, [n]) => s + Number(n), 0), last: many.at(-1)?.[1] ?? '' },
      error: { code: Number(err?.[1]) },
      tx: { rolledBack: Number(out[1005]), committed: Number(out[1006]) },
    }, { preparedText: /EXECUTE s USING @min/, serverPrepared: false });
    t.equal(out.length, 1007, 'nothing else printed');
  });

  t.test('mysql2', async (t) => {
    const c = await mysql.createConnection({ host, port, user: 'drv-mysql2', password: await secretFor('drv-mysql2'), database: 'drv' });
    const [p] = await c.execute(PREPARED, [995]);
    const [many] = await c.query(MANY);
    const m = many as { seq: number; label: string }[];
    const error = await c.query(BAD).then(() => ({ code: 0 }), (e: { errno: number; message: string }) => ({ code: e.errno, message: e.message }));
    await c.beginTransaction();
    await c.query("INSERT INTO items VALUES (2000, 'rolled back')");
    await c.rollback();
    const [[r1]] = await c.query('SELECT COUNT(*) AS n FROM items WHERE id = 2000') as unknown as [[{ n: number }]];
    await c.beginTransaction();
    await c.query("INSERT INTO items VALUES (2001, 'committed')");
    await c.commit();
    const [[r2]] = await c.query('SELECT COUNT(*) AS n FROM items WHERE id = 2001') as unknown as [[{ n: number }]];
    await c.end();
    await verify(t, 'drv-mysql2', {
      prepared: { rows: (p as { id: number; v: string }[]).map((r) => [r.id, r.v]) },
      many: { count: m.length, sum: m.reduce((s, r) => s + r.seq, 0), last: m.at(-1)!.label },
      error, tx: { rolledBack: Number(r1.n), committed: Number(r2.n) },
    }, { preparedText: /^SELECT id, v FROM items WHERE id > \? ORDER BY id$/, serverPrepared: true });
  });

  t.test('mariadb connector (MariaDB Node.js connector: pipelined prepare + execute, metadata cache)', async (t) => {
    const c = await mariadb.createConnection({ host, port, user: 'drv-mariadb', password: await secretFor('drv-mariadb'), database: 'drv' });
    const p = await c.execute(PREPARED, [995]);
    const many = await c.query(MANY);
    const error = await c.query(BAD).then(() => ({ code: 0 }), (e: { errno: number; message: string }) => ({ code: e.errno, message: e.message }));
    await c.beginTransaction();
    await c.query("INSERT INTO items VALUES (2000, 'rolled back')");
    await c.rollback();
    const [r1] = await c.query('SELECT COUNT(*) AS n FROM items WHERE id = 2000');
    await c.beginTransaction();
    await c.query("INSERT INTO items VALUES (2001, 'committed')");
    await c.commit();
    const [r2] = await c.query('SELECT COUNT(*) AS n FROM items WHERE id = 2001');
    t.ok(c.info?.isMariaDB(), 'the connector sees a MariaDB server through the gateway');
    await c.end();
    await verify(t, 'drv-mariadb', {
      prepared: { rows: (p as { id: number; v: string }[]).map((r) => [r.id, r.v]) },
      many: { count: many.length, sum: (many as { seq: number }[]).reduce((s, r) => s + Number(r.seq), 0), last: (many as { label: string }[]).at(-1)!.label },
      error, tx: { rolledBack: Number(r1.n), committed: Number(r2.n) },
    }, { preparedText: /^SELECT id, v FROM items WHERE id > \? ORDER BY id$/, serverPrepared: true });
  });

  t.test('PyMySQL', async (t) => {
    const secret = await secretFor('drv-pymysql');
    const r = await run('/usr/bin/python3', [join(HERE, 'drivers', 'pymysql_case.py'), host, String(port), 'drv-pymysql', 'drv'], { env: { TG_PASSWORD: secret } });
    t.equal(r.code, 0, r.stderr);
    await verify(t, 'drv-pymysql', lines(r.stdout), { preparedText: /^SELECT id, v FROM items WHERE id > 995 ORDER BY id$/, serverPrepared: false });
  });

  t.test('MariaDB Connector/J (server-side prepared statements)', async (t) => {
    const secret = await secretFor('drv-jdbc');
    const url = `jdbc:mariadb://${host}:${port}/drv?useServerPrepStmts=true`;
    const r = await run('java', ['-cp', JDBC_JAR, join(HERE, 'drivers', 'MariadbJdbcCase.java'), url, 'drv-jdbc'], { env: { TG_PASSWORD: secret }, timeoutMs: 120_000 });
    t.equal(r.code, 0, r.stderr);
    await verify(t, 'drv-jdbc', lines(r.stdout), { preparedText: /^SELECT id, v FROM items WHERE id > \? ORDER BY id$/, serverPrepared: true });
  });

  t.test('malformed packets after a real login: a protocol error, the session ends as an error, other sessions go on', async (t) => {
    const secret = await secretFor('drv-raw', true);
    const bystander = await mysql.createConnection({ host, port, user: 'drv-raw', password: secret, database: 'drv' });
    // code: the gateway's own ERR (then it closes); 'server': the server's ERR for what the gateway
    // passed on (the session goes on); 'pipelined': no error at all
    const cases: { what: string; send: (c: RawClient) => void; code: number | 'server' | 'pipelined'; message?: RegExp }[] = [
      { what: 'COM_STMT_EXECUTE cut short', send: (c) => c.send(Buffer.from([COM.STMT_EXECUTE, 1, 0])), code: 1158, message: /^Tollgate: malformed command: truncated packet \(statement id\)$/ },
      { what: 'COM_STMT_CLOSE without a statement id', send: (c) => c.send(Buffer.from([COM.STMT_CLOSE])), code: 1158, message: /^Tollgate: malformed command/ },
      { what: 'an empty packet', send: (c) => c.send(Buffer.alloc(0)), code: 1158, message: /^Tollgate: empty command packet$/ },
      { what: 'COM_STMT_FETCH of a statement that does not exist', send: (c) => c.send(Buffer.from([COM.STMT_FETCH, 9, 0, 0, 0, 1, 0, 0, 0])), code: 'server' },
      { what: 'a second command before the first is answered', send: () => {}, code: 'pipelined' },
    ];
    for (const k of cases) {
      const c = await RawClient.connect({ host, port, user: 'drv-raw', password: secret, database: 'drv' });
      const first = await c.ask(comQuery('SELECT 41 + 1'));
      t.ok(first.length >= 3, `${k.what}: logged in, a query answered (${first.map(describe).join(', ')})`);
      k.send(c);
      if (typeof k.code === 'number') {
        const p = await c.next(5000);
        t.ok(p, `${k.what}: an answer`);
        const e = parseErr(p!.payload);
        t.equal(e.code, k.code, `${k.what}: ERR ${k.code}`);
        t.match(e.message, k.message!);
        t.ok(await c.waitClosed(), `${k.what}: then the gateway closes`);
      } else if (k.code === 'server') {
        const p = await c.next(5000);
        t.equal(p?.payload[0], 0xff, `${k.what}: the server's ERR (${p && parseErr(p.payload).message})`);
        t.ok((await c.ask(comQuery('SELECT 2'))).length >= 3 && !c.closed, `${k.what}: the session goes on`);
      } else {
        // the gateway serialises a pipelining client: each answered, in order
        const answers = await c.exchange(comQuery("SELECT SLEEP(0.2), 'first'"), comQuery("SELECT 'second'"));
        t.same(answers.map((a) => a.some((p) => p.payload.includes(Buffer.from(a === answers[0] ? 'first' : 'second')))), [true, true], `${k.what}: both answered in order, the session goes on`);
        t.notOk(c.closed);
      }
      c.close();
      const [[row]] = await bystander.query('SELECT COUNT(*) AS n FROM items') as unknown as [[{ n: number }]];
      t.equal(Number(row.n), 1000, `${k.what}: another session is still served`);
    }
    await bystander.end();
    await noUsersLeft();
    const sessions = await tg.store.listSessions({ target: 'drv-raw' });
    const ended = await Promise.all(sessions.map((s) => waitFor(async () => { const x = await tg.store.getSession(s.id); return x?.state === 'ended' ? x : null; }, 10_000, 'ended')));
    const reasons = ended.map((s) => s.endReason ?? '').sort();
    t.same(reasons.filter((r) => /^error: protocol violation/.test(r)).length, 3, `the three sessions the gateway refused ended as errors (${reasons.join(', ')})`);
    const fresh = await mysql.createConnection({ host, port, user: 'drv-raw', password: secret, database: 'drv' });
    const [[one]] = await fresh.query('SELECT 1 AS x') as unknown as [[{ x: number }]];
    t.equal(one.x, 1, 'and a new connection is served');
    await fresh.end();
    await noUsersLeft();
  });
}
