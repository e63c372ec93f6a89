/**
 * GroupSync (auth/durable.ts): the fsync after a lease row runs off the event loop, and a burst of
 * requests shares fsyncs (group commit) while each caller still gets one that started after it asked.
 */
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GroupSync } from '../../auth/durable.js';
import { SqliteStore } from '../../proxy/store/sqlite.js';

const dir = mkdtempSync(join(tmpdir(), 'tg-gsync-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('a burst of 200 requests costs at most two fsyncs; each resolves', async (t) => {
  const f = join(dir, 'a');
  writeFileSync(f, 'x');
  const g = new GroupSync(f);
  await Promise.all(Array.from({ length: 200 }, () => g.sync()));
  t.ok(g.syncs >= 1 && g.syncs <= 2, `${g.syncs} fsyncs for 200 requests`);
  // A request made after a sync ended gets a sync of its own.
  const before = g.syncs;
  await g.sync();
  t.equal(g.syncs, before + 1, 'a later request gets a new fsync');
});

t.test('a request made while an fsync runs waits for the next one, which starts after it', async (t) => {
  const f = join(dir, 'b');
  writeFileSync(f, 'x');
  const g = new GroupSync(f);
  const order: string[] = [];
  const first = g.sync().then(() => order.push(`first done after ${g.syncs}`));
  const second = g.sync().then(() => order.push(`second done after ${g.syncs}`));
  await Promise.all([first, second]);
  t.same(order, ['first done after 1', 'second done after 2'], 'the second caller is served by the second fsync');
});

t.test('a file that cannot be opened rejects every waiter, and the next request tries again', async (t) => {
  const f = join(dir, 'missing');
  const g = new GroupSync(f);
  const rs = await Promise.allSettled([g.sync(), g.sync(), g.sync()]);
  t.same(rs.map((r) => r.status), ['rejected', 'rejected', 'rejected'], 'all rejected');
  writeFileSync(f, 'x');
  await g.sync();
  t.equal(g.syncs, 1, 'works once the file exists');
});

t.test('SQLite store: 100 concurrent lease rows all committed and the WAL synced', async (t) => {
  const store = new SqliteStore(join(dir, 'store.db'));
  await store.migrate();
  t.teardown(() => store.close());
  const now = Date.now();
  await Promise.all(Array.from({ length: 100 }, (_, i) => store.insertLease({
    id: `lease-${i}`, kind: 'postgres-role', target: 't', sessionId: null, grantId: 'g1', state: 'pending',
    data: { role: `tg_${i}` }, createdAt: now, activatedAt: null, revokedAt: null, error: null,
  })));
  t.equal((await store.listLeases({ state: ['pending'] })).length, 100, 'every lease row is there');
  const walSync = (store as unknown as { walSync: GroupSync }).walSync;
  t.ok(walSync.syncs >= 1 && walSync.syncs < 100, `${walSync.syncs} WAL fsyncs for 100 lease rows`);
});
