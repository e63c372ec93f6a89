/**
 * The SQL Server module's wire parsers as pure functions: PRELOGIN, LOGIN7, packet framing, the
 * server token stream and the client requests, known answers and hostile cases. Their fuzzing
 * lives with every other parser's in test/fuzz (targets/mssql.ts).
 */
import t from 'tap';
import { MessageAssembler, PacketReader, ProtocolError, encodeMessage, PKT, HEADER_LENGTH } from '../../protocols/mssql/packets.js';
import { ENCRYPT, buildPrelogin, parsePrelogin } from '../../protocols/mssql/prelogin.js';
import { FEATURE, TDS, buildLogin7, deobfuscatePassword, obfuscatePassword, parseLogin7 } from '../../protocols/mssql/login7.js';
import { DONE, TOKEN, ResponseTracker, encodeDone, encodeEnvChange, encodeError, encodeInfo, encodeLoginAck } from '../../protocols/mssql/tokens.js';
import { buildSqlBatch, defaultAllHeaders, parseRpc, parseSqlBatch, parseTmRequest } from '../../protocols/mssql/requests.js';
import { quoteLiteral, quoteName, splitBatch } from '../../protocols/mssql/tsql.js';
import { createStatements, sessionLoginName, SESSION_LOGIN } from '../../protocols/mssql/provisioner.js';
import { validateTarget } from '../../protocols/mssql/config.js';
import { mssqlClientCommands } from '../../protocols/mssql/native.js';
import { ORDERS, encodeResult } from './double.js';


// ---- RPC requests as clients send them (tedious's sp_executesql, a named procedure with a TVP) ----
const u16 = (n: number) => { const b = Buffer.alloc(2); b.writeUInt16LE(n); return b; };
const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };
const bv = (s: string) => Buffer.concat([Buffer.from([s.length]), Buffer.from(s, 'utf16le')]);
const collation = Buffer.from([0x09, 0x04, 0xd0, 0x00, 0x34]);
const nvarcharParam = (name: string, v: string) => {
  const d = Buffer.from(v, 'utf16le');
  return Buffer.concat([bv(name), Buffer.from([0]), Buffer.from([0xe7]), u16(8000), collation, u16(d.length), d]);
};
const nvarcharMaxParam = (name: string, v: string) => {
  const d = Buffer.from(v, 'utf16le');
  const total = Buffer.alloc(8); total.writeUInt32LE(d.length);
  return Buffer.concat([bv(name), Buffer.from([0]), Buffer.from([0xe7]), u16(0xffff), collation, total, u32(d.length), d, u32(0)]);
};
const intParam = (name: string, v: number | null, output = false) => Buffer.concat([bv(name), Buffer.from([output ? 1 : 0, 0x26, 4]), v === null ? Buffer.from([0]) : Buffer.concat([Buffer.from([4]), u32(v)])]);
const procById = (id: number) => Buffer.concat([u16(0xffff), u16(id), u16(0)]);
const procByName = (name: string) => Buffer.concat([u16(name.length), Buffer.from(name, 'utf16le'), u16(0)]);

function executesql(stmt: string, params: number, max = false): Buffer {
  const extra = Array.from({ length: params }, (_, i) => intParam(`@p${i}`, i));
  return Buffer.concat([procById(10), max ? nvarcharMaxParam('', stmt) : nvarcharParam('', stmt), nvarcharParam('', '@p0 int'), ...extra]);
}

