/**
 * The store's disk fills (SQLite on a small tmpfs the test fills) under a live ssh session through
 * a real sshd and a live psql session to a real PostgreSQL: new ssh and psql connections are refused
 * with a clear message before anything is minted, the live sessions are ended fail-closed
 * (`store_unavailable`, psql gets it as a FATAL) and their account and role removed from the
 * targets anyway, audit events are held meanwhile; when space is back the held events, the
 * sessions' final records and the recovery are written, new sessions open again and the audit chain
 * verifies.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestGateway } from '../support/gateway.js';
import { haveSshd, startTestSshd } from '../support/sshd.js';
import { havePostgres, startTestCluster } from '../support/pg.js';
import { storeOutage } from '../support/store-outage.js';

if (!haveSshd || !havePostgres) throw new Error('this test needs sshd (as root) and PostgreSQL');

t.test('SQLite store disk full: refuse new sessions, end live ones fail-closed, hold the audit; recover when space is back', async (t) => {
  const sshd = await startTestSshd(t, { eph: 'sf-box', cert: 'sf-box-cert', pw: 'sf-box-pw' });
  const pgc = await startTestCluster(t, 'sf-db');
  const dataDir = mkdtempSync(join(tmpdir(), 'tg-storedisk-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m,mode=0700', 'tmpfs', dataDir]);
  const recDir = mkdtempSync(join(tmpdir(), 'tg-storedisk-rec-'));
  const filler = join(dataDir, 'filler');
  t.teardown(() => {
    try { execFileSync('umount', ['-l', dataDir]); } catch { /* already */ }
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(recDir, { recursive: true, force: true });
  });
  const tg = await startTestGateway({ targets: [sshd.targets[0]!, pgc.target], listeners: ['ssh', 'postgres'], dataDir, store: 'sqlite', extra: { recordings: { dir: recDir } } });
  t.teardown(() => tg.close());
  await storeOutage(t, tg, {
    target: 'sf-box',
    pg: { target: pgc.target.name, roles: () => pgc.sessionRoles() },
    // dd stops at ENOSPC: the store's disk is full.
    fail: () => { try { execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k'], { stdio: 'ignore' }); } catch { /* full */ } },
    restore: () => rmSync(filler, { force: true }),
    code: /^SQLITE_FULL/,
  });
});
