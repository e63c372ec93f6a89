/**
 * The store's disk fills (SQLite on a small tmpfs the test fills) under a live ssh session through
 * a real sshd: a new connection is refused with a clear message before anything is minted, the
 * live session is ended fail-closed (`store_unavailable`) and its account removed from the target
 * anyway, audit events are held meanwhile; when space is back the held events, the session's final
 * record and the recovery are written, new sessions open again and the audit chain verifies.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FAIL_CLOSED } from '../../proxy/gateway.js';
import { startTestGateway } from '../support/gateway.js';
import { haveSshd, runClient, startTestSshd, Terminal, until, userExists } from '../support/sshd.js';

if (!haveSshd) throw new Error('this test needs sshd (as root)');

t.test('store disk full: refuse new sessions, end live ones fail-closed, hold the audit; recover when space is back', async (t) => {
  const sshd = await startTestSshd(t, { eph: 'sf-box', cert: 'sf-box-cert', pw: 'sf-box-pw' });
  const dataDir = mkdtempSync(join(tmpdir(), 'tg-storedisk-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m,mode=0700', 'tmpfs', dataDir]);
  const recDir = mkdtempSync(join(tmpdir(), 'tg-storedisk-rec-'));
  const filler = join(dataDir, 'filler');
  t.teardown(() => {
    try { execFileSync('umount', ['-l', dataDir]); } catch { /* already */ }
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(recDir, { recursive: true, force: true });
  });
  const tg = await startTestGateway({ targets: [sshd.targets[0]!], listeners: ['ssh'], dataDir, store: 'sqlite', extra: { recordings: { dir: recDir } } });
  t.teardown(() => tg.close());
  const { port } = tg.listener('ssh');
  const grant = await tg.grant('alice', 'sf-box', 'user');
  const secrets = [await tg.secret('alice', grant.id), await tg.secret('alice', grant.id), await tg.secret('alice', grant.id)];
  const tryOnce = (s: { secret: string; username: string }) =>
    runClient(s.secret, 'ssh', ['-p', String(port), `${s.username}@127.0.0.1`, 'echo opened-ok'], { timeoutMs: 20_000 });

  const term = new Terminal(secrets[0]!.secret, ['-p', String(port), `${secrets[0]!.username}@127.0.0.1`]);
  term.type('echo hello-$((6*7))\n');
  await term.waitFor(/hello-42/);
  const [lease] = await tg.store.listLeases({ state: ['active'] });
  const account = lease!.data['account'] as string;
  const sessionId = lease!.sessionId!;
  t.ok(userExists(account), 'the live session has its account');

  // dd stops at ENOSPC: the store's disk is full.
  try { execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k'], { stdio: 'ignore' }); } catch { /* full */ }

  const refused = await tryOnce(secrets[1]!);
  t.not(refused.code, 0, 'a new session is refused');
  t.notMatch(refused.stdout, /opened-ok/);
  t.ok(refused.stderr.includes(FAIL_CLOSED.replace(/^Tollgate: /, '')), `with a clear message: ${refused.stderr.trim().slice(0, 300)}`);
  t.match(tg.gw.storeGuard.state, { ok: false, code: /^SQLITE_FULL/ }, 'the store guard is failing');

  const code = await term.exited(30_000);
  t.not(code, 0, 'the live session is ended');
  t.match(term.out, /cannot write its audit store/, 'the client is told why');
  await until(() => !userExists(account), 10_000, 'the account to be removed');
  t.notOk(userExists(account), 'its account is removed from the target although the store cannot record it');
  t.ok(tg.gw.audit.held > 0, `audit events are held meanwhile (${tg.gw.audit.held})`);
  const dash = await tg.api('carol', 'GET', '/api/v1/portal/dashboard');
  t.equal(dash.status, 200, 'the dashboard is served from a store that cannot be written');
  t.match(dash.body?.failsafe?.store, { ok: false }, 'and shows the store failing');

  rmSync(filler, { force: true });
  const ok = await until(async () => { const r = await tryOnce(secrets[2]!); return r.code === 0 ? r : null; }, 20_000, 'a session to open again');
  t.match(ok.stdout, /opened-ok/, 'space is back: new sessions open');
  t.equal(tg.gw.audit.held, 0, 'the held audit events are written');
  const s = await tg.store.getSession(sessionId);
  t.match(s, { state: 'ended', endReason: /^store_unavailable: / }, "the ended session's final record is written with its reason");
  const ended = await tg.store.listAudit({ action: 'session.ended', subject: sessionId });
  t.same(ended.map((e) => e.data['reason']), ['store_unavailable'], 'its end is audited (held, then written)');
  t.equal((await tg.store.listAudit({ action: 'store.failing' })).length, 1, 'the failure is audited');
  t.equal((await tg.store.listAudit({ action: 'store.recovered' })).length, 1, 'the recovery is audited');
  await until(async () => (await tg.store.listLeases({ state: ['pending', 'active', 'revoking'] })).length === 0, 10_000, 'no live lease');
  t.same(await tg.store.listLeases({ state: ['pending', 'active', 'revoking'] }), [], 'no live lease left in the store');
  t.match((await tg.api('carol', 'GET', '/api/v1/audit/verify')).body, { ok: true }, 'the audit chain verifies');
});