t.test('packet framing: messages survive any chunking; lengths are checked before bodies arrive', async (t) => {
  const big = Buffer.alloc(10_000, 7);
  const stream = Buffer.concat([encodeMessage(PKT.SQL_BATCH, Buffer.from('abc')), encodeMessage(PKT.RPC, big, 4096), encodeMessage(PKT.ATTENTION, Buffer.alloc(0))]);
  for (const step of [1, 7, 100, 4096, stream.length]) {
    const r = new PacketReader();
    const asm = new MessageAssembler(1 << 20);
    const msgs: { type: number; payload: Buffer }[] = [];
    for (let i = 0; i < stream.length; i += step) {
      r.push(stream.subarray(i, i + step));
      for (let p = r.next(); p; p = r.next()) { const m = asm.push(p); if (m) msgs.push(m); }
    }
    t.same(msgs.map((m) => m.type), [PKT.SQL_BATCH, PKT.RPC, PKT.ATTENTION], `chunks of ${step}`);
    t.ok(msgs[1]!.payload.equals(big), 'a three-packet message joined once');
    t.equal(r.buffered, 0);
  }
  const hostile = new PacketReader();
  hostile.push(Buffer.from([0x01, 0x00, 0xff, 0xff, 0, 0, 1, 0, 0x41, 0x41]));
  t.equal(hostile.next(), null, 'a 65,535-byte packet waits for its bytes');
  t.equal(hostile.buffered, 10, 'nothing allocated for what did not arrive');
  const small = new PacketReader(4096);
  small.push(Buffer.from([0x12, 0x01, 0x20, 0x00, 0, 0, 1, 0]));
  t.throws(() => small.next(), /longer than 4096/, 'a packet over the limit is refused from its header');
  const short = new PacketReader();
  short.push(Buffer.from([0x12, 0x01, 0x00, 0x04, 0, 0, 1, 0]));
  t.throws(() => short.next(), /shorter than its header/);
  const asm = new MessageAssembler(100);
  t.throws(() => asm.push({ type: 1, status: 0, spid: 0, id: 1, payload: Buffer.alloc(101), raw: Buffer.alloc(109) }), /longer than 100/, 'message size bounded');
  t.equal(encodeMessage(PKT.SQL_BATCH, Buffer.alloc(9000), 4096).length, 9000 + 3 * HEADER_LENGTH, '4096-byte packets');
});

t.test('PRELOGIN: round trip, and what a FreeTDS client sends', async (t) => {
  const b = buildPrelogin({ version: { major: 16, minor: 0, build: 1000, subbuild: 0 }, encryption: ENCRYPT.REQ, instance: '', mars: 0, threadId: 42, fedAuthRequired: 0 });
  t.same(parsePrelogin(b), { version: { major: 16, minor: 0, build: 1000, subbuild: 0 }, encryption: ENCRYPT.REQ, instance: '', mars: 0, threadId: 42, fedAuthRequired: 0 });
  // Captured from tsql 1.3.17 (payload of its first packet).
  const freetds = Buffer.from('00001a00060100200001020021000c03002d00040400310001ff090000000000004d5353514c536572766572007657000000', 'hex');
  const p = parsePrelogin(freetds);
  t.equal(p.encryption, ENCRYPT.OFF, 'FreeTDS asks for ENCRYPT_OFF (encryption if the server wants it)');
  t.equal(p.instance, 'MSSQLServer');
  t.equal(p.mars, 0);
  t.throws(() => parsePrelogin(Buffer.from([0x01, 0x00, 0x50, 0x00, 0x01, 0xff])), /points past the message/);
  t.throws(() => parsePrelogin(Buffer.from([0x00, 0x00, 0x06])), /truncated|terminator/);
  t.throws(() => parsePrelogin(Buffer.alloc(0)), /terminator/);
});

t.test('LOGIN7: round trip with unicode, the password obfuscation, hostile offsets', async (t) => {
  t.same([...obfuscatePassword(Buffer.from('a', 'utf16le'))], [0xb3, 0xa5], 'MS-TDS example: "a" obfuscates to B3 A5');
  const fields = {
    tdsVersion: TDS.V7_4, packetSize: 8192, userName: 'sales-db:read', password: "s3cr'et ]; ünï", hostName: 'hôst', appName: 'app', serverName: 'gw',
    database: 'sales', language: 'us_english', cltIntName: 'tedious', features: [{ id: FEATURE.UTF8_SUPPORT, data: Buffer.from([1]) }],
  };
  const l = parseLogin7(buildLogin7(fields));
  t.equal(l.userName, 'sales-db:read');
  t.equal(l.password.reveal(), fields.password, 'password recovered from its obfuscation');
  t.equal(String(l.password), '<secret>', 'and kept in a Secret');
  t.equal(l.hostName, 'hôst');
  t.equal(l.database, 'sales');
  t.equal(l.packetSize, 8192);
  t.equal(l.tdsVersion, TDS.V7_4);
  t.same(l.features.map((f) => f.id), [FEATURE.UTF8_SUPPORT]);
  t.equal(l.changePassword, false);
  const bad = buildLogin7(fields);
  bad.writeUInt16LE(0xfff0, 40); // user name offset outside the message
  t.throws(() => parseLogin7(bad), /user name points outside/);
  const short = buildLogin7(fields).subarray(0, 50);
  t.throws(() => parseLogin7(short), /shorter than its fixed part/);
  const longer = buildLogin7(fields);
  longer.writeUInt32LE(longer.length + 1, 0);
  t.throws(() => parseLogin7(longer), /length does not match/);
});

