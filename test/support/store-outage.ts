/**
 * One store outage under a live ssh session through a real sshd, the way every store fault must go:
 * a new connection is refused with a clear message before anything is minted, the live session is
 * ended fail-closed (`store_unavailable`) and its account removed from the target anyway, audit
 * events are held meanwhile; once the store takes writes again the held events, the session's
 * final record and the recovery are written, new sessions open again and the audit chain verifies.
 * `fail` breaks the store (a full disk, a read-only server), `restore` mends it.
 */
import type tap from 'tap';
import { FAIL_CLOSED } from '../../proxy/gateway.js';
import type { TestGateway } from './gateway.js';
import { runClient, Terminal, until, userExists } from './sshd.js';

type Checks = Pick<typeof tap, 'equal' | 'ok' | 'match' | 'same' | 'not' | 'notOk' | 'notMatch'>;

export async function storeOutage(t: Checks, tg: TestGateway, o: { target: string; fail(): Promise<void> | void; restore(): Promise<void> | void; code: RegExp | string }): Promise<void> {
  const { port } = tg.listener('ssh');
  const grant = await tg.grant('alice', o.target, 'user');
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

  await o.fail();
  const refused = await tryOnce(secrets[1]!);
  t.not(refused.code, 0, 'a new session is refused');
  t.notMatch(refused.stdout, /opened-ok/);
  t.ok(refused.stderr.includes(FAIL_CLOSED.replace(/^Tollgate: /, '')), `with a clear message: ${refused.stderr.trim().slice(0, 300)}`);
  t.match(tg.gw.storeGuard.state, { ok: false, code: o.code }, `the store guard is failing (${JSON.stringify(tg.gw.storeGuard.state)})`);

  const code = await term.exited(30_000);
  t.not(code, 0, 'the live session is ended');
  t.match(term.out, /cannot write its audit store/, 'the client is told why');
  // Generous: userdel on a loaded machine; the bound here is "removed at all while the store fails".
  await until(() => !userExists(account), 30_000, 'the account to be removed');
  t.notOk(userExists(account), 'its account is removed from the target although the store cannot record it');
  t.ok(tg.gw.audit.held > 0, `audit events are held meanwhile (${tg.gw.audit.held})`);
  const dash = await tg.api('carol', 'GET', '/api/v1/portal/dashboard');
  t.equal(dash.status, 200, 'the dashboard is served from a store that cannot be written');
  t.match(dash.body?.failsafe?.store, { ok: false }, 'and shows the store failing');

  await o.restore();
  const ok = await until(async () => { const r = await tryOnce(secrets[2]!); return r.code === 0 ? r : null; }, 30_000, 'a session to open again');
  t.match(ok.stdout, /opened-ok/, 'the store is back: new sessions open');
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
}
