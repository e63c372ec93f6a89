/**
 * protocols/mysql pure parts: framing, handshake parsers, auth scrambles (checked against mysql2's
 * own client implementation), SQL splitting and kinds (comments, quotes, executable comments),
 * the response tracker over real packet shapes, quoting, and a fuzz pass proving parsers only ever
 * throw ProtocolError on junk.
 */
import t from 'tap';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import {
  PacketReader, frame, parseHandshakeResponse, buildHandshakeResponse, buildGreeting, parseGreeting, buildErr, parseErr,
  buildOk, parseOk, nativeToken, nativeVerifier, checkNativeToken, sha2Token, makeNonce, lenencInt, Cursor, CAP, GATEWAY_CAPS,
  ProtocolError, MAX_PAYLOAD, MARIADB_CAP, tg,
} from '../../protocols/mysql/packets.js';
import { Flavours, versionNumbers } from '../../protocols/mysql/flavour.js';
import { splitSql, isLoadLocal, ResponseTracker, kindOf } from '../../protocols/mysql/inspector.js';
import { quoteId, quoteLiteral, sessionUserName, parseGrant, SESSION_USER, validateMysqlTarget } from '../../protocols/mysql/provisioner.js';
import { parseAddress } from '../../protocols/net.js';

const require = createRequire(import.meta.url);
// mysql2's own client code (not exported; loaded by path) is the reference for the scrambles.
const mysql2Dir = dirname(require.resolve('mysql2'));
const auth41 = require(join(mysql2Dir, 'lib/auth_41.js')) as { calculateToken(pw: string, s1: Buffer, s2: Buffer): Buffer };
const sha2plugin = require(join(mysql2Dir, 'lib/auth_plugins/caching_sha2_password.js')) as { calculateToken(pw: string, scramble: Buffer): Buffer };

t.test('framing: split, continuation frames, sequence ids', async (t) => {
  const r = new PacketReader();
  const big = Buffer.alloc(MAX_PAYLOAD + 10, 0x61);
  const f = frame(big, 3);
  t.equal(f.next, 5, 'two frames used');
  const small = frame(Buffer.from('hello'), 7).bytes;
  const all = Buffer.concat([f.bytes, small]);
  // feed byte-ragged chunks
  for (let off = 0; off < all.length; off += 1_000_003) r.push(all.subarray(off, off + 1_000_003));
  const p1 = r.next()!;
  t.equal(p1.payload.length, big.length);
  t.equal(p1.seq, 3);
  t.equal(p1.lastSeq, 4);
  t.ok(p1.raw.equals(f.bytes), 'raw bytes kept for untouched forwarding');
  const p2 = r.next()!;
  t.equal(p2.payload.toString(), 'hello');
  t.equal(r.next(), null);
  const exact = frame(Buffer.alloc(MAX_PAYLOAD), 0);
  t.equal(exact.next, 2, 'a payload of exactly 16 MiB - 1 ends with an empty frame');
  const limited = new PacketReader(100);
  limited.push(Buffer.from([0xff, 0x00, 0x00, 0x00, 1]));
  t.throws(() => limited.next(), ProtocolError, 'oversized packet refused before it arrives');
});

