/**
 * Fail-closed recording (recordings.onFailure), against a real sshd through a real ssh client:
 * the recordings live on a small tmpfs that the test fills. With `refuse` (the default) the
 * session whose recording fails is ended with a reason the client sees, its account is removed,
 * new sessions are refused with a clear message, the failure is audited, alerted (notify.command)
 * and shown on the dashboard; once space is back, new sessions work again (audited as recovered).
 * With `continue` the session runs on unrecorded and new sessions open, audited all the same.
 */
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FAIL_CLOSED } from '../../proxy/gateway.js';
import { startTestGateway } from '../support/gateway.js';
import { haveSshd, runClient, startTestSshd, Terminal, until, userExists } from '../support/sshd.js';

if (!haveSshd) throw new Error('this test needs sshd (as root)');

/** A 2 MiB tmpfs for the recordings, unmounted in teardown. */
function smallDisk(t: Test): { dir: string; fill(): void; free(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'tg-recdisk-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m,mode=0700', 'tmpfs', dir]);
  t.teardown(() => {
    try { execFileSync('umount', ['-l', dir]); } catch { /* already */ }
    rmSync(dir, { recursive: true, force: true });
  });
  const filler = join(dir, 'filler');
  return {
    dir,
    fill() {
      // dd stops at ENOSPC (exit 1): the disk is full.
      try { execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k'], { stdio: 'ignore' }); } catch { /* full */ }
    },
    free() { rmSync(filler, { force: true }); },
  };
}

