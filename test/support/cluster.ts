/**
 * Several gateways as real processes (`tollgate serve --config`, so `kill -9` is real), the key, CA
 * and users they share, and haproxy in front of them. Every process dies with the test process
 * (setpriv --pdeathsig) and in teardown; every port is a free loopback port.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import pino from 'pino';
import { ApiTokens } from '../../auth/credentials.js';
import { SystemClock } from '../../policies/clock.js';
import { moduleMap } from '../../protocols/index.js';
import { freePort, waitPort } from '../../protocols/net.js';
import { validateConfig } from '../../proxy/config.js';
import { openStore } from '../../proxy/store/index.js';
import type { Store } from '../../proxy/store/types.js';
import { ensureCa } from '../../proxy/tls.js';
import { apiOf, DEFAULT_POLICIES, requestAndApprove, TEST_USERS, type Api } from './gateway.js';

export { apiOf, type Api };

export const bin = join(import.meta.dirname, '..', '..', 'proxy', 'bin', 'tollgate.js');
export const haveHaproxy = spawnSync('haproxy', ['-v'], { stdio: 'ignore' }).status === 0;

interface Teardown { teardown(fn: () => unknown): void }

/** What the nodes of one deployment share: the gateway key, the CA (gateway.ca), the recordings directory. */
export interface Shared { dir: string; keyFile: string; caCert: string; caKey: string; recordings: string }

export function sharedMaterial(dir: string): Shared {
  mkdirSync(dir, { recursive: true });
  const keyFile = join(dir, 'gateway.key');
  writeFileSync(keyFile, randomBytes(32).toString('base64'), { mode: 0o600 });
  ensureCa(join(dir, 'ca'));
  const recordings = join(dir, 'recordings');
  mkdirSync(recordings, { recursive: true });
  return { dir, keyFile, caCert: join(dir, 'ca', 'tls', 'ca.pem'), caKey: join(dir, 'ca', 'tls', 'ca.key'), recordings };
}

export interface NodeProcess {
  id: string;
  dataDir: string;
  configFile: string;
  url: string;
  ports: Record<string, number>;
  proc: ChildProcess;
  /** The process's last output lines (for failure messages). */
  output(): string;
  exited: Promise<number | null>;
  signal(sig: NodeJS.Signals): void;
  /** SIGTERM (drain) and wait for the exit; SIGKILL after timeoutMs. */
  stop(timeoutMs?: number): Promise<number | null>;
}

export interface NodeOptions {
  id: string;
  shared: Shared;
  dataDir: string;
  /** Protocol listeners besides http (free ports are picked). */
  listeners: string[];
  store: Record<string, unknown>;
  targets: unknown[];
  policies?: unknown[];
  gateway?: Record<string, unknown>;
  env?: Record<string, string>;
  /** Wait for /readyz (default true). */
  waitReady?: boolean;
}

/** A config file for `tollgate serve` (JSON is YAML), validated here first so a mistake reads as a config error. */
export async function writeNodeConfig(o: NodeOptions): Promise<{ file: string; ports: Record<string, number> }> {
  mkdirSync(o.dataDir, { recursive: true });
  const ports: Record<string, number> = { http: await freePort() };
  for (const l of o.listeners) ports[l] = await freePort();
  const raw = {
    gateway: {
      id: o.id, dataDir: o.dataDir, logLevel: 'info', reaperInterval: '1h', key: { file: o.shared.keyFile },
      ca: { cert: { file: o.shared.caCert }, key: { file: o.shared.caKey } }, recordingsDir: o.shared.recordings,
      ...(o.gateway ?? {}),
    },
    listeners: Object.fromEntries(Object.entries(ports).map(([n, port]) => [n, { host: '127.0.0.1', port }])),
    store: o.store,
    targets: o.targets,
    policies: o.policies ?? DEFAULT_POLICIES,
    breakGlass: { groups: ['oncall'], maxDuration: '1h' },
  };
  const file = join(o.dataDir, '..', `${o.id.replace(/\W/g, '_')}.yaml`);
  validateConfig(raw, file, moduleMap());
  writeFileSync(file, JSON.stringify(raw, null, 2), { mode: 0o600 });
  return { file, ports };
}

export async function startNode(t: Teardown, o: NodeOptions): Promise<NodeProcess> {
  const { file, ports } = await writeNodeConfig(o);
  return spawnNode(t, o, file, ports);
}

