/**
 * Real SQL Server clients through the real gateway, to the TDS TEST DOUBLE as the database
 * (no SQL Server can run here): FreeTDS tsql, pymssql and tedious each log in with a connection
 * secret over TLS, run batches and RPCs (tsql has no RPC command: its EXEC goes as a batch), see
 * the minted session login, and are refused with a wrong or reused secret. The double saw the
 * login created before the session and dropped after it; the statement log has every batch and
 * RPC with rows from the DONE tokens.
 */
import t from 'tap';
import tedious from 'tedious';
import { DEFAULT_POLICIES, startTestGateway, type TestGateway } from '../support/gateway.js';
import { doubleTarget, pymssql, run, startDouble, tediousConnect, tediousEnded, tediousRun, tsql, waitFor } from './support.js';
import type { QueryLogRecord } from '../../proxy/store/types.js';

const d = await startDouble(t);
const tg: TestGateway = await startTestGateway({ targets: [doubleTarget(d)], policies: DEFAULT_POLICIES, listeners: ['mssql'] });
t.teardown(() => tg.close());
const { host, port } = tg.listener('mssql');

const secretFor = async (role = 'read', reusable = false) => {
  const g = await tg.grant('alice', 'sales-db', role);
  return { grant: g, ...(await tg.secret('alice', g.id, { reusable })) };
};
const ended = async (n: number): Promise<{ id: string; queries: QueryLogRecord[] }[]> => {
  const all = await waitFor(async () => {
    const s = await tg.store.listSessions({ target: 'sales-db' });
    return s.length >= n && s.every((x) => x.state === 'ended') ? s : null;
  }, 15_000, `${n} ended sessions`);
  return Promise.all(all.map(async (s) => ({ id: s.id, queries: await tg.store.listQueries(s.id) })));
};
const noLoginsLeft = () => waitFor(() => d.sessionLogins().length === 0, 15_000, 'session logins dropped on the double');

// The order of things on the double, as the gateway must do them: lease stored, then CREATE LOGIN.
const leaseBeforeLogin: boolean[] = [];
d.onStatement = async (s) => {
  const m = /^CREATE LOGIN \[(tg_[^\]]+)\]/.exec(s.text);
  if (!m) return;
  const leases = await tg.store.listLeases({});
  leaseBeforeLogin.push(leases.some((l) => l.data['login'] === m[1] && l.state === 'pending' && l.kind === 'mssql-login'));
};

t.test('FreeTDS tsql: batches over TLS as the session login; the login lives only with the session; secrets single-use', async (t) => {
  const s = await secretFor();
  t.match(s.commands['tsql'], /^tsql -H \S+ -p \d+ -U sales-db -P \S+ -D sales$/);
  const r = await tsql(host, port, 'sales-db', s.secret, 'SELECT SUSER_SNAME()\ngo\nSELECT * FROM orders\ngo\nEXEC sp_who\ngo');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /tg_alice_[a-z0-9]{6}/, 'the batch ran as the minted login');
  t.match(r.stdout, /Zoë Müller/, 'result rows decoded by FreeTDS');
  t.match(r.stdout, /O'Brien; "quotes" \]\]/);
  t.match(r.stdout, /\(3 rows affected\)/);
  await noLoginsLeft();
  const [sess] = await ended(1);
  const q = sess!.queries;
  t.ok(q.some((x) => x.statement === 'SELECT * FROM orders\n' && x.rows === 3 && x.kind === 'SELECT' && x.durationMs !== null), 'batch recorded with its rows from DONE');
  t.ok(q.some((x) => /^EXEC sp_who/.test(x.statement) && x.kind === 'EXECUTE'), 'EXEC batch recorded');
  const admin = d.adminStatements();
  const login = /CREATE LOGIN \[(tg_alice_[a-z0-9]{6})\]/.exec(admin.join('\n'))![1]!;
  const created = admin.findIndex((x) => x.startsWith(`CREATE LOGIN [${login}]`));
  const dropped = admin.findIndex((x) => x === `DROP LOGIN [${login}]`);
  const firstUse = d.statements.findIndex((x) => x.login === login);
  const createdAt = d.statements.findIndex((x) => x.text.startsWith(`CREATE LOGIN [${login}]`));
  const droppedAt = d.statements.findIndex((x) => x.text === `DROP LOGIN [${login}]`);
  t.ok(created >= 0 && dropped > created, 'created, then dropped');
  t.ok(createdAt < firstUse && firstUse < droppedAt, 'the double saw the login created before the session and dropped after it');
  t.same(leaseBeforeLogin, [true], 'the lease was in the store before CREATE LOGIN reached the server');

  const again = await tsql(host, port, 'sales-db', s.secret, 'SELECT 1\ngo');
  t.match(again.stdout + again.stderr, /Login failed for user 'sales-db'\. Tollgate: this connection secret was already used/, 'a reused single-use secret is refused in a TDS error');
  const wrong = await tsql(host, port, 'sales-db', 'not-the-secret', 'SELECT 1\ngo');
  t.match(wrong.stdout + wrong.stderr, /Login failed for user 'sales-db'\. Tollgate: wrong connection secret for sales-db/);
  t.equal(d.sessionStatements().filter((x) => x.text === 'SELECT 1\n').length, 0, 'refused logins sent nothing to the server');

  // The printed command line, as the portal and the API give it.
  const printed = await secretFor();
  const p = await run('sh', ['-c', printed.commands['tsql']!], { input: 'SELECT SUSER_SNAME(), DB_NAME()\ngo\nexit\n' });
  t.equal(p.code, 0, p.stderr);
  t.match(p.stdout, /tg_alice_[a-z0-9]{6}\tsales/, 'the printed tsql command works, in the role\'s database');
  await noLoginsLeft();
});

