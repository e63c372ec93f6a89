/**
 * Driver cases of the MySQL fidelity suite: each runs the same work with a real driver (mysql2,
 * or MariaDB's own `mariadb` connector) once directly and once through the gateway, and returns a
 * transcript of everything the driver handed back - rows as the driver parsed them, column
 * metadata, OK packets (affected rows, insert ids, warnings, session state changes), errors.
 * The four workloads of issue 16 that used to break only through the gateway are here:
 * `insert-id-above-2^53`, `cursor-loop-procedure`, `signal-resignal` and `json-extended-metadata`.
 */
import { createHash } from 'node:crypto';
import mysql from 'mysql2/promise';
import mysqlCore from 'mysql2';
import * as mariadb from 'mariadb';
import type { Endpoint } from './harness.js';

export type Driver = 'mysql2' | 'mariadb';

export interface DriverCase {
  name: string;
  driver: Driver;
  /** Connection options besides the endpoint. */
  options?: Record<string, unknown>;
  /** Statements run (as the admin would, but by the case's own account) before the work. */
  setup?: string[];
  run(c: CaseConn): Promise<unknown[]>;
}

/** What a case gets: the driver's connection, and a way to note what it saw. */
export interface CaseConn {
  /** Where the connection went (a case may log in again, e.g. COM_CHANGE_USER). */
  endpoint: Endpoint;
  mysql2: mysql.Connection;
  core: mysqlCore.Connection;
  mariadb: mariadb.Connection;
}

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex').slice(0, 16);

/** A stable, readable rendering of what a driver returned (bigint, Buffer, Date, errors). */
export function show(v: unknown): string {
  return JSON.stringify(v, (_k, x) => {
    if (typeof x === 'bigint') return `${x}n`;
    if (x && typeof x === 'object' && (x as { type?: string }).type === 'Buffer' && Array.isArray((x as { data?: unknown }).data)) {
      const b = Buffer.from((x as { data: number[] }).data);
      return b.length > 64 ? `<${b.length} bytes sha ${sha(b)}>` : `<hex ${b.toString('hex')}>`;
    }
    if (typeof x === 'string' && x.length > 200) return `<${x.length} chars sha ${sha(x)}>`;
    return x;
  });
}

/** The error a driver raised: what the server (or the gateway) said, without the driver's stack. */
export function errorOf(e: unknown): Record<string, unknown> {
  const x = e as { errno?: number; sqlState?: string; code?: string; sqlMessage?: string; text?: string; message?: string; fatal?: boolean };
  return { error: x.errno ?? x.code ?? 'none', sqlState: x.sqlState, message: x.sqlMessage ?? x.text ?? x.message };
}

async function attempt<T>(fn: () => Promise<T>): Promise<T | Record<string, unknown>> {
  try { return await fn(); } catch (e) { return errorOf(e); }
}

/** mysql2 result: rows, or the OK packet's fields; the column metadata that drivers act on. */
function m2(result: [unknown, unknown]): unknown {
  const [rows, fields] = result;
  const meta = (fs: unknown) => Array.isArray(fs)
    ? (fs as { name: string; columnType: number; characterSet: number; flags: number; decimals: number; columnLength: number; extendedTypeName?: string; extendedFormat?: string }[])
      .map((f) => ({ name: f.name, type: f.columnType, cs: f.characterSet, flags: f.flags, decimals: f.decimals, length: f.columnLength, ext: f.extendedTypeName, format: f.extendedFormat }))
    : fs;
  if (Array.isArray(fields) && fields.some((f) => f === undefined || Array.isArray(f))) return { results: rows, fields: (fields as unknown[]).map(meta) };
  return { rows, fields: meta(fields) };
}

function mdb(result: unknown): unknown {
  const r = result as unknown[] & { meta?: { name(): string; type: string; columnType: number; dataTypeName?: string; dataTypeFormat?: string }[] };
  const meta = r?.meta?.map?.((m) => ({ name: m.name(), type: m.type, columnType: m.columnType, ext: m.dataTypeName, format: m.dataTypeFormat }));
  return meta ? { rows: [...r], meta } : result;
}

