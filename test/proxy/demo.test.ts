/**
 * `tollgate demo` as the README's first command runs it: real demo targets, users with tokens,
 * demo.json in the documented shape, /healthz up; Ctrl-C stops every server it started.
 */
import t, { type Test } from 'tap';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:http';
import { sambaMissing } from '../../protocols/directory-samba.js';

/** With Samba installed: the demo's domain target, and a grant of it elevating alice's own domain account. */
async function directoryPart(t: Test, demo: any): Promise<void> {
  const domain = demo.targets.find((x: { name: string }) => x.name === 'domain');
  t.match(domain, { protocol: 'rdp', roles: ['domain-admin'] }, 'a directory target (Samba is installed)');
  t.ok(demo.directory?.adminPassword, 'demo.json names the demo DC');
  const groupDn = `CN=${demo.directory.groups[0]},CN=Users,${demo.directory.baseDn}`;
  const members = () => execFileSync('ldapsearch', ['-x', '-LLL', '-H', 'ldaps://127.0.0.1', '-D', demo.directory.admin, '-w', demo.directory.adminPassword, '-b', groupDn, '-s', 'base', 'member'], { encoding: 'utf8', env: { ...process.env, LDAPTLS_REQCERT: 'never' } });
  t.notMatch(members(), /CN=alice,/i, 'alice is not a member before');
  const api = (who: string, method: string, path: string, body?: unknown) => fetch(`${demo.gatewayUrl}${path}`, {
    method, headers: { authorization: `Bearer ${demo.users[who].token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body),
  }).then(async (r) => ({ status: r.status, body: await r.json() as any }));
  const req = await api('alice', 'POST', '/api/v1/requests', { target: 'domain', role: 'domain-admin', duration: '10m', reason: 'demo test' });
  t.equal(req.status, 201, JSON.stringify(req.body));
  let state = req.body;
  for (const approver of ['bob', 'dave']) {
    if (state.state !== 'pending') break;
    state = (await api(approver, 'POST', `/api/v1/requests/${state.id}/approve`, { comment: 'ok' })).body;
  }
  t.equal(state.state, 'approved');
  let now = '';
  for (let i = 0; i < 100 && !/CN=alice,/i.test(now); i++) { await new Promise((r) => setTimeout(r, 200)); now = members(); }
  t.match(now, /CN=alice,CN=Users,DC=demo,DC=tollgate/i, 'the grant put alice\'s own account into the group');
  const revoked = await api('bob', 'POST', `/api/v1/grants/${state.grantId}/revoke`, { reason: 'demo test' });
  t.equal(revoked.status, 200);
  for (let i = 0; i < 100 && /CN=alice,/i.test(now); i++) { await new Promise((r) => setTimeout(r, 200)); now = members(); }
  t.notMatch(now, /CN=alice,/i, 'and the revoke took it out');
}

const bin = join(import.meta.dirname, '..', '..', 'proxy', 'bin', 'tollgate.js');

t.test('tollgate demo', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-demo-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const child = spawn(process.execPath, [bin, 'demo', '--dir', dir, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TOLLGATE_LOG_LEVEL: 'warn' } });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  const exited = new Promise<number | null>((r) => child.on('close', (c) => r(c)));
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
  const file = join(dir, 'demo.json');
  // The demo's Samba DC may wait for another test's DC to stop (one per machine): up to 6 minutes.
  for (let i = 0; i < 720 && !existsSync(file); i++) await new Promise((r) => setTimeout(r, 500));
  t.ok(existsSync(file), `demo.json written (${out.slice(-2000)})`);
  await new Promise((r) => setTimeout(r, 300));
  const demo = JSON.parse(readFileSync(file, 'utf8'));
  t.match(demo.gatewayUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
  t.same(Object.keys(demo.users).sort(), ['alice', 'bob', 'carol', 'dave']);
  t.same(demo.users.alice.groups, ['engineers', 'oncall']);
  for (const u of Object.values(demo.users) as { token: string }[]) t.match(u.token, /^tg_pat_/);
  const protocols = new Set(demo.targets.map((x: { protocol: string }) => x.protocol));
  for (const p of ['ssh', 'postgres', 'mysql']) t.ok(protocols.has(p), `a ${p} demo target`);
  for (const x of demo.targets) {
    t.type(x.name, 'string');
    t.ok(['low', 'medium', 'high', 'critical'].includes(x.risk));
    t.ok(Array.isArray(x.roles) && x.roles.length);
    if (x.protocol !== 'http') t.ok(demo.listeners[x.protocol]?.port > 0, `listener for ${x.protocol}`);
  }
  const health = await fetch(`${demo.gatewayUrl}/healthz`);
  t.equal(health.status, 200);
  const me = await fetch(`${demo.gatewayUrl}/api/v1/me`, { headers: { authorization: `Bearer ${demo.users.carol.token}` } }).then((r) => r.json()) as { sub: string };
  t.equal(me.sub, 'carol');
  t.match(out, /Tollgate demo is running at/);
  const keyFile = join(dir, 'data', 'gateway.key');
  t.equal(statSync(keyFile).mode & 0o777, 0o600, 'the demo made its gateway key file (0600) in its data dir');
  t.ok(out.includes(`gateway key: ${keyFile}`), 'and says where it is');
  const app = /app: +wiki at (http:\/\/wiki\.localhost:(\d+))\//.exec(out);
  t.ok(app, 'the demo prints the wiki app\'s own URL');
  if (app) {
    t.equal(Number(app[2]), Number(new URL(demo.gatewayUrl).port), 'on the gateway\'s port');
    // Node does not resolve *.localhost (browsers do): ask 127.0.0.1 with the app's Host header.
    const r = await new Promise<{ status: number; location: string }>((resolve, reject) => {
      request({ host: '127.0.0.1', port: Number(app[2]), path: '/', headers: { host: new URL(app[1]!).host } }, (res) => { res.resume(); resolve({ status: res.statusCode!, location: String(res.headers.location) }); }).on('error', reject).end();
    });
    t.equal(r.status, 302, 'the printed URL is the app (sign-in first)');
    t.match(r.location, new RegExp(`^${demo.gatewayUrl}/apps/_auth\\?app=wiki&`));
  }
  if (!sambaMissing()) await directoryPart(t, demo);
  child.kill('SIGINT');
  const code = await exited;
  t.equal(code, 0, 'stops cleanly on Ctrl-C');
  const left = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(dir));
  t.same(left, [], 'no demo server left running');
  const cfg = join(dir, 'verify.yaml');
  writeFileSync(cfg, `gateway:\n  dataDir: ${join(dir, 'data')}\n  id: demo\n`);
  const verified = execFileSync(process.execPath, [bin, 'audit', 'verify', '--config', cfg], { encoding: 'utf8' });
  t.match(verified, /audit chain OK: \d+ events, head [0-9a-f]{64}, [1-9]\d* signed checkpoints match/, 'the demo\'s audit log verifies with its key and checkpoints');
});
