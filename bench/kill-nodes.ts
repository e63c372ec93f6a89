/**
 * The kill scenario across two gateways: two `tollgate serve` nodes on one PostgreSQL store (a
 * database made for the run on the demo's PostgreSQL cluster, which is also the target), live
 * psql sessions spread evenly over both, and a grant revoke through node A's API. Reported: the
 * time from the revoke call to each client's TCP connection being closed by its gateway (seen at a
 * TCP tap in front of each node, bench/clients.ts), as p50/p99 over every session of
 * every round, and the slowest node B client (the control bus's part). CLI and public API only:
 * alice signs in through node A's dev IdP in headless Chromium, as the http scenario does.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { execFileP, freePort, median, percentile, splitAddress, tollgateBin, type BenchOptions, type BenchRow, type DemoGateway } from './harness.js';
import { pgSleeping, spawnIdle, startCloseTap, type CloseTap } from './clients.js';
import { devIdpSignIn, launchChromium } from './http.js';

interface Node { id: string; url: string; pgPort: number; proc: ChildProcess; out(): string }

async function waitReady(n: Node): Promise<void> {
  for (let i = 0; i < 1_200; i++) {
    if (n.proc.exitCode !== null) throw new Error(`${n.id} exited: ${n.out()}`);
    if ((await fetch(`${n.url}/readyz`).then((r) => r.status, () => 0)) === 200) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${n.id} not ready: ${n.out()}`);
}

export async function killAcrossNodes(opts: BenchOptions, demo: DemoGateway): Promise<BenchRow[]> {
  const pgTarget = demo.demo.targets.find((x) => x.protocol === 'postgres');
  if (!pgTarget) throw new Error('no postgres demo target');
  const direct = demo.demo.direct[pgTarget.name]!;
  const up = splitAddress(direct.address);
  const admin = direct.credentials.admin as { user: string; password: string };
  const dir = mkdtempSync(join(tmpdir(), 'tg-bench-kill-nodes-'));
  const db = `tg_bench_${randomBytes(4).toString('hex')}`;
  const psqlAdmin = (sql: string) => execFileP('psql', ['-X', '-q', '-h', up.host, '-p', String(up.port), '-U', admin.user, '-d', 'postgres', '-c', sql], { env: { ...process.env, PGPASSWORD: admin.password, PGSSLMODE: 'disable' } });
  await psqlAdmin(`CREATE DATABASE ${db}`);
  const nodes: Node[] = [];
  let browser: Browser | null = null;
  try {
    const keyFile = join(dir, 'gateway.key');
    writeFileSync(keyFile, randomBytes(32).toString('base64'), { mode: 0o600 });
    const password = `bench-${randomBytes(6).toString('hex')}`;
    const storeUrl = `postgres://${encodeURIComponent(admin.user)}:${encodeURIComponent(admin.password)}@${up.host}:${up.port}/${db}`;
    for (const id of ['bench-a', 'bench-b']) {
      const http = await freePort();
      const pgPort = await freePort();
      const config = {
        gateway: { id, dataDir: join(dir, id), logLevel: 'warn', reaperInterval: '1h', key: { file: keyFile }, recordingsDir: join(dir, 'recordings') },
        listeners: { http: { host: '127.0.0.1', port: http }, postgres: { host: '127.0.0.1', port: pgPort } },
        store: { kind: 'postgres', url: { value: storeUrl }, poolSize: 4 },
        idp: { dev: { users: [{ name: 'alice', email: 'alice@bench', password: { value: password }, groups: ['engineers'] }] } },
        targets: [{
          name: 'bench-db', protocol: 'postgres', address: direct.address, risk: 'low', roles: [{ name: 'read', grants: ['pg_read_all_data'] }],
          credentials: { admin: { user: admin.user, password: { value: admin.password } }, database: String(direct.credentials.database ?? 'postgres'), onEnd: 'drop' },
        }],
        policies: [{ name: 'bench', targets: ['bench-db'], roles: ['*'], requesters: ['engineers'], approval: 'auto', maxDuration: '8h' }],
      };
      const file = join(dir, `${id}.yaml`);
      writeFileSync(file, JSON.stringify(config, null, 2), { mode: 0o600 });
      const proc = spawn('setpriv', ['--pdeathsig', 'SIGKILL', '--', process.execPath, tollgateBin, 'serve', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      const keep = (d: Buffer) => { out = (out + d.toString()).slice(-8_000); };
      proc.stdout!.on('data', keep);
      proc.stderr!.on('data', keep);
      const n: Node = { id, url: `http://127.0.0.1:${http}`, pgPort, proc, out: () => out };
      nodes.push(n);
      // One after the other: the first migrates the new database.
      await waitReady(n);
    }
    const [a, b] = nodes as [Node, Node];
    opts.log(`two nodes on one PostgreSQL store: ${a.url}, ${b.url}`);
    browser = await launchChromium();
    const api = (await devIdpSignIn(browser, a.url, password)).ctx.request;
    const post = async (path: string, data: unknown) => {
      const r = await api.post(`${a.url}${path}`, { data, headers: { origin: a.url } });
      if (r.status() >= 300) throw new Error(`POST ${path}: ${r.status()} ${await r.text()}`);
      return r.json() as Promise<Record<string, unknown>>;
    };
    let grantId = '';
    /** Live sessions under this round's grant (a session of an earlier round may still be ending). */
    const liveOn = async () => {
      const r = await api.get(`${a.url}/api/v1/sessions?state=active&limit=1000`);
      return (await r.json() as { grantId: string }[]).filter((x) => x.grantId === grantId);
    };
    const n = opts.smoke ? 2 : 60;
    const samples: number[] = [];
    const slowestOnB: number[] = [];
    const rounds = opts.smoke ? 1 : 3;
    for (let round = 0; round < rounds; round++) {
      const req = await post('/api/v1/requests', { target: 'bench-db', role: 'read', duration: '2h', reason: 'benchmark' });
      if (!req['grantId']) throw new Error(`request not auto-approved: ${JSON.stringify(req)}`);
      grantId = String(req['grantId']);
      const s = await post(`/api/v1/grants/${grantId}/secret`, { reusable: true, ttl: '2h' });
      const kids: ChildProcess[] = [];
      const taps: CloseTap[] = [];
      try {
        for (const node of nodes) taps.push(await startCloseTap({ host: '127.0.0.1', port: node.pgPort }));
        for (let i = 0; i < n; i++) {
          const tap = taps[i % 2]!;
          kids.push(spawnIdle('postgres', { host: tap.host, port: tap.port, user: String(s['username']), password: String(s['secret']), db: String(direct.credentials.database ?? 'postgres'), viaGateway: true }));
        }
        for (let i = 0; i < 600 && (await liveOn()).length < n; i++) await new Promise((r) => setTimeout(r, 100));
        // Listed live is not yet through: wait (bounded) until their statements run on the server.
        const adminConn = { host: up.host, port: up.port, user: admin.user, password: admin.password };
        for (let i = 0; i < 300 && (await pgSleeping(adminConn)) < n; i++) await new Promise((r) => setTimeout(r, 100));
        const through = await pgSleeping(adminConn);
        const live = (await liveOn()).slice(0, Math.max(0, through));
        // A client that could not connect on a loaded machine (psql's own timeout) is left out, and said so.
        if (live.length < Math.ceil(n * 0.9)) throw new Error(`only ${live.length} of ${n} sessions came up`);
        if (live.length < n) opts.log(`round ${round + 1}: ${live.length} of ${n} sessions came up; measuring those`);
        const closed = taps.map((tp) => tp.nextCloses(tp.open, 30_000));
        const t0 = performance.now();
        await post(`/api/v1/grants/${grantId}/revoke`, { reason: 'bench kill across nodes' });
        const [onA, onB] = (await Promise.all(closed)).map((xs) => xs.map((x) => x - t0)) as [number[], number[]];
        const ends = [...onA, ...onB];
        samples.push(...ends);
        slowestOnB.push(Math.max(...onB));
        opts.log(`kill across two nodes, ${n} sessions (round ${round + 1}): p50 ${percentile(ends, 50).toFixed(1)} ms, p99 ${percentile(ends, 99).toFixed(1)} ms, max ${Math.max(...ends).toFixed(1)} ms; node A max ${Math.max(...onA).toFixed(1)} ms, node B max ${Math.max(...onB).toFixed(1)} ms`);
      } finally {
        for (const k of kids) k.kill('SIGKILL');
        for (const tp of taps) await tp.close();
      }
    }
    const c = `revoke on node A with ${n} sessions over two nodes`;
    return [
      { scenario: 'kill', case: c, tool: 'tollgate', metric: 'client TCP closed p50', value: percentile(samples, 50), unit: 'ms', better: 'lower', note: `every session of ${rounds} round(s)` },
      { scenario: 'kill', case: c, tool: 'tollgate', metric: 'client TCP closed p99', value: percentile(samples, 99), unit: 'ms', better: 'lower', note: `every session of ${rounds} round(s); goal ≤ 250 ms` },
      { scenario: 'kill', case: c, tool: 'tollgate', metric: 'slowest node B client', value: median(slowestOnB), unit: 'ms', better: 'lower', note: 'median over rounds: through the control bus' },
    ];
  } finally {
    await browser?.close().catch(() => undefined);
    for (const n of nodes) {
      if (n.proc.exitCode === null && n.proc.signalCode === null) n.proc.kill('SIGINT');
      await new Promise((r) => { if (n.proc.exitCode !== null || n.proc.signalCode !== null) r(null); else { const t = setTimeout(() => n.proc.kill('SIGKILL'), 10_000); n.proc.once('close', () => { clearTimeout(t); r(null); }); } });
    }
    await psqlAdmin(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}
