/**
 * The control bus on its own, on a real PostgreSQL store and on SQLite: a message reaches the other
 * node through NOTIFY; a node that gets no notification (its LISTEN delivers nothing) still applies
 * it from the catch-up query, once; a message committed late (a seq below one already handled)
 * is still applied; a hole that never fills is passed after gapMs; the publisher never applies its
 * own message; rows of the store are the same on both dialects.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { Secret } from '../../auth/secret.js';
import { ControlBus, selects, type ControlMessage } from '../../proxy/cluster/bus.js';
import { openPostgresStore, type PgStore } from '../../proxy/store/postgres.js';
import { openSqliteStore } from '../../proxy/store/sqlite.js';
import type { Store } from '../../proxy/store/types.js';
import { havePostgres, testDatabase, waitFor } from '../support/pg.js';

const log = pino({ level: 'silent' });
const kill = (id: string): ControlMessage => ({ kind: 'end', select: { session: id }, reason: { code: 'killed', message: `kill ${id}` } });

function busOn(store: Store, nodeId: string, o: { pollMs?: number; gapMs?: number } = {}) {
  const got: { id: string; node: string }[] = [];
  const bus = new ControlBus({ store, nodeId, log, pollMs: o.pollMs ?? 60_000, gapMs: o.gapMs, apply: (m) => { got.push({ id: m.select.session!, node: nodeId }); } });
  return { bus, got };
}

t.test('selectors', async (t) => {
  const s = { id: 's1', identity: 'alice', target: { name: 'db' }, grant: { id: 'g1' }, principal: { credential: { kind: 'key', id: 'k1', linkId: 'l1' } } };
  t.ok(selects({ session: 's1' }, s));
  t.ok(selects({ grant: 'g1' }, s));
  t.ok(selects({ link: 'l1' }, s));
  t.ok(selects({ keyIdentity: 'alice' }, s));
  t.ok(selects({ lock: { scope: 'target', value: 'db' } }, s));
  t.ok(selects({ lock: { scope: 'identity', value: 'alice' } }, s));
  t.ok(selects({ node: 'n1' }, s, 'n1'));
  t.notOk(selects({ token: 'k1' }, s), 'a key is not a token');
  t.notOk(selects({ session: 's2', grant: 'g2', lock: { scope: 'grant', value: 'g2' } }, s));
  t.notOk(selects({}, s), 'an empty selector matches nothing');
});

t.test('SQLite: catch-up from the store, a rolled-back seq is a hole passed after gapMs', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-bus-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const a = await openSqliteStore(join(dir, 'tg.db'));
  const b = await openSqliteStore(join(dir, 'tg.db'));
  t.teardown(async () => { await a.close(); await b.close(); });
  const A = busOn(a, 'a');
  const B = busOn(b, 'b', { gapMs: 200 });
  await A.bus.start();
  await B.bus.start();
  t.teardown(async () => { await A.bus.close(); await B.bus.close(); });
  t.equal(b.listenControl, undefined, 'SQLite has no LISTEN: workers use IPC, and every node polls');
  const e1 = await A.bus.publish(kill('s1'));
  await B.bus.catchUp();
  t.same(B.got, [{ id: 's1', node: 'b' }], 'B applied it from the store');
  t.same(A.got, [], 'A did not apply its own message');
  // A seq whose row never shows (as a rolled-back INSERT leaves on PostgreSQL): a hole.
  const gone = await a.appendControlEvent({ at: Date.now(), origin: 'a', kind: 'end', data: {} });
  (a as unknown as { rawForTests(sql: string, ...args: unknown[]): unknown }).rawForTests('DELETE FROM control_events WHERE seq = ?', gone.seq);
  const e3 = await A.bus.publish(kill('s3'));
  t.equal(e3.seq, e1.seq + 2, 'seq skipped one');
  await B.bus.catchUp();
  t.same(B.got.map((g) => g.id), ['s1', 's3'], 'the message after the hole is applied at once');
  t.equal(B.bus.handledUpTo, e1.seq, 'the watermark waits at the hole');
  await new Promise((r) => setTimeout(r, 250));
  await B.bus.catchUp();
  t.equal(B.bus.handledUpTo, e3.seq, 'and passes it after gapMs');
  t.equal(B.bus.stats.skippedHoles, 1);
  B.bus.receive(e3);
  await B.bus.catchUp();
  t.equal(B.got.length, 2, 'nothing applied twice (IPC and catch-up)');
});

if (!havePostgres) {
  t.fail('PostgreSQL is required');
} else {
  t.test('PostgreSQL: NOTIFY, a node that missed it, a late commit', async (t) => {
    const db = await testDatabase();
    t.teardown(() => db.drop());
    const open = () => openPostgresStore({ url: new Secret(db.url), poolSize: 3, log, applicationName: 'tollgate/bus-test' });
    const [sa, sb, sc] = await Promise.all([open(), open(), open()]);
    t.teardown(async () => { await sa.close(); await sb.close(); await sc.close(); });
    // C's LISTEN connects but delivers nothing: a node that misses every notification.
    const deaf: Store = Object.assign(Object.create(sc) as PgStore, {
      listenControl: (h: { onConnect(): void }) => { setImmediate(() => h.onConnect()); return { close: async () => undefined }; },
    });
    const A = busOn(sa, 'a');
    const B = busOn(sb, 'b');
    const C = busOn(deaf, 'c', { pollMs: 100 });
    for (const x of [A, B, C]) await x.bus.start();
    t.teardown(async () => { for (const x of [A, B, C]) await x.bus.close(); });
    await waitFor(() => B.bus.listening, 5_000, "B's LISTEN");
    const t0 = performance.now();
    await A.bus.publish(kill('p1'));
    await waitFor(() => B.got.length === 1, 5_000, 'B to get the NOTIFY');
    t.ok(performance.now() - t0 < 1_000, `B applied it ${(performance.now() - t0).toFixed(0)} ms after the publish`);
    t.equal(B.bus.stats.viaNotify, 1, 'through the notification');
    await waitFor(() => C.got.length === 1, 5_000, 'C to catch up');
    t.equal(C.bus.stats.viaCatchUp, 1, 'C, which heard nothing, applied it from the catch-up query');
    t.same(A.got, [], 'not the publisher');

    // A row committed after a later one (two nodes inserting at once): both are applied.
    const raw = new pg.Client({ connectionString: db.url });
    await raw.connect();
    t.teardown(() => raw.end());
    await raw.query('BEGIN');
    // The store's own statement (row and NOTIFY), inside a transaction that commits later.
    const late = kill('late');
    const sql = `WITH ins AS (INSERT INTO control_events (at, origin, kind, data) VALUES ($1, 'z', 'end', $2) RETURNING *)
      SELECT pg_notify('tollgate_control', json_build_object('seq', seq, 'at', at, 'origin', origin, 'kind', kind, 'data', data)::text) FROM ins`;
    await raw.query(sql, [Date.now(), JSON.stringify({ select: late.select, reason: late.reason })]);
    await A.bus.publish(kill('p2'));
    await waitFor(() => B.got.some((g) => g.id === 'p2') && C.got.some((g) => g.id === 'p2'), 5_000, 'p2');
    await raw.query('COMMIT');
    await waitFor(() => B.got.some((g) => g.id === 'late') && C.got.some((g) => g.id === 'late'), 5_000, 'the late row on B and C');
    t.same(B.got.map((g) => g.id), ['p1', 'p2', 'late']);
    t.same(C.got.map((g) => g.id), ['p1', 'p2', 'late']);

    // B's LISTEN connection is cut: it reconnects, catches up, and goes on hearing notifications.
    const su = new pg.Client({ connectionString: db.url });
    await su.connect();
    t.teardown(() => su.end());
    const cut = await su.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'tollgate/bus-test/listen' AND datname = current_database()`);
    t.ok(cut.rowCount! >= 2, 'LISTEN connections terminated');
    await A.bus.publish(kill('p3'));
    await waitFor(() => B.got.some((g) => g.id === 'p3'), 10_000, 'p3 on B after its reconnect');
    await waitFor(() => B.bus.listening, 10_000, 'B listening again');
    t.ok(B.bus.stats.listenErrors >= 1, 'B saw its connection fail');
    await A.bus.publish(kill('p4'));
    await waitFor(() => B.got.some((g) => g.id === 'p4'), 5_000, 'p4');
    t.equal(B.got.filter((g) => g.id === 'p3').length, 1, 'applied once');
  });
}