t.test('greeting and handshake response round trip; mysql2 tokens verify', async (t) => {
  const nonce = makeNonce();
  t.equal(nonce.length, 20);
  t.notOk(nonce.includes(0), 'no NUL in the nonce');
  const g = parseGreeting(buildGreeting({ serverVersion: '8.0.0-Tollgate', connectionId: 7, nonce, caps: GATEWAY_CAPS, charset: 45, status: 2, authPlugin: 'mysql_native_password' }));
  t.ok(g.nonce.equals(nonce));
  t.equal(g.caps, GATEWAY_CAPS);
  t.equal(g.authPlugin, 'mysql_native_password');

  const token = auth41.calculateToken('s3cr3t!', nonce.subarray(0, 8), nonce.subarray(8));
  t.ok(token.equals(nativeToken('s3cr3t!', nonce)), 'our native token equals mysql2\'s');
  t.ok(checkNativeToken(token, nonce, nativeVerifier('s3cr3t!')), 'verifier accepts the right secret');
  t.notOk(checkNativeToken(token, nonce, nativeVerifier('other')), 'and refuses another');
  t.notOk(checkNativeToken(Buffer.alloc(0), nonce, nativeVerifier('s3cr3t!')), 'empty response refused');
  t.notOk(checkNativeToken(token, makeNonce(), nativeVerifier('s3cr3t!')), 'a token for another nonce refused');
  t.notOk(checkNativeToken(token, nonce, 'zz'), 'malformed verifier refused');
  t.ok(sha2Token('pw', nonce).equals(sha2plugin.calculateToken('pw', nonce)), 'caching_sha2 token equals mysql2\'s');

  const caps = CAP.PROTOCOL_41 | CAP.SECURE_CONNECTION | CAP.PLUGIN_AUTH | CAP.CONNECT_WITH_DB | CAP.PLUGIN_AUTH_LENENC_CLIENT_DATA;
  const resp = parseHandshakeResponse(buildHandshakeResponse({ caps, maxPacket: 1 << 24, charset: 45, user: 'app-db:read', authResponse: token, database: 'shop', authPlugin: 'mysql_native_password' }));
  t.equal(resp.user, 'app-db:read');
  t.equal(resp.database, 'shop');
  t.ok(resp.authResponse.equals(token));
  t.equal(resp.authPlugin, 'mysql_native_password');
  t.notOk(resp.sslRequest);
  const ssl = Buffer.alloc(32);
  ssl.writeUInt32LE(CAP.PROTOCOL_41 | CAP.SSL, 0);
  t.ok(parseHandshakeResponse(ssl).sslRequest, 'SSLRequest recognised');
  const noProto = Buffer.alloc(32);
  t.throws(() => parseHandshakeResponse(noProto), ProtocolError, 'pre-4.1 refused');
});

t.test('ERR/OK packets', async (t) => {
  const e = parseErr(buildErr({ code: 1227, state: '42000' }, 'Tollgate: denied'));
  t.same(e, { code: 1227, state: '42000', message: 'Tollgate: denied' });
  t.equal(tg('Tollgate: x'), 'Tollgate: x', 'no doubled prefix');
  t.equal(tg('x'), 'Tollgate: x');
  const ok = parseOk(buildOk({ affectedRows: 70000, insertId: 3, status: 0x0a }));
  t.same(ok, { affectedRows: 70000n, insertId: 3n, status: 0x0a, warnings: 0 });
  for (const n of [0, 250, 251, 65535, 65536, 16777215, 16777216, 2 ** 40]) {
    t.equal(new Cursor(lenencInt(n)).lenenc(), n, `lenenc ${n}`);
  }
  t.throws(() => new Cursor(Buffer.from([0xff])).lenenc(), ProtocolError);
  // 64-bit values: a BIGINT UNSIGNED AUTO_INCREMENT near 2^64 (what used to end the session)
  for (const v of [2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 2n, 2n ** 64n - 1n]) {
    t.equal(new Cursor(lenencInt(v)).lenencBig(), v, `lenenc ${v}`);
    t.equal(parseOk(buildOk({ affectedRows: 1, insertId: v })).insertId, v, `OK with insert id ${v}`);
  }
  t.throws(() => new Cursor(lenencInt(2n ** 60n)).lenenc('column count'), { name: 'ProtocolError', message: /column count out of range/, offset: 0 }, 'a count beyond 2^53 is refused as such');
  t.throws(() => new Cursor(Buffer.from([0x00, 0xfc, 0x01])).bytes(9), { name: 'ProtocolError', offset: 0 }, 'truncation says where');
});

