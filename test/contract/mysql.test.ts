/** The protocol contract for MySQL/MariaDB: a real MariaDB behind a cuttable forwarder, mysql2 as the client. */
import t from 'tap';
import mysql from 'mysql2';
import { conformance } from '../support/conformance.js';
import { startForwarder } from '../support/forwarder.js';
import { startTestMariadb } from '../support/mariadb.js';

const db = await startTestMariadb(t);
if (!db) {
  t.fail('MariaDB is required (apt-get install mariadb-server)');
} else {
  const fwd = await startForwarder({ host: '127.0.0.1', port: db.port }, t);
  const base = { ...db.target, address: fwd.address, risk: 'low' };

  await conformance(t, {
    module: 'mysql',
    listener: 'mysql',
    targets: [
      { ...base, name: 'my-c' },
      // GRANT of a role that does not exist fails after CREATE USER: the revoke drops the half-made user.
      { ...base, name: 'my-c-mintfail', roles: [{ name: 'broken', grants: ['SELECT ON shop.*'], roles: ['tg_conformance_no_such_role'] }] },
    ],
    target: 'my-c',
    role: 'read',
    mintFailure: { target: 'my-c-mintfail', role: 'broken' },
    async connect(tg, s) {
      const { host, port } = tg.listener('mysql');
      const c = mysql.createConnection({ host, port, user: s.username, password: s.secret, database: 'shop', ssl: { ca: tg.gw.tls.ca } });
      const texts: string[] = [];
      let done!: (text: string) => void;
      const ended = new Promise<string>((r) => { done = r; });
      c.on('error', (e) => { texts.push(e.message); done(texts.join('\n')); });
      c.on('end', () => done(texts.join('\n')));
      // In once the gateway sent the server's OK (the upstream is logged in).
      await new Promise<void>((r) => c.connect((e) => { if (e) { texts.push(e.message); done(texts.join('\n')); } r(); }));
      // mysql2 notices a closed connection when it reads: a ping a second while the session runs.
      const pinger = setInterval(() => c.ping(() => undefined), 1000);
      void ended.finally(() => clearInterval(pinger));
      return { close: () => { clearInterval(pinger); c.end(); }, ended };
    },
    exists: async (_tg, lease) => (await db.admin('SELECT 1 FROM mysql.user WHERE User = ? AND Host = ?', [lease.data['user'], lease.data['host']])).length > 0,
    breakTarget: async () => { fwd.refuse(); return () => fwd.allow(); },
    dropTarget: () => fwd.cut(),
    refusal: { expect: /access denied for 'my-c': wrong connection secret/ },
    frontDoor: { expect: /too many connections are signing in/ },
    killText: /session terminated by carol: conformance/,
  });
}
