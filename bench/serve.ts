/**
 * A second gateway for the "tollgate-2w" rows: `tollgate serve` with gateway.workers: 2 as a child
 * process, in front of the demo's own PostgreSQL cluster and sshd (their addresses and admin
 * credentials from demo.json), so both gateways reach the same servers. alice signs in through the
 * gateway's dev IdP in headless Chromium and creates an API token (POST /api/v1/tokens); grants are
 * auto-approved by the policy. CLI and public API only (bench/ imports no proxy/ internals).
 *
 * With workers the protocol listeners (PostgreSQL, SSH) are shared by both workers (node:cluster
 * hands connections round-robin); the HTTP front (portal, API, HTTP apps) runs in worker 0 only,
 * since uWebSockets.js cannot share its port across processes (proxy/cluster/workers.ts): the HTTP
 * scenario has no 2-worker row for that reason.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { devIdpSignIn, launchChromium } from './http.js';
import { execFileP, freePort, splitAddress, treeCpuMs, tollgateBin, type DemoGateway } from './harness.js';

export interface ServedGateway {
  /** The primary's pid; CPU time is the primary's and its workers' (treeCpuMs). */
  pid: number;
  url: string;
  listeners: Record<string, { host: string; port: number }>;
  cpuMs(): number;
  grant(target: string, role: string): Promise<string>;
  secret(grantId: string, reusable?: boolean): Promise<{ secret: string; host: string; port: number; username: string }>;
  revoke(grantId: string): Promise<void>;
  stop(): Promise<void>;
}

async function hostKeyFingerprint(host: string, port: number): Promise<string> {
  const { stdout } = await execFileP('ssh-keyscan', ['-T', '10', '-t', 'ed25519,ecdsa,rsa', '-p', String(port), host]);
  const line = stdout.split('\n').find((l) => l && !l.startsWith('#'));
  if (!line) throw new Error(`ssh-keyscan found no host key at ${host}:${port}`);
  const dir = mkdtempSync(join(tmpdir(), 'tg-bench-keyscan-'));
  try {
    writeFileSync(join(dir, 'k.pub'), line.split(' ').slice(1).join(' ') + '\n');
    const fp = (await execFileP('ssh-keygen', ['-lf', join(dir, 'k.pub')])).stdout.split(' ')[1];
    if (!fp?.startsWith('SHA256:')) throw new Error(`no fingerprint for ${host}:${port}`);
    return fp;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `tollgate serve` with `workers` worker processes, targets pg (postgres) and web (ssh) on the demo's servers. */
export async function startServedGateway(demo: DemoGateway, workers: number, log: (m: string) => void): Promise<ServedGateway> {
  // A port picked free can be taken before the gateway binds it (an outgoing connection's ephemeral
  // port): then start again on new ports, at most 3 times.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(demo, workers, log);
    } catch (e) {
      if (attempt >= 3 || !/EADDRINUSE/.test((e as Error).message)) throw e;
      log(`tollgate serve (workers: ${workers}): a listener port was taken meanwhile (EADDRINUSE); starting again on new ports`);
    }
  }
}

