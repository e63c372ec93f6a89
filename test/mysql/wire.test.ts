/**
 * The MySQL data path message by message, with a raw client (exact bytes) and a real MariaDB:
 * cursors (COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY, then COM_STMT_FETCH) with and without
 * DEPRECATE_EOF and with cached metadata, statement id -1 after a pipelined prepare, commands that
 * answer with other shapes (COM_PROCESS_INFO, COM_STATISTICS, COM_SET_OPTION, COM_FIELD_LIST),
 * COM_RESET_CONNECTION, COM_CHANGE_USER refused and audited, COM_STMT_BULK_EXECUTE recorded.
 * Then, through a small TCP relay in front of the same server that can tamper with it:
 *  - an answer the inspector cannot follow: the client gets an ERR naming the gateway, the session
 *    ends as an error, the log says where (command, packet, header, offset), never the bytes;
 *  - a target that no longer has MariaDB's extended capabilities the client chose: a clear refusal,
 *    and the next greeting stops offering them.
 */
import t from 'tap';
import { createServer, connect, type Server, type Socket } from 'node:net';
import mysql from 'mysql2/promise';
import * as mariadb from 'mariadb';
import { DEFAULT_POLICIES, startTestGateway, type TestGateway } from '../support/gateway.js';
import { startTestMariadb, waitFor, type TestMariadb } from '../support/mariadb.js';
import { BASE_CAPS, RawClient, comExecute, comFetch, comPrepare, comQuery, describe } from './raw-client.js';
import { CAP, COM, MARIADB_CAP, PacketReader, frame, parseErr } from '../../protocols/mysql/packets.js';

/**
 * A TCP relay in front of MariaDB that reads MySQL packets both ways: it can rewrite the server's
 * greeting, and answer a COM_QUERY containing a marker itself instead of the server.
 */
class TamperRelay {
  server!: Server;
  port = 0;
  stripExtensions = false;
  /** COM_QUERY containing this gets `answer` (sequence id 1) instead of going to the server. */
  marker = 'tollgate_tamper_marker';
  answer: Buffer = Buffer.alloc(0);
  constructor(private upstreamPort: number) {}

  async start(): Promise<void> {
    this.server = createServer((client) => this.relay(client));
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as { port: number }).port;
  }

  private relay(client: Socket) {
    const up = connect({ host: '127.0.0.1', port: this.upstreamPort });
    const fromServer = new PacketReader(1 << 30);
    const fromClient = new PacketReader(1 << 30);
    let greeted = false;
    let authed = false;
    up.on('data', (chunk: Buffer) => {
      fromServer.push(chunk);
      for (let p = fromServer.next(); p; p = fromServer.next()) {
        if (!greeted) {
          greeted = true;
          if (this.stripExtensions) {
            // what an older server or MySQL says: CLIENT_MYSQL set, no extended capabilities
            const b = Buffer.from(p.payload);
            const capsAt = b.indexOf(0, 1) + 1 + 4 + 8 + 1;
            b.writeUInt16LE(b.readUInt16LE(capsAt) | CAP.LONG_PASSWORD, capsAt);
            b.writeUInt32LE(0, capsAt + 2 + 1 + 2 + 2 + 1 + 6);
            client.write(frame(b, p.seq).bytes);
            continue;
          }
        }
        if (!authed && p.payload[0] === 0x00) authed = true;
        client.write(p.raw);
      }
    });
    client.on('data', (chunk: Buffer) => {
      fromClient.push(chunk);
      for (let p = fromClient.next(); p; p = fromClient.next()) {
        if (authed && p.payload[0] === COM.QUERY && p.payload.includes(this.marker)) {
          client.write(frame(this.answer, 1).bytes);
          continue;
        }
        up.write(p.raw);
      }
    });
    const close = () => { client.destroy(); up.destroy(); };
    up.on('close', close);
    client.on('close', close);
    up.on('error', close);
    client.on('error', close);
  }

  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}

