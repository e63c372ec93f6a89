/**
 * gateway.workers: 2 on the embedded SQLite store: one `tollgate serve`, a primary and two worker
 * processes sharing the listeners (worker 0 also serves HTTP). Connections spread over both
 * workers; a secret is spent once across them; a kill through the API (worker 0) closes a psql
 * session worker 1 holds; a lock ends sessions on both and refuses the next connection; a worker
 * killed with -9 is reaped at once by the other (its role revoked, long before nodeTimeout) and
 * started again; SIGTERM drains and stops them all.
 */
import t from 'tap';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { havePostgres, runClient, runningStatements, sharedStoreCluster, waitFor, type RunResult } from '../support/pg.js';
import { apiOf, grantVia, openNodeStore, seedUsers, sharedMaterial, startNode } from '../support/cluster.js';

if (!havePostgres) {
  t.fail('needs PostgreSQL (apt-get install postgresql postgresql-client)');
} else {
  const dir = mkdtempSync(join(tmpdir(), 'tg-workers-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const pgc = await sharedStoreCluster();
  const shared = sharedMaterial(join(dir, 'shared'));
  const node = await startNode(t, {
    id: 'wk', shared, dataDir: join(dir, 'data'), listeners: ['postgres'], store: { kind: 'sqlite' },
    targets: [{ ...pgc.target, name: 'wk-db' }], gateway: { workers: 2, drainTimeout: '2s' },
  });
  const store = await openNodeStore(node.configFile);
  t.teardown(() => store.close());
  const tokens = await seedUsers(store);
  const api = apiOf(node.url, tokens);
  const port = node.ports['postgres']!;
  const psql = (secret: string, sql: string, onSpawn?: (p: ChildProcess) => void): Promise<RunResult> =>
    runClient('psql', ['-X', '-A', '-t', `host=127.0.0.1 port=${port} user=wk-db dbname=app password=${secret} sslmode=verify-full sslrootcert=${shared.caCert}`, '-c', sql], { onSpawn, timeoutMs: 60_000 });
  const secret = async (reusable = false) => {
    const grantId = await grantVia(api, 'alice', 'wk-db', 'read');
    const s = await api('alice', 'POST', `/api/v1/grants/${grantId}/secret`, { reusable });
    return { grantId, secret: s.body.secret as string };
  };
  const settled = () => waitFor(async () => (await store.listSessions({ state: 'active' })).length === 0, 20_000, 'no live session');
  /** Two live psql sessions (pg_sleep), one on each worker (connections alternate between them), each with its client. */
  const onBoth = async () => {
    const s = await secret(true);
    const out: { proc: ChildProcess; run: Promise<RunResult>; session: Awaited<ReturnType<typeof store.getSession>> & object }[] = [];
    for (let i = 0; i < 2; i++) {
      let proc!: ChildProcess;
      const run = psql(s.secret, 'SELECT pg_sleep(60)', (p) => { proc = p; });
      const session = await waitFor(async () => (await store.listSessions({ state: 'active', grantId: s.grantId })).find((x) => !out.some((o) => o.session.id === x.id)), 15_000, 'a live session');
      out.push({ proc, run, session });
    }
    await waitFor(async () => (await runningStatements(pgc, 'pg_sleep')) >= 2, 15_000, 'both sessions to run their statement');
    t.same(out.map((o) => o.session.gatewayId).sort(), ['wk/w0', 'wk/w1'], 'one session on each worker');
    return out;
  };

  t.test('two workers, each a node of its own, share the listener', async (t) => {
    t.match((await store.listNodes()).map((n) => [n.id, n.state]), [['wk/w0', 'up'], ['wk/w1', 'up']]);
    t.match(await fetch(`${node.url}/readyz`).then((r) => r.json()), { ready: true, checks: { listeners: true } });
    const s = await secret(true);
    for (let i = 0; i < 4; i++) t.equal((await psql(s.secret, 'SELECT 1')).code, 0);
    t.same([...new Set((await store.listSessions({ grantId: s.grantId })).map((x) => x.gatewayId))].sort(), ['wk/w0', 'wk/w1'], 'connections went to both workers');
    await settled();
  });

  t.test('a secret is spent once across workers: two racing connections, one wins', async (t) => {
    for (let round = 0; round < 4; round++) {
      const s = await secret();
      const rs = await Promise.all([psql(s.secret, 'SELECT 1'), psql(s.secret, 'SELECT 1')]);
      t.equal(rs.filter((r) => r.code === 0).length, 1, `round ${round}: one wins`);
      t.match(rs.find((r) => r.code !== 0)!.stderr, /already used/);
    }
    await settled();
    t.same(await pgc.noSessionRoles(), []);
  });

  t.test("a kill through the API closes worker 1's psql session within 250 ms", async (t) => {
    const both = await onBoth();
    const target = both.find((x) => x.session.gatewayId === 'wk/w1')!;
    const closed = new Promise<number>((r) => target.proc.once('close', () => r(performance.now())));
    const t0 = performance.now();
    const k = await api('carol', 'POST', `/api/v1/sessions/${target.session.id}/kill`, { reason: 'workers' });
    t.match(k.body, { ok: true, ended: true }, 'worker 0 (the API) answers once worker 1 ended it');
    const ms = (await closed) - t0;
    t.ok(ms < 250, `the client on worker 1 closed ${ms.toFixed(0)} ms after the kill`);
    t.match((await target.run).stderr, /terminated by carol: workers/);
    const other = both.find((x) => x !== target)!;
    t.equal((await store.getSession(other.session.id))?.state, 'active', "worker 0's session goes on");
    await api('carol', 'POST', `/api/v1/sessions/${other.session.id}/kill`, { reason: 'done' });
    await other.run;
    await settled();
  });

  t.test('a lock ends the sessions on both workers and refuses the next connection', async (t) => {
    const runs = (await onBoth()).map((x) => x.run);
    const next = await secret();
    const lock = await api('carol', 'POST', '/api/v1/locks', { scope: 'target', value: 'wk-db', reason: 'workers lock' });
    t.equal(lock.status, 201);
    for (const r of await Promise.all(runs)) t.match(r.stderr, /access locked \(target wk-db\): workers lock/);
    const refused = await psql(next.secret, 'SELECT 1');
    t.match(refused.stderr, /locked/, 'refused on whichever worker it reached');
    t.equal((await api('carol', 'DELETE', `/api/v1/locks/${lock.body.id}`)).status, 200);
    await settled();
  });

  t.test('a worker killed with -9 is reaped by the other at once and started again', async (t) => {
    const both = await onBoth();
    const victim = both.find((x) => x.session.gatewayId === 'wk/w1')!.session;
    const before = (await store.getNode('wk/w1'))!;
    const lease = (await store.listLeases({ sessionId: victim.id }))[0]!;
    const role = lease.data['role'] as string;
    const t0 = performance.now();
    process.kill(before.pid!, 'SIGKILL');
    await waitFor(async () => !(await pgc.sessionRoles()).includes(role), 10_000, 'the role of the dead worker\'s session to be dropped');
    const took = performance.now() - t0;
    t.ok(took < 10_000, `role dropped ${(took / 1000).toFixed(1)} s after kill -9 (nodeTimeout is 30 s: the primary had worker 0 reap it)`);
    t.match(await store.getSession(victim.id), { state: 'ended', endReason: /^gateway_lost: .*wk\/w1.*wk\/w0/ });
    const again = await waitFor(async () => { const n = await store.getNode('wk/w1'); return n && n.state === 'up' && n.incarnation !== before.incarnation ? n : null; }, 30_000, 'worker 1 to start again');
    t.not(again.pid, before.pid, 'a new process');
    await waitFor(async () => (await fetch(`${node.url}/readyz`)).status === 200, 15_000, 'ready again');
    const other = both.find((x) => x.session.id !== victim.id)!;
    await api('carol', 'POST', `/api/v1/sessions/${other.session.id}/kill`, { reason: 'done' });
    await Promise.all(both.map((x) => x.run));
    await settled();
  });

  t.test('SIGTERM drains (readyz 503, new connections refused, live session warned, ended as gateway_shutdown after drainTimeout) and stops the primary and its workers', async (t) => {
    const pids = (await store.listNodes()).filter((n) => n.state === 'up').map((n) => n.pid!);
    const s = await secret(true);
    const live = psql(s.secret, 'SELECT pg_sleep(60)');
    const session = await waitFor(async () => (await store.listSessions({ state: 'active', grantId: s.grantId }))[0], 15_000, 'a live session');
    await waitFor(async () => (await runningStatements(pgc, 'pg_sleep')) >= 1, 15_000, 'its statement to run');
    const t0 = performance.now();
    node.signal('SIGTERM');
    const readyz = await waitFor(async () => {
      const r = await fetch(`${node.url}/readyz`).catch(() => null);
      return r && r.status === 503 ? await r.json() : null;
    }, 5_000, '/readyz to fail');
    t.match(readyz, { ready: false, checks: { draining: true } }, `/readyz says draining ${(performance.now() - t0).toFixed(0)} ms after SIGTERM`);
    node.signal('SIGTERM'); // a second SIGTERM (an impatient operator) does not cut the drain short
    // The listeners stop accepting while the live session goes on.
    await waitFor(async () => (await psql(s.secret, 'SELECT 1')).code !== 0, 5_000, 'a new connection to be refused');
    t.equal((await store.getSession(session.id))?.state, 'active', 'the live session goes on meanwhile');
    const r = await live;
    const took = performance.now() - t0;
    t.ok(took >= 1_500 && took < 15_000, `the live session ended ${took.toFixed(0)} ms after SIGTERM (drainTimeout 2 s)`);
    t.match(r.stderr, /shutting down; your session ends in \d+ seconds?/, `psql got the drain warning: ${r.stderr.trim()}`);
    const rec = await waitFor(async () => { const x = await store.getSession(session.id); return x?.state === 'ended' ? x : null; }, 10_000, 'the session record to say ended');
    t.match(rec.endReason, /^gateway_shutdown/);
    t.same((await store.listSessions({ grantId: s.grantId })).map((x) => x.id), [session.id], 'no session was opened while draining');
    t.equal(await Promise.race([node.exited, new Promise((r) => setTimeout(() => r('still running'), 20_000))]), 0, 'the primary exits 0');
    for (const pid of pids) t.throws(() => process.kill(pid, 0), `worker ${pid} is gone`);
    t.match((await store.listNodes()).map((n) => n.state), ['stopped', 'stopped']);
  });
}