t.test('requests: SQLBatch, RPC by id and name (sp_executesql text, parameter count, PLP text, TVP), TM', async (t) => {
  t.equal(parseSqlBatch(buildSqlBatch('SELECT N\'ä\'')), 'SELECT N\'ä\'');
  const rpc = (...calls: Buffer[]) => Buffer.concat([defaultAllHeaders(), ...calls.flatMap((c, i) => (i ? [Buffer.from([0xff]), c] : [c]))]);
  const [a] = parseRpc(rpc(executesql('SELECT * FROM orders WHERE id = @p0', 3)));
  t.same(a, { name: 'sp_executesql', procId: 10, params: 3, statement: 'SELECT * FROM orders WHERE id = @p0', handle: null }, 'sp_executesql: statement, caller parameters');
  const [b] = parseRpc(rpc(executesql('x'.repeat(10_000), 2, true)));
  t.equal(b!.statement!.length, 10_000, 'an nvarchar(max) statement in PLP chunks');
  const tvp = Buffer.concat([bv('@t'), Buffer.from([0, 0xf3]), bv(''), bv('dbo'), bv('IdList'), u16(1), u32(0), u16(0), Buffer.from([0x26, 4]), bv(''), Buffer.from([0x00]),
    Buffer.from([0x01, 4]), u32(1), Buffer.from([0x01, 4]), u32(2), Buffer.from([0x00])]);
  const calls = parseRpc(rpc(Buffer.concat([procByName('dbo.get_orders'), intParam('@id', 5), tvp]), Buffer.concat([procById(12), intParam('', 7), intParam('', 1)])));
  t.same(calls, [
    { name: 'dbo.get_orders', procId: null, params: 2, statement: null, handle: null },
    { name: 'sp_execute', procId: 12, params: 2, statement: null, handle: 7 },
  ], 'a named procedure with a table-valued parameter, batched with sp_execute of handle 7');
  const [c] = parseRpc(rpc(Buffer.concat([procByName('[sys].[sp_executesql]'), nvarcharParam('@stmt', 'DROP TABLE t')])));
  t.equal(c!.statement, 'DROP TABLE t', 'sp_executesql called by name is read like the id');
  t.throws(() => parseRpc(rpc(Buffer.concat([procById(10), bv(''), Buffer.from([0x08, 0x26, 4, 0])]))), /encrypted RPC parameters/);
  t.throws(() => parseRpc(rpc(Buffer.concat([procById(10), bv(''), Buffer.from([0, 0x99])]))), /unsupported data type 0x99/);
  const tm = Buffer.concat([defaultAllHeaders(), u16(5), Buffer.from([0]), bv('')]);
  t.same(parseTmRequest(tm), { type: 5, statement: 'BEGIN TRANSACTION', distributed: false });
  t.equal(parseTmRequest(Buffer.concat([defaultAllHeaders(), u16(1)])).distributed, true, 'DTC propagation flagged');
  t.throws(() => parseSqlBatch(Buffer.from([9, 0, 0, 0])), /ALL_HEADERS/);
});

