/**
 * TLS between the gateway and the database server (options.upstreamTls): a cluster that only
 * accepts TLS for non-superusers. require and verify-full work (the session's backend reports
 * ssl = true); disable and a wrong CA are refused with a clear error and leave nothing behind.
 * With upstreamCa, require verifies the certificate chain; verify-full also the host name.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { DEFAULT_POLICIES, startTestGateway } from '../support/gateway.js';
import { havePostgres, requireServerTls, startTestCluster } from '../support/pg.js';
import { postgresModule } from '../../protocols/postgres/index.js';

if (!havePostgres) {
  t.fail('PostgreSQL binaries are required');
} else {
  const pgc = await startTestCluster(t);
  const ca = await requireServerTls(pgc);
  const caFile = join(pgc.dir, 'server-ca.pem');
  writeFileSync(caFile, ca);
  const otherCa = join(pgc.dir, 'other-ca.pem');
  const { execFileSync } = await import('node:child_process');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-keyout', join(pgc.dir, 'other.key'), '-out', otherCa, '-subj', '/CN=other'], { stdio: 'ignore' });
  // A private CA and a server certificate it signs for 127.0.0.1 only (installed later, in the last test).
  const run = (...args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });
  const dbCa = join(pgc.dir, 'db-ca.pem');
  run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-keyout', join(pgc.dir, 'db-ca.key'), '-out', dbCa, '-subj', '/CN=db test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign');
  writeFileSync(join(pgc.dir, 'san.txt'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
  run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(pgc.dir, 'db.key'), '-out', join(pgc.dir, 'db.csr'), '-subj', '/CN=db');
  run('x509', '-req', '-in', join(pgc.dir, 'db.csr'), '-CA', dbCa, '-CAkey', join(pgc.dir, 'db-ca.key'), '-CAcreateserial', '-out', join(pgc.dir, 'db.pem'), '-days', '1', '-extfile', join(pgc.dir, 'san.txt'));
  const dbPort = Number(pgc.target.address.split(':').pop());
  const base = { ...pgc.target, options: { allowPlain: true } };
  const byName = { ...base, address: `localhost:${dbPort}` };
  const targets = [
    { ...base, name: 'tls-require', options: { allowPlain: true, upstreamTls: 'require' } },
    { ...base, name: 'tls-verify', options: { allowPlain: true, upstreamTls: 'verify-full', upstreamCa: { file: caFile } } },
    { ...base, name: 'tls-off', options: { allowPlain: true, upstreamTls: 'disable' } },
    { ...base, name: 'tls-wrong-ca', options: { allowPlain: true, upstreamTls: 'verify-full', upstreamCa: { file: otherCa } } },
    { ...base, name: 'ca-require', options: { allowPlain: true, upstreamTls: 'require', upstreamCa: { file: dbCa } } },
    { ...base, name: 'ca-require-other', options: { allowPlain: true, upstreamTls: 'require', upstreamCa: { file: otherCa } } },
    { ...byName, name: 'ca-require-by-name', options: { allowPlain: true, upstreamTls: 'require', upstreamCa: { file: dbCa } } },
    { ...base, name: 'full-right-name', options: { allowPlain: true, upstreamTls: 'verify-full', upstreamCa: { file: dbCa } } },
    { ...byName, name: 'full-wrong-name', options: { allowPlain: true, upstreamTls: 'verify-full', upstreamCa: { file: dbCa } } },
  ];
  t.match(postgresModule.validateTarget!({ ...base, options: { upstreamTls: 'verify-full' } }), { path: 'options.upstreamCa' }, 'verify-full needs a CA');
  const tg = await startTestGateway({ targets, policies: DEFAULT_POLICIES, listeners: ['postgres'] });
  t.teardown(() => tg.close());
  const { host, port } = tg.listener('postgres');
  const login = async (target: string) => {
    const g = await tg.grant('alice', target, 'read');
    const s = await tg.secret('alice', g.id);
    const c = new pg.Client({ host, port, user: target, password: s.secret, database: 'app', ssl: false });
    c.on('error', () => {});
    return c.connect().then(() => c, (e: Error & { code?: string }) => e);
  };

  for (const name of ['tls-require', 'tls-verify']) {
    t.test(`${name}: the session's backend runs over TLS`, async (t) => {
      const c = await login(name);
      t.ok(c instanceof pg.Client, String(c));
      if (!(c instanceof pg.Client)) return;
      const r = await c.query('SELECT ssl, current_user AS u FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
      t.equal(r.rows[0].ssl, true);
      t.match(r.rows[0].u, /^tg_alice_/);
      t.ok((await postgresModule.checkTarget!(tg.gw.ctx('postgres'), targets.find((x) => x.name === name)!)).ok, 'checkTarget over TLS');
      await c.end();
      t.same(await pgc.noSessionRoles(), []);
    });
  }

  t.test('plain upstream refused by the server, wrong CA refused by the gateway', async (t) => {
    const off = await login('tls-off');
    t.ok(off instanceof Error);
    t.match((off as Error).message, /could not create the session role on tls-off: .*no pg_hba\.conf entry|pg_hba/);
    const wrong = await login('tls-wrong-ca');
    t.ok(wrong instanceof Error);
    t.match((wrong as Error).message, /self[- ]signed|unable to verify|certificate/i);
    t.same(await pgc.noSessionRoles(), []);
  });

  t.test('a CA-signed server certificate for 127.0.0.1: require checks the chain, verify-full also the host name', async (t) => {
    // Install the CA-signed certificate on the database server (PostgreSQL reloads it on SIGHUP).
    const { copyFileSync, chownSync, statSync } = await import('node:fs');
    const st = statSync(pgc.cluster.dataDir);
    copyFileSync(join(pgc.dir, 'db.pem'), join(pgc.cluster.dataDir, 'server.crt'));
    copyFileSync(join(pgc.dir, 'db.key'), join(pgc.cluster.dataDir, 'server.key'));
    for (const f of ['server.crt', 'server.key']) chownSync(join(pgc.cluster.dataDir, f), st.uid, st.gid);
    const su = await pgc.su();
    await su.query('SELECT pg_reload_conf()');
    await su.end();
    await new Promise((r) => setTimeout(r, 300));

    for (const name of ['ca-require', 'ca-require-by-name', 'full-right-name']) {
      const c = await login(name);
      t.ok(c instanceof pg.Client, `${name}: ${String(c)}`);
      if (!(c instanceof pg.Client)) continue;
      t.equal((await c.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()')).rows[0].ssl, true, `${name}: over TLS`);
      await c.end();
    }
    const other = await login('ca-require-other');
    t.ok(other instanceof Error, 'require with a CA that did not sign the server certificate is refused (the chain is checked)');
    t.match((other as Error).message, /unable to verify|self[- ]signed|certificate/i);
    const wrong = await login('full-wrong-name');
    t.ok(wrong instanceof Error, 'verify-full with a host name the certificate does not carry is refused');
    t.match((wrong as Error).message, /Hostname\/IP does not match certificate's altnames: Host: localhost/);
    for (const name of ['ca-require-other', 'full-wrong-name']) {
      const r = await postgresModule.checkTarget!(tg.gw.ctx('postgres'), targets.find((x) => x.name === name)!);
      t.equal(r.ok, false, `${name}: checkTarget refuses too (${r.detail})`);
    }
    t.ok((await postgresModule.checkTarget!(tg.gw.ctx('postgres'), targets.find((x) => x.name === 'full-right-name')!)).ok, 'checkTarget with the right name');
    t.same(await pgc.noSessionRoles(), []);
  });
}
