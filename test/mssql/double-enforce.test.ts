/**
 * Enforcement and robustness of SQL Server sessions through the real gateway, to the TDS TEST
 * DOUBLE as the database: kill (API), lock, grant expiry (ManualClock, with the warning as an
 * INFO) and revoke end a session with a TDS ERROR that says why; deny rules answer an ERROR and
 * the session goes on, kill rules end it, and the double never sees a refused statement;
 * ATTENTION cancels; a large result streams with its rows counted; MARS, integrated auth and
 * clients without encryption are refused without consuming the secret; malformed input, the
 * login grace time, the connection caps and throttling are answered in TDS, never a crash.
 */
import t from 'tap';
import net from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManualClock } from '../../policies/clock.js';
import { DEFAULT_POLICIES, startTestGateway, type TestGateway } from '../support/gateway.js';
import { RawClient, customLogin, doubleTarget, pymssql, run, sleep, startDouble, tediousConnect, tediousEnded, tediousRun, tsql, waitFor } from './support.js';
import { PKT, PacketReader, encodeMessage } from '../../protocols/mssql/packets.js';
import { buildSqlBatch, defaultAllHeaders } from '../../protocols/mssql/requests.js';
import { ENCRYPT } from '../../protocols/mssql/prelogin.js';
import { OPT2_INTEGRATED_SECURITY, TDS } from '../../protocols/mssql/login7.js';
import { DONE, ResponseTracker, type ServerMessage } from '../../protocols/mssql/tokens.js';