t.test('token stream: rows counted from DONE across any packet split; lost on unknown tokens; boundary known', async (t) => {
  const stream = Buffer.concat([
    encodeEnvChange(1, 'sales', 'master'), encodeInfo({ number: 5701, class: 0, message: 'ctx' }), encodeLoginAck(TDS.V7_4, 'Microsoft SQL Server', [16, 0, 1]),
    encodeResult(ORDERS.cols, ORDERS.rows), encodeDone(DONE.COUNT | DONE.MORE, 3),
    encodeError({ number: 208, class: 16, message: "Invalid object name 'x'." }), encodeDone(DONE.ERROR | DONE.MORE, 0),
    Buffer.from([TOKEN.RETURNVALUE]), u16(0), bv('@h'), Buffer.from([1]), u32(0), u16(1), Buffer.from([0x26, 4, 4]), u32(77),
    encodeDone(DONE.COUNT, 2, TOKEN.DONEINPROC), encodeDone(0, 0, TOKEN.DONEPROC),
  ]);
  for (const step of [1, 3, 64, 4096, stream.length]) {
    const seen = { rows: 0, errors: [] as number[], ack: '', handle: 0, dones: 0 };
    const tr = new ResponseTracker({
      onDone: (_tok, status, rows) => { seen.dones++; if (status & DONE.COUNT) seen.rows += rows; },
      onError: (m) => seen.errors.push(m.number),
      onLoginAck: (a) => { seen.ack = a.progName; },
      onReturnInt: (_o, v) => { seen.handle = v; },
    });
    for (let i = 0; i < stream.length; i += step) tr.feed(stream.subarray(i, i + step));
    tr.end();
    t.same(seen, { rows: 5, errors: [208], ack: 'Microsoft SQL Server', handle: 77, dones: 4 }, `split every ${step} bytes`);
    t.equal(tr.lost, null);
    t.equal(tr.atBoundary, true);
  }
  const lost = new ResponseTracker({ onDone: (_t, _s, rows) => { lost2.push(rows); } });
  const lost2: number[] = [];
  lost.feed(Buffer.concat([Buffer.from([0x88, 1, 0]), Buffer.alloc(20, 0), encodeDone(DONE.COUNT, 42)]));
  lost.end();
  t.match(lost.lost, /token 0x88/, 'an unknown token stops the parse');
  t.same(lost2, [42], '... and the final DONE is read from the end of the message');
  const mid = new ResponseTracker({});
  mid.feed(encodeResult(ORDERS.cols, ORDERS.rows).subarray(0, 40));
  t.equal(mid.atBoundary, false, 'in the middle of a token: no room for the gateway\'s own tokens');
});

t.test('T-SQL: QUOTENAME and N\'\' quoting; statements split without semicolons', async (t) => {
  t.equal(quoteName('a]b'), '[a]]b]');
  t.equal(quoteName("o'brien; DROP"), "[o'brien; DROP]");
  t.equal(quoteLiteral("it's"), "N'it''s'");
  t.throws(() => quoteName('a\0b'));
  t.throws(() => quoteName('x'.repeat(129)));
  const kinds = (s: string) => splitBatch(s).map((x) => x.kind);
  t.same(kinds('SELECT 1 DROP TABLE t'), ['SELECT', 'DROP'], 'no semicolon needed between statements');
  t.same(kinds('SELECT 1DELETE FROM t'), ['SELECT', 'DELETE'], 'a number ends where SQL Server ends it');
  t.same(kinds("SELECT 'DROP TABLE x' /* DROP /* nested */ DROP */ FROM [drop] -- DROP"), ['SELECT'], 'strings, names, nested comments are opaque');
  t.same(kinds('SET XACT_ABORT ON DELETE FROM t'), ['SET', 'DELETE']);
  t.same(kinds('UPDATE t SET a = 1 SET NOCOUNT ON'), ['UPDATE', 'SET']);
  t.same(kinds('CREATE TABLE t (a int REFERENCES u ON DELETE CASCADE)'), ['CREATE'], 'clauses are not statements');
  t.same(kinds('GRANT SELECT, INSERT, UPDATE ON t TO u'), ['GRANT']);
  t.same(kinds('ALTER TABLE t DROP COLUMN c'), ['ALTER']);
  t.same(kinds('MERGE t USING s ON 1=1 WHEN MATCHED THEN UPDATE SET a = 1 WHEN NOT MATCHED THEN INSERT (a) VALUES (1) WHEN NOT MATCHED BY SOURCE THEN DELETE;'), ['MERGE']);
  t.same(kinds('WITH c AS (SELECT 1 a) DELETE FROM c'), ['', 'DELETE'], 'a CTE\'s statement is seen');
  t.same(kinds('IF 1 = 1 EXEC sp_who ELSE EXECUTE sp_who2'), ['IF', 'EXECUTE', 'EXECUTE']);
  t.same(splitBatch('exec x; EXECUTE y').map((s) => s.keyword), ['EXEC', 'EXECUTE']);
});

