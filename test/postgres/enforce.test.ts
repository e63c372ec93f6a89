/**
 * Enforcement through the real gateway and a real cluster: statement rules (deny keeps the session,
 * kill ends it, alert records), cancel (node-postgres and psql SIGINT), kill / lock / revoke,
 * expiry with a warning (ManualClock), and the reaper revoking an orphaned lease.
 */
import t from 'tap';
import pg from 'pg';
import { createSessionRole, sessionRoleName } from '../../protocols/postgres/provisioner.js';
import { havePostgres, runClient, startPgGateway, waitFor, sleep } from '../support/pg.js';

if (!havePostgres) {
  t.fail('PostgreSQL binaries are required (apt-get install postgresql postgresql-client)');
} else {
  const { clock, pgc, tg, host, port, connect, secretFor, settle, allQueries, liveSession } = await startPgGateway(t);
  t.test('deny rules: error 42501, session continues (simple, multi-statement, extended)', async (t) => {
    const s = await secretFor('prod-db', 'admin');
    const a = await connect('prod-db', s.secret);
    const e1 = await a.c.query('DROP TABLE accounts').then(() => null, (e: Error & { code?: string }) => e);
    t.equal(e1?.code, '42501');
    t.match(e1?.message, /no DROP or TRUNCATE here/);
    t.equal((await a.c.query('SELECT 1 AS x')).rows[0].x, 1, 'session continues');
    const e2 = await a.c.query('SELECT 1; TRUNCATE accounts').then(() => null, (e: Error & { code?: string }) => e);
    t.equal(e2?.code, '42501', 'any denied statement of a multi-statement query blocks it');
    const e3 = await a.c.query({ name: 'dropper', text: 'DROP TABLE accounts', values: [] }).then(() => null, (e: Error & { code?: string }) => e);
    t.equal(e3?.code, '42501', 'extended protocol: error on Parse');
    t.equal((await a.c.query({ text: 'SELECT count(*)::int AS n FROM accounts WHERE id > $1', values: [0] })).rows[0].n, 3, 'table intact, session continues after Sync');
    await a.c.query('BEGIN');
    const e4 = await a.c.query("COPY accounts TO PROGRAM 'cat > /tmp/x'").then(() => null, (e: Error & { code?: string }) => e);
    t.equal(e4?.code, '42501');
    const e5 = await a.c.query('SELECT 1').then(() => null, (e: Error & { code?: string }) => e);
    t.equal(e5?.code, '25P02', 'the transaction is aborted, as after any error');
    await a.c.query('ROLLBACK');
    t.equal(a.errors.length, 0);
    const sessId = (await liveSession()).id;
    await a.c.end();
    await settle();
    const q = await tg.store.listQueries(sessId);
    t.ok(q.some((x) => x.decision === 'deny' && /DROP TABLE accounts/.test(x.statement)), 'denied statement recorded with its decision');
    t.same(await pgc.noSessionRoles(), []);
  });

  t.test('fast-path function calls are checked as kind FUNCTION (denied for admin here)', async (t) => {
    const s = await secretFor('prod-db', 'admin');
    const r = await runClient('psql', ['-X', '-A', '-t', `host=${host} port=${port} user=prod-db dbname=app password=${s.secret} sslmode=require`,
      '-c', '\\lo_import /etc/hostname', '-c', 'SELECT 40 + 2']);
    t.match(r.stderr, /no fast-path calls as admin/, 'refused with the policy message');
    t.match(r.stdout, /^42$/m, 'the session went on');
    t.same(await pgc.noSessionRoles(), []);
    await settle();
    const q = await allQueries();
    t.ok(q.some((x) => x.kind === 'FUNCTION' && x.decision === 'deny'), 'denied call recorded');
  });

  t.test('kill rule ends the session with FATAL; role dropped', async (t) => {
    const s = await secretFor('prod-db', 'read');
    const a = await connect('prod-db', s.secret);
    const e = await a.c.query("SELECT 'tollgate_kill_me'").then(() => null, (err: Error & { code?: string }) => err);
    t.ok(e, 'query failed');
    await a.ended;
    const all = [e, ...a.errors].map((x) => `${x?.message} ${(x as { code?: string })?.code ?? ''}`).join(' | ');
    t.match(all, /forbidden statement, session closed/);
    t.same(await pgc.noSessionRoles(), [], 'role dropped');
    await settle();
    const sessionsNow = await tg.store.listSessions({ target: 'prod-db' });
    t.ok(sessionsNow.some((x) => /^forbidden/.test(x.endReason ?? '')), 'session ended as forbidden');
    // The same through the extended protocol (rule checked on Parse).
    const s2 = await secretFor('prod-db', 'read');
    const b = await connect('prod-db', s2.secret);
    const e2 = await b.c.query({ text: "SELECT 'tollgate_kill_me' WHERE $1::bool", values: [true] }).then(() => null, (err: Error) => err);
    t.ok(e2, 'extended query failed');
    await b.ended;
    t.match([e2, ...b.errors].map((x) => x?.message).join(' | '), /forbidden statement, session closed/);
    t.same(await pgc.noSessionRoles(), [], 'role dropped');
    // alert: allowed, recorded as such, audited
    const s3 = await secretFor('prod-db', 'read');
    const c = await connect('prod-db', s3.secret);
    t.equal((await c.c.query({ text: "SELECT 'tollgate_alert_me' AS v WHERE $1::bool", values: [true] })).rows[0].v, 'tollgate_alert_me', 'alert lets the statement run');
    await c.c.query("SELECT 'tollgate_alert_me' AS simple");
    await c.c.end();
    await settle();
    const q = await allQueries();
    t.equal(q.filter((x) => /tollgate_alert_me/.test(x.statement) && x.decision === 'alert').length, 2, 'recorded with decision alert (extended and simple)');
    const audit = await tg.store.listAudit({ action: 'session.rule.alert' });
    t.ok(audit.length >= 2, 'alert audited');
  });

  t.test('cancel: node-postgres and psql SIGINT cancel pg_sleep through the gateway', async (t) => {
    const s = await secretFor('prod-db', 'read', true);
    const a = await connect('prod-db', s.secret);
    const started = Date.now();
    const q = a.c.query('SELECT pg_sleep(10)');
    await sleep(500);
    // What libpq/pg do: a CancelRequest with the BackendKeyData the gateway gave us, on a new connection.
    const cl = a.c as unknown as { processID: number; secretKey: number };
    const canceller = new pg.Client({ host, port, user: 'x', password: 'x', ssl: false });
    (canceller as unknown as { cancel(c: unknown, q: unknown): void }).cancel(a.c, (a.c as unknown as { activeQuery: unknown }).activeQuery);
    const e = await q.then(() => null, (err: Error & { code?: string }) => err);
    t.equal(e?.code, '57014', `cancelled (pid ${cl.processID})`);
    t.ok(Date.now() - started < 5000, 'well before 10 s');
    t.equal((await a.c.query('SELECT 1 AS x')).rows[0].x, 1, 'session continues after cancel');
    await a.c.end();
    let child: { kill(sig: NodeJS.Signals): boolean } | null = null;
    const run = runClient('psql', ['-X', `host=${host} port=${port} user=prod-db dbname=app password=${s.secret} sslmode=require`, '-c', 'SELECT pg_sleep(10)'], {
      onSpawn: (p) => { child = p; },
    });
    await sleep(1500);
    const t0 = Date.now();
    child!.kill('SIGINT');
    const r = await run;
    t.match(r.stderr, /canceling statement due to user request/, 'psql cancel reached the server');
    t.ok(Date.now() - t0 < 5000);
    t.same(await pgc.noSessionRoles(), []);
  });

  t.test('kill via API, lock, and grant revoke end the session with FATAL 57P01', async (t) => {
    const s = await secretFor('prod-db', 'read', true);
    const a = await connect('prod-db', s.secret);
    const live = await liveSession();
    const k = await tg.api('carol', 'POST', `/api/v1/sessions/${live.id}/kill`, { reason: 'suspicious' });
    t.equal(k.status, 200);
    await a.ended;
    t.match(a.errors.map((e) => `${e.message} ${e.code}`).join(' '), /terminated by carol: suspicious\. 57P01/);
    t.same(await pgc.noSessionRoles(), []);

    const b = await connect('prod-db', s.secret);
    const l = await tg.api('carol', 'POST', '/api/v1/locks', { scope: 'identity', value: 'alice', reason: 'incident 42' });
    t.equal(l.status, 201, JSON.stringify(l.body));
    await b.ended;
    t.match(b.errors.map((e) => e.message).join(' '), /incident 42|locked/i);
    const refused = new pg.Client({ host, port, user: 'prod-db', password: s.secret, database: 'app', ssl: { ca: tg.gw.tls.ca } });
    const e = await refused.connect().then(() => null, (err: Error & { code?: string }) => err);
    t.equal(e?.code, '28000', 'new connections refused while locked');
    t.match(e?.message, /locked/);
    await tg.api('carol', 'DELETE', `/api/v1/locks/${l.body.id}`);
    t.same(await pgc.noSessionRoles(), []);

    const c = await connect('prod-db', s.secret);
    const r = await tg.api('alice', 'POST', `/api/v1/grants/${s.grant.id}/revoke`, { reason: 'done' });
    t.equal(r.status, 200, JSON.stringify(r.body));
    await c.ended;
    t.ok(c.errors.some((x) => x.code === '57P01'), 'FATAL 57P01 on revoke');
    t.same(await pgc.noSessionRoles(), []);
  });

  t.test('reaper: a lease left by a crashed run is revoked from its stored data alone', async (t) => {
    // What a gateway that died mid-session leaves: an active session record of this gateway, an
    // active postgres-role lease, and the role itself on the server (with a live backend).
    const g = await tg.grant('alice', 'prod-db', 'read');
    const ctx = tg.gw.ctx('postgres');
    const name = sessionRoleName('alice');
    const role = await createSessionRole(ctx, pgc.target, name, ['pg_read_all_data'], new Date(Date.now() + 3600_000));
    const orphan = new pg.Client({ host: pgc.cluster.host, port: pgc.cluster.port, user: role.user, password: role.password, database: 'app' });
    orphan.on('error', () => {});
    await orphan.connect();
    const now = clock.now();
    await tg.store.insertSession({ id: 'crashed-1', grantId: g.id, identity: 'alice', target: 'prod-db', role: 'read', protocol: 'postgres', clientAddr: '127.0.0.1', state: 'active', startedAt: now, endedAt: null, endReason: null, bytesUp: 0, bytesDown: 0, gatewayId: 'test' });
    await tg.store.insertLease({ id: 'crashed-lease-1', sessionId: 'crashed-1', grantId: g.id, target: 'prod-db', kind: 'postgres-role', state: 'active', data: { role: name, database: 'app' }, createdAt: now, activatedAt: now, revokedAt: null, error: null });
    t.ok((await pgc.sessionRoles()).includes(name), 'orphaned role exists before the reaper runs');
    const r = await tg.gw.sessions.reap();
    t.equal(r.leases, 1);
    t.equal(r.failed, 0);
    t.same(await pgc.sessionRoles(), [], 'role dropped (its backend terminated)');
    t.equal((await tg.store.getLease('crashed-lease-1'))!.state, 'revoked');
    await orphan.end().catch(() => {});
  });

  t.test('expiry (ManualClock): warning notice, then FATAL 57P05; role dropped', async (t) => {
    const g = await tg.grant('alice', 'prod-db', 'read', '30m');
    const s = await tg.secret('alice', g.id);
    const a = await connect('prod-db', s.secret);
    await a.c.query('SELECT 1');
    clock.advance(30 * 60_000 - 1000);
    await waitFor(() => a.notices.some((n) => /ends in/.test(n.message ?? '')), 5000, 'expiry warning notice');
    t.pass('warning notice received');
    t.equal((await a.c.query('SELECT 2 AS x')).rows[0].x, 2, 'still usable before the end');
    clock.advance(2000);
    await a.ended;
    t.ok(a.errors.some((x) => x.code === '57P05' && /expired/.test(x.message)), 'FATAL 57P05 explaining the expiry');
    t.same(await pgc.noSessionRoles(), []);
  });
}
