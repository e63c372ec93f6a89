/**
 * pgbench through Tollgate vs direct PostgreSQL vs PgBouncer (session mode) in front of the same
 * cluster: select-only (-S) and the default TPC-B-like script, simple and prepared protocol,
 * 1/16/64 clients. Through Tollgate every client connection is its own audited session with its
 * own minted role (a reusable connection secret), and the client leg uses TLS as the demo target
 * requires. Anchors: direct (plain TCP), PgBouncer with plain TCP clients, and PgBouncer with TLS
 * clients (pgbouncer-tls: the like-for-like comparison, same TLS leg as Tollgate's).
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServedGateway, type ServedGateway } from './serve.js';
import { cpuMeter, execFileP, freePort, listenerPid, median, percentile, processStats, splitAddress, type BenchRow, type Scenario } from './harness.js';

/** pid: the proxy process whose CPU time is counted per transaction (none for direct). */
interface Endpoint { tool: string; host: string; port: number; user: string; password: string; sslmode: string; pid?: number; proxyCpuMs?: () => number }

/** Per-transaction latencies (ms) from pgbench's transaction log files (-l): the third field is the latency in µs. */
function readTxLog(dir: string): number[] {
  const out: number[] = [];
  for (const f of readdirSync(dir)) {
    for (const line of readFileSync(join(dir, f), 'utf8').split('\n')) {
      const us = Number(line.split(' ')[2]);
      if (line && Number.isFinite(us)) out.push(us / 1000);
    }
  }
  return out;
}

async function pgbench(ep: Endpoint, db: string, args: string[], opts: { perTx?: boolean } = {}): Promise<{ tps: number; latencyMs: number; perTxMs?: number[] }> {
  const logDir = opts.perTx ? mkdtempSync(join(tmpdir(), 'tg-pgbench-log-')) : null;
  if (logDir) args = [...args, '-l', `--log-prefix=${join(logDir, 'tx')}`];
  try {
    return { ...(await pgbenchRun(ep, db, args)), ...(logDir ? { perTxMs: readTxLog(logDir) } : {}) };
  } finally {
    if (logDir) rmSync(logDir, { recursive: true, force: true });
  }
}

async function pgbenchRun(ep: Endpoint, db: string, args: string[]): Promise<{ tps: number; latencyMs: number }> {
  const { stdout, stderr } = await execFileP('pgbench', ['-h', ep.host, '-p', String(ep.port), '-U', ep.user, ...args, db], {
    env: { ...process.env, PGPASSWORD: ep.password, PGSSLMODE: ep.sslmode, PGCONNECT_TIMEOUT: '20' }, maxBuffer: 16 * 1024 * 1024, timeout: 300_000,
  });
  const tps = Number(/tps = ([\d.]+)/.exec(stdout)?.[1]);
  const latencyMs = Number(/latency average = ([\d.]+) ms/.exec(stdout)?.[1]);
  // A round in which no transaction completed (on a loaded machine every client's session set-up
  // can outlast -T): that round's figure is 0 tps, said so in the row's note, not a failed scenario.
  if (/number of transactions actually processed: 0\b/.test(stdout)) return { tps: 0, latencyMs: NaN };
  if (!Number.isFinite(tps) || !tps) throw new Error(`pgbench printed no tps: ${stdout.slice(-300)} ${String(stderr).slice(-500)}`);
  return { tps, latencyMs };
}

