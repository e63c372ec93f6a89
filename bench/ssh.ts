/**
 * SSH through Tollgate vs direct OpenSSH: bulk transfer (ssh … 'cat > /dev/null'), interactive
 * echo round trip on a pty (ssh2 as the client on both paths), and many concurrent sessions.
 * Direct uses the demo sshd's admin key; through Tollgate each session mints its own account.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'ssh2';
import { startServedGateway, type ServedGateway } from './serve.js';
import { cpuMeter, listenerPid, median, percentile, processStats, splitAddress, type BenchRow, type Scenario } from './harness.js';

interface SshTarget { host: string; port: number; user: string; password?: string; keyFile?: string; key?: string }

function sshArgv(t: SshTarget, cmd: string): { argv: string[]; env: Record<string, string> } {
  const base = ['-p', String(t.port), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR'];
  if (t.keyFile) return { argv: ['ssh', ...base, '-i', t.keyFile, '-o', 'IdentitiesOnly=yes', `${t.user}@${t.host}`, cmd], env: {} };
  return { argv: ['sshpass', '-e', 'ssh', ...base, '-o', 'PubkeyAuthentication=no', `${t.user}@${t.host}`, cmd], env: { SSHPASS: t.password! } };
}

async function bulk(t: SshTarget, mib: number): Promise<number> {
  const { argv, env } = sshArgv(t, 'cat > /dev/null');
  const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, ...env }, stdio: ['pipe', 'ignore', 'pipe'] });
  const chunk = Buffer.alloc(1024 * 1024, 0x61);
  const t0 = performance.now();
  for (let i = 0; i < mib; i++) {
    if (!child.stdin.write(chunk)) await new Promise((r) => child.stdin.once('drain', r));
  }
  child.stdin.end();
  const code = await new Promise<number | null>((r) => child.on('close', r));
  if (code !== 0) throw new Error(`ssh bulk exited ${code}`);
  return (mib / ((performance.now() - t0) / 1000));
}

async function echoLatency(t: SshTarget, n: number): Promise<number[]> {
  const c = new Client();
  await new Promise<void>((resolve, reject) => {
    c.once('ready', () => resolve()).once('error', reject);
    c.connect({ host: t.host, port: t.port, username: t.user, password: t.password, privateKey: t.key, readyTimeout: 60_000, hostVerifier: () => true });
  });
  const stream = await new Promise<import('ssh2').ClientChannel>((resolve, reject) => c.shell({ term: 'xterm', cols: 80, rows: 24 }, (e, s) => (e ? reject(e) : resolve(s))));
  let buf = '';
  stream.on('data', (d: Buffer) => { buf += d.toString('latin1'); });
  // Run cat with echo off once the shell is ready, so every key comes straight back once.
  stream.write('stty -echo; echo TG""READY; cat\n');
  for (let i = 0; i < 3000 && !buf.includes('TGREADY'); i++) await new Promise((r) => setTimeout(r, 10));
  if (!buf.includes('TGREADY')) throw new Error('the remote shell did not start');
  await new Promise((r) => setTimeout(r, 100));
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    buf = '';
    const ch = String.fromCharCode(97 + (i % 26));
    const t0 = performance.now();
    stream.write(`${ch}\n`);
    while (!buf.includes(ch)) await new Promise((r) => setImmediate(r));
    out.push(performance.now() - t0);
  }
  c.end();
  return out;
}

export const scenario: Scenario = {
  name: 'ssh',
  describe: 'bulk transfer, echo round trip, concurrent sessions: Tollgate vs direct OpenSSH',
  async run(opts, getDemo) {
    const demo = await getDemo();
    const target = demo.demo.targets.find((t) => t.name === 'web01');
    if (!target) throw new Error('the demo has no ssh target web01 (openssh-server not installed?)');
    const d = demo.demo.direct['web01']!;
    const up = splitAddress(d.address);
    const dir = mkdtempSync(join(tmpdir(), 'tg-bench-ssh-'));
    const keyFile = join(dir, 'id');
    writeFileSync(keyFile, `${String(d.credentials.admin.privateKey).trim()}\n`, { mode: 0o600 });
    const direct: SshTarget = { ...up, user: String(d.credentials.admin.username), keyFile, key: String(d.credentials.admin.privateKey) };
    const grantId = await demo.grant('alice', 'web01', 'user');
    const via = async (): Promise<SshTarget> => {
      const s = await demo.secret('alice', grantId);
      return { host: s.host, port: s.port, user: s.username, password: s.secret };
    };
    // tollgate-2w: `tollgate serve` with gateway.workers: 2 in front of the same sshd.
    let twoW: { gw: ServedGateway; grantId: string } | null = null;
    try {
      const gw = await startServedGateway(demo, 2, opts.log);
      try { twoW = { gw, grantId: await gw.grant('web', 'user') }; } catch (e) { await gw.stop(); throw e; }
    } catch (e) {
      opts.log(`ssh: no tollgate-2w rows: ${(e as Error).message}`);
    }
    const via2w = async (): Promise<SshTarget> => {
      const s = await twoW!.gw.secret(twoW!.grantId);
      return { host: s.host, port: s.port, user: s.username, password: s.secret };
    };
    type Tool = 'direct' | 'tollgate' | 'tollgate-2w';
    const targetOf = (tool: Tool) => (tool === 'direct' ? Promise.resolve(direct) : tool === 'tollgate' ? via() : via2w());
    const gatewayCpu = (tool: Tool) => (tool === 'tollgate' ? processStats(demo.pid).cpuMs : tool === 'tollgate-2w' ? twoW!.gw.cpuMs() : 0);
    const rows: BenchRow[] = [];
    const rounds = opts.smoke ? 1 : 3;
    const mib = opts.smoke ? 8 : Number(process.env.TOLLGATE_BENCH_SSH_MIB ?? 1024);
    try {
      // sshd (the listener, its session processes, the ones that ended) for both paths; the gateway for Tollgate's.
      const sshdPid = await listenerPid(up.port);
      if (!sshdPid) opts.log(`ssh: no listener pid for ${up.port} (ss -ltnp): no sshd CPU rows`);
      const echo: Record<string, { p50: number; p99: number }> = {};
      const samples = opts.smoke ? 20 : Number(process.env.TOLLGATE_BENCH_ECHO ?? 1000);
      for (const tool of ['direct', 'tollgate', ...(twoW ? ['tollgate-2w'] as const : [])] as Tool[]) {
        const rates: number[] = [];
        const sshdCpu: number[] = [];
        const gwCpu: number[] = [];
        for (let r = 0; r < rounds; r++) {
          const t = await targetOf(tool);
          const sshd = cpuMeter(sshdPid);
          const gw0 = gatewayCpu(tool);
          sshd?.start();
          rates.push(await bulk(t, mib));
          if (sshd) sshdCpu.push((sshd.ms() * 1000) / mib);
          if (tool !== 'direct') gwCpu.push(((gatewayCpu(tool) - gw0) * 1000) / mib);
        }
        opts.log(`ssh bulk ${mib} MiB ${tool}: ${median(rates).toFixed(1)} MiB/s${gwCpu.length ? `, gateway ${median(gwCpu).toFixed(0)} µs CPU/MiB` : ''}${sshdCpu.length ? `, sshd ${median(sshdCpu).toFixed(0)} µs CPU/MiB` : ''}`);
        const bulkCase = `bulk ${mib} MiB through ssh cat`;
        rows.push({ scenario: 'ssh', case: bulkCase, tool, metric: 'throughput', value: median(rates), unit: 'MiB/s', better: 'higher' });
        if (gwCpu.length) rows.push({ scenario: 'ssh', case: bulkCase, tool, metric: 'proxy CPU per MiB', value: median(gwCpu), unit: 'µs', better: 'lower', note: 'the gateway process, session set-up included' });
        if (sshdCpu.length) rows.push({ scenario: 'ssh', case: bulkCase, tool, metric: 'sshd CPU per MiB', value: median(sshdCpu), unit: 'µs', better: 'lower', note: 'the target sshd and its session processes' });
        const lat = await echoLatency(await targetOf(tool), samples);
        const q = { p50: median(lat), p99: percentile(lat, 99) };
        echo[tool] = q;
        rows.push({ scenario: 'ssh', case: 'interactive echo round trip', tool, metric: 'p50', value: q.p50, unit: 'ms', better: 'lower', note: `${lat.length} keystrokes` });
        rows.push({ scenario: 'ssh', case: 'interactive echo round trip', tool, metric: 'p99', value: q.p99, unit: 'ms', better: 'lower', note: `${lat.length} keystrokes` });
        if (tool !== 'direct' && echo.direct) {
          rows.push({ scenario: 'ssh', case: 'interactive echo round trip', tool, metric: 'p50 added over direct', value: q.p50 - echo.direct.p50, unit: 'ms', better: 'lower' });
          rows.push({ scenario: 'ssh', case: 'interactive echo round trip', tool, metric: 'p99 added over direct', value: q.p99 - echo.direct.p99, unit: 'ms', better: 'lower' });
        }
        const n = opts.smoke ? 3 : 30;
        const targets = await Promise.all(Array.from({ length: n }, () => targetOf(tool)));
        const t0 = performance.now();
        await Promise.all(targets.map(async (t) => {
          const { argv, env } = sshArgv(t, 'true');
          const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, ...env }, stdio: 'ignore' });
          const code = await new Promise<number | null>((r) => child.on('close', r));
          if (code !== 0) throw new Error(`concurrent ssh exited ${code}`);
        }));
        rows.push({ scenario: 'ssh', case: `${n} concurrent sessions (connect, run true)`, tool, metric: 'wall time', value: performance.now() - t0, unit: 'ms', better: 'lower' });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await demo.api('alice', 'POST', `/api/v1/grants/${grantId}/revoke`, { reason: 'bench done' }).catch(() => undefined);
      if (twoW) { await twoW.gw.revoke(twoW.grantId); await twoW.gw.stop(); }
    }
    return rows;
  },
};
