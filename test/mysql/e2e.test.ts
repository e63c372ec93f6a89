/**
 * MySQL/MariaDB through the real gateway with a real MariaDB server and real clients: the mariadb
 * CLI (TLS + mysql_native_password, caching_sha2_password over TLS and with RSA on plain), mysql2
 * (text + prepared statements, multi-statements, streaming a large result), statement rules (deny
 * keeps the session, kill ends it), LOAD DATA LOCAL refused unless the role allows it, recording,
 * hostile database role names, and the per-session user existing only while the session runs.
 * Both legs are verified: clients that do not upgrade to TLS are refused (unless the target allows
 * plain), the printed commands check the gateway's certificate, and the admin connection uses TLS
 * whenever the target has options.tls.
 */
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mysql from 'mysql2/promise';
import mysqlCore from 'mysql2';
import { DEFAULT_POLICIES, startTestGateway, type TestGateway } from '../support/gateway.js';
import { startTestMariadb, run, waitFor, type TestMariadb } from '../support/mariadb.js';
import { ensureTlsMaterial } from '../../proxy/tls.js';
import { mysqlModule } from '../../protocols/mysql/index.js';
import { createHash, randomBytes } from 'node:crypto';

const db: TestMariadb | null = await startTestMariadb(t, { tls: true });
if (!db) {
  t.fail('MariaDB is required (apt-get install mariadb-server mariadb-client)');
} else {
  const hostileRole = "r`o'le; DROP DATABASE shop; --";
  await db.admin(`CREATE ROLE \`${hostileRole.replace(/`/g, '``')}\``);
  await db.admin(`GRANT SELECT ON shop.products TO \`${hostileRole.replace(/`/g, '``')}\``);
  await db.admin(`GRANT \`${hostileRole.replace(/`/g, '``')}\` TO 'tollgate_admin'@'127.0.0.1' WITH ADMIN OPTION`);
  await db.admin('CREATE TABLE shop.imports (line VARCHAR(200))');
  await db.admin('GRANT SELECT ON shop.imports TO shop_reader');
  await db.admin('CREATE TABLE shop.blobs (id INT PRIMARY KEY, b LONGBLOB)');

  const base = db.target;
  // allowPlain: the RSA key exchange of caching_sha2_password over plain TCP stays reachable.
  const sha2 = { ...base, name: 'sha2-db', options: { clientAuth: 'caching_sha2_password', allowPlain: true } };
  const clear = { ...base, name: 'clear-db', options: { clientAuth: 'mysql_clear_password' } };
  const clearPlain = { ...base, name: 'clear-plain-db', options: { clientAuth: 'mysql_clear_password', allowPlain: true } };
  const extra = {
    ...base,
    name: 'extra-db',
    roles: [
      { name: 'loader', grants: ['INSERT, SELECT ON shop.imports'], database: 'shop', allowLoadDataLocal: true },
      { name: 'hostile', roles: [hostileRole], database: 'shop' },
      { name: 'reader-role', roles: ['shop_reader'] },
      { name: 'writer', grants: ['INSERT, SELECT, DELETE ON shop.blobs'], database: 'shop' },
    ],
  };
  // Gateway -> MariaDB over TLS, verified against the server's CA; and against a CA that did not issue it.
  const tlsUp = { ...base, name: 'tls-db', options: { tls: { ca: db.tlsCa! } } };
  const tlsWrongCa = { ...base, name: 'tls-wrong-ca-db', options: { tls: { ca: ensureTlsMaterial(join(db.dir, 'other-ca'), ['127.0.0.1']).ca } } };
  // An admin that MariaDB accepts over TLS only (REQUIRE SSL): a plaintext admin connection would fail.
  await db.admin("CREATE USER 'tlsadmin'@'127.0.0.1' IDENTIFIED BY 'tls-admin-pw' REQUIRE SSL");
  await db.admin("GRANT ALL PRIVILEGES ON *.* TO 'tlsadmin'@'127.0.0.1' WITH GRANT OPTION");
  const tlsAdminCred = { ...base.credentials, admin: { user: 'tlsadmin', password: { value: 'tls-admin-pw' } } };
  const tlsAdmin = { ...base, name: 'tls-admin-db', credentials: tlsAdminCred, options: { tls: { ca: db.tlsCa! } } };
  const tlsAdminNamed = { ...base, name: 'tls-admin-named-db', credentials: tlsAdminCred, options: { tls: { ca: db.tlsCa!, servername: 'localhost' } } };
  const tlsAdminWrongName = { ...base, name: 'tls-admin-wrong-name-db', credentials: tlsAdminCred, options: { tls: { ca: db.tlsCa!, servername: 'db.wrong.test' } } };
  const plainAdmin = { ...base, name: 'plain-admin-db', credentials: tlsAdminCred, options: {} };
  const policies = [{
    ...DEFAULT_POLICIES[0],
    rules: [
      { kinds: ['DROP', 'TRUNCATE'], action: 'deny', message: 'blocked by Tollgate policy: no DROP or TRUNCATE here' },
      { pattern: 'tollgate_kill_me', action: 'kill', message: 'forbidden statement, session closed' },
    ],
  }];
  const tg: TestGateway = await startTestGateway({
    targets: [base, sha2, clear, clearPlain, extra, tlsUp, tlsWrongCa, tlsAdmin, tlsAdminNamed, tlsAdminWrongName, plainAdmin], policies, listeners: ['mysql'],
  });
  t.teardown(() => tg.close());
  const { host, port } = tg.listener('mysql');
  const caFile = join(db.dir, 'gateway-ca.pem');
  writeFileSync(caFile, tg.gw.tls.ca);

  const secretFor = async (target = 'app-db', role = 'read', reusable = false) => {
    const g = await tg.grant('alice', target, role);
    return { grant: g, ...(await tg.secret('alice', g.id, { reusable })) };
  };
  const cli = (user: string, secret: string, args: string[]) =>
    run('mariadb', ['-h', host, '-P', String(port), '-u', user, `-p${secret}`, '--batch', ...args]);
  const sessionsOf = async (target: string) => tg.store.listSessions({ target });
  const noUsersLeft = () => waitFor(async () => (await db.sessionUsers()).length === 0, 10_000, 'session users dropped');

  t.test('mariadb CLI over TLS: session user during the session only, statements recorded, secret single-use', async (t) => {
    const s = await secretFor('app-db', 'read');
    t.match(s.commands['mariadb'], /^curl -fsS \S+\/api\/v1\/ca\.pem -o tollgate-ca\.pem && mariadb -h \S+ -P \d+ -u app-db -p\S+ --ssl-ca=tollgate-ca\.pem --ssl-verify-server-cert$/,
      'the printed command verifies the gateway certificate against its CA');
    const r = await cli('app-db', s.secret, ['--ssl-ca', caFile, '--ssl-verify-server-cert', 'shop', '-e',
      'SELECT CURRENT_USER(), (SELECT COUNT(*) FROM customers) AS n; \\s']);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /tg_alice_[a-z0-9]{6}@%\t3/, 'connected as the session user, read the table');
    t.match(r.stdout, /SSL:\s+Cipher in use is \S+/, 'the client connection is TLS, verified against the gateway CA');
    await noUsersLeft();
    t.same(await db.sessionUsers(), [], 'session user dropped after the client exits');
    const sessions = await sessionsOf('app-db');
    const sess = sessions[0]!;
    await waitFor(async () => (await tg.store.getSession(sess.id))?.state === 'ended', 10_000, 'session ended');
    const q = await tg.store.listQueries(sess.id);
    t.ok(q.some((x) => /SELECT CURRENT_USER\(\)/.test(x.statement) && x.rows === 1 && x.kind === 'SELECT' && x.durationMs !== null), 'statement recorded with rows, kind, duration');
    const viaApi = await tg.api('carol', 'GET', `/api/v1/sessions/${sess.id}/queries`);
    t.equal(viaApi.status, 200);
    t.ok((viaApi.body as { statement: string }[]).some((x) => /SELECT CURRENT_USER\(\)/.test(x.statement)), 'queryable by API (SOC)');
    const leases = await tg.store.listLeases({ sessionId: sess.id });
    t.equal(leases.length, 1);
    t.equal(leases[0]!.kind, 'mysql-user');
    t.equal(leases[0]!.state, 'revoked', 'lease revoked');
    t.match(String(leases[0]!.data['user']), /^tg_alice_[a-z0-9]{6}$/);
    t.notOk(JSON.stringify(leases[0]!.data).includes(s.secret), 'lease data holds no secret');

    const again = await cli('app-db', s.secret, ['-e', 'SELECT 1']);
    t.not(again.code, 0);
    t.match(again.stderr, /ERROR 1045 \(28000\).*Tollgate: access denied/, 'reused single-use secret refused with 1045');
    const printed = await secretFor('app-db', 'read', true);
    const cwd = mkdtempSync(join(tmpdir(), 'tg-mysql-cmd-'));
    t.teardown(() => rmSync(cwd, { recursive: true, force: true }));
    for (const name of ['mysql', 'mariadb']) {
      const r = await run('sh', ['-c', `cd ${cwd} && ${printed.commands[name]} --batch -e 'SELECT CURRENT_USER(); \\s'`]);
      t.equal(r.code, 0, `the printed ${name} command works: ${r.stderr}`);
      t.match(r.stdout, /tg_alice_/);
      t.match(r.stdout, /SSL:\s+Cipher in use/, `${name}: over TLS`);
    }
    t.equal(readFileSync(join(cwd, 'tollgate-ca.pem'), 'utf8'), tg.gw.tls.ca, 'the printed command fetched the gateway CA');
    t.match(printed.commands['sysbench'], / sysbench oltp_read_only .* --mysql-ssl=on /, 'sysbench over TLS too');
    const wrong = await cli('app-db', 'not-the-secret', ['-e', 'SELECT 1']);
    t.match(wrong.stderr, /ERROR 1045 \(28000\)/, 'wrong secret refused with 1045');
    const unknown = await cli('no-such-db', s.secret, ['-e', 'SELECT 1']);
    t.match(unknown.stderr, /ERROR 104[45]/, 'unknown target refused');
  });

  t.test('mariadb CLI: COM_INIT_DB, caching_sha2_password over TLS and over plain TCP (RSA key exchange)', async (t) => {
    const s1 = await secretFor('app-db', 'read');
    const r1 = await cli('app-db', s1.secret, ['--default-auth=caching_sha2_password', '-e', 'use shop; SELECT name FROM products ORDER BY id LIMIT 1']);
    t.equal(r1.code, 0, r1.stderr);
    t.match(r1.stdout, /keyboard/);
    const sess = (await sessionsOf('app-db'))[0]!;
    await waitFor(async () => (await tg.store.getSession(sess.id))?.state === 'ended', 10_000, 'session ended');
    const q = await tg.store.listQueries(sess.id);
    t.ok(q.some((x) => x.statement === 'USE `shop`' && x.kind === 'USE'), 'COM_INIT_DB recorded');

    const s2 = await secretFor('sha2-db', 'read');
    const r2 = await cli('sha2-db', s2.secret, ['--skip-ssl', 'shop', '-e', 'SELECT COUNT(*) FROM orders']);
    t.equal(r2.code, 0, r2.stderr);
    t.match(r2.stdout, /^4$/m, 'caching_sha2_password full auth over plain TCP with the gateway RSA key');
    const s3 = await secretFor('sha2-db', 'read');
    const r3 = await cli('sha2-db', s3.secret, ['--ssl-ca', caFile, 'shop', '-e', 'SELECT COUNT(*) FROM orders; \\s']);
    t.equal(r3.code, 0, r3.stderr);
    t.match(r3.stdout, /Cipher in use/, 'caching_sha2_password full auth over TLS');

    const s4 = await secretFor('clear-db', 'read', true);
    t.match(s4.commands['mariadb'], /--enable-cleartext-plugin/, 'printed command carries the cleartext flag');
    const r4 = await run('sh', ['-c', `cd ${db.dir} && ${s4.commands['mariadb']} --batch -e 'SELECT 7'`]);
    t.equal(r4.code, 0, r4.stderr);
    t.match(r4.stdout, /^7$/m, 'mysql_clear_password over TLS');
    const s5 = await secretFor('clear-plain-db', 'read');
    const r5 = await cli('clear-plain-db', s5.secret, ['--skip-ssl', '--enable-cleartext-plugin', '-e', 'SELECT 7']);
    t.not(r5.code, 0);
    t.match(r5.stderr, /ERROR 1045 \(28000\).*over TLS only/, 'no cleartext password asked for on a plain connection, even where plain is allowed');
    await noUsersLeft();
  });

  t.test('mysql2: prepared statements, multi-statements, deny keeps the session, kill ends it', async (t) => {
    const s = await secretFor('sha2-db', 'read');
    const c = await mysql.createConnection({ host, port, user: 'sha2-db', password: s.secret, database: 'shop', multipleStatements: true, ssl: { ca: tg.gw.tls.ca } });
    const errors: Error[] = [];
    c.on('error', (e) => errors.push(e));
    const [who] = await c.query('SELECT CURRENT_USER() AS u');
    t.match((who as { u: string }[])[0]!.u, /^tg_alice_[a-z0-9]{6}@%$/);
    t.same(await db.sessionUsers(), [(who as { u: string }[])[0]!.u.split('@')[0]], 'the session user exists during the session');

    const [rows] = await c.execute('SELECT id, name, price FROM products WHERE price > ? ORDER BY id', [20]);
    t.same((rows as { name: string }[]).map((r) => r.name), ['keyboard', 'monitor'], 'prepared statement with a parameter');
    const [rows2] = await c.execute('SELECT id, name, price FROM products WHERE price > ? ORDER BY id', [100]);
    t.same((rows2 as { name: string }[]).map((r) => r.name), ['monitor'], 'prepared statement re-executed');
    const stmt = await c.prepare('SELECT COUNT(*) AS n FROM orders WHERE customer_id = ? AND qty >= ?');
    const [r3] = await stmt.execute([1, 1]);
    t.equal(Number((r3 as { n: number }[])[0]!.n), 2);
    await stmt.close();

    const [multi] = await c.query('SELECT 1 AS a; SELECT name FROM customers ORDER BY id; SELECT 3 AS c');
    t.equal((multi as unknown[]).length, 3, 'three result sets');
    t.same(((multi as unknown[][])[1] as { name: string }[]).map((r) => r.name), ['Ada Lovelace', 'Alan Turing', 'Grace Hopper']);

    await t.rejects(c.query('DROP TABLE customers'), { errno: 1227, sqlState: '42000', message: /blocked by Tollgate policy/ }, 'DROP denied');
    await t.rejects(c.query('SELECT 1; /* hidden */ DROP TABLE customers'), { errno: 1227, message: /blocked/ }, 'DROP hidden in a multi-statement denied');
    await t.rejects(c.query('/*!DROP TABLE customers */'), { errno: 1227, message: /blocked/ }, 'DROP in an executable comment denied');
    await t.rejects(c.execute('DROP TABLE orders'), { errno: 1227, message: /blocked/ }, 'DROP as a prepared statement denied');
    await t.rejects(c.query('SELECT * FROM nope'), { errno: 1146, message: /doesn't exist/ }, 'the server\'s own error relayed');
    const [still] = await c.query('SELECT COUNT(*) AS n FROM customers');
    t.equal(Number((still as { n: number }[])[0]!.n), 3, 'session continues after denials; the table is still there');

    await t.rejects(c.query("SELECT 'tollgate_kill_me'"), { errno: 1927, message: /forbidden statement, session closed/ }, 'kill rule ends with 1927');
    await t.rejects(c.query('SELECT 1'), 'connection is closed after kill');
    await noUsersLeft();
    const sess = (await sessionsOf('sha2-db'))[0]!;
    const ended = await waitFor(async () => { const x = await tg.store.getSession(sess.id); return x?.state === 'ended' ? x : null; }, 10_000, 'ended');
    t.match(ended.endReason, /forbidden/);
    const q = await tg.store.listQueries(sess.id);
    const exec = q.filter((x) => x.statement.startsWith('SELECT id, name, price FROM products WHERE price > ?'));
    t.equal(exec.length, 2, 'each prepared execution recorded');
    t.equal(exec[0]!.params, 1, 'with its parameter count');
    t.equal(exec[0]!.rows, 2);
    t.ok(q.some((x) => x.statement === 'DROP TABLE customers' && x.decision === 'deny' && /blocked/.test(x.error ?? '')), 'denial recorded');
    t.ok(q.some((x) => /SELECT \* FROM nope/.test(x.statement) && /1146/.test(x.error ?? '')), 'server error recorded');
    t.ok(q.some((x) => /tollgate_kill_me/.test(x.statement) && x.decision === 'kill'), 'kill recorded');
    await c.end().catch(() => {});
  });

  t.test('large result set streams through with backpressure; rows counted', async (t) => {
    const s = await secretFor('app-db', 'read');
    const c = mysqlCore.createConnection({ host, port, user: 'app-db', password: s.secret, database: 'shop', ssl: { ca: tg.gw.tls.ca } });
    await new Promise<void>((resolve, reject) => c.connect((e) => (e ? reject(e) : resolve())));
    let n = 0;
    let bytes = 0;
    let downWhilePaused = -1;
    await new Promise<void>((resolve, reject) => {
      const q = c.query('SELECT a.seq AS a, b.seq AS b, REPEAT("x", 200) AS pad FROM seq_1_to_1000 a, seq_1_to_200 b');
      q.on('error', reject);
      q.on('result', (row: { a: number; pad: string }) => {
        n++;
        bytes += row.pad.length;
        if (n === 10000) {
          // stop reading for a while: what the gateway relayed must stay bounded by socket buffers
          c.pause();
          setTimeout(async () => {
            const live = await tg.api('carol', 'GET', '/api/v1/sessions?state=active&target=app-db');
            downWhilePaused = live.body[0]?.bytesDown ?? -1;
            c.resume();
          }, 1500);
        } else if (n % 20000 === 0) {
          // a slow consumer: the gateway must stop reading from MariaDB instead of buffering
          c.pause();
          setTimeout(() => c.resume(), 30);
        }
      });
      q.on('end', () => resolve());
    });
    t.equal(n, 200_000, 'all rows arrived');
    t.equal(bytes, 200_000 * 200);
    t.ok(downWhilePaused > 0 && downWhilePaused < 20_000_000, `gateway stopped reading while the client was paused (${downWhilePaused} of ~45 MB relayed)`);
    c.end();
    const sess = (await sessionsOf('app-db'))[0]!;
    await waitFor(async () => (await tg.store.getSession(sess.id))?.state === 'ended', 10_000, 'ended');
    const q = await tg.store.listQueries(sess.id);
    t.ok(q.some((x) => /seq_1_to_1000/.test(x.statement) && x.rows === 200_000), 'row count recorded');
    const rec = await tg.store.getSession(sess.id);
    t.ok(rec!.bytesDown > 200_000 * 200, 'bytes accounted');
    await noUsersLeft();
  });

  t.test('LOAD DATA LOCAL refused unless the role allows it', async (t) => {
    const file = join(db.dir, 'import.txt');
    writeFileSync(file, 'one\ntwo\nthree\n');
    const s1 = await secretFor('app-db', 'read');
    const r1 = await cli('app-db', s1.secret, ['--local-infile=1', 'shop', '-e', `LOAD DATA LOCAL INFILE '${file}' INTO TABLE imports; SELECT 'still here'`]);
    t.not(r1.code, 0);
    t.match(r1.stderr, /ERROR 1148 \(42000\).*LOAD DATA LOCAL is not allowed/, 'refused with 1148');
    const s2 = await secretFor('extra-db', 'loader');
    const r2 = await cli('extra-db:loader', s2.secret, ['--local-infile=1', 'shop', '-e', `LOAD DATA LOCAL INFILE '${file}' INTO TABLE imports; SELECT COUNT(*) FROM imports`]);
    t.equal(r2.code, 0, r2.stderr);
    t.match(r2.stdout, /^3$/m, 'file loaded through the gateway for a role that allows it');
    t.equal(Number((await db.admin('SELECT COUNT(*) AS n FROM shop.imports'))[0].n), 3);
    await noUsersLeft();
  });

  t.test('database roles, including a hostile role name, are granted with correct quoting', async (t) => {
    const s = await secretFor('extra-db', 'hostile');
    const r = await cli('extra-db:hostile', s.secret, ['shop', '-e', 'SELECT CURRENT_ROLE(); SELECT COUNT(*) FROM products']);
    t.equal(r.code, 0, r.stderr);
    t.ok(r.stdout.includes(hostileRole), 'the hostile role is the default role');
    t.match(r.stdout, /^3$/m, 'its privilege works');
    const r2 = await cli('extra-db:hostile', (await secretFor('extra-db', 'hostile')).secret, ['shop', '-e', 'SELECT * FROM customers']);
    t.match(r2.stderr, /ERROR 1142/, 'only what the role grants');
    t.equal((await db.admin("SHOW DATABASES LIKE 'shop'")).length, 1, 'shop still exists');
    const s3 = await secretFor('extra-db', 'reader-role');
    const r3 = await cli('extra-db:reader-role', s3.secret, ['-e', 'SELECT COUNT(*) FROM shop.customers']);
    t.equal(r3.code, 0, r3.stderr);
    t.match(r3.stdout, /^3$/m);
    await noUsersLeft();
  });

  t.test('gateway to MariaDB over verified TLS; a certificate from the wrong CA is refused', async (t) => {
    const s = await secretFor('tls-db', 'read');
    const r = await cli('tls-db', s.secret, ['shop', '-e', "SHOW STATUS LIKE 'Ssl_version'"]);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /Ssl_version\tTLSv1\.[23]/, 'the upstream connection (seen by MariaDB) is TLS');
    const s2 = await secretFor('tls-wrong-ca-db', 'read');
    const r2 = await cli('tls-wrong-ca-db', s2.secret, ['shop', '-e', 'SELECT 1']);
    t.not(r2.code, 0);
    t.match(r2.stderr, /ERROR 1105 \(HY000\).*could not create a database user for this session/, 'clear error in the client protocol');
    const failed = (await tg.store.listSessions({ target: 'tls-wrong-ca-db' }))[0]!;
    t.match(failed.endReason, /target_error: could not create the session user: .*(unable to verify|self[- ]signed|certificate)/i,
      'the admin connection already refused the server certificate');
    t.same(await tg.store.listLeases({ sessionId: failed.id }), [], 'so no lease was stored and nothing was created');
    await noUsersLeft();
  });

  t.test('a client that does not upgrade to TLS is refused before authentication, unless the target allows plain', async (t) => {
    const s = await secretFor('app-db', 'read');
    const refusals = async () => (await tg.store.listAudit({ action: 'access.refused' })).length;
    const before = await refusals();
    const plain = await cli('app-db', s.secret, ['--skip-ssl', '-e', 'SELECT 1']);
    t.not(plain.code, 0);
    t.match(plain.stderr, /ERROR 3159 \(HY000\).*Tollgate: TLS is required for 'app-db': connect with TLS \(mariadb: --ssl, the default; not --skip-ssl/,
      'mariadb --skip-ssl reads that TLS is required');
    const c = await mysql.createConnection({ host, port, user: 'app-db', password: s.secret }).then(() => null, (e: Error & { errno?: number }) => e);
    t.match(c, { errno: 3159, message: /TLS is required/ }, 'mysql2 without ssl too');
    const unknown = await cli('no-such-db', s.secret, ['--skip-ssl', '-e', 'SELECT 1']);
    t.match(unknown.stderr, /ERROR 3159 .*TLS is required/, 'an unknown target learns nothing more');
    t.same(await tg.store.listSessions({ target: 'app-db', state: 'active' }), [], 'no session');
    t.same(await db.sessionUsers(), [], 'no session user');
    t.equal(await refusals(), before, 'no authentication was attempted');
    const ok = await cli('app-db', s.secret, ['--ssl-ca', caFile, '--ssl-verify-server-cert', '-e', 'SELECT 41 + 1']);
    t.equal(ok.code, 0, `the secret was not consumed by the refusals: ${ok.stderr}`);
    t.match(ok.stdout, /^42$/m);
    const s2 = await secretFor('sha2-db', 'read');
    const allowed = await cli('sha2-db', s2.secret, ['--skip-ssl', '-e', 'SELECT 43']);
    t.equal(allowed.code, 0, `allowPlain: true lets a plain client in: ${allowed.stderr}`);
    await noUsersLeft();
  });

  t.test('the admin connection uses TLS when the target has options.tls (an admin that MariaDB accepts over TLS only)', async (t) => {
    const ctx = tg.gw.ctx('mysql');
    const plainCheck = await mysqlModule.checkTarget!(ctx, ctx.config.target('plain-admin-db')!);
    t.equal(plainCheck.ok, false, 'without options.tls the admin connection is plain, and this admin is refused');
    t.match(plainCheck.detail, /Access denied/);
    const check = await mysqlModule.checkTarget!(ctx, ctx.config.target('tls-admin-db')!);
    t.equal(check.ok, true, check.detail);
    const s = await secretFor('tls-admin-db', 'read');
    const r = await cli('tls-admin-db', s.secret, ['--ssl-ca', caFile, 'shop', '-e', "SELECT COUNT(*) FROM customers; SHOW STATUS LIKE 'Ssl_version'"]);
    t.equal(r.code, 0, `CREATE USER ran over the TLS admin connection: ${r.stderr}`);
    t.match(r.stdout, /^3$/m);
    t.match(r.stdout, /Ssl_version\tTLSv1\.[23]/);
    await noUsersLeft();
    t.pass('and DROP USER too (the session user is gone)');
    t.equal((await mysqlModule.checkTarget!(ctx, ctx.config.target('tls-admin-named-db')!)).ok, true, 'options.tls.servername is the name checked');
    const wrongName = await mysqlModule.checkTarget!(ctx, ctx.config.target('tls-admin-wrong-name-db')!);
    t.equal(wrongName.ok, false);
    t.match(wrongName.detail, /Hostname\/IP does not match certificate's altnames: Host: db\.wrong\.test/, 'a name the certificate does not carry is refused');
  });

  t.test('packets over 16 MiB (continuation frames) both ways, text and binary protocol', async (t) => {
    const s = await secretFor('extra-db', 'writer');
    const c = await mysql.createConnection({ host, port, user: 'extra-db:writer', password: s.secret, database: 'shop', ssl: { ca: tg.gw.tls.ca } });
    const big = randomBytes(17 * 1024 * 1024 + 123);
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    await c.execute('INSERT INTO blobs VALUES (?, ?)', [2, big]); // client -> gateway: a COM_STMT_EXECUTE of 17 MiB
    const [rows] = await c.query('SELECT id, b FROM blobs ORDER BY id');
    const got = rows as { id: number; b: Buffer }[];
    t.equal(got.length, 1);
    t.equal(sha(got[0]!.b), sha(big), 'text protocol: a 17 MiB row arrived intact');
    const [rows2] = await c.execute('SELECT b FROM blobs WHERE id = ?', [2]);
    t.equal(sha((rows2 as { b: Buffer }[])[0]!.b), sha(big), 'binary protocol: intact');
    await c.query('DELETE FROM blobs');
    await c.end();
    await noUsersLeft();
  });

  t.test('KILL QUERY with the id the gateway gave (what Ctrl-C does) cancels the query; only for the same identity', async (t) => {
    const s = await secretFor('app-db', 'read', true);
    const c1 = await mysql.createConnection({ host, port, user: 'app-db', password: s.secret, ssl: { ca: tg.gw.tls.ca } });
    const c2 = await mysql.createConnection({ host, port, user: 'app-db', password: s.secret, ssl: { ca: tg.gw.tls.ca } });
    t.ok(c1.threadId! >= 0x40000000, 'gateway connection ids never collide with server thread ids');
    const started = Date.now();
    const slow = c1.query('SELECT SLEEP(20) AS s');
    slow.catch(() => {}); // awaited below
    await waitFor(async () => Number((await db.admin("SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP%'"))[0].n) > 0, 5000, 'the query to run');
    await c2.query(`KILL QUERY ${c1.threadId}`);
    await t.rejects(slow, { errno: 1317, message: /interrupted/ }, 'the running query was interrupted');
    t.ok(Date.now() - started < 10_000, 'well before 20 s');
    const [again] = await c1.query('SELECT 2 AS x');
    t.equal((again as { x: number }[])[0]!.x, 2, 'KILL QUERY keeps the connection');

    // another identity cannot reach alice's connection through the mapping
    const g = await tg.grant('erin', 'app-db', 'read');
    const es = await tg.secret('erin', g.id);
    const ce = await mysql.createConnection({ host, port, user: 'app-db', password: es.secret, ssl: { ca: tg.gw.tls.ca } });
    await t.rejects(ce.query(`KILL QUERY ${c1.threadId}`), { errno: 1094, message: /Unknown thread id/ }, 'not hers: the server sees an unknown thread');
    await ce.end();

    // the CLI's own Ctrl-C path: it reconnects and sends KILL QUERY <id>
    let child: ReturnType<typeof import('node:child_process').spawn> | null = null;
    const t0 = Date.now();
    const done = run('mariadb', ['-h', host, '-P', String(port), '-u', 'app-db', `-p${s.secret}`, '-e', 'SELECT SLEEP(20)'], { onSpawn: (p) => { child = p; } });
    await waitFor(async () => Number((await db.admin("SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP%'"))[0].n) > 0, 5000, 'the CLI query to run');
    child!.kill('SIGINT');
    const r2 = await done;
    t.ok(Date.now() - t0 < 10_000, `the CLI query ended early (${r2.stderr.trim() || r2.stdout.trim()})`);
    t.equal(Number((await db.admin("SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP%'"))[0].n), 0, 'nothing left running on the server');
    await c1.end();
    await c2.end();
    await noUsersLeft();
  });
}
