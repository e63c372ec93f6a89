/**
 * Issue 17: losing the store, across real processes. Two `tollgate serve` nodes share a real
 * PostgreSQL store that they reach through a TCP forwarder (test/support/forwarder.ts); the
 * PostgreSQL target is reached directly, so credentials can still be revoked on it. Then:
 *   1. the store refuses connections (every connection cut, new ones closed at once): within
 *      seconds both nodes refuse new sessions, and psql is told why in a FATAL it prints;
 *   2. the store comes back: both nodes take sessions again;
 *   3. the store hangs (the forwarder stops forwarding, connections stay open, as with SIGSTOP):
 *      live psql sessions on both nodes end as store_lost after gateway.storeLossTimeout, the
 *      client told why, and their session roles are dropped on the target meanwhile;
 *   4. the store comes back: both nodes recover (ready, new sessions work) and the store learns
 *      that the sessions ended and their leases were revoked.
 * Timings are measured and printed, bounded only generously (a loaded machine).
 */
import t from 'tap';
import type { ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { havePostgres, runClient, runningStatements, sharedStoreCluster, testDatabase, waitFor, type RunResult } from '../support/pg.js';
import { startForwarder } from '../support/forwarder.js';
import { apiOf, grantVia, openNodeStore, seedUsers, sharedMaterial, startNode, waitReady, type NodeProcess } from '../support/cluster.js';

const STORE_LOSS_TIMEOUT_S = 4;

if (!havePostgres) {
  t.fail('needs PostgreSQL (apt-get install postgresql postgresql-client)');
} else {
  const dir = mkdtempSync(join(tmpdir(), 'tg-store-loss-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const pgc = await sharedStoreCluster();
  const db = await testDatabase();
  t.teardown(() => db.drop());
  const fwd = await startForwarder({ host: pgc.cluster.host, port: pgc.cluster.port }, t);
  const u = new URL(db.url);
  u.host = fwd.address;
  const shared = sharedMaterial(join(dir, 'shared'));
  const common = {
    shared, listeners: ['postgres'], targets: [{ ...pgc.target, name: 'prod-db' }],
    store: { kind: 'postgres', url: { value: u.toString() } },
    // heartbeat = nodeTimeout / 3 = 2 s: a node calls its store lost after two silent heartbeats.
    gateway: { nodeTimeout: '6s', storeLossTimeout: `${STORE_LOSS_TIMEOUT_S}s`, drainTimeout: '2s', timerSweep: '1s' },
  };
  // Started one after the other (the first migrates the store), with a generous readiness wait (a loaded machine).
  const a = await startNode(t, { ...common, id: 'gw-a', dataDir: join(dir, 'a'), waitReady: false });
  await waitReady(a, 300_000);
  const b = await startNode(t, { ...common, id: 'gw-b', dataDir: join(dir, 'b'), waitReady: false });
  await waitReady(b, 300_000);
  // The test reads the store directly, not through the forwarder.
  const direct = join(dir, 'direct.yaml');
  writeFileSync(direct, readFileSync(a.configFile, 'utf8').split(fwd.address).join(`${pgc.cluster.host}:${pgc.cluster.port}`), { mode: 0o600 });
  const store = await openNodeStore(direct);
  t.teardown(() => store.close());
  const tokens = await seedUsers(store);
  const api = apiOf(a.url, tokens);
  const caFile = join(dir, 'ca.pem');
  cpSync(shared.caCert, caFile);
  const nodes = [a, b];

  const secret = async () => {
    const grantId = await grantVia(api, 'alice', 'prod-db', 'read');
    const s = await api('alice', 'POST', `/api/v1/grants/${grantId}/secret`, { reusable: true });
    if (s.status !== 201) throw new Error(`secret: ${s.status} ${JSON.stringify(s.body)}`);
    return { grantId, secret: (s.body as { secret: string }).secret };
  };
  const psql = (node: NodeProcess, pw: string, sql: string, onSpawn?: (p: ChildProcess) => void): Promise<RunResult> =>
    runClient('psql', ['-X', '-A', '-t', `host=127.0.0.1 port=${node.ports['postgres']} user=prod-db dbname=app password=${pw} sslmode=verify-full sslrootcert=${caFile}`, '-c', sql], { onSpawn, timeoutMs: 90_000 });
  const ready = (n: NodeProcess) => fetch(`${n.url}/readyz`).then((r) => r.status, () => 0);
  const outputs = () => nodes.map((n) => `${n.id}:\n${n.output().slice(-3000)}`).join('\n');

  t.test('store refuses connections: new sessions are refused with a clear FATAL within seconds; then it comes back', async (t) => {
    const s = await secret();
    for (const n of nodes) {
      const r = await psql(n, s.secret, 'SELECT 1');
      t.equal(r.code, 0, `${n.id} works before: ${r.stderr}`);
    }
    const t0 = performance.now();
    fwd.refuse();
    fwd.cut();
    for (const n of nodes) {
      let last: RunResult | null = null;
      await waitFor(async () => {
        last = await psql(n, s.secret, 'SELECT 1');
        return last.code !== 0 && /lost its connection to its store|cannot record or audit sessions right now/.test(last.stderr);
      }, 30_000, `${n.id} to refuse new sessions`).catch((e: Error) => { throw new Error(`${e.message}: ${JSON.stringify(last)}\n${outputs()}`); });
      const r = last as unknown as RunResult;
      t.match(r.stderr, /FATAL:\s+Tollgate: (this gateway has lost its connection to its store|the gateway cannot record or audit sessions right now)/, `${n.id}: psql prints the refusal as a FATAL: ${r.stderr.trim()}`);
      t.notMatch(r.stderr, /ECONN|Connection terminated|gateway error/, 'no internal error text');
      t.comment(`${n.id} refused new sessions ${((performance.now() - t0) / 1000).toFixed(1)} s after the store went away`);
    }
    t.ok(performance.now() - t0 < 30_000, 'within seconds');
    fwd.allow();
    for (const n of nodes) {
      await waitFor(async () => (await ready(n)) === 200, 30_000, `${n.id} ready again`);
      const r = await waitFor(async () => { const x = await psql(n, s.secret, 'SELECT 42'); return x.code === 0 ? x : null; }, 30_000, `${n.id} to take sessions again`);
      t.match(r.stdout, /^42$/m, `${n.id} takes sessions again`);
    }
  });

  t.test('store hangs: live sessions end as store_lost after storeLossTimeout, roles dropped on the target; then recovery', async (t) => {
    const s = await secret();
    const runs = nodes.map((n) => psql(n, s.secret, 'SELECT pg_sleep(120)'));
    await waitFor(async () => (await runningStatements(pgc, 'pg_sleep')) === 2, 30_000, 'both sessions to run their statement');
    const live = await store.listSessions({ state: 'active', grantId: s.grantId });
    t.same(live.map((x) => x.gatewayId).sort(), ['gw-a', 'gw-b'], 'one live session on each node');
    const t0 = performance.now();
    fwd.stall();
    const ends = await Promise.all(runs.map((p) => p.then((r) => ({ r, at: performance.now() - t0 }))));
    for (const [i, { r, at }] of ends.entries()) {
      t.not(r.code, 0, `${nodes[i]!.id}: psql ended with an error`);
      t.match(r.stderr, /FATAL:\s+Tollgate: this gateway lost its connection to its store/, `${nodes[i]!.id}: the client is told why: ${r.stderr.trim()}`);
      t.comment(`${nodes[i]!.id}: session ended ${(at / 1000).toFixed(1)} s after the store hung (storeLossTimeout ${STORE_LOSS_TIMEOUT_S} s)`);
      t.ok(at >= STORE_LOSS_TIMEOUT_S * 1000, 'not before storeLossTimeout');
      t.ok(at < 60_000, 'bounded');
    }
    // Revoked on the target directly while the store was gone.
    t.same(await pgc.noSessionRoles(), [], 'the session roles are dropped on the target during the loss');
    // While it hangs, a new session is refused with a clear message (not left waiting).
    const refused = await psql(a, s.secret, 'SELECT 1');
    t.not(refused.code, 0);
    t.match(refused.stderr, /FATAL:\s+Tollgate: (this gateway has lost its connection to its store|the gateway cannot record or audit sessions right now)/, `refused while hung: ${refused.stderr.trim()}`);
    fwd.flow();
    for (const n of nodes) {
      await waitFor(async () => (await ready(n)) === 200, 60_000, `${n.id} ready again`).catch((e: Error) => { throw new Error(`${e.message}\n${outputs()}`); });
      const r = await waitFor(async () => { const x = await psql(n, s.secret, 'SELECT 7'); return x.code === 0 ? x : null; }, 60_000, `${n.id} to take sessions again`);
      t.match(r.stdout, /^7$/m, `${n.id} recovered: takes sessions again`);
    }
    // What the nodes could not write meanwhile reaches the store.
    for (const x of live) {
      const rec = await waitFor(async () => { const y = await store.getSession(x.id); return y && y.state === 'ended' ? y : null; }, 60_000, `session ${x.id} recorded as ended`);
      t.match(rec.endReason, /store_lost|gateway_lost|gateway_crash/, `${x.gatewayId}: the session's end is recorded (${rec.endReason?.slice(0, 60)})`);
      const leases = await waitFor(async () => { const l = await store.listLeases({ sessionId: x.id }); return l.length && l.every((y) => y.state === 'revoked') ? l : null; }, 60_000, 'its lease recorded as revoked');
      t.equal(leases.length, 1);
    }
    t.same(await pgc.noSessionRoles(), [], 'no session role left');
  });
}
