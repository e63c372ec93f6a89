/**
 * Close-first teardown (proxy/sessions.ts): when the gateway ends a session (revoke, kill), the
 * client's connection is closed first and only then is the lease revoked, the recording sealed and
 * the end audited. Real gateway, real PostgreSQL target, node-postgres clients. The revoke of the
 * session role is wrapped to note when it starts and ends (and made slow, so "before the revoke
 * finished" is not decided by luck): the client must have seen its connection close before the
 * revoke started, and the lease must still end up revoked on the target and in the store, the
 * recordings sealed and session.ended audited after it.
 */
import t, { type Test } from 'tap';
import { havePostgres, startPgGateway, waitFor } from '../support/pg.js';

if (!havePostgres) {
  t.fail('PostgreSQL binaries are required (apt-get install postgresql postgresql-client)');
} else {
  const { pgc, tg, connect, secretFor, settle, liveSession } = await startPgGateway(t);
  const mgr = tg.gw.sessions;
  const original = mgr.revokeLease.bind(mgr);
  const revokes: { lease: string; startedAt: number; endedAt: number | null }[] = [];
  mgr.revokeLease = async (l) => {
    const r = { lease: l.id, startedAt: performance.now(), endedAt: null as number | null };
    revokes.push(r);
    await new Promise((res) => setTimeout(res, 300));
    try { return await original(l); } finally { r.endedAt = performance.now(); }
  };
  t.teardown(() => { mgr.revokeLease = original; });

  const checkEnded = async (t: Test, sessionId: string, code: string) => {
    await settle();
    const leases = await tg.store.listLeases({ sessionId });
    t.equal(leases.length, 1, 'one lease');
    t.equal(leases[0]!.state, 'revoked', 'the lease is revoked (confirmed by the module)');
    t.same(await pgc.noSessionRoles(), [], 'the session role is gone on the target');
    const recs = await tg.store.listRecordings({ sessionId });
    t.ok(recs.length > 0, 'the session has recordings');
    t.ok(recs.every((r) => r.state === 'sealed' && typeof r.sha256 === 'string'), 'every recording is sealed');
    const ended = await waitFor(async () => (await tg.store.listAudit({ action: 'session.ended', subject: sessionId }))[0], 10_000, 'session.ended audited');
    t.equal((ended.data as { reason?: string }).reason, code, `audited as ${code}`);
    t.same(((ended.data as { recordings?: unknown[] }).recordings ?? []).length, recs.length, 'the audit event carries the seals');
    const rec = (await tg.store.listSessions({ grantId: leases[0]!.grantId })).find((s) => s.id === sessionId);
    t.equal(rec?.state, 'ended');
    t.match(rec?.endReason, new RegExp(`^${code}:`));
  };

  t.test('grant revoke: the client sees its connection close before the lease revoke starts; the lease is still revoked', async (t) => {
    revokes.length = 0;
    const s = await secretFor('prod-db', 'read');
    const a = await connect('prod-db', s.secret);
    await a.c.query('SELECT 1'); // a statement, so the session has a recording to seal
    let closedAt = 0;
    void a.ended.then(() => { closedAt = performance.now(); });
    const live = await liveSession();
    const r = await tg.api('alice', 'POST', `/api/v1/grants/${s.grant.id}/revoke`, { reason: 'close-first test' });
    t.equal(r.status, 200, JSON.stringify(r.body));
    await a.ended;
    t.match(a.errors.map((e) => `${e.message} ${(e as { code?: string }).code}`).join(' '), /revoked: close-first test\. 57P01/, 'FATAL with the reason');
    const rv = await waitFor(async () => revokes.find((x) => x.endedAt !== null), 15_000, 'the revoke to finish');
    t.ok(closedAt > 0 && closedAt <= rv.startedAt, `the client closed (${closedAt.toFixed(1)}) before the revoke started (${rv.startedAt.toFixed(1)})`);
    t.ok(closedAt < rv.endedAt!, 'and before it finished');
    await checkEnded(t, live.id, 'revoked');
  });

  t.test('kill: same order', async (t) => {
    revokes.length = 0;
    const s = await secretFor('prod-db', 'read');
    const a = await connect('prod-db', s.secret);
    await a.c.query('SELECT 1'); // a statement, so the session has a recording to seal
    let closedAt = 0;
    void a.ended.then(() => { closedAt = performance.now(); });
    const live = await liveSession();
    const k = await tg.api('carol', 'POST', `/api/v1/sessions/${live.id}/kill`, { reason: 'close first' });
    t.equal(k.status, 200, JSON.stringify(k.body));
    await a.ended;
    const rv = await waitFor(async () => revokes.find((x) => x.endedAt !== null), 15_000, 'the revoke to finish');
    t.ok(closedAt > 0 && closedAt <= rv.startedAt, 'the client closed before the revoke started');
    await checkEnded(t, live.id, 'killed');
  });

  t.test('revoke while the session is still being set up: FATAL with the reason at once, nothing left on the target', async (t) => {
    revokes.length = 0;
    const s = await secretFor('prod-db', 'read');
    // Hold the new session between its start and the module's set-up (role, dial) until the revoke is through.
    const open = mgr.open.bind(mgr);
    let revokedAt = 0;
    let revoked: ReturnType<typeof tg.api> | null = null;
    mgr.open = async (auth, meta) => {
      const live = await open(auth, meta);
      // The revoke lands while the module mints the session role (its lease), then the mint goes on.
      const lease = live.lease.bind(live);
      live.lease = (async (...args: Parameters<typeof lease>) => {
        revokedAt = performance.now();
        revoked = tg.api('alice', 'POST', `/api/v1/grants/${s.grant.id}/revoke`, { reason: 'revoked during set-up' });
        await new Promise((res) => setTimeout(res, 400));
        return lease(...args);
      }) as typeof lease;
      return live;
    };
    let err: (Error & { code?: string }) | null = null;
    let failedAt = 0;
    try {
      await connect('prod-db', s.secret);
    } catch (e) {
      err = e as Error & { code?: string };
      failedAt = performance.now();
    } finally {
      mgr.open = open;
    }
    t.ok(err, 'the connection does not come up');
    t.match(`${err?.message} ${err?.code}`, /revoked during set-up.* 57P01/, 'the client hears the reason (FATAL 57P01)');
    // The client's connection ends with the revoke, not when the set-up or CLOSE_FIRST_MS (500 ms) runs out.
    t.ok(revokedAt > 0 && failedAt - revokedAt < 350, `the client's connection ended ${(failedAt - revokedAt).toFixed(1)} ms after the revoke was asked for (the set-up went on for 400 ms)`);
    t.equal((await revoked!).status, 200, 'the revoke succeeded');
    await settle();
    t.same(await pgc.noSessionRoles(), [], 'no session role on the target');
    const sessions = await tg.store.listSessions({ grantId: s.grant.id });
    t.equal(sessions.length, 1, 'one session');
    t.match(sessions[0]?.endReason, /^revoked:/, 'ended as revoked');
    t.ok((await tg.store.listLeases({ sessionId: sessions[0]!.id })).every((l) => l.state === 'revoked'), 'no unrevoked lease');
  });
}