const CURSOR_PROC = `CREATE PROCEDURE cursor_loop()
BEGIN
  DECLARE done INT DEFAULT 0;
  DECLARE v INT;
  DECLARE c CURSOR FOR SELECT seq FROM seq_1_to_5;
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET done = 1;
  OPEN c;
  l: LOOP
    FETCH c INTO v;
    IF done THEN LEAVE l; END IF;
    SELECT v, v * v AS sq;
  END LOOP;
  CLOSE c;
END`;

const SIGNAL_PROCS = [
  `CREATE PROCEDURE sig_after_select() BEGIN SELECT 1 AS a; SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'custom failure', MYSQL_ERRNO = 1644; END`,
  `CREATE PROCEDURE sig_in_cursor() BEGIN DECLARE v INT; DECLARE c CURSOR FOR SELECT seq FROM seq_1_to_3; OPEN c; FETCH c INTO v; SELECT v; SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'failed with a cursor open'; END`,
  `CREATE PROCEDURE resig() BEGIN DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN SELECT 'in handler' AS h; RESIGNAL SET MESSAGE_TEXT = 'resignalled'; END; SELECT * FROM no_such_table; END`,
  `CREATE PROCEDURE sig_warning() BEGIN SELECT 1 AS before_warning; SIGNAL SQLSTATE '01000' SET MESSAGE_TEXT = 'just a warning'; SELECT 2 AS after_warning; END`,
  `CREATE PROCEDURE handled() BEGIN DECLARE CONTINUE HANDLER FOR SQLSTATE '45000' SELECT 'caught' AS h; SIGNAL SQLSTATE '45000'; SELECT 'continued' AS c; END`,
];

