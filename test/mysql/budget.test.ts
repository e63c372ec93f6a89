/**
 * The session buffer budget on MySQL, through the real gateway and a real MariaDB: a client packet
 * that would make the gateway hold more than limits.sessionBufferBytes ends that session with
 * ERR 1927 and reason resource_limit (user dropped); packets within the budget pass, and another
 * session on the same gateway keeps working.
 */
import t from 'tap';
import mysql from 'mysql2/promise';
import { DEFAULT_POLICIES, startTestGateway } from '../support/gateway.js';
import { startTestMariadb, waitFor } from '../support/mariadb.js';

const db = await startTestMariadb(t);
if (!db) {
  t.fail('MariaDB is required (apt-get install mariadb-server mariadb-client)');
} else {
  const tg = await startTestGateway({ targets: [db.target], policies: DEFAULT_POLICIES, listeners: ['mysql'], extra: { limits: { sessionBufferBytes: '1MiB' } } });
  t.teardown(() => tg.close());
  const { host, port } = tg.listener('mysql');
  const connect = async () => {
    const g = await tg.grant('alice', 'app-db', 'read');
    const s = await tg.secret('alice', g.id);
    const c = await mysql.createConnection({ host, port, user: 'app-db', password: s.secret, database: 'shop', ssl: { ca: tg.gw.tls.ca } });
    c.on('error', () => {});
    return { c, grantId: g.id };
  };

  t.test('a 2 MiB statement over a 1 MiB budget ends its session with ERR 1927; a 512 KiB one passes; others go on', async (t) => {
    const other = await connect();
    t.teardown(() => other.c.end().catch(() => {}));
    const [ok] = await other.c.query(`SELECT length('${'y'.repeat(512 * 1024)}') AS n`);
    t.equal(Number((ok as { n: number }[])[0]!.n), 512 * 1024, 'within the budget: relayed');

    const h = await connect();
    const err = await h.c.query(`SELECT length('${'x'.repeat(2 * 1024 * 1024)}')`).then(() => null, (e) => e as { errno?: number; message: string });
    t.equal(err?.errno, 1927, 'ERR 1927 connection killed');
    t.match(err?.message, /limits\.sessionBufferBytes/, 'the client is told why');
    const ended = await waitFor(async () => (await tg.store.listSessions({ grantId: h.grantId })).find((s) => s.state === 'ended'), 10_000, 'the session to end');
    t.match(ended.endReason, /^resource_limit: /);
    const audit = await tg.store.listAudit({ subject: ended.id });
    t.ok(audit.some((a) => a.action === 'session.resource_limit' && a.data['limit'] === 1024 * 1024), 'audited');
    await waitFor(async () => (await db.sessionUsers()).length === 1, 10_000, "the session's user dropped (the other one remains)");

    const [again] = await other.c.query('SELECT 41 + 1 AS n');
    t.equal(Number((again as { n: number }[])[0]!.n), 42, 'the other session keeps working');
  });
}