const db: TestMariadb | null = await startTestMariadb(t);
if (!db) {
  t.fail('MariaDB is required (apt-get install mariadb-server mariadb-client)');
} else {
  await db.admin('CREATE DATABASE wire');
  await db.admin('CREATE TABLE wire.t (id INT PRIMARY KEY, v VARCHAR(20), j JSON)');
  await db.admin(`INSERT INTO wire.t VALUES (1, 'one', '{"a": 1}'), (2, 'two', '[2]'), (3, 'three', NULL)`);
  const relay = new TamperRelay(db.port);
  await relay.start();
  t.teardown(() => relay.close());
  const roles = [{ name: 'rw', grants: ['SELECT, INSERT, DELETE ON wire.*'], database: 'wire' }];
  // allowPlain: the raw client speaks no TLS
  const targets = [
    { ...db.target, name: 'wire-db', roles, options: { allowPlain: true } },
    { ...db.target, name: 'tamper-db', address: `127.0.0.1:${relay.port}`, roles, options: { allowPlain: true } },
  ];
  const logs: string[] = [];
  const tg: TestGateway = await startTestGateway({ targets, policies: DEFAULT_POLICIES, listeners: ['mysql'], logSink: (l) => logs.push(l) });
  t.teardown(() => tg.close());
  const { host, port } = tg.listener('mysql');
  const secretFor = async (target = 'wire-db') => (await tg.secret('alice', (await tg.grant('alice', target, 'rw')).id, { reusable: true })).secret;
  const secret = await secretFor();
  const raw = (caps: number, extCaps = 0, target = 'wire-db', password = secret) =>
    RawClient.connect({ host, port, user: target, password, database: 'wire', caps, extCaps });
  const lastSession = async (target: string) => (await tg.store.listSessions({ target })).sort((a, b) => b.startedAt - a.startedAt)[0]!;
  const ended = (id: string) => waitFor(async () => { const s = await tg.store.getSession(id); return s?.state === 'ended' ? s : null; }, 10_000, 'the session to end');

  t.test('the greeting says MariaDB, with the extended capabilities the gateway relays', async (t) => {
    const c = await raw(BASE_CAPS);
    t.match(c.greeting.serverVersion, /^5\.5\.5-10\.\d+\.\d+-MariaDB.*-Tollgate$/);
    t.equal(c.greeting.caps & CAP.LONG_PASSWORD, 0, 'CLIENT_MYSQL unset: extended capabilities follow');
    t.equal(c.greeting.extCaps, MARIADB_CAP.STMT_BULK_OPERATIONS | MARIADB_CAP.EXTENDED_METADATA | MARIADB_CAP.CACHE_METADATA);
    c.close();
  });

  for (const [label, caps, ext] of [
    ['legacy EOF', BASE_CAPS, 0],
    ['DEPRECATE_EOF', BASE_CAPS | CAP.DEPRECATE_EOF, 0],
    ['DEPRECATE_EOF and cached metadata', BASE_CAPS | CAP.DEPRECATE_EOF, MARIADB_CAP.CACHE_METADATA],
    ['legacy EOF and cached metadata', BASE_CAPS, MARIADB_CAP.CACHE_METADATA],
  ] as const) {
    t.test(`cursors: COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY, then COM_STMT_FETCH (${label})`, async (t) => {
      const c = await raw(caps, ext);
      t.equal(c.extCaps, ext);
      const prep = await c.ask(comPrepare('SELECT id, v FROM t ORDER BY id'));
      const id = prep[0]!.payload.readUInt32LE(1);
      for (let round = 0; round < 2; round++) {
        const opened = await c.ask(comExecute(id, 1));
        const last = opened.at(-1)!.payload;
        t.equal(last[0], 0xfe, `round ${round}: the metadata ends with an EOF/OK (${opened.map(describe).join(', ')})`);
        const rows: number[] = [];
        let lastRowSent = false;
        for (let i = 0; i < 5 && !lastRowSent; i++) {
          const got = await c.ask(comFetch(id, 2));
          const end = got.at(-1)!.payload;
          t.equal(end[0], 0xfe, `round ${round}, fetch ${i}: rows then EOF/OK (${got.map(describe).join(', ')})`);
          lastRowSent = (end.readUInt16LE(3) & 0x80) !== 0; // SERVER_STATUS_LAST_ROW_SENT
          for (const p of got.slice(0, -1)) rows.push(p.payload.readInt32LE(2)); // binary row: 0x00, null bitmap, INT id
        }
        t.same(rows, [1, 2, 3], `round ${round}: the three rows, fetched two at a time, to the last`);
      }
      t.ok((await c.ask(comQuery('SELECT 1'))).length >= 3, 'the session goes on');
      c.close();
    });
  }

  t.test('the statement log: executions opening a cursor and the FETCHes with their rows; statement id -1', async (t) => {
    const c = await raw(BASE_CAPS | CAP.DEPRECATE_EOF);
    const id = (await c.ask(comPrepare('SELECT id FROM t WHERE id >= 2 ORDER BY id')))[0]!.payload.readUInt32LE(1);
    await c.ask(comExecute(id, 1));
    await c.ask(comFetch(id, 10));
    // pipelined: prepare and execute with id -1 ("the statement prepared last") in one write
    const [, answer] = await c.exchange(comPrepare('SELECT v FROM t WHERE id = 1'), comExecute(0xffffffff, 0));
    t.ok(answer!.some((p) => p.payload[0] === 0x00 && p.payload.includes(Buffer.from('one'))), `the execution of id -1 answered (${answer!.map(describe).join(', ')})`);
    c.close();
    const sess = await ended((await lastSession('wire-db')).id);
    const q = await tg.store.listQueries(sess.id);
    t.ok(q.some((x) => x.statement === 'SELECT id FROM t WHERE id >= 2 ORDER BY id' && x.kind === 'SELECT' && x.rows === 0), 'the execution that opened the cursor (no rows yet)');
    t.ok(q.some((x) => x.statement === 'SELECT id FROM t WHERE id >= 2 ORDER BY id' && x.kind === 'FETCH' && x.rows === 2), 'the FETCH with its 2 rows');
    t.ok(q.some((x) => x.statement === 'SELECT v FROM t WHERE id = 1' && x.rows === 1), 'statement id -1 logged as the statement prepared last');
  });

  t.test('commands answered in other shapes: COM_PROCESS_INFO, COM_STATISTICS, COM_SET_OPTION, COM_FIELD_LIST, COM_PING', async (t) => {
    for (const caps of [BASE_CAPS, BASE_CAPS | CAP.DEPRECATE_EOF]) {
      const c = await raw(caps);
      const pi = await c.ask(Buffer.from([COM.PROCESS_INFO]));
      t.ok(pi.length >= 4 && pi[0]!.payload[0] !== 0xff, `COM_PROCESS_INFO: a result set (${pi.map(describe).join(', ')})`);
      const st = await c.ask(Buffer.from([COM.STATISTICS]));
      t.match(st[0]?.payload.toString('latin1'), /^Uptime: \d+/, 'COM_STATISTICS: the server\'s status line');
      t.equal((await c.ask(Buffer.from([COM.SET_OPTION, 1, 0]))).length, 1, 'COM_SET_OPTION: one answer');
      const fl = await c.ask(Buffer.concat([Buffer.from([COM.FIELD_LIST]), Buffer.from('t\0')]));
      t.equal(fl.length, 4, `COM_FIELD_LIST: three column definitions and the end (${fl.map(describe).join(', ')})`);
      t.equal((await c.ask(Buffer.from([COM.PING])))[0]?.payload[0], 0x00, 'COM_PING: OK');
      t.notOk(c.closed, 'still connected');
      c.close();
    }
  });

  t.test('COM_CHANGE_USER is refused and audited, the connection stays as it was; COM_RESET_CONNECTION is passed on', async (t) => {
    // the raw protocol: the refusal, then the same connection, user and session state
    const r0 = await raw(BASE_CAPS);
    await r0.ask(comQuery('SET @kept = 42'));
    const refusal = await r0.ask(Buffer.concat([Buffer.from([COM.CHANGE_USER]), Buffer.from('root\0', 'latin1'), Buffer.from([20]), Buffer.alloc(20, 7), Buffer.from('wire\0')]));
    t.equal(refusal.length, 1);
    t.match(parseErr(refusal[0]!.payload), { code: 1047, message: /^Tollgate: COM_CHANGE_USER is not supported through the gateway/ });
    const same = await r0.ask(comQuery('SELECT CONCAT(CURRENT_USER(), \' \', @kept)'));
    t.match(same.find((p) => p.payload.includes(Buffer.from('tg_alice_')))?.payload.toString('latin1'), /tg_alice_[a-z0-9]{6}@% 42$/, 'same user, same session state');
    r0.close();
    const audit = await tg.store.listAudit({ action: 'mysql.change_user_refused' });
    t.ok(audit.some((a) => (a.data as { user?: string }).user === 'root'), 'audited with the account asked for');
    // a driver's changeUser gets the refusal as an error
    const c = await mariadb.createConnection({ host, port, user: 'wire-db', password: secret, database: 'wire' });
    await t.rejects(c.changeUser({ user: 'root', password: '' }), { errno: 1047, message: /COM_CHANGE_USER is not supported through the gateway/ });
    await c.end().catch(() => {});
    const c2 = await mariadb.createConnection({ host, port, user: 'wire-db', password: secret, database: 'wire' });
    await c2.query('SET @kept = 42');
    await c2.reset();
    const [after] = await c2.query('SELECT @kept AS kept, CURRENT_USER() AS u');
    t.match(after, { kept: null, u: /^tg_alice_/ }, 'COM_RESET_CONNECTION: session state reset, same session user');
    const [r] = await c2.execute('SELECT v FROM t WHERE id = ?', [2]);
    t.same(r, { v: 'two' }, 'prepared statements work after the reset');
    await c2.end();
  });

  t.test('COM_STMT_BULK_EXECUTE (the mariadb connector\'s batch) is logged with its statement and rows', async (t) => {
    const c = await mariadb.createConnection({ host, port, user: 'wire-db', password: secret, database: 'wire' });
    const r = await c.batch('INSERT INTO t (id, v) VALUES (?, ?)', [[10, 'ten'], [11, 'eleven'], [12, 'twelve']]);
    t.equal(Number((r as { affectedRows: number }).affectedRows), 3);
    await c.query('DELETE FROM t WHERE id >= 10');
    await c.end();
    const sess = await ended((await lastSession('wire-db')).id);
    const q = await tg.store.listQueries(sess.id);
    t.ok(q.some((x) => x.statement === 'INSERT INTO t (id, v) VALUES (?, ?)' && x.rows === 3 && x.params === 2), `bulk execution logged: ${JSON.stringify(q.map((x) => [x.statement, x.rows]))}`);
  });

  t.test('an answer the inspector cannot follow: ERR naming the gateway, session ends as error, the log says where but not what', async (t) => {
    const tamperSecret = await secretFor('tamper-db');
    // an OK packet whose affected-rows integer is cut short, with bytes a log must never show
    relay.answer = Buffer.concat([Buffer.from([0x00, 0xfe]), Buffer.from('SECRETX', 'latin1')]);
    const c = await mysql.createConnection({ host, port, user: 'tamper-db', password: tamperSecret, database: 'wire' });
    c.on('error', () => {});
    const [ok] = await c.query('SELECT 1 AS one');
    t.same(ok, [{ one: 1 }], 'the relay passes ordinary traffic');
    logs.length = 0;
    await t.rejects(c.query(`SELECT '${relay.marker}'`), {
      errno: 1105,
      message: "Tollgate: the gateway could not follow the database's answer to COM_QUERY at packet 1 (header 0x00, 9 bytes, offset 2): truncated packet (affected rows); the session ends",
    });
    const sess = await ended((await lastSession('tamper-db')).id);
    t.match(sess.endReason, /^error: could not follow the database's answer to COM_QUERY: truncated packet \(affected rows\)$/);
    const line = logs.find((l) => l.includes('could not follow the server response'));
    t.ok(line, 'logged');
    t.match(JSON.parse(line!), { command: 'COM_QUERY', state: 'first', packet: 1, header: '0x00', length: 9, offset: 2 });
    const all = logs.join('\n');
    t.notOk(all.includes('SECRETX') || all.includes(Buffer.from('SECRETX').toString('hex')) || all.includes(Buffer.from('SECRETX').toString('base64')), 'the payload is in no log line');
    const audit = await tg.store.listAudit({ action: 'mysql.unfollowable_response' });
    t.ok(audit.some((a) => a.data['command'] === 'COM_QUERY' && a.data['packet'] === 1 && a.data['offset'] === 2), 'audited with where it happened');
    await c.end().catch(() => {});
  });

  t.test('a target without the MariaDB extensions the client chose: a clear refusal, then a greeting without them', async (t) => {
    const tamperSecret = await secretFor('tamper-db');
    relay.stripExtensions = true;
    try {
      const first = await raw(BASE_CAPS, MARIADB_CAP.EXTENDED_METADATA, 'tamper-db', tamperSecret).catch((e: Error) => e);
      t.ok(first instanceof Error, 'refused');
      t.match((first as Error).message, /1105 \(HY000\) Tollgate: cannot log in to tamper-db: the target does not support the MariaDB protocol extensions the client chose \(0x8, the target has 0x0\); connect again/);
      const c = await mysql.createConnection({ host, port, user: 'tamper-db', password: tamperSecret, database: 'wire' });
      const [rows] = await c.query('SELECT j FROM t WHERE id = 1');
      t.same(rows, [{ j: '{"a": 1}' }], 'the next client is greeted without extended metadata: JSON as text, as from such a server directly');
      await c.end();
      const again = await raw(BASE_CAPS, MARIADB_CAP.EXTENDED_METADATA, 'tamper-db', tamperSecret);
      t.equal(again.greeting.extCaps, 0, 'no extended capabilities offered any more');
      t.equal(again.extCaps, 0);
      again.close();
    } finally {
      relay.stripExtensions = false;
    }
  });
}
