/**
 * The session buffer budget on PostgreSQL, through the real gateway and a real cluster: a client
 * message that would make the gateway hold more than limits.sessionBufferBytes ends that session
 * with FATAL 53400 and reason resource_limit (role dropped); messages within the budget pass, and
 * another session on the same gateway keeps working.
 */
import t from 'tap';
import pg from 'pg';
import { DEFAULT_POLICIES, startTestGateway } from '../support/gateway.js';
import { havePostgres, startTestCluster, waitFor } from '../support/pg.js';

if (!havePostgres) {
  t.fail('PostgreSQL binaries are required');
} else {
  const pgc = await startTestCluster(t);
  const raw = { ...pgc.target, name: 'raw-db', options: { allowPlain: true, clientAuth: 'password' } };
  const tg = await startTestGateway({ targets: [raw], policies: DEFAULT_POLICIES, listeners: ['postgres'], extra: { limits: { sessionBufferBytes: '1MiB' } } });
  t.teardown(() => tg.close());
  const { host, port } = tg.listener('postgres');

  const connect = async () => {
    const g = await tg.grant('alice', 'raw-db', 'read');
    const s = await tg.secret('alice', g.id);
    const c = new pg.Client({ host, port, user: 'raw-db', password: s.secret, database: 'app', ssl: false });
    c.on('error', () => {});
    await c.connect();
    return { c, grantId: g.id };
  };

  t.test('a 2 MiB query over a 1 MiB budget ends its session with 53400; a 512 KiB one passes; others go on', async (t) => {
    const other = await connect();
    t.teardown(() => other.c.end().catch(() => {}));
    const ok = await other.c.query(`SELECT length('${'y'.repeat(512 * 1024)}') AS n`);
    t.equal(ok.rows[0].n, 512 * 1024, 'within the budget: relayed');

    const h = await connect();
    const err = await h.c.query(`SELECT length('${'x'.repeat(2 * 1024 * 1024)}')`).then(() => null, (e) => e as { code?: string; message: string });
    t.equal(err?.code, '53400', 'FATAL configuration_limit_exceeded');
    t.match(err?.message, /limits\.sessionBufferBytes/, 'the client is told why');
    const ended = await waitFor(async () => (await tg.store.listSessions({ grantId: h.grantId })).find((s) => s.state === 'ended'), 10_000, 'the session to end');
    t.match(ended.endReason, /^resource_limit: /);
    const audit = await tg.store.listAudit({ subject: ended.id });
    t.ok(audit.some((a) => a.action === 'session.resource_limit' && a.data['limit'] === 1024 * 1024), 'audited');
    await waitFor(async () => (await tg.store.listLeases({ state: ['pending', 'active', 'revoking'] })).every((l) => l.sessionId !== ended.id), 10_000, 'its lease revoked');

    const again = await other.c.query('SELECT 41 + 1 AS n');
    t.equal(again.rows[0].n, 42, 'the other session keeps working');
  });
}