async function startPgBouncer(upstream: { host: string; port: number }, user: string, password: string, db: string, opts: { tls?: boolean } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'tg-pgbouncer-'));
  chmodSync(dir, 0o755);
  const port = await freePort();
  const ini = join(dir, 'pgbouncer.ini');
  const users = join(dir, 'users.txt');
  writeFileSync(users, `"${user}" "${password}"\n`, { mode: 0o644 });
  let tls = '';
  if (opts.tls) {
    // TLS towards the clients, as Tollgate's client leg has: the same kind of certificate (RSA 2048).
    await execFileP('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
      '-keyout', join(dir, 'client-tls.key'), '-out', join(dir, 'client-tls.pem')]);
    chmodSync(join(dir, 'client-tls.key'), 0o644);
    tls = `client_tls_sslmode = require\nclient_tls_key_file = ${join(dir, 'client-tls.key')}\nclient_tls_cert_file = ${join(dir, 'client-tls.pem')}\n`;
  }
  writeFileSync(ini, `[databases]\n${db} = host=${upstream.host} port=${upstream.port} dbname=${db}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = ${port}\nauth_type = trust\nauth_file = ${users}\npool_mode = session\nmax_client_conn = 200\ndefault_pool_size = 80\nunix_socket_dir =\nlogfile = ${join(dir, 'pgbouncer.log')}\npidfile = ${join(dir, 'pgbouncer.pid')}\n${tls}`, { mode: 0o644 });
  chmodSync(dir, 0o777);
  const child = spawn('pgbouncer', process.getuid?.() === 0 ? ['-u', 'postgres', ini] : [ini], { stdio: 'ignore' });
  const failed = new Promise<never>((_, reject) => child.once('error', (e) => reject(new Error(`cannot run pgbouncer (install Debian's pgbouncer): ${e.message}`))));
  failed.catch(() => undefined);
  for (let i = 0; i < 50; i++) {
    try { await Promise.race([execFileP('pg_isready', ['-h', '127.0.0.1', '-p', String(port)]), failed]); break; } catch (e) {
      if ((e as Error).message.startsWith('cannot run pgbouncer')) { rmSync(dir, { recursive: true, force: true }); throw e; }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    port,
    pid: child.pid,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('close', r)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export const scenario: Scenario = {
  name: 'postgres',
  describe: 'pgbench: Tollgate vs direct vs PgBouncer (session mode)',
  async run(opts, getDemo) {
    const demo = await getDemo();
    const target = demo.demo.targets.find((t) => t.protocol === 'postgres');
    if (!target) throw new Error('the demo has no PostgreSQL target (postgresql not installed?)');
    const direct = demo.demo.direct[target.name]!;
    const up = splitAddress(direct.address);
    const admin = direct.credentials.admin as { user: string; password: string };
    const db = String(direct.credentials.database ?? 'postgres');
    const directEp: Endpoint = { tool: 'direct', host: up.host, port: up.port, user: admin.user, password: admin.password, sslmode: 'disable' };
    await execFileP('pgbench', ['-i', '-q', '-s', opts.smoke ? '1' : '4', '-h', up.host, '-p', String(up.port), '-U', admin.user, db], { env: { ...process.env, PGPASSWORD: admin.password, PGSSLMODE: 'disable' } });
    const grantId = await demo.grant('alice', target.name, 'admin');
    const sec = await demo.secret('alice', grantId, true);
    const tgEp: Endpoint = { tool: 'tollgate', host: sec.host, port: sec.port, user: sec.username, password: sec.secret, sslmode: 'require', pid: demo.pid };
    // Each PgBouncer runs only while it is measured: in session mode it keeps its server connections
    // open afterwards, and two of them plus Tollgate's sessions would exceed max_connections.
    type Running = { port: number; pid?: number; stop(): Promise<void> };
    const anchorsOf = (tls: boolean) => async (): Promise<{ ep: Endpoint; stop(): Promise<void> }> => {
      const b: Running = await startPgBouncer(up, admin.user, admin.password, db, { tls });
      return { ep: { tool: tls ? 'pgbouncer-tls' : 'pgbouncer', host: '127.0.0.1', port: b.port, user: admin.user, password: admin.password, sslmode: tls ? 'require' : 'disable', pid: b.pid }, stop: () => b.stop() };
    };
    const fixed = (ep: Endpoint) => async () => ({ ep, stop: async () => undefined });
    // tollgate-2w: `tollgate serve` with gateway.workers: 2 in front of the same cluster.
    let twoW: { gw: ServedGateway; grantId: string; ep: Endpoint } | null = null;
    try {
      const gw = await startServedGateway(demo, 2, opts.log);
      try {
        const g2 = await gw.grant('pg', 'admin');
        const s2 = await gw.secret(g2, true);
        twoW = { gw, grantId: g2, ep: { tool: 'tollgate-2w', host: s2.host, port: s2.port, user: s2.username, password: s2.secret, sslmode: 'require', pid: gw.pid, proxyCpuMs: () => gw.cpuMs() } };
      } catch (e) { await gw.stop(); throw e; }
    } catch (e) {
      opts.log(`postgres: no tollgate-2w rows: ${(e as Error).message}`);
    }
    const seconds = opts.smoke ? 1 : 5;
    const rounds = opts.smoke ? 1 : 3;
    const cases: { name: string; args: string[]; clients: number }[] = opts.smoke
      ? [{ name: 'select-only simple c=1', args: ['-S', '-M', 'simple'], clients: 1 }]
      : [
        ...['simple', 'prepared'].flatMap((mode) => [1, 16, 64].map((c) => ({ name: `select-only ${mode} c=${c}`, args: ['-S', '-M', mode], clients: c }))),
        { name: 'tpc-b prepared c=16', args: ['-M', 'prepared'], clients: 16 },
      ];
    const rows: BenchRow[] = [];
    // The PostgreSQL cluster's CPU (postmaster, its backends, the ones that ended) per transaction, for
    // every tool: direct has no proxy, and a proxy that makes the server work more shows here.
    const serverPid = await listenerPid(up.port);
    if (!serverPid) opts.log(`postgres: no listener pid for ${up.port} (ss -ltnp): no server CPU rows`);
    // c=1: per-query latency percentiles from pgbench's transaction log, and what Tollgate adds over each anchor.
    const p50s = new Map<string, { p50: number; p99: number }>();
    // TOLLGATE_BENCH_CASES=<regex> runs only the matching cases (profiling one load at a time).
    const only = process.env.TOLLGATE_BENCH_CASES ? new RegExp(process.env.TOLLGATE_BENCH_CASES) : null;
    try {
      for (const c of cases.filter((x) => !only || only.test(x.name))) {
        for (const open of [fixed(directEp), anchorsOf(false), anchorsOf(true), fixed(tgEp), ...(twoW ? [fixed(twoW.ep)] : [])]) {
          const tps: number[] = [];
          const lat: number[] = [];
          const cpu: number[] = [];
          const serverCpu: number[] = [];
          const perTx: number[] = [];
          let empty = 0;
          let opened: Awaited<ReturnType<typeof open>>;
          try { opened = await open(); } catch (e) { opts.log(`postgres ${c.name}: an anchor did not start: ${(e as Error).message}`); continue; }
          const { ep, stop } = opened;
          try {
            for (let r = 0; r < rounds; r++) {
              const proxyCpu = ep.proxyCpuMs ?? (ep.pid ? () => processStats(ep.pid!).cpuMs : null);
              const cpu0 = proxyCpu ? proxyCpu() : 0;
              const server = cpuMeter(serverPid);
              server?.start();
              const res = await pgbench(ep, db, [...c.args, '-c', String(c.clients), '-j', String(Math.min(c.clients, 2)), '-T', String(seconds)], { perTx: c.clients === 1 });
              tps.push(res.tps);
              if (!res.tps) { empty++; continue; }
              // CPU of the proxy process per transaction, connections (pgbench opens them each round) included.
              const txs = Math.max(1, res.tps * seconds);
              if (proxyCpu) cpu.push(((proxyCpu() - cpu0) * 1000) / txs);
              if (server) serverCpu.push((server.ms() * 1000) / txs);
              lat.push(res.latencyMs);
              perTx.push(...(res.perTxMs ?? []));
            }
          } catch (e) {
            opts.log(`postgres ${c.name} ${ep.tool} failed: ${(e as Error).message}`);
            continue;
          } finally {
            await stop();
          }
          const emptyNote = empty ? `${empty} of ${rounds} rounds completed no transaction within ${seconds} s (counted as 0 tps)` : undefined;
          opts.log(`postgres ${c.name} ${ep.tool}: ${median(tps).toFixed(0)} tps${cpu.length ? `, ${median(cpu).toFixed(0)} µs CPU/tx` : ''}${serverCpu.length ? `, server ${median(serverCpu).toFixed(0)} µs CPU/tx` : ''}`);
          rows.push({ scenario: 'postgres', case: c.name, tool: ep.tool, metric: 'tps', value: median(tps), unit: 'tx/s', better: 'higher', ...(emptyNote ? { note: emptyNote } : {}) });
          if (lat.length) rows.push({ scenario: 'postgres', case: c.name, tool: ep.tool, metric: 'latency avg', value: median(lat), unit: 'ms', better: 'lower' });
          if (cpu.length) rows.push({ scenario: 'postgres', case: c.name, tool: ep.tool, metric: 'proxy CPU per transaction', value: median(cpu), unit: 'µs', better: 'lower', note: 'the proxy process (gateway / pgbouncer), connections included' });
          if (serverCpu.length) rows.push({ scenario: 'postgres', case: c.name, tool: ep.tool, metric: 'PostgreSQL CPU per transaction', value: median(serverCpu), unit: 'µs', better: 'lower', note: 'postmaster and backends' });
          if (perTx.length) {
            const q = { p50: median(perTx), p99: percentile(perTx, 99) };
            p50s.set(ep.tool, q);
            const note = `${perTx.length} transactions (pgbench -l)`;
            rows.push({ scenario: 'postgres', case: c.name, tool: ep.tool, metric: 'latency p50', value: q.p50, unit: 'ms', better: 'lower', note });
            rows.push({ scenario: 'postgres', case: c.name, tool: ep.tool, metric: 'latency p99', value: q.p99, unit: 'ms', better: 'lower', note });
          }
        }
        const tg = p50s.get('tollgate');
        for (const anchor of ['direct', 'pgbouncer-tls']) {
          const a = p50s.get(anchor);
          if (!tg || !a) continue;
          rows.push({ scenario: 'postgres', case: c.name, tool: 'tollgate', metric: `p50 added per query over ${anchor}`, value: tg.p50 - a.p50, unit: 'ms', better: 'lower' });
          rows.push({ scenario: 'postgres', case: c.name, tool: 'tollgate', metric: `p99 added per query over ${anchor}`, value: tg.p99 - a.p99, unit: 'ms', better: 'lower' });
        }
        p50s.clear();
      }
    } finally {
      await demo.api('alice', 'POST', `/api/v1/grants/${grantId}/revoke`, { reason: 'bench done' }).catch(() => undefined);
      if (twoW) { await twoW.gw.revoke(twoW.grantId); await twoW.gw.stop(); }
    }
    return rows;
  },
};
