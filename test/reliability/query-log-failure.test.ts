/**
 * The SQLite store's query log is written from a timer (proxy/store/sql.ts insertQuery). When the
 * store cannot take the rows (a full disk, a file system turned read-only: found by
 * store-sqlite-readonly.test.ts, where the flush threw SQLITE_IOERR_WRITE out of the timer and
 * would have ended the gateway process), the flush must not throw: the rows wait (bounded) and are
 * written once the store takes them again. Here the store refuses them deterministically: the
 * query_log table is renamed away, then back.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../proxy/store/sqlite.js';
import { QUERY_FLUSH_MS, QUERY_RETRY_MS } from '../../proxy/store/sql.js';

t.test('SQLite: a query-log flush the store refuses never throws from its timer; the rows are written later', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-qlog-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const store = new SqliteStore(join(dir, 'tollgate.db'));
  await store.migrate();
  t.teardown(() => store.close());
  const uncaught: unknown[] = [];
  const onUncaught = (e: unknown) => { uncaught.push(e); };
  // tap turns an uncaught exception into a failure too; count it here to say what it was.
  process.prependListener('uncaughtException', onUncaught);
  t.teardown(() => { process.off('uncaughtException', onUncaught); });

  store.rawForTests('ALTER TABLE query_log RENAME TO query_log_away');
  for (let i = 1; i <= 3; i++) {
    await store.insertQuery({ sessionId: 's1', at: i, statement: `select ${i}`, kind: 'SELECT', params: 0, durationMs: 1, rows: 1, error: null, decision: 'allow' });
  }
  await new Promise((r) => setTimeout(r, QUERY_FLUSH_MS * 4));
  t.same(uncaught, [], 'the timer flush did not throw');
  t.equal((store as unknown as { queryQueue: unknown[] }).queryQueue.length, 3, 'the rows wait in the queue');

  store.rawForTests('ALTER TABLE query_log_away RENAME TO query_log');
  await new Promise((r) => setTimeout(r, QUERY_RETRY_MS + 500));
  t.equal((store as unknown as { queryQueue: unknown[] }).queryQueue.length, 0, 'the retry wrote them');
  t.same((await store.listQueries('s1')).map((q) => q.statement), ['select 1', 'select 2', 'select 3'], 'all of them, in order');
  t.same(uncaught, [], 'nothing was thrown at any point');
});