t.test('SQL splitting and kinds', async (t) => {
  const k = (sql: string) => splitSql(sql).map((s) => s.kind);
  t.same(k('SELECT 1'), ['SELECT']);
  t.same(k('select 1; drop table x ;'), ['SELECT', 'DROP TABLE']);
  t.same(k("SELECT ';DROP TABLE x'"), ['SELECT'], 'semicolon in a string');
  t.same(k('SELECT "a\\";DROP" FROM t'), ['SELECT'], 'escaped quote in a string');
  t.same(k("SELECT 'it''s'; TRUNCATE t"), ['SELECT', 'TRUNCATE'], 'doubled quote');
  t.same(k('SELECT `a;b` FROM t'), ['SELECT'], 'backticks');
  t.same(k('/* DROP */ SELECT 1 -- ; DROP x\n'), ['SELECT'], 'comments ignored');
  t.same(k('# DROP;\nSELECT 1'), ['SELECT'], 'hash comment');
  t.same(k('SELECT 1 /*!; DROP TABLE x */'), ['SELECT', 'DROP TABLE'], 'executable comment counts');
  t.same(k('/*!50000 DROP TABLE x */'), ['DROP TABLE'], 'versioned executable comment');
  t.same(k('/*M!100100 TRUNCATE t */'), ['TRUNCATE'], 'MariaDB executable comment');
  t.same(k('(SELECT 1) UNION (SELECT 2)'), ['SELECT']);
  t.same(k('  \n '), []);
  t.equal(kindOf('load data local infile "x" into table t'), 'LOAD DATA');
  t.equal(splitSql('SELECT  1\n\tFROM   t').at(0)!.text, 'SELECT 1 FROM t', 'whitespace collapsed');
  t.ok(isLoadLocal(splitSql("LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE t")[0]!));
  t.ok(isLoadLocal(splitSql("load data low_priority local infile 'x' into table t")[0]!));
  t.ok(isLoadLocal(splitSql("/*!LOAD DATA LOCAL INFILE 'x' INTO TABLE t*/")[0]!));
  t.notOk(isLoadLocal(splitSql("LOAD DATA INFILE 'x' INTO TABLE t")[0]!));
});

t.test('response tracker follows real response shapes', async (t) => {
  const col = Buffer.concat([Buffer.from([3]), Buffer.from('def'), Buffer.alloc(20)]);
  const row = Buffer.from([1, 0x31]);
  const eof = (status: number) => { const b = Buffer.alloc(5); b[0] = 0xfe; b.writeUInt16LE(status, 3); return b; };
  const okEnd = (status: number) => { const b = buildOk({ status }); b[0] = 0xfe; return b; };
  // legacy EOF, two result sets (multi-statement)
  let tr = new ResponseTracker('resultset', { deprecateEof: false });
  const seq1 = [Buffer.from([1]), col, eof(0x08 | 0x02), row, row, eof(0x08 | 0x02), Buffer.from([1]), col, eof(2), row, eof(2)];
  const done1 = seq1.map((p) => tr.feed(p).done);
  t.same(done1, [false, false, false, false, false, false, false, false, false, false, true]);
  t.equal(tr.rows, 3);
  // DEPRECATE_EOF
  tr = new ResponseTracker('resultset', { deprecateEof: true });
  t.same([Buffer.from([2]), col, col, row, row, okEnd(2)].map((p) => tr.feed(p).done), [false, false, false, false, false, true]);
  t.equal(tr.rows, 2);
  // OK then error in a multi-statement
  tr = new ResponseTracker('resultset', { deprecateEof: true });
  t.notOk(tr.feed(buildOk({ affectedRows: 2, status: 0x0a })).done);
  t.ok(tr.feed(buildErr({ code: 1146, state: '42S02' }, "Table 'x' doesn't exist")).done);
  t.equal(tr.affected, 2);
  t.match(tr.error, /1146/);
  // LOCAL INFILE request
  tr = new ResponseTracker('resultset', { deprecateEof: true });
  t.ok(tr.feed(Buffer.from([0xfb, 0x2f])).localInfile);
  tr.infileSent();
  t.ok(tr.feed(buildOk({ affectedRows: 3 })).done);
  // prepare with params and columns
  const prep = Buffer.alloc(12);
  prep.writeUInt32LE(9, 1);
  prep.writeUInt16LE(1, 5);
  prep.writeUInt16LE(2, 7);
  tr = new ResponseTracker('prepare', { deprecateEof: false });
  t.same([prep, col, col, eof(2), col, eof(2)].map((p) => tr.feed(p).done), [false, false, false, false, false, true]);
  t.equal(tr.stmtId, 9);
  t.equal(tr.params, 2);
  tr = new ResponseTracker('prepare', { deprecateEof: true });
  t.same([prep, col, col, col].map((p) => tr.feed(p).done), [false, false, false, true]);
  // cursor opened by COM_STMT_EXECUTE: no rows until FETCH
  tr = new ResponseTracker('resultset', { deprecateEof: false, cursor: true });
  t.same([Buffer.from([1]), col, eof(0x40 | 2)].map((p) => tr.feed(p).done), [false, false, true]);
  tr = new ResponseTracker('fetch', { deprecateEof: false });
  t.same([Buffer.from([0, 0, 1]), eof(0x80 | 2)].map((p) => tr.feed(p).done), [false, true]);
  t.equal(new ResponseTracker('none', { deprecateEof: false }).done, true);
  tr = new ResponseTracker('single', { deprecateEof: false });
  t.ok(tr.feed(buildOk()).done);
  t.throws(() => tr.feed(buildOk()), ProtocolError, 'a packet after the end is a protocol error');
});