export const DRIVER_CASES: DriverCase[] = [
  {
    name: 'insert-id-above-2^53',
    driver: 'mysql2',
    options: { supportBigNumbers: true, bigNumberStrings: true },
    setup: ['CREATE TABLE big_ai (id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, note VARCHAR(10))'],
    async run({ mysql2: c }) {
      return [
        m2(await c.query("INSERT INTO big_ai VALUES (9007199254740993, 'above 2^53')")),
        m2(await c.query("INSERT INTO big_ai (note) VALUES ('next')")), // the OK's insert id is 2^53 + 2
        m2(await c.query('SELECT LAST_INSERT_ID() AS l')),
        m2(await c.execute("INSERT INTO big_ai (note) VALUES ('prepared')")),
        m2(await c.query("INSERT INTO big_ai VALUES (18446744073709551614, 'near max')")),
        m2(await c.query('SELECT LAST_INSERT_ID() AS l, MAX(id) AS m FROM big_ai')),
        await attempt(async () => m2(await c.query("INSERT INTO big_ai (note) VALUES ('overflow')"))),
        m2(await c.execute('SELECT id, note FROM big_ai WHERE id > ? ORDER BY id', ['9007199254740992'])),
        m2(await c.query('SELECT LAST_INSERT_ID(18446744073709551615) AS l')),
        m2(await c.query('SELECT LAST_INSERT_ID() AS l')),
      ];
    },
  },
  {
    name: 'cursor-loop-procedure',
    driver: 'mysql2',
    setup: [CURSOR_PROC],
    async run({ mysql2: c }) {
      const out: unknown[] = [m2(await c.query('CALL cursor_loop()'))];
      out.push(m2(await c.execute('CALL cursor_loop()')), m2(await c.query('SELECT 1 AS still_here')));
      return out;
    },
  },
  {
    name: 'signal-resignal',
    driver: 'mysql2',
    setup: SIGNAL_PROCS,
    async run({ mysql2: c }) {
      const out: unknown[] = [];
      for (const p of ['sig_after_select', 'sig_in_cursor', 'resig', 'sig_warning', 'handled']) {
        out.push(p, await attempt(async () => m2(await c.query(`CALL ${p}()`))), m2(await c.query('SHOW WARNINGS')));
        out.push(await attempt(async () => m2(await c.execute(`CALL ${p}()`))));
      }
      out.push(m2(await c.query('SELECT 1 AS still_here')));
      return out;
    },
  },
  {
    name: 'json-extended-metadata',
    driver: 'mysql2',
    setup: [
      'CREATE TABLE docs (id INT PRIMARY KEY, doc JSON, u UUID, ip INET6)',
      `INSERT INTO docs VALUES (1, '{"a": 1, "b": [true, null, "x"]}', '123e4567-e89b-12d3-a456-426614174000', '::1'), (2, '[1, 2.5, "three"]', NULL, '2001:db8::1')`,
    ],
    async run({ mysql2: c }) {
      return [
        m2(await c.query('SELECT id, doc, u, ip FROM docs ORDER BY id')),
        m2(await c.execute('SELECT id, doc FROM docs WHERE id = ?', [1])),
        m2(await c.query(`SELECT JSON_OBJECT('k', 'v', 'n', 42) AS obj, JSON_ARRAY(1, 'two') AS arr, JSON_EXTRACT(doc, '$.b') AS b FROM docs WHERE id = 1`)),
        m2(await c.execute('SELECT ? AS param_object', [{ nested: { deep: [1, 2] } }])),
        m2(await c.execute('INSERT INTO docs (id, doc) VALUES (?, ?)', [3, { from: 'parameter' }])),
        m2(await c.query('SELECT doc FROM docs WHERE id = 3')),
      ];
    },
  },
  {
    name: 'prepared-statements',
    driver: 'mysql2',
    options: { dateStrings: true, supportBigNumbers: true },
    setup: ['CREATE TABLE p (id INT PRIMARY KEY, s VARCHAR(50), d DECIMAL(12,4), f DOUBLE, dt DATETIME(3), b VARBINARY(20), n INT NULL, big BIGINT UNSIGNED)'],
    async run({ mysql2: c }) {
      const ins = 'INSERT INTO p VALUES (?, ?, ?, ?, ?, ?, ?, ?)';
      return [
        m2(await c.execute(ins, [1, 'één', '12.3456', 1.5, '2024-02-29 12:34:56.789', Buffer.from([0, 1, 0xff]), null, '18446744073709551615'])),
        m2(await c.execute(ins, [2, '', '-0.0001', -1e300, '1970-01-01 00:00:00.000', Buffer.alloc(0), 7, 0])),
        m2(await c.execute('SELECT * FROM p WHERE id >= ? ORDER BY id', [1])),
        m2(await c.execute('SELECT COUNT(*) AS n, SUM(d) AS s FROM p')),
        await attempt(async () => m2(await c.execute(ins, [1, 'duplicate', 0, 0, null, null, null, 0]))),
        await attempt(async () => m2(await c.execute('SELECT * FROM no_such_table WHERE id = ?', [1]))),
        m2(await c.execute('UPDATE p SET s = CONCAT(s, ?) WHERE id = ?', ['!', 1])),
        m2(await c.execute('SELECT s FROM p WHERE id = ?', [1])),
      ];
    },
  },
  {
    name: 'multi-statements',
    driver: 'mysql2',
    options: { multipleStatements: true },
    setup: ['CREATE TABLE m (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(10))'],
    async run({ mysql2: c }) {
      return [
        m2(await c.query("INSERT INTO m (v) VALUES ('a'),('b'); SELECT * FROM m ORDER BY id; UPDATE m SET v = 'c' WHERE id = 1; SELECT v FROM m WHERE id = 1; DO 1")),
        await attempt(async () => m2(await c.query('SELECT 1 AS one; SELECT * FROM no_such_table; SELECT 3 AS never'))),
        m2(await c.query('SELECT 4 AS after_error')),
        m2(await c.query("SET @x = 5; SELECT @x AS x; SHOW WARNINGS; SELECT CAST('1x' AS SIGNED) AS w; SHOW WARNINGS")),
      ];
    },
  },
  {
    name: 'procedures-several-result-sets',
    driver: 'mysql2',
    options: { multipleStatements: true },
    setup: [
      'CREATE TABLE r (id INT PRIMARY KEY, v VARCHAR(10))',
      "INSERT INTO r VALUES (1, 'one'), (2, 'two'), (3, 'three')",
      `CREATE PROCEDURE several(IN n INT, OUT total INT)
       BEGIN
         SELECT * FROM r WHERE id <= n ORDER BY id;
         SELECT COUNT(*) AS c FROM r;
         UPDATE r SET v = UPPER(v) WHERE id = n;
         SELECT v FROM r WHERE id = n;
         SET total = n * 10;
       END`,
      'CREATE PROCEDURE nothing() BEGIN END',
      'CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2',
    ],
    async run({ mysql2: c }) {
      return [
        m2(await c.query('CALL several(2, @t); SELECT @t AS total')),
        m2(await c.execute('CALL several(?, @t)', [3])),
        m2(await c.query('SELECT @t AS total, twice(21) AS f')),
        m2(await c.query('CALL nothing()')),
        m2(await c.execute('CALL nothing()')),
      ];
    },
  },
  {
    name: 'big-values',
    driver: 'mysql2',
    setup: ['CREATE TABLE blobs (id INT PRIMARY KEY, b LONGBLOB, t LONGTEXT)'],
    async run({ mysql2: c }) {
      // 17 MiB values: packets split in 16 MiB frames in both directions, text and binary protocol
      const big = Buffer.alloc(17 * 1024 * 1024 + 5);
      for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
      const text = 'x'.repeat(16 * 1024 * 1024 - 1);
      return [
        m2(await c.execute('INSERT INTO blobs VALUES (?, ?, ?)', [1, big, text])),
        m2(await c.query('SELECT id, b, t, LENGTH(b) AS lb FROM blobs')),
        m2(await c.execute('SELECT b, t FROM blobs WHERE id = ?', [1])),
        m2(await c.query('SELECT REPEAT(\'y\', 16777215) AS exact, REPEAT(\'z\', 16777216) AS above')),
      ];
    },
  },
  {
    name: 'streamed-rows',
    driver: 'mysql2',
    async run({ core: c }) {
      let n = 0;
      const h = createHash('sha256');
      await new Promise<void>((resolve, reject) => {
        const q = c.query('SELECT a.seq AS a, b.seq AS b, MD5(a.seq * b.seq) AS m FROM seq_1_to_500 a, seq_1_to_100 b ORDER BY a.seq, b.seq');
        q.on('error', reject);
        q.on('result', (row: { a: number; b: number; m: string }) => {
          n++;
          h.update(`${row.a},${row.b},${row.m};`);
          if (n % 10000 === 0) { c.pause(); setTimeout(() => c.resume(), 5); }
        });
        q.on('end', () => resolve());
      });
      return [{ rows: n, sha: h.digest('hex').slice(0, 16) }];
    },
  },
  {
    name: 'transactions-session-state',
    driver: 'mysql2',
    setup: ['CREATE TABLE tx (id INT PRIMARY KEY) ENGINE=InnoDB'],
    async run({ mysql2: c }) {
      return [
        m2(await c.query("SET SESSION session_track_system_variables = 'autocommit,time_zone,sql_mode'")),
        m2(await c.query('SET SESSION session_track_schema = ON')),
        m2(await c.query('SET SESSION session_track_state_change = ON')),
        m2(await c.query('SET SESSION session_track_transaction_info = CHARACTERISTICS')),
        m2(await c.query("SET time_zone = '+02:00'")),
        m2(await c.query('START TRANSACTION')),
        m2(await c.query('INSERT INTO tx VALUES (1), (2)')),
        m2(await c.query('ROLLBACK')),
        m2(await c.query('BEGIN')),
        m2(await c.query('INSERT INTO tx VALUES (3)')),
        m2(await c.query('COMMIT')),
        m2(await c.query('SELECT id FROM tx')),
        m2(await c.query('USE test')),
        m2(await c.query('SET autocommit = 0')),
        m2(await c.query('SELECT @@autocommit AS ac, @@time_zone AS tz')),
      ];
    },
  },
  {
    name: 'change-user',
    driver: 'mysql2',
    async run({ mysql2: c, endpoint }) {
      // the same account again: the server lets it; the gateway refuses any account switch
      const changed = await attempt(async () => { await c.changeUser({ user: endpoint.user, password: endpoint.password }); return 'changed'; });
      return [changed, m2(await c.query('SELECT 1 AS still_usable'))];
    },
  },
  // MariaDB's own connector: DEPRECATE_EOF, metadata caching, bulk execution and pipelined
  // PREPARE + EXECUTE (statement id -1) once the greeting says MariaDB.
  {
    name: 'mariadb-connector',
    driver: 'mariadb',
    setup: ['CREATE TABLE mc (id INT PRIMARY KEY, v VARCHAR(20), j JSON)'],
    async run({ mariadb: c }) {
      return [
        await c.batch('INSERT INTO mc VALUES (?, ?, ?)', [[1, 'one', '{"n": 1}'], [2, 'two', '[2]'], [3, null, null]]),
        mdb(await c.execute('SELECT * FROM mc WHERE id >= ? ORDER BY id', [1])),
        mdb(await c.execute('SELECT * FROM mc WHERE id >= ? ORDER BY id', [2])), // metadata cached: skipped by the server
        mdb(await c.query('SELECT id, j FROM mc ORDER BY id')),
        await attempt(() => c.execute('INSERT INTO mc VALUES (?, ?, ?)', [1, 'dup', null])),
        await attempt(() => c.execute('SELECT * FROM nope WHERE id = ?', [1])),
        mdb(await c.query('CALL cursor_loop()')),
        await c.reset().then(() => 'reset', (e) => errorOf(e)),
        mdb(await c.query('SELECT @@session.autocommit AS ac')),
      ];
    },
  },
  {
    name: 'mariadb-connector-keep-eof',
    driver: 'mariadb',
    options: { keepEof: true },
    setup: ['CREATE TABLE mk (id INT PRIMARY KEY, v VARCHAR(20))'],
    async run({ mariadb: c }) {
      return [
        await c.batch('INSERT INTO mk VALUES (?, ?)', [[1, 'one'], [2, 'two']]),
        mdb(await c.execute('SELECT * FROM mk WHERE id >= ? ORDER BY id', [1])),
        mdb(await c.execute('SELECT * FROM mk WHERE id >= ? ORDER BY id', [2])),
        mdb(await c.query('CALL cursor_loop()')),
      ];
    },
  },
];

// the mariadb cases call the cursor procedure too
for (const c of DRIVER_CASES) if (c.driver === 'mariadb') c.setup = [...(c.setup ?? []), CURSOR_PROC];

/** Open the case's driver connection against an endpoint. */
export async function openDriver(driver: Driver, e: Endpoint, database: string, options: Record<string, unknown> = {}): Promise<{ conn: CaseConn; close(): Promise<void> }> {
  if (driver === 'mysql2') {
    const m = await mysql.createConnection({ host: e.host, port: e.port, user: e.user, password: e.password, database, ...options });
    m.on('error', () => { /* the transcript records what the calls returned */ });
    const core = (m as unknown as { connection: mysqlCore.Connection }).connection;
    return { conn: { endpoint: e, mysql2: m, core, mariadb: null as never }, close: () => m.end().catch(() => m.destroy()) };
  }
  const m = await mariadb.createConnection({ host: e.host, port: e.port, user: e.user, password: e.password, database, ...options });
  return { conn: { endpoint: e, mysql2: null as never, core: null as never, mariadb: m }, close: () => m.end().catch(() => m.destroy()) };
}