/** Start `tollgate serve` on a config already written (a restart). */
export async function spawnNode(t: Teardown, o: Pick<NodeOptions, 'id' | 'dataDir' | 'env' | 'waitReady'>, file: string, ports: Record<string, number>): Promise<NodeProcess> {
  const proc = spawn('setpriv', ['--pdeathsig', 'SIGKILL', '--', process.execPath, bin, 'serve', '--config', file], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...(o.env ?? {}) },
  });
  let out = '';
  const keep = (d: Buffer) => { out = (out + d.toString()).slice(-20_000); };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  const exited = new Promise<number | null>((r) => proc.once('exit', (code, sig) => r(code ?? (sig ? 128 : null))));
  const url = `http://127.0.0.1:${ports['http']}`;
  const node: NodeProcess = {
    id: o.id, dataDir: o.dataDir, configFile: file, url, ports, proc, exited, output: () => out,
    signal: (sig) => { if (proc.exitCode === null && proc.signalCode === null) proc.kill(sig); },
    async stop(timeoutMs = 30_000) {
      node.signal('SIGTERM');
      const timer = setTimeout(() => node.signal('SIGKILL'), timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
  t.teardown(async () => { node.signal('SIGKILL'); await exited; });
  if (o.waitReady !== false) await waitReady(node);
  return node;
}

/** Until GET /readyz answers 200 (the node's output in the error otherwise). */
export async function waitReady(node: NodeProcess, timeoutMs = 90_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (node.proc.exitCode !== null) throw new Error(`${node.id} exited (${node.proc.exitCode}):\n${node.output()}`);
    const r = await fetch(`${node.url}/readyz`).then((x) => x.status, () => 0);
    if (r === 200) return;
    if (Date.now() > until) throw new Error(`${node.id} not ready within ${timeoutMs} ms:\n${node.output()}`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

/**
 * The test users of test/support/gateway.ts as identities with API tokens, written straight into
 * the store the nodes share (as an operator's script would): user -> token.
 */
export async function seedUsers(store: Store): Promise<Record<string, string>> {
  const tokens = new ApiTokens(store, new SystemClock());
  const out: Record<string, string> = {};
  for (const [name, groups] of Object.entries(TEST_USERS)) {
    const now = Date.now();
    await store.upsertIdentity({ sub: name, email: `${name}@test`, name, groups, firstSeen: now, lastSeen: now });
    out[name] = (await tokens.create(name, 'test', 86_400_000, now)).token.reveal();
  }
  return out;
}

/** Open the store a node config names (as the CLI does). */
export async function openNodeStore(configFile: string): Promise<Store> {
  const { loadConfigFile } = await import('../../proxy/config.js');
  const cfg = loadConfigFile(configFile, moduleMap());
  return openStore(cfg, { dataDir: cfg.gateway.dataDir, log: pino({ level: 'silent' }) });
}

/** Request, approve (bob, then dave where needed) and return the grant id. */
export const grantVia = requestAndApprove;

export interface Haproxy {
  ports: Record<string, number>;
  proc: ChildProcess;
  output(): string;
  /** "backend/server" -> "UP L7OK", "DOWN L7STS", … from the stats socket (`show stat`). */
  servers(): Promise<Record<string, string>>;
  stop(): Promise<void>;
}

/**
 * haproxy in the foreground (-db) with a generated config: one frontend per listener name,
 * round-robin over the nodes, each node checked with GET /readyz on its HTTP port every 200 ms
 * (down after 3 failures, up after 2 successes). http is balanced per request; the rest per TCP connection.
 */
export async function startHaproxy(t: Teardown, dir: string, nodes: { id: string; ports: Record<string, number> }[], names: string[]): Promise<Haproxy> {
  mkdirSync(dir, { recursive: true });
  const ports: Record<string, number> = {};
  for (const n of names) ports[n] = await freePort();
  const lines = [
    'global', '  maxconn 500', '  log stderr format raw local0 info', `  stats socket ${join(dir, 'stats.sock')} mode 600 level user`,
    'defaults', '  log global', '  option log-health-checks', '  timeout connect 2s', '  timeout client 5m', '  timeout server 5m', '  timeout check 2s', '  retries 2', '  option redispatch',
  ];
  for (const name of names) {
    const mode = name === 'http' ? 'http' : 'tcp';
    lines.push(`frontend fe_${name}`, `  mode ${mode}`, '  no log', `  bind 127.0.0.1:${ports[name]}`, `  default_backend be_${name}`);
    lines.push(`backend be_${name}`, `  mode ${mode}`, '  balance roundrobin', '  option httpchk',
      // HTTP/1.1 with a Host header: uWebSockets.js does not answer HTTP/1.0 requests (haproxy's default check).
      '  http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host localhost', '  http-check expect status 200',
      '  default-server inter 200ms fall 3 rise 2');
    for (const n of nodes) lines.push(`  server ${n.id.replace(/\W/g, '_')} 127.0.0.1:${n.ports[name]} check port ${n.ports['http']}`);
  }
  const cfg = join(dir, 'haproxy.cfg');
  writeFileSync(cfg, `${lines.join('\n')}\n`);
  const check = spawnSync('haproxy', ['-c', '-f', cfg], { encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`haproxy config invalid:\n${check.stdout}${check.stderr}`);
  const proc = spawn('setpriv', ['--pdeathsig', 'SIGKILL', '--', 'haproxy', '-db', '-f', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d: Buffer) => { out = (out + d.toString()).slice(-20_000); };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const stop = async () => { if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL'); await exited; };
  t.teardown(stop);
  for (const name of names) await waitPort('127.0.0.1', ports[name]!);
  const servers = () => new Promise<Record<string, string>>((resolve, reject) => {
    const c = net.connect(join(dir, 'stats.sock'), () => c.write('show stat\n'));
    let csv = '';
    c.on('data', (d) => { csv += d; });
    c.on('error', reject);
    c.on('close', () => {
      const [head, ...rows] = csv.replace(/^# /, '').trim().split('\n').map((l) => l.split(','));
      const col = (n: string) => head!.indexOf(n);
      const res: Record<string, string> = {};
      for (const r of rows) if (r[col('svname')] !== 'FRONTEND' && r[col('svname')] !== 'BACKEND') res[`${r[col('pxname')]}/${r[col('svname')]}`] = `${r[col('status')]} ${r[col('check_status')]}`;
      resolve(res);
    });
  });
  return { ports, proc, output: () => out, servers, stop };
}