const d = await startDouble(t);
const clock = new ManualClock(Date.now());
// Working hours for hours-db: the two hours from the current one (UTC).
const hour = new Date(clock.now()).getUTCHours();
const hh = (h: number) => `${String(h % 24).padStart(2, '0')}:00`;
const policies = [{
  ...DEFAULT_POLICIES[0],
  name: 'hours',
  targets: ['hours-db'],
  maxDuration: '8h',
  hours: { days: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'], from: hh(hour), to: hh(hour + 2), tz: 'UTC' },
}, {
  ...DEFAULT_POLICIES[0],
  targets: ['sales-db'],
  rules: [
    { kinds: ['DROP', 'TRUNCATE'], action: 'deny', message: 'blocked by Tollgate policy: no DROP or TRUNCATE here' },
    { kinds: ['EXECUTE'], pattern: 'xp_cmdshell', action: 'deny' },
    { pattern: 'tollgate_kill_me', action: 'kill', message: 'forbidden statement, session closed' },
  ],
}];
const tg: TestGateway = await startTestGateway({
  targets: [doubleTarget(d), doubleTarget(d, { name: 'hours-db' })], policies, listeners: ['mssql'], clock, expiryWarning: '2s',
  listenerOptions: { mssql: { loginTimeout: '5s', maxStartupsPerSource: 4 } },
  gateway: { maxFailures: 3, failureWindow: '1m', failureCooldown: '1m' },
});
t.teardown(() => tg.close());
const { host, port } = tg.listener('mssql');

const secretFor = async (opts: { reusable?: boolean; duration?: string } = {}) => {
  const g = await tg.grant('alice', 'sales-db', 'read', opts.duration ?? '1h');
  return { grant: g, ...(await tg.secret('alice', g.id, { reusable: opts.reusable ?? false })) };
};
const liveSession = () => waitFor(async () => (await tg.api('carol', 'GET', '/api/v1/sessions?state=active&target=sales-db')).body[0] as { id: string } | undefined, 10_000, 'a live session');
const endedSession = (id: string) => waitFor(async () => { const s = await tg.store.getSession(id); return s?.state === 'ended' ? s : null; }, 15_000, 'the session to end');
const noLoginsLeft = () => waitFor(() => d.sessionLogins().length === 0 && d.sessions.size === 0, 15_000, 'session logins and their connections gone');
const batch = (c: RawClient, sql: string) => c.send(PKT.SQL_BATCH, buildSqlBatch(sql));
const sawAtDouble = (text: string) => waitFor(() => d.sessionStatements().some((s) => s.text === text), 10_000, `the double to get ${text}`);

t.test('kill from the API: an idle client reads a TDS ERROR with the reason; the login is dropped', async (t) => {
  const s = await secretFor();
  const { client } = await RawClient.login(host, port, 'sales-db', s.secret);
  batch(client, 'SELECT 1');
  const first = await client.next();
  t.same(first.dones.map((x) => x.rows), [1], 'the session works');
  const live = await liveSession();
  t.equal((await tg.api('carol', 'POST', `/api/v1/sessions/${live.id}/kill`, { reason: 'incident 42' })).status, 200);
  const m = await client.next();
  t.match(m.errors, [{ number: 50002, class: 20, message: 'Tollgate: session terminated by carol: incident 42.' }], 'a fatal ERROR saying why');
  t.ok(m.dones.some((x) => x.status & DONE.ERROR));
  await client.done;
  t.match((await endedSession(live.id)).endReason, /^killed/);
  await noLoginsLeft();
});

t.test('kill while a statement runs: tedious and tsql show the reason', async (t) => {
  const s = await secretFor({ reusable: true });
  const c = await tediousConnect(host, port, 'sales-db', s.secret);
  const running = tediousRun(c, 'batch', "WAITFOR DELAY '00:00:30'");
  running.catch(() => {});
  await sawAtDouble("WAITFOR DELAY '00:00:30'");
  let live = await liveSession();
  await tg.api('carol', 'POST', `/api/v1/sessions/${live.id}/kill`, { reason: 'stop now' });
  await t.rejects(running, { message: /terminated by carol: stop now/ }, 'tedious reports the gateway\'s ERROR');
  await tediousEnded(c);
  await endedSession(live.id);
  await noLoginsLeft();

  let child: ReturnType<typeof import('node:child_process').spawn> | null = null;
  const done = run('tsql', ['-H', host, '-p', String(port), '-U', 'sales-db', '-P', s.secret], { onSpawn: (p) => { child = p; } });
  live = await liveSession();
  child!.stdin!.write("WAITFOR DELAY '00:00:31'\ngo\n");
  await sawAtDouble("WAITFOR DELAY '00:00:31'\n");
  await tg.api('carol', 'POST', `/api/v1/sessions/${live.id}/kill`, { reason: 'stop tsql' });
  await endedSession(live.id);
  child!.stdin!.end('exit\n');
  const r = await done;
  t.match(r.stdout + r.stderr, /Msg 50002 \(severity 20, state 1\) from Tollgate[\s\S]*terminated by carol: stop tsql/, 'tsql prints the ERROR');
  await noLoginsLeft();
});

t.test('lock and revoke end live sessions with the reason; a lock refuses new logins', async (t) => {
  const s = await secretFor({ reusable: true });
  const { client } = await RawClient.login(host, port, 'sales-db', s.secret);
  await liveSession();
  const lock = await tg.api('carol', 'POST', '/api/v1/locks', { scope: 'identity', value: 'alice', reason: 'suspicious activity' });
  t.equal(lock.status, 201);
  const m = await client.next();
  t.match(m.errors[0], { number: 50002, class: 20, message: /access locked \(identity alice\): suspicious activity/ });
  await t.rejects(tediousConnect(host, port, 'sales-db', s.secret), { code: 'ELOGIN', message: /Login failed for user 'sales-db'\. Tollgate: access is locked \(identity alice\): suspicious activity/ }, 'new logins refused while locked');
  await tg.api('carol', 'DELETE', `/api/v1/locks/${lock.body.id}`);
  await noLoginsLeft();

  const { client: c2 } = await RawClient.login(host, port, 'sales-db', s.secret);
  await liveSession();
  await tg.api('alice', 'POST', `/api/v1/grants/${s.grant.id}/revoke`, { reason: 'done' });
  const m2 = await c2.next();
  t.match(m2.errors[0], { number: 50002, message: /grant for sales-db was revoked/ });
  await t.rejects(tediousConnect(host, port, 'sales-db', s.secret), { message: /revoked/ });
  await noLoginsLeft();
});

t.test('grant expiry: the warning arrives as an INFO with the next answer, then a TDS ERROR ends the session', async (t) => {
  const s = await secretFor({ duration: '2m', reusable: true });
  const c = await tediousConnect(host, port, 'sales-db', s.secret);
  const infos: string[] = [];
  c.on('infoMessage', (m: { message: string }) => infos.push(m.message));
  await liveSession();
  clock.advance(119_000);
  await tediousRun(c, 'batch', 'SELECT 1');
  t.match(infos.join('\n'), /Tollgate: your access to sales-db ends in 2 seconds/, 'tedious got the warning as an INFO message');
  const { client } = await RawClient.login(host, port, 'sales-db', s.secret);
  const ended = tediousEnded(c);
  clock.advance(2_000);
  const m = await client.next();
  t.match(m.errors[0], { number: 50002, class: 20, message: /your grant for sales-db expired; the session is closed/ });
  await ended;
  t.pass('the tedious session ended too');
  await noLoginsLeft();
});

t.test('rules: deny answers an ERROR and the session goes on; kill ends it; the double never sees either', async (t) => {
  const s = await secretFor({ reusable: true });
  const c = await tediousConnect(host, port, 'sales-db', s.secret);
  const denied = async (p: Promise<unknown>, what: string) => {
    const e = await p.then(() => null, (x: Error & { number?: number; class?: number }) => x);
    t.ok(e, `${what}: refused`);
    t.equal(e?.number, 50001, `${what}: error 50001`);
    t.equal(e?.class, 16, `${what}: an ordinary error (the connection stays)`);
  };
  await denied(tediousRun(c, 'batch', 'DROP TABLE orders'), 'DROP');
  await denied(tediousRun(c, 'batch', 'SELECT 1 DROP TABLE orders'), 'DROP after SELECT without a semicolon');
  await denied(tediousRun(c, 'exec', 'TRUNCATE TABLE orders'), 'TRUNCATE inside sp_executesql');
  await denied(tediousRun(c, 'proc', 'xp_cmdshell', [['cmd', 'id']]), 'an RPC to xp_cmdshell (kind EXECUTE)');
  await denied(tediousRun(c, 'batch', "EXEC xp_cmdshell 'id'"), 'EXEC xp_cmdshell in a batch');
  t.same((await tediousRun(c, 'batch', 'SELECT 42 AS n')).rows, [{ n: 42 }], 'the session goes on');
  const ended = tediousEnded(c);
  await t.rejects(tediousRun(c, 'batch', "SELECT N'tollgate_kill_me'"), { message: /forbidden statement, session closed/ });
  await ended;
  const seen = d.sessionStatements().map((x) => x.text);
  t.notOk(seen.some((x) => /DROP|TRUNCATE|xp_cmdshell|tollgate_kill_me/.test(x)), 'no refused statement reached the server');
  await noLoginsLeft();
  const sessions = await waitFor(async () => { const all = await tg.store.listSessions({ target: 'sales-db' }); return all.every((x) => x.state === 'ended') ? all : null; }, 10_000, 'sessions ended');
  const q = (await Promise.all(sessions.map((x) => tg.store.listQueries(x.id)))).flat();
  t.ok(q.some((x) => x.statement === 'SELECT 1 DROP TABLE orders' && x.decision === 'deny' && /no DROP/.test(x.error ?? '')), 'the denial is in the statement log');
  t.ok(q.some((x) => x.statement === 'EXEC xp_cmdshell' && x.decision === 'deny' && x.params === 1), 'the denied RPC, with its parameter count');
  t.ok(q.some((x) => /tollgate_kill_me/.test(x.statement) && x.decision === 'kill'), 'the kill too');
  t.match((sessions.find((x) => x.endReason?.startsWith('forbidden')))?.endReason, /forbidden statement, session closed/);

  // The same with FreeTDS and pymssql: the ERROR shows, the next batch runs.
  const s2 = await secretFor({ reusable: true });
  const r = await tsql(host, port, 'sales-db', s2.secret, 'DROP TABLE orders\ngo\nSELECT SUSER_SNAME()\ngo');
  t.match(r.stdout + r.stderr, /Msg 50001 \(severity 16, state 1\) from Tollgate[\s\S]*no DROP or TRUNCATE here/);
  t.match(r.stdout, /tg_alice_[a-z0-9]{6}/, 'tsql goes on after the denial');
  const py = await pymssql(host, port, 'sales-db', s2.secret, [
    'try:',
    "    cur.execute('TRUNCATE TABLE orders')",
    'except pymssql.Error as e:',
    '    print("DENIED", e.args[0])',
    "cur.execute('SELECT 7')",
    'print(cur.fetchall())',
  ].join('\n'));
  t.match(py.stdout, /DENIED 50001/);
  t.match(py.stdout, /\[\(7,\)\]/);
  await noLoginsLeft();
});

t.test('ATTENTION cancels a running statement; the session goes on', async (t) => {
  const s = await secretFor();
  const c = await tediousConnect(host, port, 'sales-db', s.secret);
  const running = tediousRun(c, 'batch', "WAITFOR DELAY '00:00:25'");
  running.catch(() => {});
  await sawAtDouble("WAITFOR DELAY '00:00:25'");
  const before = d.statements.filter((x) => x.kind === 'attention').length;
  c.cancel();
  await t.rejects(running, { code: 'ECANCEL' });
  t.equal(d.statements.filter((x) => x.kind === 'attention').length, before + 1, 'the ATTENTION reached the server');
  t.same((await tediousRun(c, 'batch', 'SELECT 5 AS n')).rows, [{ n: 5 }], 'the session goes on');
  // A large result streams through; its rows are counted from the DONE token.
  const big = await tediousRun(c, 'batch', 'SELECT * FROM big');
  t.equal(big.rows.length, 3000);
  c.close();
  await tediousEnded(c);
  await noLoginsLeft();
  const sessions = await tg.store.listSessions({ target: 'sales-db' });
  const q = (await Promise.all(sessions.map((x) => tg.store.listQueries(x.id)))).flat();
  t.ok(q.some((x) => x.statement === "WAITFOR DELAY '00:00:25'" && /cancelled by the client/.test(x.error ?? '')), 'the cancelled statement is recorded so');
  t.ok(q.some((x) => x.statement === 'SELECT * FROM big' && x.rows === 3000), 'rows of a multi-packet result from DONE');

  // After a denied statement nothing is upstream: the gateway acknowledges the ATTENTION itself.
  const s2 = await secretFor();
  const { client } = await RawClient.login(host, port, 'sales-db', s2.secret);
  batch(client, 'DROP TABLE orders');
  t.match((await client.next()).errors, [{ number: 50001 }]);
  const n = d.statements.filter((x) => x.kind === 'attention').length;
  client.attention();
  t.ok(((await client.next()).dones[0]!.status & DONE.ATTN) !== 0, 'DONE with the attention bit');
  t.equal(d.statements.filter((x) => x.kind === 'attention').length, n, 'not sent upstream');
  // Two requests sent at once are answered in order (the second waits for the first).
  batch(client, "WAITFOR DELAY '00:00:01'");
  batch(client, 'SELECT 9');
  const a = await client.next(5000);
  const b = await client.next(5000);
  t.same([a.dones[0]!.rows, b.dones[0]!.rows], [0, 1]);
  client.close();
  await noLoginsLeft();
});

t.test('MARS, integrated authentication and clients without encryption are refused; the secret stays unused', async (t) => {
  const s = await secretFor();
  const login = { tdsVersion: TDS.V7_4, packetSize: 4096, userName: 'sales-db', password: s.secret };
  const mars = await customLogin(host, port, { prelogin: { encryption: ENCRYPT.ON, mars: 1 }, login });
  t.match(mars, { errors: [{ number: 50003, message: /MARS \(MultipleActiveResultSets\) is not supported through Tollgate: connect without it/ }] });
  const sspi = await customLogin(host, port, { prelogin: { encryption: ENCRYPT.ON }, login, mutate: (b) => { b[25]! |= OPT2_INTEGRATED_SECURITY; } });
  t.match(sspi, { errors: [{ number: 50003, message: /integrated \(Windows\) authentication is not supported/ }] });
  const old = await customLogin(host, port, { prelogin: { encryption: ENCRYPT.ON }, login: { ...login, tdsVersion: 0x71000001 } });
  t.match(old, { errors: [{ message: /TDS 0x71000001 is not supported/ }] });
  // No encryption: the gateway answers ENCRYPT_REQ; a client that sends its LOGIN7 in the clear anyway is never read.
  const plain = await customLogin(host, port, { prelogin: { encryption: ENCRYPT.NOT_SUP }, login, tls: false });
  t.match(plain, { encryption: ENCRYPT.REQ, errors: [{ message: /Tollgate requires encryption/ }] });
  await t.rejects(tediousConnect(host, port, 'sales-db', s.secret, { encrypt: false }), { message: /Server requires encryption/ }, 'tedious without encrypt is told the server requires it');
  const dir = mkdtempSync(join(tmpdir(), 'tg-freetds-'));
  try {
    writeFileSync(join(dir, 'freetds.conf'), '[global]\n\ttds version = 7.4\n\tencryption = off\n');
    const r = await run('sh', ['-c', `FREETDSCONF=${dir}/freetds.conf tsql -H ${host} -p ${port} -U sales-db -P '${s.secret}'`], { input: 'SELECT 1\ngo\nexit\n' });
    t.notMatch(r.stdout, /\(1 row affected\)/, 'FreeTDS with encryption off does not get in');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const c = await tediousConnect(host, port, 'sales-db', s.secret);
  t.pass('the single-use secret was not consumed by any of the refused attempts');
  c.close();
  await tediousEnded(c);
  await noLoginsLeft();
});

t.test('malformed input, before and after login, is answered in TDS and never crashes the gateway', async (t) => {
  const raw = (bytes: Buffer[]): Promise<Buffer> => new Promise((resolve) => {
    const s = net.connect({ host, port });
    const got: Buffer[] = [];
    s.on('data', (c) => got.push(c));
    s.on('error', () => {});
    s.on('close', () => resolve(Buffer.concat(got)));
    s.on('connect', () => { for (const b of bytes) s.write(b); s.end(); });
    setTimeout(() => s.destroy(), 4000);
  });
  await raw([Buffer.from('GET / HTTP/1.0\r\n\r\n')]);
  await raw([Buffer.from([0x12, 0x01, 0xff, 0xff, 0, 0, 0, 0, 1, 2, 3])]);
  await raw([encodeMessage(PKT.PRE_TDS7_LOGIN, Buffer.alloc(500, 1))]);
  await raw([encodeMessage(PKT.PRELOGIN, Buffer.from([0x00, 0x00, 0x50, 0x00, 0x06, 0xff]))]);
  await raw([encodeMessage(PKT.PRELOGIN, Buffer.from([0x01, 0x00, 0x06, 0x00, 0x01, 0xff, 0x01])), Buffer.from('not a TLS handshake at all, just text')]);
  for (let i = 0; i < 10; i++) await raw([Buffer.from(Array.from({ length: 20 + i * 31 }, (_, j) => (j * 131 + i * 17) & 0xff))]);
  t.pass('garbage before login survived');

  const s = await secretFor({ reusable: true });
  let { client } = await RawClient.login(host, port, 'sales-db', s.secret);
  client.send(PKT.RPC, Buffer.concat([defaultAllHeaders(), Buffer.from([0xff, 0xff, 10, 0, 0, 0, 0, 0, 0x99])]));
  const bad = await client.next();
  t.match(bad.errors, [{ number: 50003, class: 16, message: /Tollgate cannot read this request: unsupported data type 0x99/ }], 'an unreadable RPC is refused, the session stays');
  batch(client, 'SELECT 3');
  t.same((await client.next()).dones.map((x) => x.rows), [1]);
  client.send(PKT.LOGIN7, Buffer.alloc(100));
  const v = await client.next();
  t.match(v.errors, [{ number: 50003, class: 20, message: /protocol violation: unexpected TDS packet type 0x10 after login/ }]);
  await client.done;
  ({ client } = await RawClient.login(host, port, 'sales-db', s.secret));
  client.sendRaw(Buffer.from([0x01, 0x01, 0x00, 0x03, 0, 0, 1, 0]));
  t.match((await client.next()).errors, [{ class: 20, message: /shorter than its header/ }]);
  await client.done;
  ({ client } = await RawClient.login(host, port, 'sales-db', s.secret));
  batch(client, 'SELECT 4');
  t.same((await client.next()).dones.map((x) => x.rows), [1], 'the gateway still serves');
  client.close();
  await noLoginsLeft();
});

t.test('the login grace time and the connection caps are answered in TDS', async (t) => {
  const connect = async () => {
    const s = net.connect({ host, port });
    s.on('error', () => {});
    await new Promise((r) => s.on('connect', r));
    return s;
  };
  // Two connections that never send PRELOGIN, one that stops after TLS: three of the four allowed.
  const silent = [await connect(), await connect()];
  let tlsDone!: () => void;
  const atTls = new Promise<void>((r) => { tlsDone = r; });
  const afterTls = customLogin(host, port, { prelogin: { encryption: ENCRYPT.ON }, onTls: () => tlsDone() });
  await atTls;
  const fourth = await connect();
  // Over maxStartupsPerSource (4): refused at once, with an ERROR token.
  const refused = await new Promise<Buffer>((resolve) => {
    const s = net.connect({ host, port });
    const got: Buffer[] = [];
    s.on('data', (c) => got.push(c));
    s.on('close', () => resolve(Buffer.concat(got)));
    s.on('error', () => {});
  });
  const r = new PacketReader();
  r.push(refused);
  const errs: ServerMessage[] = [];
  new ResponseTracker({ onError: (m) => errs.push(m) }).feed(r.next()!.payload);
  t.match(errs, [{ number: 17809, class: 20, message: /too many unauthenticated connections from your address/ }]);
  const closed = Promise.all([...silent, fourth].map((s) => new Promise((res) => s.on('close', res))));
  clock.advance(6_000);
  await closed;
  t.pass('connections silent for 5 s were closed');
  t.match(await afterTls, { errors: [{ class: 20, message: /not signed in within 5 s/ }] }, 'over TLS the client is told why');
});

t.test('throttled after repeated wrong secrets: refused before the secret is looked at', async (t) => {
  const s = await secretFor();
  for (let i = 0; i < 3; i++) await t.rejects(tediousConnect(host, port, 'sales-db', `wrong-${i}`), { message: /wrong connection secret/ });
  await t.rejects(tediousConnect(host, port, 'sales-db', s.secret), { code: 'ELOGIN', message: /Login failed for user 'sales-db'\. Tollgate: too many failed attempts; try again in \d+ s/ });
  clock.advance(61_000);
  const c = await tediousConnect(host, port, 'sales-db', s.secret);
  t.pass('after the cooldown the right secret (not consumed meanwhile) works');
  c.close();
  await tediousEnded(c);
  await noLoginsLeft();
});

t.test('outside working hours a login is refused with the reason', async (t) => {
  const g = await tg.grant('alice', 'hours-db', 'read', '8h');
  const s = await tg.secret('alice', g.id, { reusable: true });
  const c = await tediousConnect(host, port, 'hours-db', s.secret);
  c.close();
  await tediousEnded(c);
  await noLoginsLeft();
  clock.advance(2 * 3600_000 + 10 * 60_000);
  const later = await tg.secret('alice', g.id);
  await t.rejects(tediousConnect(host, port, 'hours-db', later.secret), { code: 'ELOGIN', message: /Login failed for user 'hours-db'\. Tollgate: hours-db may only be used within its working hours/ });
});