t.test('pymssql: execute, parameters, callproc (an RPC), refusals', async (t) => {
  const s = await secretFor();
  const r = await pymssql(host, port, 'sales-db', s.secret, [
    "cur.execute('SELECT SUSER_SNAME()')",
    'print(json.dumps(cur.fetchall()))',
    "cur.execute('SELECT * FROM orders')",
    'rows = cur.fetchall()',
    'print(json.dumps([[r[0], r[1], str(r[2]), r[3]] for r in rows]))',
    "cur.callproc('dbo.get_orders', (5,))",
    'print(json.dumps([r[0] for r in cur.fetchall()]))',
  ].join('\n'));
  t.equal(r.code, 0, r.stderr + r.stdout);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  t.match(lines[0][0][0], /^tg_alice_[a-z0-9]{6}$/);
  t.same(lines[1], [[1, 'Zoë Müller', '12.50', true], [2, 'O\'Brien; "quotes" ]]', '100.00', false], [3, '山田太郎', '0.01', null]], 'typed rows (decimal, bit, NULL via NBCROW) intact');
  t.same(lines[2], [1, 2, 3], 'the procedure\'s rows');
  await noLoginsLeft();
  const all = await ended(3);
  const q = all.flatMap((x) => x.queries);
  t.ok(q.some((x) => x.statement === 'EXEC dbo.get_orders' && x.kind === 'EXECUTE' && x.params === 1 && x.rows === 3), 'the RPC recorded: procedure, parameter count (never the value), rows');
  t.notOk(q.some((x) => x.statement.includes('5') && x.statement.startsWith('EXEC')), 'no parameter value in the log');
  const rpc = d.sessionStatements().find((x) => x.kind === 'rpc' && x.proc === 'dbo.get_orders');
  t.ok(rpc, 'the double got a real RPC (not a batch)');

  const again = await pymssql(host, port, 'sales-db', s.secret, 'pass');
  t.equal(again.code, 3);
  t.match(again.stdout, /Login failed for user 'sales-db'\. Tollgate: this connection secret was already used/);
  const wrong = await pymssql(host, port, 'sales-db', 'nope', 'pass');
  t.match(wrong.stdout, /wrong connection secret/);
});

