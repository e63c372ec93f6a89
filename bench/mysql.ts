/**
 * sysbench oltp_read_only and oltp_point_select through Tollgate vs direct MariaDB. Tables are
 * prepared directly as the admin in the demo's `shop` database; through Tollgate every sysbench
 * connection is its own session with its own minted user (a reusable connection secret), over
 * TLS, which the gateway requires from clients.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cpuMeter, execFileP, listenerPid, median, processStats, splitAddress, type BenchRow, type Scenario } from './harness.js';

/** tlsDir: run over TLS (--mysql-ssl=on), with cacert.pem and a throwaway client key pair in that directory (sysbench 1.0 reads them from its cwd). */
async function sysbench(test: string, c: { host: string; port: number; user: string; password: string; tlsDir?: string }, extra: string[]): Promise<{ tps: number; p95: number }> {
  const tls = c.tlsDir ? ['--mysql-ssl=on'] : [];
  const { stdout } = await execFileP('sysbench', [test, `--mysql-host=${c.host}`, `--mysql-port=${c.port}`, `--mysql-user=${c.user}`, `--mysql-password=${c.password}`, ...tls, '--mysql-db=shop', '--tables=2', '--table-size=10000', ...extra], { maxBuffer: 8 * 1024 * 1024, timeout: 300_000, cwd: c.tlsDir });
  const tps = Number(/transactions:\s+\d+\s+\(([\d.]+) per sec/.exec(stdout)?.[1]);
  const p95 = Number(/95th percentile:\s+([\d.]+)/.exec(stdout)?.[1]);
  if (!Number.isFinite(tps)) throw new Error(`sysbench printed no transactions: ${stdout.slice(-600)}`);
  return { tps, p95 };
}

export const scenario: Scenario = {
  name: 'mysql',
  describe: 'sysbench oltp_read_only / oltp_point_select: Tollgate vs direct MariaDB',
  async run(opts, getDemo) {
    const demo = await getDemo();
    const target = demo.demo.targets.find((t) => t.protocol === 'mysql');
    if (!target) throw new Error('the demo has no MariaDB target (mariadb-server not installed?)');
    const d = demo.demo.direct[target.name]!;
    const up = splitAddress(d.address);
    const direct = { ...up, user: String(d.credentials.admin.user), password: String(d.credentials.admin.password) };
    await execFileP('sysbench', ['oltp_read_only', `--mysql-host=${up.host}`, `--mysql-port=${up.port}`, `--mysql-user=${direct.user}`, `--mysql-password=${direct.password}`, '--mysql-db=shop', '--tables=2', '--table-size=10000', 'cleanup']).catch(() => undefined);
    await execFileP('sysbench', ['oltp_read_only', `--mysql-host=${up.host}`, `--mysql-port=${up.port}`, `--mysql-user=${direct.user}`, `--mysql-password=${direct.password}`, '--mysql-db=shop', '--tables=2', '--table-size=10000', 'prepare'], { timeout: 300_000 });
    const grantId = await demo.grant('alice', target.name, 'read');
    const s = await demo.secret('alice', grantId, true);
    // The gateway requires TLS from clients (as for PostgreSQL): the Tollgate leg pays for it, the direct one does not.
    const tlsDir = mkdtempSync(join(tmpdir(), 'tg-bench-sysbench-'));
    writeFileSync(join(tlsDir, 'cacert.pem'), await (await fetch(`${demo.url}/api/v1/ca.pem`)).text());
    await execFileP('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(tlsDir, 'client-key.pem'), '-out', join(tlsDir, 'client-cert.pem'), '-subj', '/CN=sysbench', '-days', '1']);
    const through = { host: s.host, port: s.port, user: s.username, password: s.secret, tlsDir };
    const seconds = opts.smoke ? 1 : 5;
    const rounds = opts.smoke ? 1 : 3;
    const rows: BenchRow[] = [];
    const cases = opts.smoke ? [['oltp_point_select', 1]] as const : [['oltp_read_only', 1], ['oltp_read_only', 8], ['oltp_point_select', 1], ['oltp_point_select', 8]] as const;
    // MariaDB (one process, a thread per connection) for both paths; the gateway for Tollgate's.
    const serverPid = await listenerPid(up.port);
    if (!serverPid) opts.log(`mysql: no listener pid for ${up.port} (ss -ltnp): no server CPU rows`);
    try {
      for (const [test, threads] of cases) {
        for (const [tool, c] of [['direct', direct], ['tollgate', through]] as const) {
          const tps: number[] = [];
          const p95: number[] = [];
          const serverCpu: number[] = [];
          const gwCpu: number[] = [];
          for (let r = 0; r < rounds; r++) {
            const server = cpuMeter(serverPid);
            const gw0 = processStats(demo.pid).cpuMs;
            server?.start();
            const res = await sysbench(test, c, [`--threads=${threads}`, `--time=${seconds}`, '--db-ps-mode=auto', 'run']);
            const txs = Math.max(1, res.tps * seconds);
            if (server) serverCpu.push((server.ms() * 1000) / txs);
            if (tool === 'tollgate') gwCpu.push(((processStats(demo.pid).cpuMs - gw0) * 1000) / txs);
            tps.push(res.tps);
            p95.push(res.p95);
          }
          opts.log(`mysql ${test} t=${threads} ${tool}: ${median(tps).toFixed(0)} tps${gwCpu.length ? `, gateway ${median(gwCpu).toFixed(0)} µs CPU/tx` : ''}`);
          rows.push({ scenario: 'mysql', case: `${test} threads=${threads}`, tool, metric: 'tps', value: median(tps), unit: 'tx/s', better: 'higher' });
          rows.push({ scenario: 'mysql', case: `${test} threads=${threads}`, tool, metric: 'latency p95', value: median(p95), unit: 'ms', better: 'lower' });
          if (gwCpu.length) rows.push({ scenario: 'mysql', case: `${test} threads=${threads}`, tool, metric: 'proxy CPU per transaction', value: median(gwCpu), unit: 'µs', better: 'lower', note: 'the gateway process' });
          if (serverCpu.length) rows.push({ scenario: 'mysql', case: `${test} threads=${threads}`, tool, metric: 'MariaDB CPU per transaction', value: median(serverCpu), unit: 'µs', better: 'lower' });
        }
      }
    } finally {
      await demo.api('alice', 'POST', `/api/v1/grants/${grantId}/revoke`, { reason: 'bench done' }).catch(() => undefined);
      rmSync(tlsDir, { recursive: true, force: true });
    }
    return rows;
  },
};
