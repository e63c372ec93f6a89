/**
 * The PostgreSQL store becomes read-only (the server's own read-only mode: ALTER SYSTEM SET
 * default_transaction_read_only, reloaded, so every open connection of the pool is read-only too,
 * as after a fail-over to a standby) under a live ssh session through a real sshd: a new connection
 * is refused with a clear message before anything is minted, the live session is ended
 * fail-closed (`store_unavailable`) and its account removed from the target anyway, audit events
 * are held; when the store takes writes again the held events and the session's final record are
 * written, new sessions open again and the audit chain verifies.
 *
 * A SQLite store whose file system turns read-only: store-sqlite-readonly.test.ts; a full disk:
 * store-failure.test.ts. SQLITE_READONLY, SQLITE_IOERR and SQLITE_FULL are all classified as
 * "store unavailable" (proxy/failsafe.ts storeUnavailable).
 */
import t from 'tap';
import { startTestGateway } from '../support/gateway.js';
import { havePostgres, startTestCluster, testDatabase } from '../support/pg.js';
import { haveSshd, startTestSshd } from '../support/sshd.js';
import { storeOutage } from '../support/store-outage.js';

if (!haveSshd || !havePostgres) throw new Error('this test needs sshd (as root) and PostgreSQL');

t.test('PostgreSQL store read-only: refuse new sessions, end live ones fail-closed, hold the audit; recover when writable', async (t) => {
  const sshd = await startTestSshd(t, { eph: 'ro-box', cert: 'ro-box-cert', pw: 'ro-box-pw' });
  // A cluster of its own: ALTER SYSTEM changes the whole server.
  const cluster = await startTestCluster(t, 'ro-store');
  const db = await testDatabase(undefined, cluster);
  const readOnly = async (on: boolean) => {
    const su = await cluster.su();
    try {
      await su.query(on ? 'ALTER SYSTEM SET default_transaction_read_only = on' : 'ALTER SYSTEM RESET default_transaction_read_only');
      await su.query('SELECT pg_reload_conf()');
    } finally { await su.end(); }
  };
  const tg = await startTestGateway({ targets: [sshd.targets[0]!], listeners: ['ssh'], storeUrl: db.url });
  t.teardown(() => tg.close());
  // 25006: read_only_sql_transaction.
  await storeOutage(t, tg, { target: 'ro-box', fail: () => readOnly(true), restore: () => readOnly(false), code: '25006' });
});