t.test('response tracker: the shapes MariaDB sends for procedures, cursors and cached metadata', async (t) => {
  const col = Buffer.concat([Buffer.from([3]), Buffer.from('def'), Buffer.alloc(20)]);
  const row = Buffer.from([1, 0x31]);
  const eof = (status: number) => { const b = Buffer.alloc(5); b[0] = 0xfe; b.writeUInt16LE(status, 3); return b; };
  const okEnd = (status: number) => { const b = buildOk({ status }); b[0] = 0xfe; return b; };
  // CALL of a procedure looping over a cursor, SELECTing each row (bytes as MariaDB 10.11 sends them):
  // SERVER_STATUS_CURSOR_EXISTS (0x40) is set while the procedure's cursor is open - it is not a
  // COM_STMT_EXECUTE cursor, rows follow.
  const more = 0x40 | 0x20 | 0x08 | 0x02;
  for (const dep of [false, true]) {
    const tr = new ResponseTracker('resultset', { deprecateEof: dep });
    const one = dep ? [Buffer.from([1]), col, row, okEnd(more)] : [Buffer.from([1]), col, eof(more), row, eof(more)];
    const seq = [...one, ...one, ...one, buildOk({ status: 0x22 })];
    const done = seq.map((p) => tr.feed(p).done);
    t.same(done, [...seq.slice(1).map(() => false), true], `cursor loop procedure followed to its final OK (DEPRECATE_EOF ${dep})`);
    t.equal(tr.rows, 3);
    t.equal(tr.error, null);
  }
  // a procedure that SELECTs with a cursor open, then SIGNALs
  let tr = new ResponseTracker('resultset', { deprecateEof: false });
  t.same([Buffer.from([1]), col, eof(more), row, eof(more), buildErr({ code: 1644, state: '45000' }, 'boom')].map((p) => tr.feed(p).done), [false, false, false, false, false, true]);
  t.match(tr.error, /^1644 \(45000\): boom$/);
  // a prepared CALL executed with a cursor asked for: the server sends the result sets (MORE_RESULTS_EXISTS)
  tr = new ResponseTracker('resultset', { deprecateEof: false, cursor: true });
  t.same([Buffer.from([1]), col, eof(more), row, eof(more), buildOk({ status: 0x22 })].map((p) => tr.feed(p).done), [false, false, false, false, false, true]);
  // a cursor whose query fails after the metadata went out (bytes as MariaDB 10.11 sends them)
  tr = new ResponseTracker('resultset', { deprecateEof: false, cursor: true });
  t.same([Buffer.from([1]), col, buildErr({ code: 1012, state: 'HY000' }, 'Raising a system error')].map((p) => tr.feed(p).done), [false, false, true]);
  t.match(tr.error, /^1012/);
  // MARIADB_CLIENT_CACHE_METADATA: the column count carries a "metadata follows" byte
  tr = new ResponseTracker('resultset', { deprecateEof: false, cacheMetadata: true });
  t.same([Buffer.from([2, 1]), col, col, eof(0x22), row, eof(0x22)].map((p) => tr.feed(p).done), [false, false, false, false, false, true], 'with metadata');
  tr = new ResponseTracker('resultset', { deprecateEof: false, cacheMetadata: true });
  t.same([Buffer.from([2, 0]), eof(0x22), row, eof(0x22)].map((p) => tr.feed(p).done), [false, false, false, true], 'metadata skipped, EOF kept (no DEPRECATE_EOF)');
  tr = new ResponseTracker('resultset', { deprecateEof: true, cacheMetadata: true });
  t.same([Buffer.from([2, 0]), row, okEnd(0x22)].map((p) => tr.feed(p).done), [false, false, true], 'metadata skipped (DEPRECATE_EOF)');
  tr = new ResponseTracker('resultset', { deprecateEof: false, cacheMetadata: true, cursor: true });
  t.same([Buffer.from([2, 0]), eof(0x62)].map((p) => tr.feed(p).done), [false, true], 'cursor opened with cached metadata');
  t.throws(() => new ResponseTracker('resultset', { deprecateEof: false, cacheMetadata: true }).feed(Buffer.from([2, 7])), { name: 'ProtocolError', offset: 1 });
  // an OK whose last insert id is above 2^53, with session state tracking after it
  tr = new ResponseTracker('resultset', { deprecateEof: true });
  const big = Buffer.concat([buildOk({ affectedRows: 1, insertId: 2n ** 64n - 2n, status: 0x4002 }), Buffer.from([0, 5, 0, 3, 2, 1, 0x61])]);
  t.ok(tr.feed(big).done);
  t.equal(tr.insertId, 2n ** 64n - 2n);
  t.equal(tr.affected, 1);
  // where a failure is: packet number and offset
  tr = new ResponseTracker('resultset', { deprecateEof: true });
  t.throws(() => tr.feed(Buffer.from([0x00, 0xfc, 0x01])), { name: 'ProtocolError', offset: 2 });
  t.equal(tr.packets, 1);
  t.equal(tr.state, 'first');
});

