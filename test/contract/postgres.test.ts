/** The protocol contract for PostgreSQL: a real cluster behind a cuttable forwarder, node-postgres as the client. */
import t from 'tap';
import pg from 'pg';
import { conformance } from '../support/conformance.js';
import { startForwarder } from '../support/forwarder.js';
import { havePostgres, startTestCluster } from '../support/pg.js';
import { parseAddress } from '../../protocols/net.js';

if (!havePostgres) {
  t.fail('PostgreSQL binaries are required (apt-get install postgresql)');
} else {
  const pgc = await startTestCluster(t, 'pg-contract');
  const fwd = await startForwarder(parseAddress(pgc.target.address, 5432), t);
  const base = { ...pgc.target, address: fwd.address, risk: 'low' };
  const su = await pgc.su();
  t.teardown(() => su.end());

  await conformance(t, {
    module: 'postgres',
    listener: 'postgres',
    targets: [
      { ...base, name: 'pg-c' },
      // GRANT of a role that does not exist fails after CREATE ROLE: the revoke drops the half-made role.
      { ...base, name: 'pg-c-mintfail', roles: [{ name: 'broken', grants: ['tg_conformance_no_such_role'] }] },
    ],
    target: 'pg-c',
    role: 'read',
    mintFailure: { target: 'pg-c-mintfail', role: 'broken' },
    async connect(tg, s) {
      const { host, port } = tg.listener('postgres');
      const c = new pg.Client({ host, port, user: s.username, password: s.secret, database: 'app', ssl: { ca: tg.gw.tls.ca } });
      const texts: string[] = [];
      let done!: (text: string) => void;
      const ended = new Promise<string>((r) => { done = r; });
      c.on('error', (e) => texts.push(e.message));
      c.on('end', () => done(texts.join('\n')));
      // In once the gateway said ReadyForQuery (the upstream is connected).
      await c.connect().catch((e: Error) => { texts.push(e.message); done(texts.join('\n')); });
      return { close: () => c.end().catch(() => undefined), ended };
    },
    exists: async (_tg, lease) => ((await su.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [lease.data['role']])).rowCount ?? 0) > 0,
    breakTarget: async () => { fwd.refuse(); return () => fwd.allow(); },
    dropTarget: () => fwd.cut(),
    refusal: { expect: /connection secret is wrong, already used or expired/ },
    frontDoor: { expect: /too many connections are signing in/ },
    killText: /session terminated by carol: conformance/,
  });
}
