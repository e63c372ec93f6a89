/**
 * PostgreSQL through the real gateway with a real cluster (initdb, scram-sha-256) and real clients:
 * psql (TLS and plain), node-postgres (simple + extended), COPY, notices, LISTEN/NOTIFY, cancel,
 * statement rules (deny keeps the session, kill ends it), kill / lock / revoke / expiry, recording,
 * and the per-session role existing only while the session runs.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { ManualClock } from '../../policies/clock.js';
import { createSessionRole, sessionRoleName } from '../../protocols/postgres/provisioner.js';
import { DEFAULT_POLICIES, startTestGateway, type TestGateway } from '../support/gateway.js';
import { havePostgres, runClient, startTestCluster, waitFor, sleep, type TestCluster } from '../support/pg.js';

if (!havePostgres) {
  t.fail('PostgreSQL binaries are required (apt-get install postgresql postgresql-client)');
} else {
  const clock = new ManualClock(Date.now());
  const pgc: TestCluster = await startTestCluster(t);
  const plain = { ...pgc.target, name: 'plain-db', options: { allowPlain: true } };
  const pwdb = { ...pgc.target, name: 'pw-db', options: { clientAuth: 'password' } };
  const policies = [{
    ...DEFAULT_POLICIES[0],
    rules: [
      { kinds: ['DROP', 'TRUNCATE'], action: 'deny', message: 'blocked by Tollgate policy: no DROP or TRUNCATE here' },
      { kinds: ['COPY PROGRAM'], action: 'deny' },
      { pattern: 'tollgate_kill_me', action: 'kill', message: 'Tollgate: forbidden statement, session closed' },
      { pattern: 'tollgate_alert_me', action: 'alert' },
    ],
  }];
  const tg: TestGateway = await startTestGateway({ targets: [pgc.target, plain, pwdb], policies, listeners: ['postgres'], clock, expiryWarning: '2s' });
  t.teardown(() => tg.close());
  const { host, port } = tg.listener('postgres');
  const caFile = join(pgc.dir, 'gateway-ca.pem');
  writeFileSync(caFile, tg.gw.tls.ca);

  const connect = async (user: string, password: string, opts: Partial<pg.ClientConfig> = {}) => {
    const c = new pg.Client({ host, port, user, password, database: 'app', ssl: { ca: tg.gw.tls.ca }, ...opts });
    const errors: (Error & { code?: string })[] = [];
    const notices: { message?: string }[] = [];
    const notifications: pg.Notification[] = [];
    c.on('error', (e) => errors.push(e));
    c.on('notice', (n) => notices.push(n));
    c.on('notification', (n) => notifications.push(n));
    await c.connect();
    return { c, errors, notices, notifications, ended: new Promise<void>((res) => c.on('end', () => res())) };
  };
  const secretFor = async (target = 'prod-db', role = 'read', reusable = false) => {
    const g = await tg.grant('alice', target, role);
    return { grant: g, ...(await tg.secret('alice', g.id, { reusable })) };
  };
  /** Teardown is asynchronous after a disconnect: wait until no session is live any more. */
  const settle = () => waitFor(async () => (await tg.store.listSessions({ state: 'active' })).length === 0, 10_000, 'sessions to end');
  const allQueries = async (target = 'prod-db') => {
    const out = [];
    for (const s of await tg.store.listSessions({ target })) out.push(...await tg.store.listQueries(s.id));
    return out;
  };
  const liveSession = async (target = 'prod-db') => waitFor(async () => {
    const r = await tg.api('carol', 'GET', `/api/v1/sessions?state=active&target=${target}`);
    return r.body[0] as { id: string } | undefined;
  }, 10_000, 'a live session');

  t.test('psql over TLS (SCRAM): per-session role during the session, gone after, statements recorded', async (t) => {
    const s = await secretFor('prod-db', 'read');
    t.match(s.commands.psql, /sslmode=require/);
    const r = await runClient('psql', ['-X', '-A', '-t', `host=${host} port=${port} user=prod-db dbname=app password=${s.secret} sslmode=verify-full sslrootcert=${caFile}`,
      '-c', 'SELECT current_user, (SELECT count(*) FROM accounts)', '-c', 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()']);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /^tg_alice_[0-9a-f]{6}\|3$/m, 'connected as the session role, read the table');
    t.same(await pgc.noSessionRoles(), [], 'session role dropped after psql exits');
    await settle();
    const sessions = await tg.store.listSessions({ target: 'prod-db' });
    t.equal(sessions.length, 1);
    const q = await tg.store.listQueries(sessions[0]!.id);
    t.ok(q.some((x) => /SELECT current_user/.test(x.statement) && x.rows === 1 && x.kind === 'SELECT'), 'statement recorded with rows and kind');
    const viaApi = await tg.api('alice', 'GET', `/api/v1/sessions/${sessions[0]!.id}/queries`);
    t.ok(viaApi.body.some((x: { statement: string }) => /pg_stat_ssl/.test(x.statement)), 'queryable by API');
    const leases = await tg.store.listLeases({ sessionId: sessions[0]!.id });
    t.equal(leases.length, 1);
    t.equal(leases[0]!.state, 'revoked', 'lease revoked');
    t.match(String(leases[0]!.data['role']), /^tg_alice_/);
    const again = await runClient('psql', ['-X', `host=${host} port=${port} user=prod-db dbname=app password=${s.secret} sslmode=require`, '-c', 'SELECT 1']);
    t.not(again.code, 0);
    t.match(again.stderr, /already used|wrong, already used or expired/, 'single-use secret refused with a clear message');
  });

  t.test('the printed client commands work as pasted', async (t) => {
    for (const key of ['psql', 'psql (PGPASSWORD)']) {
      const s = await secretFor('prod-db', 'read');
      const r = await runClient('bash', ['-c', `${s.commands[key]} -X -A -t -c 'SELECT 7 * 6'`]);
      t.equal(r.code, 0, `${key}: ${r.stderr}`);
      t.match(r.stdout, /^42$/m, key);
    }
    t.same(await pgc.noSessionRoles(), []);
  });

  t.test('channel binding: psql channel_binding=require and node-postgres enableChannelBinding', async (t) => {
    const s = await secretFor('prod-db', 'read');
    const r = await runClient('psql', ['-X', '-A', '-t', `host=${host} port=${port} user=prod-db dbname=app password=${s.secret} sslmode=require channel_binding=require`, '-c', 'SELECT 1']);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /^1$/m);
    const s2 = await secretFor('prod-db', 'read');
    const a = await connect('prod-db', s2.secret, { enableChannelBinding: true } as Partial<pg.ClientConfig>);
    t.equal((await a.c.query('SELECT 2 AS x')).rows[0].x, 2);
    await a.c.end();
    t.same(await pgc.noSessionRoles(), []);
  });

  t.test('psql in plain mode where allowed; refused with a hint where not', async (t) => {
    const s = await secretFor('plain-db', 'read');
    const ok = await runClient('psql', ['-X', '-A', '-t', `host=${host} port=${port} user=plain-db dbname=app password=${s.secret} sslmode=disable`, '-c', 'SELECT 40 + 2']);
    t.equal(ok.code, 0, ok.stderr);
    t.match(ok.stdout, /^42$/m);
    const s2 = await secretFor('prod-db', 'read');
    const no = await runClient('psql', ['-X', `host=${host} port=${port} user=prod-db dbname=app password=${s2.secret} sslmode=disable`, '-c', 'SELECT 1']);
    t.not(no.code, 0);
    t.match(no.stderr, /requires an encrypted connection: connect with sslmode=require/);
    t.same(await pgc.noSessionRoles(), []);
  });

  t.test('cleartext password over TLS (clientAuth: password) and PGPASSWORD', async (t) => {
    const s = await secretFor('pw-db', 'read');
    const r = await runClient('psql', ['-X', '-A', '-t', `host=${host} port=${port} user=pw-db dbname=app sslmode=require`, '-c', 'SELECT count(*) FROM accounts'], { env: { PGPASSWORD: s.secret } });
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /^3$/m);
    const bad = await runClient('psql', ['-X', `host=${host} port=${port} user=pw-db dbname=app sslmode=require`, '-c', 'SELECT 1'], { env: { PGPASSWORD: 'nope' } });
    t.match(bad.stderr, /28P01|wrong connection secret/);
  });

  t.test('wrong secrets are refused with 28P01 and create nothing', async (t) => {
    await secretFor('prod-db', 'read');
    const c = new pg.Client({ host, port, user: 'prod-db', password: 'not-the-secret', database: 'app', ssl: { ca: tg.gw.tls.ca } });
    const e = await c.connect().then(() => null, (err: Error & { code?: string }) => err);
    t.ok(e, 'refused');
    t.equal(e?.code, '28P01');
    t.match(e?.message, /password authentication failed for user "prod-db"/);
    const u = new pg.Client({ host, port, user: 'no-such-target', password: 'x', database: 'app', ssl: { ca: tg.gw.tls.ca } });
    const e2 = await u.connect().then(() => null, (err: Error & { code?: string }) => err);
    t.equal(e2?.code, '28000', 'unknown target refused');
    t.match(e2?.message, /no target named "no-such-target"/);
    t.same(await pgc.sessionRoles(), []);
  });

  t.test('node-postgres: simple and extended protocol, COPY, notices, LISTEN/NOTIFY, role elevation', async (t) => {
    const s = await secretFor('prod-db', 'admin', true);
    const a = await connect('prod-db', s.secret);
    const b = await connect('prod-db:admin', s.secret);
    const me = (await a.c.query('SELECT current_user AS u')).rows[0].u as string;
    t.match(me, /^tg_alice_/);
    t.ok((await pgc.sessionRoles()).includes(me), 'the role exists during the session');
    t.equal((await pgc.sessionRoles()).length, 2, 'one role per connection');
    const ins = await a.c.query({ text: 'INSERT INTO accounts (name, balance) VALUES ($1, $2), ($3, $4)', values: ['dan', 5, 'eve', 6] });
    t.equal(ins.rowCount, 2, 'extended protocol insert via role elevation (app_owner)');
    const prepared = await Promise.all([1, 2, 3].map((i) => a.c.query({ name: 'by_id', text: 'SELECT name FROM accounts WHERE id = $1', values: [i] })));
    t.same(prepared.map((r) => r.rows[0].name), ['alice', 'bob', 'carol'], 'named prepared statement, queued');
    const big = await a.c.query("SELECT repeat('x', 3000000) AS big, repeat('y', 10) AS small");
    t.equal(big.rows[0].big.length, 3_000_000, 'a 3 MB DataRow streams through intact');
    t.equal(big.rows[0].small, 'yyyyyyyyyy');
    const bigParam = 'z'.repeat(2_000_000);
    t.equal((await a.c.query({ text: 'SELECT length($1::text) AS n', values: [bigParam] })).rows[0].n, 2_000_000, 'a 2 MB Bind parameter');
    await a.c.query("DO $$ BEGIN RAISE NOTICE 'hello from %', current_user; END $$");
    t.match(a.notices[0]?.message, /^hello from tg_alice_/, 'notice relayed');
    await a.c.query('CREATE TABLE copy_t (id int, v text)');
    await b.c.query('LISTEN chan');
    await a.c.query("NOTIFY chan, 'payload-1'");
    await waitFor(() => b.notifications.length > 0, 5000, 'notification');
    t.equal(b.notifications[0]!.payload, 'payload-1');
    await a.c.end();
    await b.c.end();
    t.same(await pgc.noSessionRoles(), [], 'both roles dropped');
    const app = await pgc.su('app');
    t.equal((await app.query("SELECT to_regclass('copy_t') AS r")).rows[0].r, null, 'objects the session created are dropped (onEnd: drop)');
    await app.query("DELETE FROM accounts WHERE name IN ('dan', 'eve')");
    await app.end();
    // COPY in and out through psql
    const s2 = await secretFor('prod-db', 'admin');
    const copy = await runClient('psql', ['-X', '-A', '-t', `host=${host} port=${port} user=prod-db dbname=app password=${s2.secret} sslmode=require`,
      '-c', 'CREATE TEMP TABLE c (id int, v text)', '-c', 'COPY c FROM STDIN WITH (FORMAT csv)', '-c', 'COPY c TO STDOUT WITH (FORMAT csv)', '-c', 'SELECT sum(id) FROM c'],
    { input: `1,one\n2,two\n3,"th,ree"\n4,${'w'.repeat(1_000_000)}\n` });
    t.equal(copy.code, 0, copy.stderr);
    t.match(copy.stdout, /COPY 3|1,one\n2,two\n3,"th,ree"\n/);
    t.match(copy.stdout, /^10$/m, 'COPY FROM STDIN then COPY TO STDOUT round-trip');
    t.match(copy.stdout, /\n4,w{1000000}\n/, 'a 1 MB line both ways');
    await settle();
    const q = await allQueries();
    t.ok(q.some((x) => x.kind === 'COPY' && x.rows === 4 && /FROM STDIN/.test(x.statement)), 'COPY recorded with row count');
  });

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
