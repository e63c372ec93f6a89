/**
 * Issue 17, end to end: one PostgreSQL store, two gateways as real processes (`tollgate serve`,
 * gw-a and gw-b, sharing the gateway key, the CA and the recordings directory) and haproxy in
 * front of both (HTTP front and the TCP listeners, /readyz as its health check). A secret issued
 * on A is spent once across both; a kill through A's API closes a psql and an ssh session B holds
 * within 250 ms; a lock made on B refuses the next connection on A; a SOC analyst on A watches a
 * live session on B and replays its recording from A; both append to one audit chain that
 * verifies; an approval timeout both nodes time escalates once; `kill -9` of B mid-session makes A
 * end B's sessions and revoke the PostgreSQL role and the Linux account B minted within
 * nodeTimeout + 10 s, and haproxy sends new connections to A only.
 */
import t from 'tap';
import type { ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'undici';
import { DEFAULT_POLICIES } from '../support/gateway.js';
import { havePostgres, runClient, runningStatements, sharedStoreCluster, testDatabase, waitFor, type RunResult } from '../support/pg.js';
import { haveSshd, startTestSshd, Terminal, userExists } from '../support/sshd.js';
import { apiOf, grantVia, haveHaproxy, openNodeStore, seedUsers, sharedMaterial, startHaproxy, startNode, type Api, type NodeProcess } from '../support/cluster.js';

const NODE_TIMEOUT_S = 3;

if (!havePostgres || !haveSshd || !haveHaproxy) {
  t.fail('needs PostgreSQL, root with sshd, and haproxy (apt-get install postgresql openssh-server sshpass haproxy)');
} else {
  const dir = mkdtempSync(join(tmpdir(), 'tg-nodes-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const pgc = await sharedStoreCluster();
  const db = await testDatabase();
  t.teardown(() => db.drop());
  const sshd = await startTestSshd(t, { eph: 'nodes-web', cert: 'nodes-web-cert', pw: 'nodes-web-pw' });
  const shared = sharedMaterial(join(dir, 'shared'));
  const targets = [{ ...pgc.target, name: 'prod-db' }, sshd.targets[0]!];
  const policies = [{ ...DEFAULT_POLICIES[0], approvalTimeout: '3s', onTimeout: 'escalate', escalateTo: ['security'] }];
  const common = {
    shared, listeners: ['postgres', 'ssh'], targets, policies,
    store: { kind: 'postgres', url: { value: db.url } },
    gateway: { nodeTimeout: `${NODE_TIMEOUT_S}s`, storeLossTimeout: '5s', drainTimeout: '2s', timerSweep: '1s' },
  };
  const a = await startNode(t, { ...common, id: 'gw-a', dataDir: join(dir, 'a') });
  // Clients check one SSH host key whichever node they reach: the nodes share it (as they share gateway.key and gateway.ca).
  cpSync(join(a.dataDir, 'ssh'), join(dir, 'b', 'ssh'), { recursive: true });
  const b = await startNode(t, { ...common, id: 'gw-b', dataDir: join(dir, 'b') });
  const store = await openNodeStore(a.configFile);
  t.teardown(() => store.close());
  const tokens = await seedUsers(store);
  const apiA = apiOf(a.url, tokens);
  const apiB = apiOf(b.url, tokens);
  const lb = await startHaproxy(t, join(dir, 'haproxy'), [a, b], ['http', 'postgres', 'ssh']);
  const apiLb = apiOf(`http://127.0.0.1:${lb.ports['http']}`, tokens);
  const caFile = join(dir, 'ca.pem');
  cpSync(shared.caCert, caFile);

  const secretOn = async (api: Api, target: string, role: string, reusable = false) => {
    const grantId = await grantVia(api, 'alice', target, role);
    const s = await api('alice', 'POST', `/api/v1/grants/${grantId}/secret`, { reusable });
    if (s.status !== 201) throw new Error(`secret: ${s.status} ${JSON.stringify(s.body)}`);
    return { grantId, ...(s.body as { secret: string; username: string }) };
  };
  const psql = (port: number, secret: string, sql: string, onSpawn?: (p: ChildProcess) => void): Promise<RunResult> =>
    runClient('psql', ['-X', '-A', '-t', `host=127.0.0.1 port=${port} user=prod-db dbname=app password=${secret} sslmode=verify-full sslrootcert=${caFile}`, '-c', sql], { onSpawn, timeoutMs: 60_000 });
  const activeOn = (node: string, target: string) => waitFor(async () => (await store.listSessions({ state: 'active', target })).find((s) => s.gatewayId === node), 15_000, `a live ${target} session on ${node}`);
  const settled = () => waitFor(async () => (await store.listSessions({ state: 'active' })).length === 0, 20_000, 'no live session').catch(async (e: Error) => {
    const left = await store.listSessions({ state: 'active' });
    throw new Error(`${e.message}: ${JSON.stringify(left)}\nA:\n${a.output().slice(-4000)}\nB:\n${b.output().slice(-4000)}`);
  });
  /** Until the target runs the session's pg_sleep (the session is past its start-up). */
  const sleeping = () => waitFor(() => runningStatements(pgc, 'pg_sleep'), 15_000, 'the session to run its statement');
  const sshOn = (node: NodeProcess, secret: string, username: string) =>
    new Terminal(secret, ['-p', String(node.ports['ssh']), `${username}@127.0.0.1`]);

  /** A psql (running pg_sleep) and an interactive ssh session, both on B, with their session records. */
  const liveOnB = async (t: { teardown(fn: () => void): void }) => {
    const pgSecret = await secretOn(apiA, 'prod-db', 'read');
    let psqlProc: ChildProcess | undefined;
    const running = psql(b.ports['postgres']!, pgSecret.secret, 'SELECT pg_sleep(60)', (p) => { psqlProc = p; });
    const sshSecret = await secretOn(apiA, 'nodes-web', 'user');
    const term = sshOn(b, sshSecret.secret, sshSecret.username);
    t.teardown(() => term.kill());
    await term.waitFor(/\$ $/m);
    const pgSession = await activeOn('gw-b', 'prod-db');
    const sshSession = await activeOn('gw-b', 'nodes-web');
    await sleeping();
    return { psqlProc: psqlProc!, running, term, pgSession, sshSession };
  };

  t.test('both nodes register and take traffic through haproxy', async (t) => {
    const nodes = await store.listNodes();
    t.match(nodes.map((n) => [n.id, n.state]), [['gw-a', 'up'], ['gw-b', 'up']]);
    t.ok(nodes.every((n) => /^127\.0\.0\.1:\d+$/.test(n.internalAddr ?? '')), 'each advertises its internal channel');
    // haproxy's checks mark both up, then connections alternate between them.
    const states = await waitFor(async () => { const s = await lb.servers(); return Object.values(s).every((v) => /^UP .*L7OK$/.test(v)) ? s : null; }, 15_000, 'haproxy to check every node ready');
    t.equal(Object.keys(states).length, 6, `haproxy checks both nodes' /readyz for each listener: ${JSON.stringify(states)}`);
    const s = await secretOn(apiLb, 'prod-db', 'read', true);
    const seen = new Set<string>();
    await waitFor(async () => {
      const r = await psql(lb.ports['postgres']!, s.secret, 'SELECT 1');
      if (r.code !== 0) return false;
      const sessions = await store.listSessions({ grantId: s.grantId });
      for (const x of sessions) seen.add(x.gatewayId);
      return seen.size === 2;
    }, 30_000, 'sessions through haproxy on both nodes');
    t.same([...seen].sort(), ['gw-a', 'gw-b'], 'psql through haproxy reached both nodes');
    t.equal((await fetch(`http://127.0.0.1:${lb.ports['http']}/readyz`)).status, 200);
    await settled();
  });

  t.test('a secret issued on A connects on B once and only once', async (t) => {
    const s = await secretOn(apiA, 'prod-db', 'read');
    const first = await psql(b.ports['postgres']!, s.secret, 'SELECT current_user');
    t.equal(first.code, 0, first.stderr);
    t.match(first.stdout, /^tg_alice_/m, 'B minted the session role');
    const again = await psql(b.ports['postgres']!, s.secret, 'SELECT 1');
    t.not(again.code, 0);
    t.match(again.stderr, /already used/);
    for (let round = 0; round < 3; round++) {
      const r = await secretOn(apiA, 'prod-db', 'read');
      const [x, y] = await Promise.all([psql(a.ports['postgres']!, r.secret, 'SELECT 1'), psql(b.ports['postgres']!, r.secret, 'SELECT 1')]);
      t.equal([x, y].filter((c) => c.code === 0).length, 1, `round ${round}: two racing connections, to A and to B: one wins`);
      t.match([x, y].find((c) => c.code !== 0)!.stderr, /already used/);
    }
    await settled();
    t.same(await pgc.noSessionRoles(), [], 'no session role left');
  });

  t.test("a kill through A's API closes a psql and an ssh session on B within 250 ms", async (t) => {
    const { psqlProc, running, term, pgSession, sshSession } = await liveOnB(t);
    const psqlClosed = new Promise<number>((r) => psqlProc.once('close', () => r(performance.now())));
    const sshClosed = term.closed.then(() => performance.now());
    const t0 = performance.now();
    const kills = await Promise.all([pgSession, sshSession].map((s) => apiA('carol', 'POST', `/api/v1/sessions/${s.id}/kill`, { reason: 'cluster test' })));
    const [pgMs, sshMs] = [(await psqlClosed) - t0, (await sshClosed) - t0];
    t.ok(pgMs < 250, `psql on B closed ${pgMs.toFixed(0)} ms after the kill on A`);
    t.ok(sshMs < 250, `ssh on B closed ${sshMs.toFixed(0)} ms after the kill on A`);
    t.match(kills.map((k) => k.body), [{ ok: true, ended: true }, { ok: true, ended: true }], 'A answers once B has ended them');
    t.match((await running).stderr, /terminated by carol: cluster test/, 'psql read why');
    for (const s of [pgSession, sshSession]) t.match((await store.getSession(s.id))?.endReason, /^killed: /);
    t.equal((await store.listAudit({ action: 'session.kill', subject: pgSession.id })).length, 1, 'audited once, by A');
    await settled();
  });

  t.test('a lock created on B ends A\'s sessions it covers and refuses the next connection on A', async (t) => {
    const live = await secretOn(apiA, 'prod-db', 'read');
    const running = psql(a.ports['postgres']!, live.secret, 'SELECT pg_sleep(60)');
    await activeOn('gw-a', 'prod-db');
    await sleeping();
    const next = await secretOn(apiA, 'prod-db', 'read');
    const lock = await apiB('carol', 'POST', '/api/v1/locks', { scope: 'target', value: 'prod-db', reason: 'incident 17' });
    t.equal(lock.status, 201, JSON.stringify(lock.body));
    t.match((await running).stderr, /access locked \(target prod-db\): incident 17/, "A's live session ended by B's lock");
    const refused = await psql(a.ports['postgres']!, next.secret, 'SELECT 1');
    t.not(refused.code, 0);
    t.match(refused.stderr, /locked/, 'the next connection on A is refused');
    t.equal((await apiA('carol', 'DELETE', `/api/v1/locks/${lock.body.lock?.id ?? lock.body.id}`)).status, 200, 'lifted on A');
    await settled();
  });

  t.test('a SOC analyst on A watches a live ssh session on B; its recording replays from A', async (t) => {
    const s = await secretOn(apiA, 'nodes-web', 'user');
    const term = sshOn(b, s.secret, s.username);
    t.teardown(() => term.kill());
    await term.waitFor(/\$ $/m);
    const session = await activeOn('gw-b', 'nodes-web');
    const listed = (await apiA('carol', 'GET', '/api/v1/sessions?state=active')).body as { id: string; live: boolean; gatewayId: string }[];
    t.match(listed.find((x) => x.id === session.id), { live: true, gatewayId: 'gw-b' }, "A lists B's session as live");
    const frames: { type: string; data?: unknown }[] = [];
    const ws = new WebSocket(`${a.url.replace('http', 'ws')}/api/v1/sessions/${session.id}/live`, { headers: { authorization: `Bearer ${tokens['carol']}` } } as never);
    ws.onmessage = (m) => { frames.push(JSON.parse(String(m.data))); };
    await waitFor(() => frames[0]?.type === 'snapshot', 10_000, 'the snapshot');
    t.match(frames[0], { type: 'snapshot', session: { id: session.id, node: 'gw-b', target: 'nodes-web' } });
    term.type('echo cluster-watch-$((6*7))\n');
    await waitFor(() => frames.some((f) => f.type === 'o' && String(f.data).includes('cluster-watch-42')), 10_000, 'the live output on A');
    t.pass('A streamed what the shell on B printed');
    term.type('exit\n');
    await term.exited();
    await waitFor(() => frames.some((f) => f.type === 'end'), 10_000, 'the end frame');
    ws.close();
    t.match((await store.listAudit({ action: 'session.watch', subject: session.id }))[0]?.data, { node: 'gw-b' }, 'the watch is audited');
    await settled();
    const recs = (await apiA('carol', 'GET', `/api/v1/sessions/${session.id}`)).body.recordings as { id: string; kind: string }[];
    const cast = recs.find((r) => r.kind === 'cast')!;
    t.ok(cast, 'B recorded a cast into the shared directory');
    const verified = await apiA('carol', 'GET', `/api/v1/recordings/${cast.id}/verify`);
    t.match(verified.body, { ok: true }, 'A verifies its seal');
    const file = await fetch(`${a.url}/api/v1/recordings/${cast.id}`, { headers: { authorization: `Bearer ${tokens['carol']}` } });
    t.equal(file.status, 200);
    t.match(await file.text(), /cluster-watch-42/, 'and serves it for replay');
  });

  t.test('both nodes append concurrently to one audit chain that verifies', async (t) => {
    const before = (await store.lastAudit())!.seq;
    await Promise.all(Array.from({ length: 16 }, (_, i) => (i % 2 ? apiA : apiB)('alice', 'POST', '/api/v1/requests', { target: 'prod-db', role: 'read', duration: '10m', reason: `chain ${i}` })));
    const events = await store.listAudit({ afterSeq: before });
    t.ok(events.length >= 16, `${events.length} events appended meanwhile`);
    t.same(events.map((e) => e.seq), events.map((_, i) => before + 1 + i), 'one sequence without gaps');
    for (const api of [apiA, apiB]) t.match((await api('carol', 'GET', '/api/v1/audit/verify')).body, { ok: true });
    for (const r of await store.listRequests({ state: 'pending' })) await apiA('alice', 'POST', `/api/v1/requests/${r.id}/cancel`, { reason: 'done' });
  });

  t.test('an approval timeout both nodes time escalates once, then expires once', async (t) => {
    const r = await apiA('alice', 'POST', '/api/v1/requests', { target: 'prod-db', role: 'admin', duration: '10m', reason: 'timeout' });
    t.equal(r.status, 201);
    const done = await waitFor(async () => { const x = await store.getRequest(r.body.id); return x?.state === 'expired' ? x : null; }, 20_000, 'the request to time out twice');
    t.equal(done.escalations, 1);
    t.equal((await store.listAudit({ action: 'request.escalated', subject: r.body.id })).length, 1, 'one escalation, not one per node');
    // The expiry's audit event is appended after the state change commits: wait for it, then give a second node time to double it.
    await waitFor(async () => (await store.listAudit({ action: 'request.expired', subject: r.body.id })).length > 0, 10_000, 'the expiry audit event');
    await new Promise((res) => setTimeout(res, 1_500));
    t.equal((await store.listAudit({ action: 'request.expired', subject: r.body.id })).length, 1, 'one expiry');
  });

  t.test(`kill -9 of B mid-session: A ends its sessions and revokes the role and account within nodeTimeout + 10 s`, async (t) => {
    const { running, pgSession, sshSession } = await liveOnB(t);
    const leases = await waitFor(async () => {
      const ls = [...await store.listLeases({ sessionId: pgSession.id }), ...await store.listLeases({ sessionId: sshSession.id })];
      return ls.filter((l) => l.state === 'active').length === 2 ? ls : null;
    }, 15_000, 'both leases active');
    const role = leases.find((l) => l.kind === 'postgres-role')?.data['role'] as string;
    const account = leases.find((l) => l.target === 'nodes-web')?.data['account'] as string;
    t.ok((await pgc.sessionRoles()).includes(role), `role ${role} exists`);
    t.ok(userExists(account), `account ${account} exists`);
    const t0 = performance.now();
    b.signal('SIGKILL');
    await b.exited;
    await running;
    await waitFor(async () => !(await pgc.sessionRoles()).includes(role) && !userExists(account), (NODE_TIMEOUT_S + 10) * 1000, 'the role and the account to be gone');
    const took = performance.now() - t0;
    t.ok(took < (NODE_TIMEOUT_S + 10) * 1000, `role and account gone ${(took / 1000).toFixed(1)} s after kill -9 (nodeTimeout ${NODE_TIMEOUT_S} s)`);
    for (const s of [pgSession, sshSession]) t.match((await store.getSession(s.id))?.endReason, /^gateway_lost: .*gw-b.*gw-a/);
    t.match((await store.getNode('gw-b')), { state: 'lost', lostBy: 'gw-a' });
    const lost = await waitFor(async () => (await store.listAudit({ action: 'gateway.lost', subject: 'gw-b' }))[0], 10_000, 'gateway.lost');
    t.match(lost.data, { by: 'gw-a', sessions: 2, leases: 2, failed: 0 }, 'A audited what it reaped');
    // haproxy's check sees B gone: new connections reach A.
    const states = await waitFor(async () => { const s = await lb.servers(); return /^DOWN/.test(s['be_postgres/gw_b'] ?? '') ? s : null; }, 10_000, 'haproxy to mark B down');
    t.match(states, { 'be_http/gw_a': /^UP/, 'be_postgres/gw_a': /^UP/, 'be_ssh/gw_a': /^UP/, 'be_http/gw_b': /^DOWN/, 'be_ssh/gw_b': /^DOWN/ }, 'haproxy: A up, B down');
    const s = await secretOn(apiLb, 'prod-db', 'read', true);
    for (let i = 0; i < 3; i++) {
      const r = await waitFor(async () => { const x = await psql(lb.ports['postgres']!, s.secret, 'SELECT 1'); return x.code === 0 ? x : null; }, 10_000, 'psql through haproxy');
      t.equal(r.code, 0);
    }
    t.same([...new Set((await store.listSessions({ grantId: s.grantId })).map((x) => x.gatewayId))], ['gw-a'], 'all on A');
    t.match((await apiA('carol', 'GET', '/api/v1/audit/verify')).body, { ok: true }, 'the chain still verifies');
    t.equal(readFileSync(join(shared.dir, 'gateway.key'), 'utf8').length > 0, true);
  });
}