t.test('session logins: hostile identities never reach a name; statements quoted', async (t) => {
  for (const who of ["o'brien]; DROP LOGIN sa; --", '[admin]', 'zoë@example.com', '山田', '', '\u0000\u202e']) {
    const n = sessionLoginName(who);
    t.match(n, SESSION_LOGIN, `${JSON.stringify(who)} -> ${n}`);
    t.notMatch(n, /['\];\s\u0000\u202e]/);
  }
  t.equal(sessionLoginName('Zoë.Müller@x').replace(/_[a-z0-9]{6}$/, ''), 'tg_zoëmüller');
  t.same(createStatements('tg_x_abc123', "p'w", { databases: [{ name: 'we]ird', roles: ["r'o]le"] }], serverRoles: ['##MS_ServerStateReader##'] }), [
    "CREATE LOGIN [tg_x_abc123] WITH PASSWORD = N'p''w', CHECK_POLICY = OFF, DEFAULT_DATABASE = [we]]ird]",
    'ALTER SERVER ROLE [##MS_ServerStateReader##] ADD MEMBER [tg_x_abc123]',
    'USE [we]]ird]',
    'CREATE USER [tg_x_abc123] FOR LOGIN [tg_x_abc123]',
    "ALTER ROLE [r'o]]le] ADD MEMBER [tg_x_abc123]",
  ]);
});

t.test('target validation and client commands', async (t) => {
  const base = { name: 'sales-db', protocol: 'mssql', address: 'sql.internal:1433', risk: 'medium' as const, roles: [{ name: 'read', databases: [{ name: 'sales', roles: ['db_datareader'] }] }], credentials: { admin: { user: 'tg', password: { env: 'X' } } }, options: {} };
  t.equal(validateTarget(base), null);
  t.match(validateTarget({ ...base, credentials: {} }), { path: 'credentials.admin' });
  t.match(validateTarget({ ...base, roles: [{ name: 'x' }] }), { path: 'roles[0].databases' });
  t.match(validateTarget({ ...base, roles: [{ name: 'x', databases: [{ name: 'a\0' }] }] }), { path: 'roles[0].databases.0.name' });
  t.match(validateTarget({ ...base, roles: [{ name: 'x', databases: [{ name: 'a' }], defaultDatabase: 'b' }] }), { path: 'roles[0].defaultDatabase' });
  t.match(validateTarget({ ...base, options: { encrypt: 'optional' } }), { path: 'options.encrypt' });
  t.match(validateTarget({ ...base, options: { trustServerCertificate: true, encrypt: 'strict' } }), { path: 'options.trustServerCertificate' }, 'strict verifies the certificate');
  t.match(validateTarget({ ...base, address: 'a:b:c' }), { path: 'address' });
  const cmds = mssqlClientCommands({ protocol: 'mssql', host: 'gw', port: 1433, username: 'sales-db', secret: 'S3cr;et', target: base, caUrl: '', gatewayUrl: 'https://gw', certSha256: 'aa:bb', files: { ca: 'tollgate-ca.pem', knownHosts: 'tollgate_known_hosts' } });
  t.equal(cmds['sqlcmd'], "sqlcmd -S gw,1433 -U sales-db -P 'S3cr;et' -N -C -d sales");
  t.equal(cmds['tsql'], "tsql -H gw -p 1433 -U sales-db -P 'S3cr;et' -D sales");
  t.equal(cmds['ADO.NET'], 'Server=gw,1433;User ID=sales-db;Password={S3cr;et};Encrypt=True;TrustServerCertificate=True;Database=sales');
  t.equal(cmds['JDBC'], 'jdbc:sqlserver://gw:1433;user=sales-db;password={S3cr;et};encrypt=true;trustServerCertificate=true;databaseName=sales');
});


t.test('LOGIN7 password obfuscation round-trips', async (t) => {
  t.same([...deobfuscatePassword(obfuscatePassword(Buffer.from('round', 'utf16le')))], [...Buffer.from('round', 'utf16le')]);
});
