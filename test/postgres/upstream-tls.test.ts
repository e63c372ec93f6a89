/**
 * TLS between the gateway and the database server (options.upstreamTls): a cluster that only
 * accepts TLS for non-superusers. require and verify-full work (the session's backend reports
 * ssl = true); disable and a wrong CA are refused with a clear error and leave nothing behind.
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
  const base = { ...pgc.target, options: { allowPlain: true } };
  const targets = [
    { ...base, name: 'tls-require', options: { allowPlain: true, upstreamTls: 'require' } },
    { ...base, name: 'tls-verify', options: { allowPlain: true, upstreamTls: 'verify-full', upstreamCa: { file: caFile } } },
    { ...base, name: 'tls-off', options: { allowPlain: true, upstreamTls: 'disable' } },
    { ...base, name: 'tls-wrong-ca', options: { allowPlain: true, upstreamTls: 'verify-full', upstreamCa: { file: otherCa } } },
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
}
