/**
 * The protocol contract for SQL Server: the TDS test double (test/mssql/double.ts: logins, users
 * and roles in memory, as SQL Server answers them) behind a cuttable forwarder, tedious as the
 * client. No real SQL Server runs on this machine: see protocols/mssql/README.md.
 */
import t from 'tap';
import tedious from 'tedious';
import { conformance } from '../support/conformance.js';
import { startForwarder } from '../support/forwarder.js';
import { doubleTarget, startDouble } from '../mssql/support.js';

const d = await startDouble(t);
// The role only the mint-failure target grants fails after CREATE LOGIN: the revoke drops the half-made login.
d.failOn = { pattern: /tg_conformance_no_such_role/, number: 15151, message: 'Cannot add the principal, because it does not exist or you do not have permission.' };
const fwd = await startForwarder({ host: '127.0.0.1', port: d.port }, t);
const base = { ...doubleTarget(d), address: fwd.address };
// TDS strings are UTF-16LE: what a refusal's text looks like in the bytes the client reads.
const inTds = (text: string) => new RegExp(Buffer.from(text, 'utf16le').toString('latin1').replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));

await conformance(t, {
  module: 'mssql',
  listener: 'mssql',
  targets: [
    { ...base, name: 'ms-c' },
    { ...base, name: 'ms-c-mintfail', roles: [{ name: 'broken', databases: [{ name: 'sales', roles: ['tg_conformance_no_such_role'] }] }] },
  ],
  target: 'ms-c',
  role: 'read',
  mintFailure: { target: 'ms-c-mintfail', role: 'broken' },
  async connect(tg, s) {
    const { host, port } = tg.listener('mssql');
    const texts: string[] = [];
    let done!: (text: string) => void;
    const ended = new Promise<string>((r) => { done = r; });
    const c = new tedious.Connection({
      server: host,
      authentication: { type: 'default', options: { userName: s.username, password: s.secret } },
      options: { port, encrypt: true, trustServerCertificate: true, connectTimeout: 15_000, database: 'sales' },
    });
    c.on('errorMessage', (m: { message: string }) => texts.push(m.message));
    c.on('error', (e: Error) => texts.push(e.message));
    c.on('end', () => done(texts.join('\n')));
    // In once the gateway relayed the server's LOGINACK (the upstream is logged in).
    await new Promise<void>((r) => c.connect((e) => { if (e) texts.push(e.message); r(); }));
    return { close: () => { c.close(); }, ended };
  },
  exists: async (_tg, lease) => d.logins.has(String(lease.data['login'])),
  breakTarget: async () => { fwd.refuse(); return () => fwd.allow(); },
  dropTarget: () => fwd.cut(),
  refusal: { expect: /Login failed for user 'ms-c'\. .*connection secret/ },
  frontDoor: { expect: inTds('too many connections are signing in') },
  // No killText: tedious does not read the ERROR an idle connection receives (test/mssql/double-enforce.test.ts reads it with a raw client).
});
