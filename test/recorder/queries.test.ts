import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Secret } from '../../auth/secret.js';
import { redactStatement, type LiveFrame } from '../../recorder/index.js';
import { opened } from './helpers.js';

const T0 = Date.UTC(2026, 10, 23, 9, 0, 0);

t.test('each finished statement: a store row, a queries.ndjson line and a live frame', async (t) => {
  const { clock, r, rec } = await opened(t, 'q-1', T0, 'postgres');
  const frames: LiveFrame[] = [];
  r.recorder.live.subscribe('q-1', (f) => frames.push(f));
  const q = rec.queries();
  t.equal(rec.queries(), q, 'one query recorder per session');
  clock.advance(2000);
  const a = q.statement({ statement: 'SELECT * FROM accounts WHERE id = $1', kind: 'SELECT', params: 1 });
  clock.advance(37);
  const b = q.statement({ statement: 'UPDATE accounts SET x = 1', kind: 'UPDATE' }); // pipelined
  clock.advance(5);
  a.finish({ rows: 3 });
  a.finish({ rows: 99 }); // a second finish is ignored
  clock.advance(100);
  b.finish({ rows: 0, error: 'permission denied for table accounts' });
  q.statement({ statement: 'DROP TABLE accounts', kind: 'DROP', decision: 'deny' }).finish({ error: 'denied by rule no-drop' });
  await rec.close();

  const rows = await r.store.listQueries('q-1');
  t.same(rows.map(({ id: _id, ...x }) => x), [
    { sessionId: 'q-1', at: T0 + 2000, statement: 'SELECT * FROM accounts WHERE id = $1', kind: 'SELECT', params: 1, durationMs: 42, rows: 3, error: null, decision: 'allow' },
    { sessionId: 'q-1', at: T0 + 2037, statement: 'UPDATE accounts SET x = 1', kind: 'UPDATE', params: 0, durationMs: 105, rows: 0, error: 'permission denied for table accounts', decision: 'allow' },
    { sessionId: 'q-1', at: T0 + 2142, statement: 'DROP TABLE accounts', kind: 'DROP', params: 0, durationMs: 0, rows: null, error: 'denied by rule no-drop', decision: 'deny' },
  ]);
  const recs = await r.store.listRecordings({ sessionId: 'q-1' });
  t.equal(recs.length, 1);
  t.equal(recs[0]!.kind, 'queries');
  t.match(recs[0]!.path, /\/q-1\/queries\.ndjson$/);
  t.ok((await r.recorder.verify(recs[0]!.id)).ok, 'the query log is sealed like the others');
  const lines = readFileSync(recs[0]!.path, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.same(lines.map((l) => [l.t, l.statement, l.durationMs, l.rows, l.decision]), [
    [2.042, 'SELECT * FROM accounts WHERE id = $1', 42, 3, 'allow'],
    [2.142, 'UPDATE accounts SET x = 1', 105, 0, 'allow'],
    [2.142, 'DROP TABLE accounts', 0, null, 'deny'],
  ]);
  const qf = frames.filter((f) => f.type === 'query');
  t.same(qf.map((f) => [f.t, (f.data as { statement: string }).statement, (f.data as { at: number }).at]), [
    [2.042, 'SELECT * FROM accounts WHERE id = $1', T0 + 2000],
    [2.142, 'UPDATE accounts SET x = 1', T0 + 2037],
    [2.142, 'DROP TABLE accounts', T0 + 2142],
  ]);
  t.same(frames[frames.length - 1]!.type, 'end');
});

t.test('statements still running at close are logged as unfinished; huge statements are cut', async (t) => {
  const { clock, r, rec } = await opened(t, 'q-2', T0, 'mysql');
  rec.queries().statement({ statement: 'SELECT SLEEP(100)', kind: 'SELECT' });
  const huge = `INSERT INTO t VALUES ${'(1),'.repeat(50_000)}(1)`;
  rec.queries().statement({ statement: huge, kind: 'INSERT' }).finish({ rows: 50_001 });
  clock.advance(1500);
  await rec.close();
  const rows = await r.store.listQueries('q-2');
  t.equal(rows.length, 2);
  const cut = rows.find((x) => x.kind === 'INSERT')!;
  t.ok(cut.statement.length < 70_000, 'a huge statement is cut');
  t.match(cut.statement, /… \[\d+ more characters not recorded\]$/);
  t.ok(huge.startsWith(cut.statement.slice(0, 60_000)));
  const unfinished = rows.find((x) => x.kind === 'SELECT')!;
  t.equal(unfinished.error, 'unfinished: session ended');
  t.equal(unfinished.durationMs, 1500);
});

t.test('password literals never reach the query log, its file or the live bus', async (t) => {
  const { clock, r, rec } = await opened(t, 'q-3', T0, 'postgres');
  const frames: LiveFrame[] = [];
  r.recorder.live.subscribe('q-3', (f) => frames.push(f));
  const statements = [
    "ALTER ROLE bob WITH PASSWORD 'hunter2-pg'",
    "CREATE USER 'carol'@'%' IDENTIFIED BY 'hunter2-my'",
    "ALTER USER dave IDENTIFIED WITH mysql_native_password BY \"hunter2-dq\"",
    "CREATE LOGIN erin WITH PASSWORD = N'hunter2-ms', CHECK_POLICY = OFF",
    "SET PASSWORD FOR frank = PASSWORD('hunter2-old')",
    "ALTER ROLE gus PASSWORD 'it''s-hunter2-esc'",
    "ALTER ROLE hal PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$aGFzaA==:a2V5'",
  ];
  for (const s of statements) rec.queries().statement({ statement: s, kind: 'ALTER' }).finish({});
  await rec.close();
  const rows = await r.store.listQueries('q-3');
  const [recording] = await r.store.listRecordings({ sessionId: 'q-3' });
  const everything = JSON.stringify(rows) + readFileSync(recording!.path, 'utf8') + JSON.stringify(frames);
  t.notOk(/hunter2|c2FsdA|aGFzaA/.test(everything), 'no password text anywhere');
  t.same(rows.map((x) => x.statement), [
    "ALTER ROLE bob WITH PASSWORD '***'",
    "CREATE USER 'carol'@'%' IDENTIFIED BY '***'",
    "ALTER USER dave IDENTIFIED WITH mysql_native_password BY '***'",
    "CREATE LOGIN erin WITH PASSWORD = '***', CHECK_POLICY = OFF",
    "SET PASSWORD FOR frank = PASSWORD('***')",
    "ALTER ROLE gus PASSWORD '***'",
    "ALTER ROLE hal PASSWORD '***'",
  ]);
  // Ordinary statements are left alone.
  t.equal(redactStatement("SELECT 'password' AS x, passwd FROM users WHERE name = 'bob'"), "SELECT 'password' AS x, passwd FROM users WHERE name = 'bob'");
});

t.test('events: {t, type, ...data} lines and live frames; odd values and secrets are made safe', async (t) => {
  const { clock, r, rec } = await opened(t, 'ev-1', T0);
  const frames: LiveFrame[] = [];
  r.recorder.live.subscribe('ev-1', (f) => frames.push(f));
  const ev = rec.events();
  t.equal(rec.events(), ev);
  clock.advance(1234);
  ev.event('file.upload', { path: '/tmp/a b', bytes: 12, t: 999, type: 'spoofed' });
  const cyclic: Record<string, unknown> = { name: 'loop' };
  cyclic.self = cyclic;
  clock.advance(1);
  ev.event('odd', { big: 2n ** 70n, secret: new Secret('s3cr3t-value'), cyclic, fine: [1, 'two'] });
  ev.event('exec', null as unknown as Record<string, unknown>);
  await rec.close();
  const [recording] = await r.store.listRecordings({ sessionId: 'ev-1' });
  t.equal(recording!.kind, 'events');
  t.match(recording!.path, /\/ev-1\/events\.ndjson$/);
  const text = readFileSync(recording!.path, 'utf8');
  t.notOk(text.includes('s3cr3t-value'), 'a Secret prints as <secret>');
  const lines = text.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.same(lines[0], { t: 1.234, type: 'file.upload', path: '/tmp/a b', bytes: 12 }, 't and type cannot be spoofed by data');
  t.same(lines[1], { t: 1.235, type: 'odd', big: '1180591620717411303424', secret: '<secret>', cyclic: '[unserializable]', fine: [1, 'two'] });
  t.same(lines[2], { t: 1.235, type: 'exec' });
  const evf = frames.filter((f) => f.type === 'event');
  t.same(evf.map((f) => [f.t, f.data]), [
    [1.234, { type: 'file.upload', path: '/tmp/a b', bytes: 12 }],
    [1.235, { type: 'odd', big: '1180591620717411303424', secret: '<secret>', cyclic: '[unserializable]', fine: [1, 'two'] }],
    [1.235, { type: 'exec' }],
  ]);
  t.ok((await r.recorder.verify(recording!.id)).ok);
  t.notOk(r.logs.join('').includes('s3cr3t-value'), 'nor in the logs');
});
