/**
 * Real PostgreSQL drivers through the gateway, each with a minted role: psql, node-postgres,
 * postgres.js, psycopg2 (Python) and pgJDBC (Java, the driver DBeaver and DataGrip use). Each runs
 * the same workload — a prepared statement executed 7 times, a 1,000-row result, an error the
 * session survives, a rolled-back and a committed transaction — and the session's statement log
 * (the gateway's query log API) must show each of them. Bad input: a driver connection carrying a
 * malformed message gets an ErrorResponse (08P01) while the gateway keeps serving other sessions.
 */
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import postgres from 'postgres';
import { havePostgres, runClient, startPgGateway, waitFor } from '../support/pg.js';

const here = join(dirname(fileURLToPath(import.meta.url)), 'drivers');
const PGJDBC = '/usr/share/java/postgresql.jar';
const PYTHON = '/usr/bin/python3';

interface LogRow { statement: string; kind: string | null; params: number; rows: number | null; error: string | null }

const PREPARED = /^SELECT name FROM accounts WHERE id = \$1$/;
const BIG = /generate_series\(1, 1000\)/;
const md5 = (s: string) => createHash('md5').update(s).digest('hex');

if (!havePostgres) {
  t.fail('PostgreSQL binaries are required (apt-get install postgresql postgresql-client)');
} else {
  const { pgc, tg, host, port, caFile, connect, secretFor, settle } = await startPgGateway(t);

  /** Run fn, then return the statement log (through the API) of the one session it opened. */
  const sessionLog = async (fn: () => Promise<unknown>): Promise<{ result: unknown; log: LogRow[]; sessionId: string }> => {
    const before = new Set((await tg.store.listSessions({ target: 'prod-db' })).map((s) => s.id));
    const result = await fn();
    await settle();
    const fresh = (await tg.store.listSessions({ target: 'prod-db' })).filter((s) => !before.has(s.id));
    if (fresh.length !== 1) throw new Error(`expected one new session, got ${fresh.length}`);
    const r = await tg.api('alice', 'GET', `/api/v1/sessions/${fresh[0]!.id}/queries`);
    if (r.status !== 200) throw new Error(`query log: ${r.status}`);
    return { result, log: r.body as LogRow[], sessionId: fresh[0]!.id };
  };

  /** The workload's traces in a session's statement log. */
  /**
   * The workload's traces in a session's statement log. `bigRows` picks the entries that carry the
   * 1,000 rows (default: the generate_series statement itself; psycopg2's named cursor: its FETCHes).
   */
  const checkLog = (t: Test, log: LogRow[], o: { prepared: RegExp; params: number; bigRows?: RegExp }) => {
    const prepared = log.filter((q) => o.prepared.test(q.statement));
    t.equal(prepared.length, 7, 'the prepared statement: 7 executions logged');
    t.ok(prepared.every((q) => q.rows === 1 && q.error === null && q.params === o.params), `each with 1 row, ${o.params} parameter(s), no error`);
    const big = log.filter((q) => (o.bigRows ?? BIG).test(q.statement) && q.rows !== null);
    t.equal(big.reduce((n, q) => n + (q.rows ?? 0), 0), 1000, '1,000 rows logged for the multi-row result');
    const err = log.find((q) => /SELECT 1\/0/.test(q.statement));
    t.match(err?.error, /^22012: division by zero/, 'the error logged with its SQLSTATE');
    t.ok(log.some((q) => /SELECT 41 \+ 1/.test(q.statement) && q.rows === 1), 'the statement after the error logged');
    t.ok(log.some((q) => q.kind === 'ROLLBACK'), 'ROLLBACK logged');
    t.ok(log.some((q) => q.kind === 'COMMIT'), 'COMMIT logged');
    t.ok(log.some((q) => /INSERT INTO drv VALUES \(2\), \(3\)/.test(q.statement) && q.rows === 2), 'the committed INSERT logged with 2 rows');
    t.ok(log.some((q) => /INSERT INTO drv VALUES \(1\)/.test(q.statement) && q.rows === 1), 'the rolled-back INSERT logged');
  };

  const expectResults = (t: Test, steps: Record<string, Record<string, unknown>>) => {
    t.match(steps['whoami']?.['user'], /^tg_alice_[0-9a-f]{6}$/, 'connected as the minted role');
    t.same(steps['prepared']?.['names'], ['alice', 'bob', 'carol', 'alice', 'bob', 'carol', 'alice'], 'prepared statement results');
    t.match(steps['rows'], { count: 1000, sum: 500500, last: md5('1000') }, '1,000 rows, intact');
    t.match(steps['error'], { code: '22012' }, 'the error reached the driver with its SQLSTATE');
    t.equal(Number(steps['after_error']?.['value']), 42, 'the session goes on after the error');
  };

  const jsonSteps = (stdout: string) => Object.fromEntries(stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => {
    const o = JSON.parse(l) as Record<string, unknown>;
    return [String(o['step']), o];
  })) as Record<string, Record<string, unknown>>;

  t.test('psql: PREPARE/EXECUTE, 1,000 rows, an error, transactions', async (t) => {
    const s = await secretFor('prod-db', 'read');
    const script = [
      'SELECT current_user;',
      'PREPARE by_id(int) AS SELECT name FROM accounts WHERE id = $1;',
      ...[1, 2, 3, 1, 2, 3, 1].map((i) => `EXECUTE by_id(${i});`),
      'SELECT g AS n, md5(g::text) AS h FROM generate_series(1, 1000) AS g;',
      'SELECT 1/0;',
      'SELECT 41 + 1;',
      'CREATE TEMP TABLE drv (id int);',
      'BEGIN;', 'INSERT INTO drv VALUES (1);', 'ROLLBACK;',
      'BEGIN;', 'INSERT INTO drv VALUES (2), (3);', 'COMMIT;',
      'SELECT array_agg(id ORDER BY id) FROM drv;',
    ].join('\n');
    const { result, log } = await sessionLog(() => runClient('psql', ['-X', '-q', '-A', '-t', `host=${host} port=${port} user=prod-db dbname=app sslmode=verify-full sslrootcert=${caFile}`],
      { env: { PGPASSWORD: s.secret }, input: script }));
    const r = result as Awaited<ReturnType<typeof runClient>>;
    t.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    t.match(lines[0], /^tg_alice_[0-9a-f]{6}$/, 'the minted role');
    t.same(lines.slice(1, 8), ['alice', 'bob', 'carol', 'alice', 'bob', 'carol', 'alice'], 'prepared statement results');
    const rows = lines.filter((l) => /^\d+\|[0-9a-f]{32}$/.test(l));
    t.equal(rows.length, 1000, '1,000 rows');
    t.equal(rows[999], `1000|${md5('1000')}`);
    t.match(r.stderr, /ERROR:\s+division by zero/, 'the error reached psql');
    t.ok(lines.includes('42'), 'the session goes on after the error');
    t.equal(lines.at(-1), '{2,3}', 'only the committed rows are there');
    checkLog(t, log.map((q) => ({ ...q, statement: q.statement.replace(/^EXECUTE by_id\(\d\)$/, 'SELECT name FROM accounts WHERE id = $1') })), { prepared: PREPARED, params: 0 });
    t.equal(log.filter((q) => q.kind === 'EXECUTE').length, 7, 'EXECUTE statements logged as such');
  });

  t.test('node-postgres: named prepared statement, 1,000 rows, an error, transactions', async (t) => {
    const s = await secretFor('prod-db', 'read');
    const { log } = await sessionLog(async () => {
      const a = await connect('prod-db', s.secret);
      t.match((await a.c.query('SELECT current_user AS u')).rows[0].u, /^tg_alice_/);
      const names: string[] = [];
      for (const id of [1, 2, 3, 1, 2, 3, 1]) names.push((await a.c.query({ name: 'by_id', text: 'SELECT name FROM accounts WHERE id = $1', values: [id] })).rows[0].name);
      t.same(names, ['alice', 'bob', 'carol', 'alice', 'bob', 'carol', 'alice']);
      const big = await a.c.query('SELECT g AS n, md5(g::text) AS h FROM generate_series(1, 1000) AS g');
      t.equal(big.rows.length, 1000);
      t.equal(big.rows.reduce((n: number, r: { n: number }) => n + r.n, 0), 500500);
      t.equal(big.rows[999].h, md5('1000'));
      const e = await a.c.query('SELECT 1/0').then(() => null, (err: Error & { code?: string }) => err);
      t.equal(e?.code, '22012');
      t.equal((await a.c.query('SELECT 41 + 1 AS v')).rows[0].v, 42);
      await a.c.query('CREATE TEMP TABLE drv (id int)');
      await a.c.query('BEGIN');
      await a.c.query('INSERT INTO drv VALUES (1)');
      await a.c.query('ROLLBACK');
      await a.c.query('BEGIN');
      await a.c.query('INSERT INTO drv VALUES (2), (3)');
      await a.c.query('COMMIT');
      t.same((await a.c.query('SELECT array_agg(id ORDER BY id) AS ids FROM drv')).rows[0].ids, [2, 3]);
      await a.c.end();
    });
    checkLog(t, log, { prepared: PREPARED, params: 1 });
  });

  t.test('postgres.js: prepared statements, a cursor with a row limit, an error, sql.begin', async (t) => {
    const s = await secretFor('prod-db', 'read');
    const { log } = await sessionLog(async () => {
      const sql = postgres({ host, port, user: 'prod-db', password: s.secret, database: 'app', ssl: { ca: tg.gw.tls.ca }, max: 1, prepare: true, onnotice: () => {} });
      try {
        t.match((await sql`SELECT current_user AS u`)[0]!['u'], /^tg_alice_/);
        const names: string[] = [];
        for (const id of [1, 2, 3, 1, 2, 3, 1]) names.push((await sql`SELECT name FROM accounts WHERE id = ${id}`)[0]!['name'] as string);
        t.same(names, ['alice', 'bob', 'carol', 'alice', 'bob', 'carol', 'alice']);
        let n = 0;
        let sum = 0;
        let batches = 0;
        let last = '';
        // .cursor(100): Execute with a row limit of 100, PortalSuspended, Execute again… (inside a transaction).
        await sql.begin(async (tx) => {
          for await (const rows of tx`SELECT g AS n, md5(g::text) AS h FROM generate_series(1, 1000) AS g`.cursor(100)) {
            batches++;
            for (const r of rows) { n++; sum += r['n'] as number; last = r['h'] as string; }
          }
        });
        t.match({ n, sum, batches, last }, { n: 1000, sum: 500500, batches: 10, last: md5('1000') }, '1,000 rows in 10 batches of 100');
        // A cursor left after two batches: its log entry ends with the 200 rows read.
        let early = 0;
        await sql.begin(async (tx) => {
          for await (const rows of tx`SELECT g FROM generate_series(1, 5000) AS g -- read early`.cursor(100)) {
            early += rows.length;
            if (early >= 200) break;
          }
        });
        t.equal(early, 200);
        const e = await sql`SELECT 1/0`.then(() => null, (err: Error & { code?: string }) => err);
        t.equal(e?.code, '22012');
        t.equal((await sql`SELECT 41 + 1 AS v`)[0]!['v'], 42);
        await sql`CREATE TEMP TABLE drv (id int)`;
        await sql.begin(async (tx) => {
          await tx`INSERT INTO drv VALUES (1)`;
          throw new Error('roll back');
        }).catch((err: Error) => t.equal(err.message, 'roll back'));
        await sql.begin(async (tx) => { await tx`INSERT INTO drv VALUES (2), (3)`; });
        t.same((await sql`SELECT array_agg(id ORDER BY id) AS ids FROM drv`)[0]!['ids'], [2, 3]);
      } finally {
        await sql.end({ timeout: 5 });
      }
    });
    checkLog(t, log, { prepared: PREPARED, params: 1 });
    t.equal(log.filter((q) => BIG.test(q.statement)).length, 1, 'the cursor is one statement in the log, not one per batch');
    const early = log.filter((q) => /-- read early/.test(q.statement));
    t.equal(early.length, 1, 'a cursor closed early: one entry');
    t.match(early[0], { rows: 200, error: null }, 'with the rows read');
  });

  t.test('psycopg2 (Python): PREPARE/EXECUTE, a named cursor, an error, transactions', async (t) => {
    if (!existsSync(PYTHON)) return t.fail(`${PYTHON} is required (apt-get install python3-psycopg2)`);
    const s = await secretFor('prod-db', 'read');
    const dsn = `host=${host} port=${port} user=prod-db dbname=app password=${s.secret} sslmode=verify-full sslrootcert=${caFile}`;
    const { result, log } = await sessionLog(() => runClient(PYTHON, [join(here, 'psycopg2_case.py')], { env: { TG_DSN: dsn }, timeoutMs: 60_000 }));
    const r = result as Awaited<ReturnType<typeof runClient>>;
    t.equal(r.code, 0, r.stderr);
    const steps = jsonSteps(r.stdout);
    expectResults(t, steps);
    t.same(steps['transaction']?.['ids'], [2, 3]);
    t.ok(steps['done'], 'finished');
    checkLog(t, log.map((q) => ({ ...q, statement: q.statement.replace(/^EXECUTE by_id\(\d\)$/, 'SELECT name FROM accounts WHERE id = $1') })), { prepared: PREPARED, params: 0, bigRows: /^FETCH FORWARD 100 FROM "big_rows"/ });
    t.ok(log.some((q) => /^DECLARE "big_rows"/.test(q.statement)), 'the named cursor declared');
    t.ok(log.some((q) => /^FETCH FORWARD 100 FROM "big_rows"/.test(q.statement) && q.rows === 100), 'and fetched 100 rows at a time');
  });

  t.test('pgJDBC (Java): a server-prepared statement past prepareThreshold, fetch size, an error, transactions', async (t) => {
    if (!existsSync(PGJDBC)) return t.fail(`${PGJDBC} is required (apt-get install libpostgresql-jdbc-java default-jdk-headless)`);
    const s = await secretFor('prod-db', 'read');
    const url = `jdbc:postgresql://${host}:${port}/app?sslmode=verify-full&sslrootcert=${caFile}&prepareThreshold=5`;
    const { result, log } = await sessionLog(() => runClient('java', ['-cp', PGJDBC, join(here, 'PgJdbcCase.java'), url, 'prod-db', s.secret], { timeoutMs: 120_000 }));
    const r = result as Awaited<ReturnType<typeof runClient>>;
    t.equal(r.code, 0, r.stderr);
    const steps = jsonSteps(r.stdout);
    expectResults(t, steps);
    t.equal(steps['prepared']?.['serverPrepared'], true, 'pgJDBC switched to a named server-side statement');
    t.equal(steps['transaction']?.['ids'], '{2,3}');
    t.ok(steps['done'], 'finished');
    checkLog(t, log, { prepared: PREPARED, params: 1 });
    t.equal(log.filter((q) => BIG.test(q.statement)).length, 1, 'the fetch-size portal is one statement in the log');
  });

  t.test('the backend pid a driver sees is the server backend\'s, as when connected directly', async (t) => {
    // Drivers match NotificationResponse pids against BackendKeyData's to skip their own
    // notifications, and show it to correlate with pg_stat_activity and the server log.
    const s = await secretFor('prod-db', 'read', true);
    const a = await connect('prod-db', s.secret);
    const b = await connect('prod-db', s.secret);
    const pidOf = async (c: pg.Client) => (await c.query('SELECT pg_backend_pid() AS p')).rows[0].p as number;
    const processID = (c: pg.Client) => (c as unknown as { processID: number }).processID;
    t.equal(processID(a.c), await pidOf(a.c), 'node-postgres processID = pg_backend_pid()');
    t.not(processID(a.c), processID(b.c), 'each session its own');
    await a.c.query('LISTEN drivers_chan');
    await a.c.query("NOTIFY drivers_chan, 'self'");
    await b.c.query("NOTIFY drivers_chan, 'other'");
    await waitFor(() => a.notifications.length >= 2 || null, 5000, 'both notifications');
    const self = a.notifications.find((n) => n.payload === 'self')!;
    const other = a.notifications.find((n) => n.payload === 'other')!;
    t.equal(self.processId, processID(a.c), 'a notification from oneself carries one\'s own pid');
    t.equal(other.processId, processID(b.c), 'and one from another session that session\'s pid');
    // Cancel still goes through the gateway's mapping with the client-facing key.
    const q = a.c.query('SELECT pg_sleep(30)').then(() => null, (e: Error & { code?: string }) => e);
    await new Promise((r) => setTimeout(r, 300));
    const canceller = new pg.Client({ host, port, user: 'x', password: 'x', ssl: false });
    (canceller as unknown as { cancel(c: unknown, q: unknown): void }).cancel(a.c, (a.c as unknown as { activeQuery: unknown }).activeQuery);
    t.equal((await q)?.code, '57014', 'cancel still works');
    if (existsSync(PYTHON)) {
      const py = await runClient(PYTHON, ['-c', [
        'import os, psycopg2',
        'c = psycopg2.connect(os.environ["TG_DSN"]); cur = c.cursor(); cur.execute("SELECT pg_backend_pid()")',
        'print(c.get_backend_pid(), cur.fetchone()[0])',
      ].join('\n')], { env: { TG_DSN: `host=${host} port=${port} user=prod-db dbname=app password=${s.secret} sslmode=require` } });
      const [libpq, server] = py.stdout.trim().split(' ');
      t.equal(libpq, server, `psycopg2 get_backend_pid() (PQbackendPID) = pg_backend_pid(): ${py.stderr}`);
    } else {
      t.fail(`${PYTHON} is required`);
    }
    await a.c.end();
    await b.c.end();
  });

  t.test('bad input from a driver: ErrorResponse 08P01, the gateway keeps serving other sessions', async (t) => {
    const s = await secretFor('prod-db', 'read', true);
    const bystander = await connect('prod-db', s.secret);
    // node-postgres, its connection carrying a message of an unknown type after sign-in.
    const bad = await connect('prod-db', s.secret);
    const con = (bad.c as unknown as { connection: { stream: { write(b: Buffer): void } } }).connection;
    con.stream.write(Buffer.from([0x79, 0, 0, 0, 4]));
    await waitFor(() => bad.errors.length > 0 || null, 10_000, 'the error on the bad connection');
    const err = bad.errors[0]!;
    t.equal(err.code, '08P01', 'node-postgres got ErrorResponse 08P01');
    t.match(err.message, /protocol violation: unexpected message type 'y'/);
    t.equal((await bystander.c.query('SELECT 6 * 7 AS v')).rows[0].v, 42, 'another session goes on');
    // A Bind with a negative parameter count: a message of a known type with a broken body.
    const bad2 = await connect('prod-db', s.secret);
    const body = Buffer.concat([Buffer.from('\0\0', 'latin1'), Buffer.from([0, 0]), Buffer.from([0xff, 0xff]), Buffer.from([0, 0])]);
    const head = Buffer.alloc(5);
    head.write('B', 0, 'latin1');
    head.writeUInt32BE(body.length + 4, 1);
    (bad2.c as unknown as { connection: { stream: { write(b: Buffer): void } } }).connection.stream.write(Buffer.concat([head, body]));
    await waitFor(() => bad2.errors.length > 0 || null, 10_000, 'the error on the second bad connection');
    t.equal(bad2.errors[0]!.code, '08P01');
    t.match(bad2.errors[0]!.message, /negative parameter count in Bind/);
    // psycopg2 over a plain connection (allowPlain target): malformed bytes on the driver's own socket.
    if (existsSync(PYTHON)) {
      const p = await secretFor('plain-db', 'read');
      const dsn = `host=${host} port=${port} user=plain-db dbname=app password=${p.secret} sslmode=disable`;
      const r = await runClient(PYTHON, [join(here, 'psycopg2_case.py')], { env: { TG_DSN: dsn, TG_MALFORMED: '1' }, timeoutMs: 60_000 });
      t.equal(r.code, 0, r.stderr);
      // Idle when the answer comes, libpq passes the FATAL to the notice processor (as from PostgreSQL itself).
      t.match(jsonSteps(r.stdout)['malformed']?.['notices'], [/^FATAL:\s+protocol violation: unexpected message type 'y'/], 'psycopg2 got the ErrorResponse');
    } else {
      t.fail(`${PYTHON} is required`);
    }
    t.equal((await bystander.c.query('SELECT 1 AS v')).rows[0].v, 1, 'the bystander still works');
    const fresh = await connect('prod-db', s.secret);
    t.equal((await fresh.c.query('SELECT 2 AS v')).rows[0].v, 2, 'and a new session starts');
    await fresh.c.end();
    await bystander.c.end();
    await settle();
    const ended = (await tg.store.listSessions({ target: 'prod-db' })).filter((x) => /^error: protocol violation/.test(x.endReason ?? ''));
    t.ok(ended.length >= 2, 'the bad sessions ended with reason error');
    t.same(await pgc.noSessionRoles(), [], 'no minted role left behind');
  });
}
