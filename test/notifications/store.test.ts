/**
 * The store contract of the notification queue and the SIEM cursors, on SQLite and PostgreSQL
 * alike: a dedupe key is enqueued once across two handles (two gateways), due and failing
 * deliveries are listed as the queue and the dashboard need, a claim is won by one handle,
 * retention deletes only what is old and delivered, and a sink's cursor is created once and moves
 * by compare-and-set.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, type StoreConfig } from '../../proxy/store/index.js';
import type { NotificationDeliveryRecord, SiemCursorRecord, Store } from '../../proxy/store/types.js';
import { testDatabase } from '../support/pg.js';

type Kind = 'sqlite' | 'postgres';

async function twoHandles(t: Test, kind: Kind): Promise<[Store, Store]> {
  const dir = mkdtempSync(join(tmpdir(), 'tg-nstore-'));
  const db = kind === 'postgres' ? await testDatabase() : null;
  const cfg: StoreConfig = db
    ? { store: { kind: 'postgres', url: { value: db.url }, poolSize: 4 }, file: '<test>', baseDir: dir, gateway: { id: 'test' } }
    : { store: { kind: 'sqlite', path: 'db.sqlite' }, file: '<test>', baseDir: dir, gateway: { id: 'test' } };
  const a = await openStore(cfg, { dataDir: dir });
  const b = await openStore(cfg, { dataDir: dir });
  t.teardown(async () => { await a.close(); await b.close(); await db?.drop(); rmSync(dir, { recursive: true, force: true }); });
  return [a, b];
}

const delivery = (id: string, over: Partial<NotificationDeliveryRecord> = {}): NotificationDeliveryRecord => ({
  id, channel: 'email', topic: 'request.pending', recipient: 'bob@test', payload: { subject: 's', text: 't\u00e9', html: '<p>t</p>' }, state: 'pending',
  attempts: 0, nextAt: 100, createdAt: 100, updatedAt: 100, deliveredAt: null, lastError: null, dedupe: null, claimedBy: null, claimedUntil: null, ...over,
});

for (const kind of ['sqlite', 'postgres'] as const) {
  t.test(`${kind}: deliveries`, async (t) => {
    const [a, b] = await twoHandles(t, kind);
    t.equal(await a.enqueueDelivery(delivery('d1')), true, 'queued');
    t.same(await b.getDelivery('d1'), delivery('d1'), 'round-trips, seen by the other handle');
    // The same key from two gateways at once: one row.
    const both = await Promise.all([a.enqueueDelivery(delivery('d2', { dedupe: 'k|email|bob' })), b.enqueueDelivery(delivery('d3', { dedupe: 'k|email|bob' }))]);
    t.same(both.filter(Boolean).length, 1, 'a dedupe key is queued once');
    t.equal(await a.enqueueDelivery(delivery('d4', { dedupe: null })), true, 'rows without a key are never deduplicated');
    t.equal(await a.enqueueDelivery(delivery('d5', { dedupe: null })), true);

    await a.enqueueDelivery(delivery('later', { nextAt: 500 }));
    await a.enqueueDelivery(delivery('failed', { state: 'failed', attempts: 3, updatedAt: 300, lastError: 'x answered 500' }));
    await a.enqueueDelivery(delivery('retrying', { attempts: 1, nextAt: 400, updatedAt: 350, lastError: 'timeout' }));
    await a.enqueueDelivery(delivery('old', { state: 'delivered', attempts: 1, updatedAt: 10, deliveredAt: 10 }));
    await a.enqueueDelivery(delivery('new', { state: 'delivered', attempts: 1, updatedAt: 1000, deliveredAt: 1000 }));
    await a.enqueueDelivery(delivery('stuck', { state: 'sending', claimedBy: 'gw2', claimedUntil: 200 }));

    const due = await b.listDeliveries({ state: ['pending'], dueAt: 150 });
    t.same(due.map((d) => d.id).sort(), ['d1', both[0] ? 'd2' : 'd3', 'd4', 'd5'].sort(), 'due ones only, not those due later');
    t.same((await b.listDeliveries({ state: ['pending'], limit: 1 }))[0]?.nextAt, 100, 'earliest first');
    t.same((await b.listDeliveries({ state: ['pending', 'sending', 'failed'], failing: true, recent: true })).map((d) => d.id), ['retrying', 'failed'], 'failing, newest first');
    t.same((await b.listDeliveries({ state: ['sending'], claimedBefore: 199 })).length, 0);
    t.same((await b.listDeliveries({ state: ['sending'], claimedBefore: 200 })).map((d) => d.id), ['stuck'], 'claims that ran out');
    t.match(await a.countDeliveries(), { pending: 6, sending: 1, delivered: 2, failed: 1 });

    // One of two gateways wins the claim.
    const claims = await Promise.all([a, b, a, b].map((s, i) => s.claim('deliveries', 'd1', { state: 'pending', attempts: 0, nextAt: 100 }, { state: 'sending', claimedBy: `gw${i}`, claimedUntil: 999 })));
    t.equal(claims.filter(Boolean).length, 1, 'one claim wins');
    t.equal((await a.getDelivery('d1'))?.state, 'sending');

    t.equal(await b.deleteDeliveries({ state: 'delivered', before: 500 }), 1, 'retention: old delivered rows only');
    t.equal(await a.getDelivery('old'), null);
    t.ok(await a.getDelivery('new'));
    t.ok(await a.getDelivery('failed'), 'failed ones stay');
  });

  t.test(`${kind}: SIEM cursors`, async (t) => {
    const [a, b] = await twoHandles(t, kind);
    const c = (over: Partial<SiemCursorRecord> = {}): SiemCursorRecord => ({
      sink: 'syslog:s1', seq: 0, holder: null, heldUntil: null, updatedAt: 1, ackAt: null, failures: 0, lastError: null, lastErrorAt: null, ...over,
    });
    await a.ensureSiemCursor(c());
    await b.ensureSiemCursor(c({ seq: 99 }));
    t.same(await b.getSiemCursor('syslog:s1'), c(), 'created once; a second ensure changes nothing');
    const leases = await Promise.all([a, b].map((s, i) => s.claim('siemCursors', 'syslog:s1', { seq: 0, holder: null, heldUntil: null }, { holder: `gw${i}`, heldUntil: 50 })));
    t.equal(leases.filter(Boolean).length, 1, 'one gateway takes the lease');
    const holder = leases.find(Boolean)!.holder!;
    t.equal(await a.claim('siemCursors', 'syslog:s1', { seq: 0, holder: holder === 'gw0' ? 'gw1' : 'gw0' }, { seq: 10 }), null, 'the other cannot move the cursor');
    t.match(await b.claim('siemCursors', 'syslog:s1', { seq: 0, holder }, { seq: 10, ackAt: 5 }), { seq: 10, ackAt: 5, holder });
    await a.ensureSiemCursor(c({ sink: 'webhook:w' }));
    t.same((await b.listSiemCursors()).map((x) => [x.sink, x.seq]), [['syslog:s1', 10], ['webhook:w', 0]]);
  });
}