t.test('MariaDB extended capabilities: greeting and handshake response carry them the MariaDB way', async (t) => {
  const nonce = makeNonce();
  const ext = MARIADB_CAP.EXTENDED_METADATA | MARIADB_CAP.CACHE_METADATA;
  const gb = buildGreeting({ serverVersion: '5.5.5-10.11.19-MariaDB-Tollgate', connectionId: 7, nonce, caps: GATEWAY_CAPS, extCaps: ext, charset: 45, status: 2, authPlugin: 'mysql_native_password' });
  const g = parseGreeting(gb);
  t.equal(g.extCaps, ext);
  t.equal(g.caps & CAP.LONG_PASSWORD, 0, 'CLIENT_MYSQL left unset');
  t.equal(parseGreeting(buildGreeting({ ...g, extCaps: 0 })).extCaps, 0, 'none without them');
  // mysql2 reads them as MariaDB servers send them
  const resp = buildHandshakeResponse({ caps: GATEWAY_CAPS, maxPacket: 1 << 24, charset: 45, user: 'app-db', authResponse: Buffer.alloc(20, 1), database: 'shop', authPlugin: 'mysql_native_password', extCaps: ext, attrs: Buffer.from([3, 0x5f, 0x6f, 0x73, 1, 0x78]) });
  const r = parseHandshakeResponse(resp);
  t.equal(r.extCaps, ext);
  t.equal(r.caps & CAP.LONG_PASSWORD, 0);
  t.same(r.attrs, { _os: 'x' });
  t.ok(r.attrsRaw!.equals(Buffer.from([3, 0x5f, 0x6f, 0x73, 1, 0x78])), 'attributes kept as sent, to pass on');
  // a client that keeps CLIENT_MYSQL set has no extended flags, whatever its filler holds
  const mysqlStyle = buildHandshakeResponse({ caps: GATEWAY_CAPS | CAP.LONG_PASSWORD, maxPacket: 1 << 24, charset: 45, user: 'u', authResponse: Buffer.alloc(0), database: null, authPlugin: 'mysql_native_password' });
  mysqlStyle.writeUInt32LE(0xffffffff, 28);
  t.equal(parseHandshakeResponse(mysqlStyle).extCaps, 0);
});

