/**
 * SQLite checkpoints run in a worker thread (proxy/store/sqlite.ts CHECKPOINTER): the automatic
 * checkpoint inside a commit on the event loop synced both files there and, on a busy disk, held
 * the loop for seconds.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHECKPOINT_MS, SqliteStore } from '../../proxy/store/sqlite.js';

const dir = mkdtempSync(join(tmpdir(), 'tg-ckpt-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

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
