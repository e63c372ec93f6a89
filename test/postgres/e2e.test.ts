/**
 * PostgreSQL through the real gateway with a real cluster (initdb, scram-sha-256) and real clients:
 * psql (TLS, channel binding, plain), node-postgres (simple + extended), COPY, notices,
 * LISTEN/NOTIFY, recording, and the per-session role existing only while the session runs.
 * Enforcement (rules, cancel, kill, lock, revoke, expiry, reaper) is in enforce.test.ts.
 */
import t from 'tap';
import pg from 'pg';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { havePostgres, runClient, startPgGateway, waitFor } from '../support/pg.js';

if (!havePostgres) {
  t.fail('PostgreSQL binaries are required (apt-get install postgresql postgresql-client)');
} else {
  const { pgc, tg, host, port, caFile, connect, secretFor, settle, allQueries } = await startPgGateway(t);
  t.test('psql over TLS (SCRAM): per-session role during the session, gone after, statements recorded', async (t) => {
    const s = await secretFor('prod-db', 'read');
    t.match(s.commands.psql, /^curl -fsS \S+\/api\/v1\/ca\.pem -o tollgate-ca\.pem && psql '.* sslmode=verify-full sslrootcert=tollgate-ca\.pem'$/, 'the printed psql verifies the gateway');
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

  t.test('the printed client commands work as pasted (verify-full against the CA they fetch)', async (t) => {
    const cwd = mkdtempSync(join(tmpdir(), 'tg-psql-cmd-'));
    t.teardown(() => rmSync(cwd, { recursive: true, force: true }));
    for (const key of ['psql', 'psql (PGPASSWORD)']) {
      const s = await secretFor('prod-db', 'read');
      t.match(s.commands[key], /sslmode=verify-full sslrootcert=tollgate-ca\.pem/, key);
      const r = await runClient('bash', ['-c', `cd ${cwd} && ${s.commands[key]} -X -A -t -c 'SELECT 7 * 6'`]);
      t.equal(r.code, 0, `${key}: ${r.stderr}`);
      t.match(r.stdout, /^42$/m, key);
    }
    t.equal(readFileSync(join(cwd, 'tollgate-ca.pem'), 'utf8'), tg.gw.tls.ca, 'the command saved the gateway CA from the API');
    // The same command against a host name the gateway certificate does not carry is refused by psql.
    const s = await secretFor('prod-db', 'read');
    const wrongHost = s.commands['psql']!.replace('host=127.0.0.1', 'host=not-the-gateway.test hostaddr=127.0.0.1');
    const r = await runClient('bash', ['-c', `cd ${cwd} && ${wrongHost} -X -c 'SELECT 1'`]);
    t.not(r.code, 0);
    t.match(r.stderr, /does not match host name "not-the-gateway\.test"/, 'verify-full checks the host name');
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

  t.test('fast-path function calls (psql \\lo_import) relay and are audited', async (t) => {
    const s = await secretFor('prod-db', 'read');
    const r = await runClient('psql', ['-X', '-A', '-t', `host=${host} port=${port} user=prod-db dbname=app password=${s.secret} sslmode=require`,
      '-c', '\\lo_import /etc/hostname', '-c', 'SELECT count(*) FROM pg_largeobject_metadata']);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /lo_import \d+/);
    t.match(r.stdout, /^1$/m, 'the large object exists during the session');
    t.same(await pgc.noSessionRoles(), []);
    await settle();
    const audit = await tg.store.listAudit({ action: 'postgres.function_call' });
    t.ok(audit.length >= 3, `fast-path calls audited (${audit.length})`);
    const su = await pgc.su('app');
    t.equal((await su.query('SELECT count(*)::int AS n FROM pg_largeobject_metadata')).rows[0].n, 0, 'the large object was dropped with the role');
    await su.end();
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
    // Before sign-in an unknown target reads like a wrong secret: the answer does not tell which targets exist.
    t.equal(e2?.code, '28P01', 'unknown target refused like a wrong secret');
    t.match(e2?.message, /password authentication failed for user "no-such-target"/);
    t.notMatch(e2?.message, /no target/);
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
}
