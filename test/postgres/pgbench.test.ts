/**
 * pgbench through the gateway: -i, then simple / extended / prepared runs (several connections on
 * one reusable secret, each its own session and role), and an extended-protocol pipeline script.
 * The target reassigns what sessions own to app_owner at the end, so pgbench's tables outlive the
 * session that created them while every session role is dropped.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_POLICIES, startTestGateway } from '../support/gateway.js';
import { havePostgres, runClient, startTestCluster, waitFor } from '../support/pg.js';

if (!havePostgres) {
  t.fail('PostgreSQL binaries are required (postgresql, postgresql-client)');
} else {
  const pgc = await startTestCluster(t);
  const bench = { ...pgc.target, name: 'bench-db', credentials: { ...pgc.target.credentials, onEnd: 'reassign', reassignTo: 'app_owner' } };
  const tg = await startTestGateway({ targets: [bench], policies: DEFAULT_POLICIES, listeners: ['postgres'] });
  t.teardown(() => tg.close());
  const { host, port } = tg.listener('postgres');
  const g = await tg.grant('alice', 'bench-db', 'admin');
  const s = await tg.secret('alice', g.id, { reusable: true });
  // As the printed command does: pgbench checks the gateway's certificate and host name.
  const caFile = join(pgc.dir, 'tollgate-ca.pem');
  writeFileSync(caFile, (await tg.api(null, 'GET', '/api/v1/ca.pem')).body);
  const env = { PGPASSWORD: s.secret, PGSSLMODE: 'verify-full', PGSSLROOTCERT: caFile };
  const base = ['-h', host, '-p', String(port), '-U', 'bench-db'];

  t.test('the printed pgbench command verifies the gateway', async (t) => {
    t.match(s.commands.pgbench, /^curl -fsS \S+\/api\/v1\/ca\.pem -o tollgate-ca\.pem && PGPASSWORD=\S+ PGSSLMODE=verify-full PGSSLROOTCERT=tollgate-ca\.pem pgbench -h 127\.0\.0\.1 -p \d+ -U bench-db app$/);
  });

  t.test('pgbench -i through the gateway; tables survive (reassigned), role does not', async (t) => {
    const r = await runClient('pgbench', ['-i', '-s', '1', ...base, 'app'], { env, timeoutMs: 60_000 });
    t.equal(r.code, 0, r.stderr);
    t.match(r.stderr, /done in/);
    t.same(await pgc.noSessionRoles(), [], 'session role dropped');
    const app = await pgc.su('app');
    const own = await app.query("SELECT pg_get_userbyid(relowner) AS o FROM pg_class WHERE relname = 'pgbench_accounts'");
    t.equal(own.rows[0]?.o, 'app_owner', 'reassigned to app_owner');
    t.equal((await app.query('SELECT count(*)::int AS n FROM pgbench_accounts')).rows[0].n, 100_000);
    await app.end();
  });

  for (const [mode, extra] of [['simple', ['-c', '2', '-t', '25']], ['extended', ['-c', '2', '-t', '25']], ['prepared', ['-c', '4', '-j', '2', '-T', '3']]] as const) {
    t.test(`pgbench -M ${mode} ${extra.join(' ')}`, async (t) => {
      const r = await runClient('pgbench', ['-n', '-M', mode, ...extra, ...base, 'app'], { env, timeoutMs: 60_000 });
      t.equal(r.code, 0, r.stderr);
      t.match(r.stdout, new RegExp(`query mode: ${mode}`));
      t.match(r.stdout, /number of failed transactions: 0 /);
      const m = /number of transactions actually processed: (\d+)/.exec(r.stdout);
      t.ok(m && Number(m[1]) > 0, `transactions processed: ${m?.[1]}`);
      t.same(await pgc.noSessionRoles(), [], 'every per-connection role dropped');
    });
  }

  t.test('pipeline script (extended protocol, \\startpipeline)', async (t) => {
    const script = join(pgc.dir, 'pipeline.sql');
    writeFileSync(script, [
      '\\set aid random(1, 100000)',
      '\\startpipeline',
      'SELECT abalance FROM pgbench_accounts WHERE aid = :aid;',
      'UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;',
      'SELECT abalance FROM pgbench_accounts WHERE aid = :aid;',
      '\\endpipeline',
      '',
    ].join('\n'));
    const app = await pgc.su('app');
    const sum = async () => Number((await app.query('SELECT sum(abalance)::bigint AS s FROM pgbench_accounts')).rows[0].s);
    const before = await sum();
    const r = await runClient('pgbench', ['-n', '-M', 'extended', '-c', '2', '-t', '20', '-f', script, ...base, 'app'], { env, timeoutMs: 60_000 });
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /number of failed transactions: 0 /);
    t.equal(await sum() - before, 40, 'every pipelined UPDATE applied exactly once (2 clients x 20 transactions)');
    await app.end();
    t.same(await pgc.noSessionRoles(), []);
    const sessions = await waitFor(async () => {
      const all = await tg.store.listSessions({ target: 'bench-db' });
      return all.every((x) => x.state === 'ended') ? all : null;
    }, 10_000, 'every session to be marked ended');
    t.ok(sessions.length >= 1 + 2 + 2 + 4 + 2, `one session per connection (${sessions.length})`);
    let recorded = 0;
    for (const x of sessions) recorded += (await tg.store.listQueries(x.id)).filter((q) => /UPDATE pgbench_accounts/.test(q.statement) && q.rows === 1).length;
    t.ok(recorded >= 40, `UPDATEs recorded with rows (${recorded})`);
    t.same(await pgc.noSessionRoles(), []);
  });
}