t.test('greeting offer: learnt from the targets', async (t) => {
  const f = new Flavours();
  t.same(f.offer(['a', 'b']), { version: '8.0.0-Tollgate', caps: GATEWAY_CAPS, extCaps: 0 }, 'nothing known: generic');
  f.learn('a', { serverVersion: '5.5.5-10.11.19-MariaDB-0+deb12u1', caps: 0x81fff7fe, extCaps: 0x1c | 0x1 });
  t.same(f.offer(['a', 'b']), { version: '5.5.5-10.11.19-MariaDB-0+deb12u1-Tollgate', caps: GATEWAY_CAPS, extCaps: 0x1c }, 'MariaDB: its version, the extensions the gateway relays');
  f.learn('b', { serverVersion: '5.5.5-10.6.2-MariaDB', caps: 0x81fff7fe, extCaps: 0x4 });
  t.same(f.offer(['a', 'b']), { version: '5.5.5-10.6.2-MariaDB-Tollgate', caps: GATEWAY_CAPS, extCaps: 0x4 }, 'two MariaDB: the lower version, the common extensions');
  f.learn('c', { serverVersion: '8.0.36', caps: GATEWAY_CAPS & ~CAP.SESSION_TRACK, extCaps: 0 });
  t.same(f.offer(['a', 'b', 'c']), { version: '8.0.0-Tollgate', caps: GATEWAY_CAPS & ~CAP.SESSION_TRACK, extCaps: 0 }, 'mixed: generic, format flags all have');
  t.same(f.offer(['c']), { version: '8.0.36-Tollgate', caps: GATEWAY_CAPS & ~CAP.SESSION_TRACK, extCaps: 0 }, 'MySQL: its version');
  t.same(versionNumbers('5.5.5-10.11.19-MariaDB'), [10, 11, 19]);

  // learning: each unknown target once; an unreachable one again only after the retry time
  const g = new Flavours();
  const tried: string[] = [];
  const learn = async (name: string) => {
    tried.push(name);
    if (name === 'up') g.learn(name, { serverVersion: '5.5.5-10.11.19-MariaDB', caps: 0x81fff7fe, extCaps: 0x1c });
    else throw new Error('unreachable');
  };
  await Promise.all([g.ensure(['up', 'down'], learn, 0), g.ensure(['up', 'down'], learn, 0)]);
  t.same(tried, ['up', 'down'], 'concurrent connections share one attempt per target');
  await g.ensure(['up', 'down'], learn, 10_000);
  t.same(tried, ['up', 'down'], 'known: not again; unreachable: not before the retry time');
  await g.ensure(['up', 'down', 'new'], learn, 40_000);
  t.same(tried, ['up', 'down', 'down', 'new'], 'after the retry time, and a target configured later');
});

