/**
 * `tollgate connect <target>`: finds the active grant, fetches a fresh one-time secret and runs
 * the native client with it (psql with PGPASSWORD, ssh through an askpass helper) against real
 * demo servers through the gateway. The clients verify the gateway: psql with sslmode=verify-full
 * and the CA from the API, ssh with StrictHostKeyChecking=yes and the API's known_hosts.
 */
import t from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { postgresModule } from '../../protocols/postgres/index.js';
import { sshModule } from '../../protocols/ssh/index.js';
import { mysqlModule } from '../../protocols/mysql/index.js';
import { startTestGateway } from '../support/gateway.js';

const bin = join(import.meta.dirname, '..', '..', 'proxy', 'bin', 'tollgate.js');

function run(args: string[], env: Record<string, string>, stdin: string): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [bin, ...args], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => { out += d; });
    c.stderr.on('data', (d) => { err += d; });
    c.on('close', (code) => resolve({ code, out, err }));
    c.stdin.on('error', () => undefined); // the CLI may exit before reading its stdin
    c.stdin.end(stdin);
  });
}

t.test('tollgate connect runs psql, ssh and mariadb with a fresh secret, each checking the gateway', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-connect-'));
  chmodSync(dir, 0o755);
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const log = pino({ level: 'silent' });
  const pg = await postgresModule.demo!(join(dir, 'pg'), log);
  const ssh = await sshModule.demo!(join(dir, 'ssh'), log);
  const my = await mysqlModule.demo!(join(dir, 'mysql'), log);
  t.ok(pg && ssh && my, 'demo servers started');
  if (!pg || !ssh || !my) return;
  t.teardown(() => pg.stop());
  t.teardown(() => ssh.stop());
  t.teardown(() => my.stop());
  const tg = await startTestGateway({ targets: [...pg.targets, ...ssh.targets.filter((x) => x.name === 'web01'), ...my.targets], listeners: ['postgres', 'ssh', 'mysql'] });
  t.teardown(() => tg.close());
  const env = { TOLLGATE_URL: tg.url, TOLLGATE_TOKEN: tg.token('alice'), TOLLGATE_CLI_CONFIG: join(dir, 'none.json'), HOME: dir };
  const before = new Set(readdirSync(tmpdir()));

  const none = await run(['connect', 'prod-db'], env, '');
  t.equal(none.code, 1);
  t.match(none.err, /no active grant for prod-db/);

  await tg.grant('alice', 'prod-db', 'read');
  const q = await run(['connect', 'prod-db'], env, 'select current_user;\n');
  t.equal(q.code, 0, q.err);
  t.match(q.out, /tg_alice_\w+/, 'psql ran as the minted role');
  // psql checks the gateway's certificate against the CA the CLI fetched from the API (verify-full):
  // served a CA that did not sign the gateway's certificate, it refuses to connect.
  const realTls = tg.gw.tls;
  const other = execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', '/dev/null', '-subj', '/CN=other CA', '-days', '1'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  tg.gw.tls = { ...realTls, ca: other };
  const refused = await run(['connect', 'prod-db'], env, 'select 1;\n');
  tg.gw.tls = realTls;
  t.not(refused.code, 0, 'psql refuses a gateway its CA file does not vouch for');
  t.match(refused.err, /certificate verify failed/);

  await tg.grant('alice', 'web01', 'user');
  const s = await run(['connect', 'web01'], env, 'id -un\n');
  t.equal(s.code, 0, s.err);
  t.match(s.out, /tg-alice-\w+/, 'ssh ran as the minted account');
  t.notMatch(s.err, /Permanently added|known hosts/, 'ssh checked the gateway key from GET /api/v1/ssh/known_hosts (StrictHostKeyChecking=yes), it learnt nothing new');

  // mariadb with --ssl-ca (the CA the CLI fetched) and --ssl-verify-server-cert.
  await tg.grant('alice', 'app-db', 'read');
  const m = await run(['connect', 'app-db'], env, 'SELECT CURRENT_USER();\n');
  t.equal(m.code, 0, m.err);
  t.match(m.out, /tg_alice_\w+@/, 'mariadb ran as the minted user');
  const sessions = await tg.api('carol', 'GET', '/api/v1/sessions');
  t.same(sessions.body.map((x: any) => x.target).sort(), ['app-db', 'prod-db', 'web01']);
  t.same(readdirSync(tmpdir()).filter((f) => f.startsWith('tollgate-connect-')).filter((f) => !before.has(f)), [], 'the CA, known_hosts and askpass copies are removed afterwards');
});
