/**
 * `tollgate connect <target>`: finds the active grant, fetches a fresh one-time secret and runs
 * the native client with it (psql with PGPASSWORD, ssh through an askpass helper) against real
 * demo servers through the gateway.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { postgresModule } from '../../protocols/postgres/index.js';
import { sshModule } from '../../protocols/ssh/index.js';
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
    c.stdin.end(stdin);
  });
}

t.test('tollgate connect runs psql and ssh with a fresh secret', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-connect-'));
  chmodSync(dir, 0o755);
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const log = pino({ level: 'silent' });
  const pg = await postgresModule.demo!(join(dir, 'pg'), log);
  const ssh = await sshModule.demo!(join(dir, 'ssh'), log);
  t.ok(pg && ssh, 'demo servers started');
  if (!pg || !ssh) return;
  t.teardown(() => pg.stop());
  t.teardown(() => ssh.stop());
  const tg = await startTestGateway({ targets: [...pg.targets, ...ssh.targets.filter((x) => x.name === 'web01')], listeners: ['postgres', 'ssh'] });
  t.teardown(() => tg.close());
  const env = { TOLLGATE_URL: tg.url, TOLLGATE_TOKEN: tg.token('alice'), TOLLGATE_CLI_CONFIG: join(dir, 'none.json'), HOME: dir };

  const none = await run(['connect', 'prod-db'], env, '');
  t.equal(none.code, 1);
  t.match(none.err, /no active grant for prod-db/);

  await tg.grant('alice', 'prod-db', 'read');
  const q = await run(['connect', 'prod-db'], env, 'select current_user;\n');
  t.equal(q.code, 0, q.err);
  t.match(q.out, /tg_alice_\w+/, 'psql ran as the minted role');

  await tg.grant('alice', 'web01', 'user');
  const s = await run(['connect', 'web01'], env, 'id -un\n');
  t.equal(s.code, 0, s.err);
  t.match(s.out, /tg-alice-\w+/, 'ssh ran as the minted account');
  const sessions = await tg.api('carol', 'GET', '/api/v1/sessions');
  t.same(sessions.body.map((x: any) => x.target).sort(), ['prod-db', 'web01']);
});