async function startOnce(demo: DemoGateway, workers: number, log: (m: string) => void): Promise<ServedGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'tg-bench-serve-'));
  let child: ChildProcess | null = null;
  try {
    const pgTarget = demo.demo.targets.find((t) => t.protocol === 'postgres');
    const pg = pgTarget ? demo.demo.direct[pgTarget.name] : undefined;
    const ssh = demo.demo.direct['web01'];
    const targets: unknown[] = [];
    if (pg) {
      targets.push({
        name: 'pg', protocol: 'postgres', address: pg.address, risk: 'low',
        roles: [{ name: 'admin', grants: ['app_owner', 'pg_read_all_data', 'pg_write_all_data'] }],
        credentials: { admin: { user: String(pg.credentials.admin.user), password: { value: String(pg.credentials.admin.password) } }, database: String(pg.credentials.database ?? 'app'), onEnd: 'drop' },
        options: { allowPlain: false },
      });
    }
    if (ssh) {
      const a = splitAddress(ssh.address);
      const keyFile = join(dir, 'ssh-admin.key');
      writeFileSync(keyFile, `${String(ssh.credentials.admin.privateKey).trim()}\n`, { mode: 0o600 });
      targets.push({
        name: 'web', protocol: 'ssh', address: ssh.address, risk: 'low', roles: [{ name: 'user' }],
        credentials: { mode: 'ephemeral-account', admin: { username: String(ssh.credentials.admin.username ?? 'root'), privateKey: { file: keyFile } } },
        options: { hostKeyFingerprint: await hostKeyFingerprint(a.host, a.port) },
      });
    }
    const listeners: Record<string, { host: string; port: number }> = { http: { host: '127.0.0.1', port: await freePort() } };
    if (pg) listeners.postgres = { host: '127.0.0.1', port: await freePort() };
    if (ssh) listeners.ssh = { host: '127.0.0.1', port: await freePort() };
    const password = `bench-${Math.random().toString(36).slice(2)}`;
    const config = {
      gateway: { dataDir: join(dir, 'data'), id: `bench-${workers}w`, logLevel: 'warn', workers },
      listeners,
      idp: { dev: { host: '127.0.0.1', port: await freePort(), users: [{ name: 'alice', email: 'alice@bench', password: { value: password }, groups: ['engineers'] }] } },
      targets,
      policies: [{ name: 'bench', targets: ['*'], roles: ['*'], requesters: ['engineers'], approval: 'auto', maxDuration: '8h' }],
    };
    writeFileSync(join(dir, 'tollgate.yaml'), JSON.stringify(config, null, 2), { mode: 0o600 });
    let out = '';
    child = spawn('setpriv', ['--pdeathsig', 'SIGTERM', '--', process.execPath, tollgateBin, 'serve', '--config', join(dir, 'tollgate.yaml')], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TOLLGATE_LOG_LEVEL: 'warn' } });
    child.stdout!.on('data', (d) => { out = (out + d).slice(-4000); });
    child.stderr!.on('data', (d) => { out = (out + d).slice(-4000); });
    const url = `http://127.0.0.1:${listeners.http!.port}`;
    for (let i = 0; ; i++) {
      if (child.exitCode !== null) throw new Error(`tollgate serve (workers: ${workers}) exited: ${out}`);
      if (i > 900) throw new Error(`tollgate serve (workers: ${workers}) did not answer /healthz: ${out}`);
      const ok = await fetch(`${url}/healthz`).then((r) => r.ok, () => false);
      if (ok) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    // Sign in through the dev IdP and create an API token for the rest.
    const browser = await launchChromium();
    let token: string;
    try {
      const { page } = await devIdpSignIn(browser, url, password);
      const r = await page.request.post(`${url}/api/v1/tokens`, { data: { name: 'bench', ttl: '1d' }, headers: { origin: url } });
      if (r.status() >= 300) throw new Error(`POST /api/v1/tokens: ${r.status()} ${await r.text()}`);
      token = (await r.json() as { token: string }).token;
    } finally {
      await browser.close();
    }
    const api = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(url + path, { method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
      const j = await res.json().catch(() => null);
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(j)}`);
      return j;
    };
    const pid = child.pid!;
    log(`gateway (tollgate serve, workers: ${workers}) pid ${pid} at ${url}`);
    const proc = child;
    return {
      pid, url, listeners,
      cpuMs: () => treeCpuMs(pid),
      async grant(target, role) {
        const r = await api('POST', '/api/v1/requests', { target, role, duration: '4h', reason: 'benchmark' });
        if (!r.grantId) throw new Error(`no grant: ${JSON.stringify(r)}`);
        return r.grantId as string;
      },
      secret: (grantId, reusable = false) => api('POST', `/api/v1/grants/${grantId}/secret`, { reusable, ttl: '2h' }),
      async revoke(grantId) { await api('POST', `/api/v1/grants/${grantId}/revoke`, { reason: 'bench done' }).catch(() => undefined); },
      async stop() {
        if (proc.exitCode === null) {
          const closed = new Promise((r) => proc.once('close', r));
          proc.kill('SIGTERM');
          const t = setTimeout(() => proc.kill('SIGKILL'), 20_000);
          await closed;
          clearTimeout(t);
        }
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}
