/**
 * The SQLite store gives the event loop back during a burst (proxy/store/sqlite.ts, STORE_SLICE_MS):
 * its statements resolve synchronously, so without turns 20,000 of them (1,000 sessions ending at
 * once, each a chain of updates) ran as one long event-loop turn. Every statement still runs, in
 * the order each caller issued it, and statements outside a transaction keep waiting for it.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHECKPOINT_MS, SqliteStore, STORE_SLICE_MS } from '../../proxy/store/sqlite.js';

const dir = mkdtempSync(join(tmpdir(), 'tg-slice-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const store = new SqliteStore(join(dir, 'store.db'));
await store.migrate();
t.teardown(() => store.close());

t.test('1,000 chains of 20 statements: all done, each chain in order, and timers keep firing in between', async (t) => {
  // A timer every 5 ms: the longest gap between two firings is how long the loop was held.
  let last = performance.now();
  let worst = 0;
  const tick = setInterval(() => { const n = performance.now(); worst = Math.max(worst, n - last); last = n; }, 5);
  const chain = async (i: number) => {
    for (let k = 0; k < 20; k++) await store.setKv(`c${i}`, String(k));
    return store.getKv(`c${i}`);
  };
  const t0 = performance.now();
  last = t0;
  const got = await Promise.all(Array.from({ length: 1000 }, (_, i) => chain(i)));
  const end = performance.now();
  const took = end - t0;
  clearInterval(tick);
  worst = Math.max(worst, end - last); // a timer that never fired during the burst: the loop was held for all of it
  t.ok(got.every((v) => v === '19'), 'every chain saw its own last write (in order)');
  t.ok(worst < STORE_SLICE_MS * 12, `the event loop was never held long: longest timer gap ${worst.toFixed(1)} ms over ${took.toFixed(0)} ms of store work (slice ${STORE_SLICE_MS} ms)`);
  t.ok(took > STORE_SLICE_MS, 'the burst spanned several turns');
});

t.test('FIFO across callers: a statement issued later never overtakes a waiting one', async (t) => {
  const order: number[] = [];
  const all: Promise<unknown>[] = [];
  // Enough work to fill a slice, then numbered writes issued one after the other.
  for (let i = 0; i < 3000; i++) all.push(store.setKv('fill', String(i)));
  for (let i = 0; i < 200; i++) all.push(store.setKv(`n${i}`, 'x').then(() => order.push(i)));
  await Promise.all(all);
  t.same(order, Array.from({ length: 200 }, (_, i) => i), 'completed in the order issued');
  t.equal(await store.getKv('fill'), '2999', 'the last fill write is the one kept');
});

t.test('statements outside wait for an open transaction; statements inside it never wait for a turn', async (t) => {
  const burst = Array.from({ length: 2000 }, (_, i) => store.setKv(`b${i}`, 'x'));
  let opened!: () => void;
  const isOpen = new Promise<void>((r) => { opened = r; });
  const inTx = store.transaction(async (tx) => {
    await tx.setKv('tx-a', '1');
    opened();
    await new Promise((r) => setTimeout(r, 20));
    await tx.setKv('tx-b', '1');
    return tx.getKv('tx-a');
  });
  await isOpen;
  const outside = store.getKv('tx-b');
  t.equal(await inTx, '1');
  t.equal(await outside, '1', 'the statement outside ran after the transaction committed');
  await Promise.all(burst);
  t.equal(await store.getKv('b1999'), 'x');
});

t.test('checkpoints run in the checkpointer thread: the main connection never checkpoints, the database file still takes the WAL', async (t) => {
  const path = join(dir, 'ckpt.db');
  const s2 = new SqliteStore(path);
  await s2.migrate();
  t.teardown(() => s2.close());
  const db = (s2 as unknown as { db: { pragma(q: string, o?: { simple: boolean }): unknown } }).db;
  t.equal(db.pragma('wal_autocheckpoint', { simple: true }), 0, 'no automatic checkpoint inside a commit on the event loop');
  const { statSync } = await import('node:fs');
  // Wait for the schema to be checkpointed first, so the growth below is the rows'.
  await new Promise((r) => setTimeout(r, CHECKPOINT_MS * 2 + 500));
  const before = statSync(path).size;
  const big = 'x'.repeat(4000);
  for (let i = 0; i < 2000; i++) await s2.setKv(`k${i}`, big);
  t.ok(statSync(`${path}-wal`).size > 4_000_000, 'the rows are in the WAL');
  let after = before;
  for (let i = 0; i < 20 && after < before + 4_000_000; i++) {
    await new Promise((r) => setTimeout(r, CHECKPOINT_MS / 2));
    after = statSync(path).size;
  }
  t.ok(after >= before + 4_000_000, `the checkpointer copied them into the database file (${before} -> ${after} bytes)`);
});
