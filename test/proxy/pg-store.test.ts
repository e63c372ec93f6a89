/**
 * Two gateways on one PostgreSQL store, end to end: a JIT request filed on one, approved on both,
 * a connection secret from the other, a real psql session through the first; a secret consumed once
 * by two racing connections to different gateways; an approval timeout that escalates once while
 * both gateways run its timer; the audit chain both appended to verifies (API and CLI). One cluster
 * serves as the store (database tg_store_…) and as the target (database app).
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ManualClock } from '../../policies/clock.js';
import { DEFAULT_POLICIES, startTestGateway, type TestGateway } from '../support/gateway.js';
import { havePostgres, runClient, sharedStoreCluster, testDatabase, waitFor } from '../support/pg.js';

const run = promisify(execFile);
const bin = join(import.meta.dirname, '..', '..', 'proxy', 'bin', 'tollgate.js');
const MIN = 60_000;

if (!havePostgres) {
  t.fail('PostgreSQL binaries are required (apt-get install postgresql postgresql-client)');
} else {
  const pgc = await sharedStoreCluster();
  const db = await testDatabase();
  t.teardown(() => db.drop());
  const password = new URL(db.url).password;
  const clock = new ManualClock(Date.now());
  const policies = [{ ...DEFAULT_POLICIES[0], approvalTimeout: '30m', onTimeout: 'escalate', escalateTo: ['security'] }];
  const logA: string[] = [];
  const common = { targets: [{ ...pgc.target, name: 'prod-db' }], policies, listeners: ['postgres'], clock, storeUrl: db.url };
  const a = await startTestGateway({ ...common, gateway: { id: 'gw-a' }, logSink: (l) => logA.push(l) });
  t.teardown(() => a.close());
  // The second node shares the store and the gateway key (the audit chain is keyed with it).
  const b = await startTestGateway({ ...common, gateway: { id: 'gw-b', key: { file: a.keyFile } } });
  t.teardown(() => b.close());
  const ca = join(a.dataDir, 'gateway-ca.pem');
  writeFileSync(ca, a.gw.tls.ca);
  const psql = (gw: TestGateway, secret: string, sql = 'SELECT current_user, count(*) FROM accounts') => {
    const { host, port } = gw.listener('postgres');
    return runClient('psql', ['-X', '-A', '-t', `host=${host} port=${port} user=prod-db dbname=app password=${secret} sslmode=require`, '-c', sql]);
  };
  const settle = () => waitFor(async () => (await a.store.listSessions({ state: 'active' })).length === 0, 10_000, 'sessions to end');

  t.test('both gateways run on the PostgreSQL store; its URL is logged without the password', async (t) => {
    t.equal(a.gw.store.kind, 'postgres');
    t.equal(b.gw.store.kind, 'postgres');
    const opened = logA.find((l) => l.includes('store opened'));
    t.match(opened, /postgres postgres:\/\/tollgate_store:<secret>@127\.0\.0\.1:\d+\/tg_store_/);
    t.notOk(logA.some((l) => l.includes(password)), 'no log line holds the password');
    const other = await startTestGateway({ ...common, gateway: { id: 'gw-c' } }).then(async (g) => { await g.close(); return null; }, (e: Error) => e);
    t.match(other?.message, /gateway\.key: the key file .* is missing, but this store was used with a gateway key/, 'a third gateway with a key of its own is refused');
  });

  t.test('request on A, approvals on A and B, secret from B, psql session through A', async (t) => {
    const r = await a.api('alice', 'POST', '/api/v1/requests', { target: 'prod-db', role: 'read', duration: '1h', reason: 'INC-17' });
    t.equal(r.status, 201);
    t.equal(r.body.state, 'pending');
    t.equal((await b.api('bob', 'POST', `/api/v1/requests/${r.body.id}/approve`, { comment: 'ok' })).body.state, 'pending', 'one of two approvals, on B');
    const done = await a.api('dave', 'POST', `/api/v1/requests/${r.body.id}/approve`, { comment: 'ok' });
    t.equal(done.body.state, 'approved', 'the second, on A, completes it');
    const s = await b.secret('alice', done.body.grantId);
    const ok = await psql(a, s.secret);
    t.equal(ok.code, 0, ok.stderr);
    t.match(ok.stdout, /^tg_alice_[0-9a-f]{6}\|3$/m, 'connected through A as the session role minted for it');
    await settle();
    t.same(await pgc.noSessionRoles(), [], 'the session role is gone');
    const sessions = (await b.api('carol', 'GET', '/api/v1/sessions?target=prod-db')).body;
    t.equal(sessions.length, 1, 'B lists the session A ran');
    const queries = (await b.api('carol', 'GET', `/api/v1/sessions/${sessions[0].id}/queries`)).body;
    t.ok(queries.some((q: { statement: string }) => /count\(\*\) FROM accounts/.test(q.statement)), 'and the statements A logged');
    const again = await psql(b, s.secret, 'SELECT 1');
    t.not(again.code, 0);
    t.match(again.stderr, /already used/, 'the single-use secret is spent on B too');
  });

  t.test('a secret issued on A connects once: two racing connections, to A and to B, one wins', async (t) => {
    for (let round = 0; round < 3; round++) {
      const g = await a.grant('alice', 'prod-db', 'read');
      const s = await a.secret('alice', g.id);
      const [x, y] = await Promise.all([psql(a, s.secret, 'SELECT 1'), psql(b, s.secret, 'SELECT 1')]);
      t.equal([x, y].filter((r) => r.code === 0).length, 1, `round ${round}: exactly one connection got in`);
      t.match([x, y].find((r) => r.code !== 0)!.stderr, /already used/, 'the other is told why');
    }
    await settle();
    t.same(await pgc.noSessionRoles(), []);
  });

  t.test('an approval timeout escalates once with both gateways timing it; the chain both appended to verifies', async (t) => {
    const file = async (gw: TestGateway) => {
      const r = await gw.api('alice', 'POST', '/api/v1/requests', { target: 'prod-db', role: 'admin', duration: '30m', reason: 'timeout test' });
      t.equal(r.status, 201);
      return r.body.id as string;
    };
    const first = await file(a);
    clock.advance(2 * MIN); // B's periodic sweep arms the timer of the request A filed
    await Promise.all([a.gw.engine.idle(), b.gw.engine.idle()]);
    // Both gateways append at once: requests filed on each side in parallel.
    const more = await Promise.all(Array.from({ length: 8 }, (_, i) => file(i % 2 ? a : b)));
    clock.advance(31 * MIN);
    await Promise.all([a.gw.engine.idle(), b.gw.engine.idle()]);
    for (const id of [first, ...more]) {
      const req = await a.store.getRequest(id);
      t.match(req, { state: 'pending', escalations: 1, stages: [{ groups: ['security'] }] }, `${id} escalated`);
      t.equal((await a.store.listAudit({ action: 'request.escalated', subject: id })).length, 1, 'one escalation event, not one per gateway');
    }
    for (const gw of [a, b]) {
      const v = await gw.api('carol', 'GET', '/api/v1/audit/verify');
      t.match(v.body, { ok: true }, `verifies on ${gw.gw.config.gateway.id}`);
    }
    const all = await a.store.listAudit({});
    t.ok(all.length > 40, `${all.length} events`);
    t.same(all.map((e) => e.seq), all.map((_, i) => i + 1), 'one sequence without gaps');
    // The CLI reads the PostgreSQL store directly (URL from the environment), with A's key and checkpoints.
    const cfg = join(a.dataDir, 'cli.yaml');
    writeFileSync(cfg, `gateway:\n  dataDir: ${a.dataDir}\n  id: gw-a\nstore: {kind: postgres, url: {env: TOLLGATE_DB_URL}}\n`);
    const cli = await run(process.execPath, [bin, '--json', 'audit', 'verify', '--config', cfg], { env: { ...process.env, TOLLGATE_DB_URL: db.url } });
    t.match(JSON.parse(cli.stdout), { ok: true });
    t.ok(JSON.parse(cli.stdout).count >= all.length);
    const bad = await run(process.execPath, [bin, 'audit', 'verify', '--config', cfg], { env: { ...process.env, TOLLGATE_DB_URL: db.url.replace(password, 'not-the-password') } })
      .then(() => null, (e: { code: number; stderr: string }) => e);
    t.equal(bad?.code, 1);
    t.match(bad?.stderr, /store\.url: .*postgres:\/\/tollgate_store:<secret>@.*password authentication failed/);
    t.notOk(bad?.stderr.includes('not-the-password'), 'the CLI never prints the password either');
  });
}