t.test('tedious: sp_executesql with parameters, callProcedure, prepare/execute, a transaction; refusals', async (t) => {
  const s = await secretFor('read', true);
  const c = await tediousConnect(host, port, 'sales-db', s.secret);
  const who = await tediousRun(c, 'exec', 'SELECT SUSER_SNAME() AS u');
  t.match(String(who.rows[0]!['u']), /^tg_alice_[a-z0-9]{6}$/);
  const one = await tediousRun(c, 'exec', 'SELECT * FROM orders WHERE id = @id', [['id', 1]]);
  t.same(one.rows.map((r) => r['customer']), ['Zoë Müller'], 'sp_executesql with a parameter');
  const batch = await tediousRun(c, 'batch', 'SELECT * FROM orders');
  t.equal(batch.rowCount, 3);
  t.equal((batch.rows[2]!['note'] as string).length, 5000, 'an nvarchar(max) value in PLP chunks, intact');
  t.equal((batch.rows[2]!['blob'] as Buffer).length, 3000);
  const proc = await tediousRun(c, 'proc', 'dbo.get_orders', [['id', 2]]);
  t.equal(proc.rows.length, 3, 'callProcedure (an RPC by name)');
  // Prepared statement: sp_prepare, then sp_execute by handle.
  const prepared = await new Promise<InstanceType<typeof tedious.Request>>((resolve, reject) => {
    const req = new tedious.Request('SELECT * FROM orders WHERE id = @id', (err) => { if (err) reject(err); });
    req.addParameter('id', tedious.TYPES.Int);
    req.on('prepared', () => resolve(req));
    c.prepare(req);
  });
  const exec = await new Promise<number>((resolve, reject) => {
    let n = 0;
    prepared.on('row', () => n++);
    prepared.on('requestCompleted', () => resolve(n));
    prepared.on('error', reject);
    c.execute(prepared, { id: 1 });
  });
  t.equal(exec, 1, 'prepared statement executed');
  // Bulk load: an INSERT BULK batch (checked and recorded), then the rows stream through.
  const loaded = await new Promise<number>((resolve, reject) => {
    const bulk = c.newBulkLoad('orders_copy', (err, rowCount) => (err ? reject(err) : resolve(rowCount ?? -1)));
    bulk.addColumn('id', tedious.TYPES.Int, { nullable: false });
    bulk.addColumn('customer', tedious.TYPES.NVarChar, { length: 50, nullable: true });
    c.execBulkLoad(bulk, [{ id: 1, customer: 'Zoë' }, { id: 2, customer: null }, { id: 3, customer: 'x'.repeat(50) }]);
  });
  t.equal(loaded, 3, 'bulk load: the server counted the three rows that went through');
  t.ok(d.sessionStatements().some((x) => x.kind === 'bulk' && x.text === '3 rows'));
  await new Promise<void>((resolve, reject) => c.beginTransaction((err) => (err ? reject(err) : resolve())));
  await new Promise<void>((resolve, reject) => c.commitTransaction((err) => (err ? reject(err) : resolve())));
  c.close();
  await tediousEnded(c);
  await noLoginsLeft();
  const all = await ended(4);
  const q = all.flatMap((x) => x.queries);
  t.ok(q.some((x) => x.statement === 'SELECT * FROM orders WHERE id = @id' && x.params === 1 && x.rows === 1 && x.decision === 'allow'), 'sp_executesql: its statement text and parameter count');
  t.ok(q.some((x) => x.statement === 'EXEC dbo.get_orders' && x.params === 1 && x.rows === 3), 'callProcedure recorded');
  t.ok(q.filter((x) => x.statement === 'SELECT * FROM orders WHERE id = @id').length >= 3, 'sp_prepare and sp_execute recorded with the statement text (the handle mapped back)');
  t.ok(q.some((x) => x.statement === 'BEGIN TRANSACTION' && x.kind === 'BEGIN'), 'a Transaction Manager request recorded');
  t.ok(q.some((x) => /^insert bulk orders_copy/i.test(x.statement) && x.kind === 'INSERT'), 'the INSERT BULK batch recorded');
  t.ok(q.some((x) => x.statement === 'COMMIT TRANSACTION'));
  t.ok(d.sessionStatements().some((x) => x.kind === 'rpc' && x.proc === 'sp_execute'), 'the double got sp_execute');

  await t.rejects(tediousConnect(host, port, 'sales-db', 'wrong-secret'), { code: 'ELOGIN', message: /Login failed for user 'sales-db'\. Tollgate: wrong connection secret/ });
  await t.rejects(tediousConnect(host, port, 'sales-db:admin', s.secret), { code: 'ELOGIN', message: /Login failed for user 'sales-db:admin'\. Tollgate: wrong connection secret for sales-db:admin/ }, 'a secret for another role is refused');
  const single = await secretFor();
  (await tediousConnect(host, port, 'sales-db', single.secret)).close();
  await t.rejects(tediousConnect(host, port, 'sales-db', single.secret), { code: 'ELOGIN', message: /already used/ }, 'reused single-use secret refused');
  await noLoginsLeft();
});

t.test('tedious over TDS 8.0 strict TLS, the gateway certificate verified against its CA', async (t) => {
  const s = await secretFor();
  const c = await tediousConnect(host, port, 'sales-db', s.secret, { encrypt: 'strict', cryptoCredentialsDetails: { ca: tg.gw.tls.ca } });
  const who = await tediousRun(c, 'exec', 'SELECT SUSER_SNAME() AS u');
  t.match(String(who.rows[0]!['u']), /^tg_alice_/);
  c.close();
  await tediousEnded(c);
  await noLoginsLeft();
  const audit = await tg.store.listAudit({ action: 'mssql.login' });
  t.ok(audit.some((a) => (a.data as { encryption?: string }).encryption === 'strict'), 'the session is audited as strict TLS');
});