t.test('quoting, names, grants, addresses', async (t) => {
  t.equal(quoteId('a`b'), '`a``b`');
  t.equal(quoteLiteral("o'brien"), "'o''brien'");
  t.throws(() => quoteLiteral('a\\b'), 'backslashes are not quoted ambiguously');
  for (const who of ["robert'); DROP TABLE users;--", 'ÄÖÜ@example.com', '', 'a'.repeat(200), 'alice']) {
    const n = sessionUserName(who);
    t.ok(SESSION_USER.test(n) && n.length <= 32, `session user name for ${JSON.stringify(who.slice(0, 20))}: ${n}`);
  }
  t.same(parseGrant('SELECT, INSERT ON shop.*'), { privs: 'SELECT, INSERT', object: 'shop.*' });
  t.same(parseGrant('SELECT (id, name) ON `my db`.`t`'), { privs: 'SELECT (id, name)', object: '`my db`.`t`' });
  t.same(parseGrant('EXECUTE ON PROCEDURE shop.refund'), { privs: 'EXECUTE', object: 'PROCEDURE shop.refund' });
  t.equal(parseGrant('SELECT ON shop.* TO x; DROP DATABASE shop'), null, 'injection refused');
  t.equal(parseGrant('ALL ON *.* WITH GRANT OPTION'), null);
  t.equal(parseGrant('GRANT OPTION ON *.*'), null);
  t.same(parseAddress('db.example:3307', 3306), { host: 'db.example', port: 3307 });
  t.same(parseAddress('[::1]:3306', 3306), { host: '::1', port: 3306 });
  t.same(parseAddress('db', 3306), { host: 'db', port: 3306 });
  const target = { name: 'x', protocol: 'mysql', address: '127.0.0.1:3306', risk: 'medium' as const, credentials: { admin: { user: 'a', password: { value: 'p' } } }, options: {}, roles: [{ name: 'r', grants: ['SELECT ON a.*'] }] };
  t.equal(validateMysqlTarget(target), null);
  t.match(validateMysqlTarget({ ...target, roles: [{ name: 'r', grants: ['SELECT ON a.*; DROP USER root'] }] }), { path: 'roles[0].grants[0]' });
  t.match(validateMysqlTarget({ ...target, credentials: {} }), { path: 'credentials.admin' });
  t.match(validateMysqlTarget({ ...target, options: { clientAuth: 'dialog' } }), { path: 'options.clientAuth' });
  t.match(validateMysqlTarget({ ...target, roles: [{ name: 'r' }] }), { path: 'roles[0].grants' });
});

t.test('fuzz: parsers and tracker only throw ProtocolError on junk', async (t) => {
  let seed = 12345;
  const rnd = () => { seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff; return seed; };
  let unexpected = 0;
  for (let i = 0; i < 20000; i++) {
    const b = Buffer.alloc(rnd() % 80);
    for (let j = 0; j < b.length; j++) b[j] = rnd() & 0xff;
    if (b.length > 4 && i % 3 === 0) b.writeUInt32LE((CAP.PROTOCOL_41 | (rnd() << 1)) >>> 0, 0);
    for (const f of [
      () => parseHandshakeResponse(b), () => parseGreeting(b), () => parseErr(b), () => parseOk(b),
      () => { const tr = new ResponseTracker((['resultset', 'prepare', 'fetch', 'fieldlist', 'single'] as const)[i % 5], { deprecateEof: i % 2 === 0, cacheMetadata: i % 4 < 2, cursor: i % 8 < 4 }); tr.feed(b); tr.feed(b); },
      () => { const r = new PacketReader(1000); r.push(b); while (r.next()); },
    ]) {
      try { f(); } catch (e) { if (!(e instanceof ProtocolError)) unexpected++; }
    }
    splitSql(b.toString('latin1'));
  }
  t.equal(unexpected, 0, 'no TypeError/RangeError from 120000 junk inputs');
});
