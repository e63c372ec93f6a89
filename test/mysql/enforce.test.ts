/**
 * Enforcement and robustness of MySQL sessions through the real gateway and a real MariaDB:
 * kill (API), grant expiry (ManualClock), lock, revoke end sessions with an ERR and drop the
 * session user; the reaper revokes a leftover lease from its stored data; malformed packets
 * (before and after login) get ERR packets and never crash the gateway; sysbench oltp_read_only
 * runs through the gateway with a reusable secret; checkTarget dials with the admin credential.
 */
import t from 'tap';
import { connect, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import mysql from 'mysql2/promise';
import { ManualClock } from '../../policies/clock.js';
import { DEFAULT_POLICIES, startTestGateway, type TestGateway } from '../support/gateway.js';
import { startTestMariadb, run, waitFor, sleep, type TestMariadb } from '../support/mariadb.js';
import { mysqlModule } from '../../protocols/mysql/index.js';
import { loginUpstream } from '../../protocols/mysql/upstream.js';
import { COM, GATEWAY_CAPS, CAP, parseErr, frame, PacketReader } from '../../protocols/mysql/packets.js';
import { createSessionUser, sessionUserName, randomPassword } from '../../protocols/mysql/provisioner.js';
import { freePort } from '../../protocols/net.js';
import { revokeWithModule } from '../../protocols/types.js';

const db: TestMariadb | null = await startTestMariadb(t);
if (!db) {
  t.fail('MariaDB is required (apt-get install mariadb-server mariadb-client)');
} else {
  await db.admin('CREATE DATABASE sbtest');
  const bench = { ...db.target, name: 'bench-db', roles: [{ name: 'bench', grants: ['SELECT ON sbtest.*'], database: 'sbtest' }] };
  const dead = { ...db.target, name: 'dead-db', address: `127.0.0.1:${await freePort()}` };
  const broken = { ...db.target, name: 'broken-db', roles: [{ name: 'broken', grants: ['SELECT ON shop.*'], roles: ['no_such_role'] }] };
  const clock = new ManualClock(Date.now());
  const tg: TestGateway = await startTestGateway({ targets: [db.target, bench, dead, broken], policies: DEFAULT_POLICIES, listeners: ['mysql'], clock, expiryWarning: '2s' });
  t.teardown(() => tg.close());
  const { host, port } = tg.listener('mysql');
  const secretFor = async (target = 'app-db', role = 'read', opts: { reusable?: boolean; duration?: string } = {}) => {
    const g = await tg.grant('alice', target, role, opts.duration ?? '1h');
    return { grant: g, ...(await tg.secret('alice', g.id, { reusable: opts.reusable ?? false })) };
  };
  const connectAs = async (secret: string, target = 'app-db') => {
    const c = await mysql.createConnection({ host, port, user: target, password: secret, database: 'shop', ssl: { ca: tg.gw.tls.ca } });
    const errors: (Error & { errno?: number; code?: string })[] = [];
    c.on('error', (e) => errors.push(e));
    return { c, errors };
  };
  const liveSession = (target = 'app-db') => waitFor(async () => {
    const r = await tg.api('carol', 'GET', `/api/v1/sessions?state=active&target=${target}`);
    return r.body[0] as { id: string } | undefined;
  }, 10_000, 'a live session');
  const endedSession = (id: string) => waitFor(async () => {
    const s = await tg.store.getSession(id);
    return s?.state === 'ended' ? s : null;
  }, 10_000, 'the session to end');
  const noUsersLeft = () => waitFor(async () => (await db.sessionUsers()).length === 0 && (await db.sessionConnections()) === 0, 10_000, 'session users dropped');

  t.test('kill from the API: ERR 1927 with the reason, user and its connection gone', async (t) => {
    const s = await secretFor();
    const { c, errors } = await connectAs(s.secret);
    t.equal((await db.sessionUsers()).length, 1, 'session user exists while connected');
    const live = await liveSession();
    const k = await tg.api('carol', 'POST', `/api/v1/sessions/${live.id}/kill`, { reason: 'incident 42' });
    t.equal(k.status, 200);
    await waitFor(() => errors.length > 0, 10_000, 'the client to hear about it');
    t.match(errors[0]!.message, /terminated by carol: incident 42/, 'client sees why');
    t.equal(errors[0]!.code, 1927 as unknown as string, 'ER_CONNECTION_KILLED (mysql2 reports an unsolicited ERR code in .code)');
    await t.rejects(c.query('SELECT 1'));
    const ended = await endedSession(live.id);
    t.match(ended.endReason, /killed/);
    await noUsersLeft();
    t.pass('session user and its connections are gone');
  });

  t.test('grant expiry (ManualClock) ends the session with an ERR; the mariadb CLI sees it on its next statement', async (t) => {
    const s = await secretFor('app-db', 'read', { duration: '2m' });
    const { errors } = await connectAs(s.secret);
    await liveSession();
    clock.advance(119_000); // the expiry warning fires (audit/log only in MySQL)
    t.equal(errors.length, 0, 'a warning does not disturb the session');
    clock.advance(2_000);
    await waitFor(() => errors.length > 0, 10_000, 'the client to hear about the expiry');
    t.match(errors[0]!.message, /expired/);
    await noUsersLeft();

    // An interactive CLI: connected, then the grant expires while it waits for input.
    const s2 = await secretFor('app-db', 'read', { duration: '2m' });
    let child: ReturnType<typeof import('node:child_process').spawn> | null = null;
    const done = run('mariadb', ['-h', host, '-P', String(port), '-u', 'app-db', `-p${s2.secret}`, '--batch', 'shop'], { onSpawn: (p) => { child = p; } });
    const live = await liveSession();
    child!.stdin!.write('SELECT 1;\n');
    await sleep(300);
    clock.advance(121_000);
    await endedSession(live.id);
    child!.stdin!.end('SELECT 2;\n');
    const r = await done;
    t.not(r.code, 0);
    t.match(r.stderr, /ERROR 1927 \(70100\).*grant for app-db expired/, 'the CLI shows why the session ended');
    await noUsersLeft();
  });

  t.test('lock and revoke end live sessions and refuse new logins', async (t) => {
    const s = await secretFor('app-db', 'read', { reusable: true });
    const a = await connectAs(s.secret);
    await liveSession();
    const lock = await tg.api('carol', 'POST', '/api/v1/locks', { scope: 'identity', value: 'alice', reason: 'suspicious activity' });
    t.equal(lock.status, 201, JSON.stringify(lock.body));
    await waitFor(() => a.errors.length > 0, 10_000, 'lock to end the session');
    t.match(a.errors[0]!.message, /locked.*suspicious activity/);
    await t.rejects(connectAs(s.secret), { errno: 1044, message: /lock/i }, 'new login refused while locked');
    await tg.api('carol', 'DELETE', `/api/v1/locks/${lock.body.id}`);
    await noUsersLeft();

    const b = await connectAs(s.secret);
    await liveSession();
    const rv = await tg.api('alice', 'POST', `/api/v1/grants/${s.grant.id}/revoke`, { reason: 'done' });
    t.equal(rv.status, 200);
    await waitFor(() => b.errors.length > 0, 10_000, 'revoke to end the session');
    t.match(b.errors[0]!.message, /revoked/);
    await t.rejects(connectAs(s.secret), { errno: 1044, message: /revoked/ }, 'secret of a revoked grant refused');
    await noUsersLeft();
  });

  t.test('the reaper drops a leftover session user from the stored lease alone', async (t) => {
    const ctx = tg.gw.ctx('mysql');
    const user = sessionUserName('crashed');
    const pw = randomPassword();
    await createSessionUser(ctx, db.target, db.target.roles[0]!, user, '%', pw);
    const orphan = await mysql.createConnection({ host: '127.0.0.1', port: db.port, user, password: pw });
    orphan.on('error', () => {});
    const g = await tg.grant('alice', 'app-db', 'read');
    await tg.store.insertLease({ id: randomUUID(), sessionId: null, grantId: g.id, target: 'app-db', kind: 'mysql-user', state: 'active', data: { user, host: '%' }, createdAt: clock.now(), activatedAt: clock.now(), revokedAt: null, error: null });
    t.same(await db.sessionUsers(), [user]);
    const reaped = await tg.gw.sessions.reap();
    t.equal(reaped.leases, 1);
    t.same(await db.sessionUsers(), [], 'user dropped');
    t.equal(await db.sessionConnections(), 0, 'its connection killed');
    await revokeWithModule(mysqlModule, ctx, db.target, { id: 'x', sessionId: null, grantId: g.id, target: 'app-db', kind: 'mysql-user', state: 'active', data: { user, host: '%' }, createdAt: 0, activatedAt: 0, revokedAt: null, error: null });
    t.pass('revoking again is harmless (idempotent)');
    await orphan.end().catch(() => {});
  });

  t.test('malformed packets never crash the gateway', async (t) => {
    const raw = (): Promise<{ s: Socket; packets: () => Buffer[]; closed: Promise<void> }> => new Promise((resolve) => {
      const s = connect(port, host);
      const reader = new PacketReader();
      const got: Buffer[] = [];
      s.on('data', (d) => { reader.push(d); for (let p = reader.next(); p; p = reader.next()) got.push(p.payload); });
      s.on('error', () => {});
      const closed = new Promise<void>((r) => s.on('close', () => r()));
      s.once('data', () => resolve({ s, packets: () => got, closed }));
    });
    // 1: garbage instead of a handshake response
    let c = await raw();
    c.s.write(frame(Buffer.from('this is not a handshake response at all'), 1).bytes);
    await c.closed;
    let last = c.packets().at(-1)!;
    t.equal(last[0], 0xff, 'ERR packet');
    t.equal(parseErr(last).code, 1043, 'bad handshake 1043');
    // 2: a huge length before authentication
    c = await raw();
    c.s.write(Buffer.from([0xff, 0xff, 0xff, 0x01, 0x41, 0x41]));
    await c.closed;
    last = c.packets().at(-1)!;
    t.equal(parseErr(last).code, 1043, 'oversized pre-auth packet refused');
    // 3: truncated response then close
    c = await raw();
    c.s.end(Buffer.from([0x40, 0x00, 0x00, 0x01, 0x05, 0x82]));
    await c.closed;
    // 4: SSLRequest, then something that is not TLS
    c = await raw();
    const sslReq = Buffer.alloc(32);
    sslReq.writeUInt32LE(CAP.PROTOCOL_41 | CAP.SSL | CAP.SECURE_CONNECTION, 0);
    c.s.write(frame(sslReq, 1).bytes);
    c.s.write(Buffer.from('GET / HTTP/1.0\r\n\r\n'));
    await c.closed;
    // 5: random bytes
    for (let i = 0; i < 20; i++) {
      c = await raw();
      const junk = Buffer.alloc(4 + (i * 37) % 300);
      for (let j = 0; j < junk.length; j++) junk[j] = (j * 131 + i * 17) & 0xff;
      c.s.end(junk);
      await c.closed;
    }
    t.pass('survived garbage before login');

    // After login: speak the protocol ourselves.
    const s = await secretFor('app-db', 'read', { reusable: true });
    const login = () => loginUpstream({
      address: { host, port }, user: 'app-db', password: s.secret, database: 'shop',
      clientCaps: (GATEWAY_CAPS & ~CAP.SSL) | CAP.MULTI_STATEMENTS, charset: 45, maxPacket: 1 << 24, allowLocalFiles: false, clock, tls: { ca: tg.gw.tls.ca },
    });
    const reply = (conn: Awaited<ReturnType<typeof login>>['conn']) => conn.read().then((p) => p.payload);
    let up = await login();
    up.conn.send(Buffer.from([0x99, 1, 2, 3]), 0);
    let r = await reply(up.conn);
    t.equal(parseErr(r).code, 1047, 'unknown command: ERR 1047');
    up.conn.send(Buffer.concat([Buffer.from([COM.CHANGE_USER]), Buffer.from('root\0')]), 0);
    r = await reply(up.conn);
    t.equal(parseErr(r).code, 1047, 'COM_CHANGE_USER refused');
    t.match(parseErr(r).message, /not supported/);
    up.conn.send(Buffer.concat([Buffer.from([COM.QUERY]), Buffer.from('SELECT 42')]), 0);
    r = await reply(up.conn);
    t.equal(r[0], 1, 'session continues: a result set with one column');
    for (let i = 0; i < 3; i++) await reply(up.conn); // column def, row, EOF/OK
    up.conn.send(Buffer.from([COM.STMT_EXECUTE, 1]), 0);
    r = await reply(up.conn);
    t.equal(parseErr(r).code, 1158, 'truncated COM_STMT_EXECUTE: ERR 1158');
    await new Promise<void>((res) => up.conn.onClose(() => res()));
    t.pass('and the connection is closed');

    up = await login();
    up.conn.send(Buffer.alloc(0), 0);
    r = await reply(up.conn);
    t.equal(parseErr(r).code, 1158, 'empty command: ERR 1158');
    up.conn.destroy();

    up = await login();
    up.conn.writeRaw(Buffer.from([0x05, 0x00, 0x00, 0x00, COM.QUERY, 0x53])); // promises 5 bytes, sends 2, closes
    up.conn.sock.end();
    await new Promise<void>((res) => up.conn.onClose(() => res()));

    const ok = await run('mariadb', ['-h', host, '-P', String(port), '-u', 'app-db', `-p${s.secret}`, '--batch', 'shop', '-e', 'SELECT COUNT(*) FROM products']);
    t.equal(ok.code, 0, ok.stderr);
    t.match(ok.stdout, /^3$/m, 'the gateway still serves clients');
    await noUsersLeft();
  });

  t.test('sysbench oltp_read_only through the gateway (prepared statements, several connections)', async (t) => {
    const prep = await run('sysbench', ['oltp_read_only', '--mysql-host=127.0.0.1', `--mysql-port=${db.port}`, `--mysql-user=${db.adminUser}`,
      `--mysql-password=${db.adminPassword}`, '--mysql-db=sbtest', '--tables=2', '--table-size=2000', 'prepare'], { timeoutMs: 60_000 });
    t.equal(prep.code, 0, prep.stderr);
    const s = await secretFor('bench-db', 'bench', { reusable: true });
    const printed = s.commands['sysbench']!;
    t.match(printed, /&& sysbench oltp_read_only --mysql-host=\S+ --mysql-port=\d+ --mysql-user=bench-db .* --mysql-ssl=on /);
    // What the printed command prepares (the CA as cacert.pem, a throwaway client key pair), then sysbench over TLS in that directory.
    const cwd = mkdtempSync(join(tmpdir(), 'tg-sysbench-'));
    t.teardown(() => rmSync(cwd, { recursive: true, force: true }));
    const files = await run('sh', ['-c', `cd ${cwd} && ${printed.slice(0, printed.indexOf(' sysbench oltp_read_only'))} true`]);
    t.equal(files.code, 0, files.stderr);
    const r = await run('sysbench', ['oltp_read_only', `--mysql-host=${host}`, `--mysql-port=${port}`, '--mysql-user=bench-db', `--mysql-password=${s.secret}`, '--mysql-ssl=on',
      '--mysql-db=sbtest', '--tables=2', '--table-size=2000', '--threads=2', '--time=3', '--db-ps-mode=auto', 'run'], { timeoutMs: 60_000, cwd: join(cwd, 'tollgate-sysbench') });
    t.equal(r.code, 0, r.stderr + r.stdout.slice(-2000));
    const m = /transactions:\s+(\d+)/.exec(r.stdout);
    t.ok(m && Number(m[1]) > 10, `transactions completed (${m?.[1]})`);
    t.match(r.stdout, /ignored errors:\s+0\s/, 'no errors');
    await noUsersLeft();
    const sessions = await tg.store.listSessions({ target: 'bench-db' });
    t.ok(sessions.length >= 2, 'one session per sysbench connection');
    const q = await tg.store.listQueries(sessions[0]!.id, { limit: 10 });
    t.ok(q.some((x) => x.params > 0), 'prepared executions recorded with parameter counts');
  });

  t.test('a dead target or a failing grant: clear ERR, no account left behind, no lease or a revoked one', async (t) => {
    const s1 = await secretFor('dead-db', 'read');
    const r1 = await run('mariadb', ['-h', host, '-P', String(port), '-u', 'dead-db', `-p${s1.secret}`, '-e', 'SELECT 1']);
    t.not(r1.code, 0);
    t.match(r1.stderr, /ERROR 1105 \(HY000\).*could not create a database user for this session/, 'dead target: readable ERR');
    const s2 = await secretFor('broken-db', 'broken');
    const r2 = await run('mariadb', ['-h', host, '-P', String(port), '-u', 'broken-db:broken', `-p${s2.secret}`, '-e', 'SELECT 1']);
    t.match(r2.stderr, /ERROR 1105 \(HY000\).*could not create a database user/, 'failing GRANT: readable ERR');
    t.same(await db.sessionUsers(), [], 'the half-made user was dropped');
    for (const target of ['dead-db', 'broken-db']) {
      const sess = (await tg.store.listSessions({ target }))[0]!;
      await endedSession(sess.id);
    }
    // The admin connection opens before the lease is stored: an unreachable server leaves nothing to revoke.
    t.same(await tg.store.listLeases({ target: 'dead-db' }), [], 'dead target: no lease was stored');
    t.match((await tg.store.listSessions({ target: 'dead-db' }))[0]!.endReason, /ECONNREFUSED/, 'dead target: the reason names the problem');
    t.equal((await tg.store.listLeases({ target: 'broken-db' })).length, 1, 'failing GRANT: the lease was stored before the user was created');
    const broken = (await tg.store.listLeases({ target: 'broken-db' }))[0]!;
    t.equal(broken.state, 'revoked', 'the failed mint was revoked on the target');
    const endReason = (await tg.store.listSessions({ target: 'broken-db' }))[0]!.endReason ?? '';
    t.match(endReason, /no_such_role/, 'the reason names the problem');
    t.notMatch(endReason + String(broken.error ?? ''), /IDENTIFIED|tg_alice_\w+'@'%' IDENTIFIED/, 'no statement text (with the password) in stored errors');
  });

  t.test('checkTarget dials with the admin credential', async (t) => {
    const ctx = tg.gw.ctx('mysql');
    const ok = await mysqlModule.checkTarget!(ctx, db.target);
    t.ok(ok.ok, ok.detail);
    t.match(ok.detail, /reachable, admin credential works/);
    const bad = await mysqlModule.checkTarget!(ctx, { ...db.target, credentials: { admin: { user: db.adminUser, password: { value: 'wrong' } } } });
    t.notOk(bad.ok);
    t.match(bad.detail, /Access denied/);
    t.notOk(bad.detail.includes(db.adminPassword));
  });
}