async function setup(t: Test, onFailure?: string) {
  const sshd = await startTestSshd(t, { eph: `rf-${onFailure ?? 'default'}`, cert: `rf-${onFailure ?? 'default'}-cert`, pw: `rf-${onFailure ?? 'default'}-pw` });
  const disk = smallDisk(t);
  const alerts = join(mkdtempSync(join(tmpdir(), 'tg-alerts-')), 'alerts.ndjson');
  t.teardown(() => rmSync(join(alerts, '..'), { recursive: true, force: true }));
  const tg = await startTestGateway({
    targets: [sshd.targets[0]!], listeners: ['ssh'],
    extra: { recordings: { dir: disk.dir, ...(onFailure ? { onFailure } : {}) }, notify: { command: ['sh', '-c', `cat >> ${alerts}`] } },
  });
  t.teardown(() => tg.close());
  const { port } = tg.listener('ssh');
  const grant = await tg.grant('alice', sshd.targets[0]!.name, 'user');
  const open = async () => {
    const s = await tg.secret('alice', grant.id);
    return { s, term: new Terminal(s.secret, ['-p', String(port), `${s.username}@127.0.0.1`]) };
  };
  const tryOnce = async () => {
    const s = await tg.secret('alice', grant.id);
    return runClient(s.secret, 'ssh', ['-p', String(port), `${s.username}@127.0.0.1`, 'echo opened-ok'], { timeoutMs: 20_000 });
  };
  const alerted = () => existsSync(alerts) ? readFileSync(alerts, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
  return { tg, disk, open, tryOnce, alerted };
}

t.test('onFailure refuse (default): the failing session ends, new ones are refused, audited, alerted, on the dashboard; recovers', async (t) => {
  const { tg, disk, open, tryOnce, alerted } = await setup(t);
  t.equal(tg.gw.config.recordings.onFailure, 'refuse', 'refuse is the default');
  const { term } = await open();
  term.type('echo hello-$((6*7))\n');
  await term.waitFor(/hello-42/);
  const account = (await tg.store.listLeases({ state: ['active'] }))[0]!.data['account'] as string;
  t.ok(userExists(account), 'the minted account exists');

  disk.fill();
  // More output than the flush threshold: the next write hits ENOSPC.
  term.type('head -c 300000 /dev/zero | tr "\\0" x; echo\n');
  const code = await term.exited(30_000);
  t.not(code, 0, 'the client is disconnected');
  t.match(term.out, /recording cannot be written \(ENOSPC\)/, 'the client is told why');
  await until(() => !userExists(account), 10_000, 'the account to be removed');
  t.notOk(userExists(account), "the ended session's account is gone");
  const ended = await until(async () => { const e = await tg.store.listAudit({ action: 'session.ended' }); return e.length ? e : null; }, 10_000, 'session.ended');
  t.same(ended.map((e) => e.data['reason']), ['recording_failed'], 'audited as ended recording_failed');
  t.ok((await tg.store.listAudit({ action: 'recording.write_failed' })).some((e) => e.data['code'] === 'ENOSPC'), 'the write failure is audited');
  t.equal((await tg.store.listAudit({ action: 'recording.failing' })).length, 1, 'the failing state is audited once');
  await until(() => alerted().some((a) => a.kind === 'recording_failed'), 10_000, 'the alert');
  t.match(alerted().find((a) => a.kind === 'recording_failed'), { code: 'ENOSPC', onFailure: 'refuse' }, 'alerted through notify.command');
  const recs = await tg.store.listRecordings({ sessionId: ended[0]!.subject! });
  t.ok(recs.some((r) => r.cut === 'write_failed'), 'the recording is marked as cut by the failed write');

  const dash = await tg.api('carol', 'GET', '/api/v1/portal/dashboard');
  t.match(dash.body.failsafe.recordings, { ok: false, code: 'ENOSPC', onFailure: 'refuse' }, 'the dashboard shows recordings failing');

  const refused = await tryOnce();
  t.not(refused.code, 0, 'a new session is refused');
  t.notMatch(refused.stdout, /opened-ok/);
  t.ok(refused.stderr.includes(FAIL_CLOSED.replace(/^Tollgate: /, '')), `with a clear message: ${refused.stderr.trim().slice(0, 300)}`);
  t.equal((await tg.store.listLeases({ state: ['pending', 'active', 'revoking'] })).length, 0, 'and nothing is minted for it');

  disk.free();
  const ok = await until(async () => { const r = await tryOnce(); return r.code === 0 ? r : null; }, 20_000, 'a session to open again');
  t.match(ok.stdout, /opened-ok/, 'space is back: new sessions open');
  t.equal((await tg.store.listAudit({ action: 'recording.recovered' })).length, 1, 'the recovery is audited');
  t.match((await tg.api('carol', 'GET', '/api/v1/portal/dashboard')).body.failsafe.recordings, { ok: true });
  t.match((await tg.api('carol', 'GET', '/api/v1/audit/verify')).body, { ok: true }, 'the audit chain verifies');
});

t.test('onFailure continue: the session runs on unrecorded and new sessions open, audited and alerted', async (t) => {
  const { tg, disk, open, tryOnce, alerted } = await setup(t, 'continue');
  const { term } = await open();
  term.type('echo hello-$((6*7))\n');
  await term.waitFor(/hello-42/);
  disk.fill();
  term.type('head -c 300000 /dev/zero | tr "\\0" x; echo\n');
  await until(async () => (await tg.store.listAudit({ action: 'recording.write_failed' })).length > 0, 15_000, 'the write failure');
  term.type('echo still-$((6*8))\n');
  await term.waitFor(/still-48/);
  t.equal(term.code, undefined, 'the session runs on');
  const r = await tryOnce();
  t.equal(r.code, 0, 'new sessions open');
  t.match(r.stdout, /opened-ok/);
  await until(() => alerted().some((a) => a.kind === 'recording_failed'), 10_000, 'the alert');
  t.match(alerted().find((a) => a.kind === 'recording_failed'), { onFailure: 'continue' });
  t.equal((await tg.store.listAudit({ action: 'session.ended' })).filter((e) => e.data['reason'] === 'recording_failed').length, 0, 'no session ended for it');
  term.type('exit\n');
  await term.exited();
  disk.free();
});

t.test('onFailure terminate: one recording failing ends every live session, the idle one too', async (t) => {
  const { tg, disk, open, tryOnce } = await setup(t, 'terminate');
  const a = await open();
  const b = await open();
  for (const x of [a, b]) { x.term.type('echo hello-$((6*7))\n'); await x.term.waitFor(/hello-42/); }
  disk.fill();
  // Only a writes: b's recording has nothing to write and cannot fail by itself.
  a.term.type('head -c 300000 /dev/zero | tr "\\0" x; echo\n');
  t.not(await a.term.exited(30_000), 0, 'the session whose recording failed is ended');
  t.not(await b.term.exited(30_000), 0, 'the idle session is ended too');
  t.match(b.term.out, /every session was ended \(recordings.onFailure: terminate\)/, 'and told why');
  const reasons = await until(async () => {
    const e = await tg.store.listAudit({ action: 'session.ended' });
    return e.length === 2 ? e.map((x) => x.data['reason']) : null;
  }, 10_000, 'both session ends');
  t.same(reasons, ['recording_failed', 'recording_failed'], 'both audited as ended recording_failed');
  await until(async () => (await tg.store.listLeases({ state: ['pending', 'active', 'revoking'] })).length === 0, 10_000, 'leases revoked');
  const refused = await tryOnce();
  t.not(refused.code, 0, 'new sessions are refused');
  disk.free();
});
