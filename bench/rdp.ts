/**
 * RDP scenario: session setup time (xfreerdp start until the remote xterm runs) and screen-update
 * throughput (bytes/s towards xfreerdp, counted by the same pass-through TCP hop on both paths,
 * while `yes` scrolls in the remote xterm), through the gateway
 * with recording on vs. xfreerdp connected directly to the same xrdp, and their ratios.
 * Self-contained: its own xrdp + sesman, Xvfb, an in-process gateway and a direct test account.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startXrdp } from '../protocols/rdp/xrdp.js';
import { startTestGateway } from '../test/support/gateway.js';
import { haveRdpTools, key, sleep, startXvfb, typeText, waitFor, xfreerdp } from '../test/rdp/support.js';
import type { BenchRow } from './harness.js';

/** A pass-through TCP proxy that counts the bytes flowing towards the client (the same hop on both paths). */
async function countingProxy(host: string, port: number): Promise<{ port: number; down(): number; close(): void }> {
  let down = 0;
  const socks = new Set<net.Socket>();
  const srv = net.createServer((c) => {
    const u = net.connect({ host, port });
    socks.add(c); socks.add(u);
    u.on('data', (d: Buffer) => { down += d.length; });
    c.pipe(u); u.pipe(c);
    const end = () => { c.destroy(); u.destroy(); socks.delete(c); socks.delete(u); };
    c.on('close', end); u.on('close', end); c.on('error', end); u.on('error', end);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return { port: (srv.address() as net.AddressInfo).port, down: () => down, close: () => { srv.close(); for (const x of socks) x.destroy(); } };
}

function xtermOf(user: string): boolean {
  return spawnSync('pgrep', ['-u', user, 'xterm']).status === 0;
}

export async function run({ smoke }: { smoke: boolean }): Promise<Partial<BenchRow>[]> {
  const missing = haveRdpTools();
  if (missing) throw new Error(`rdp bench needs ${missing}`);
  const dir = mkdtempSync(join(tmpdir(), 'tg-bench-rdp-'));
  const srv = await startXrdp(dir);
  const xvfb = await startXvfb();
  const direct = `tgbench${randomBytes(3).toString('hex')}`;
  const directPw = randomBytes(12).toString('base64url');
  spawnSync('useradd', ['-m', '-s', '/bin/bash', direct]);
  spawnSync('chpasswd', [], { input: `${direct}:${directPw}\n` });
  const tg = await startTestGateway({
    listeners: ['rdp'],
    targets: [{ name: 'desk', protocol: 'rdp', address: `${srv.host}:${srv.port}`, roles: [{ name: 'user' }], credentials: { mode: 'local-account', prefix: 'tgb-' } }],
  });
  const rows: Partial<BenchRow>[] = [];
  const rounds = smoke ? 1 : 3;
  const scrollMs = smoke ? 3000 : 8000;
  try {
    const measure = async (tool: 'tollgate' | 'direct') => {
      let setup = 0;
      let rate = 0;
      for (let i = 0; i < rounds; i++) {
        let args: string[];
        let user = direct;
        let proxy: Awaited<ReturnType<typeof countingProxy>>;
        if (tool === 'tollgate') {
          const g = await tg.grant('alice', 'desk', 'user');
          const s = await tg.secret('alice', g.id);
          proxy = await countingProxy(s.host, s.port);
          args = [`/v:127.0.0.1:${proxy.port}`, '/sec:tls', `/u:${s.username}`, `/p:${s.secret}`, '/bpp:16'];
        } else {
          proxy = await countingProxy(srv.host, srv.port);
          args = [`/v:127.0.0.1:${proxy.port}`, '/sec:tls', `/u:${direct}`, `/p:${directPw}`, '/bpp:16'];
        }
        const t0 = performance.now();
        const c = xfreerdp(xvfb.display, args);
        try {
          if (tool === 'tollgate') {
            const live = await waitFor('a live session', async () => (await tg.store.listSessions({ state: 'active' })).find((x) => x.protocol === 'rdp'));
            const a = await waitFor('rdp.connect', async () => (await tg.store.listAudit({ action: 'rdp.connect', subject: live.id }))[0]);
            user = String(a.data.account);
          }
          await waitFor('the remote xterm', () => xtermOf(user), 30_000);
          setup += performance.now() - t0;
          await sleep(3500); // the xterm maps its window and takes the keyboard
          typeText(xvfb.display, `timeout ${Math.ceil(scrollMs / 1000) + 1} yes`);
          key(xvfb.display, 'Return');
          await sleep(300);
          const b0 = proxy.down();
          const s0 = performance.now();
          await sleep(scrollMs);
          rate += (proxy.down() - b0) / ((performance.now() - s0) / 1000);
        } finally {
          c.stop();
          await c.exited;
          proxy.close();
          if (tool === 'direct') spawnSync('pkill', ['-KILL', '-u', direct]);
          await sleep(1000);
        }
      }
      return { setup: setup / rounds, rate: rate / rounds };
    };
    const d = await measure('direct');
    const g = await measure('tollgate');
    rows.push(
      { case: 'session setup (xfreerdp start to remote xterm)', tool: 'direct', metric: 'setup time', value: d.setup, unit: 'ms', better: 'lower' },
      { case: 'session setup (xfreerdp start to remote xterm)', tool: 'tollgate', metric: 'setup time', value: g.setup, unit: 'ms', better: 'lower' },
      { case: 'screen updates while `yes` scrolls (bytes to xfreerdp)', tool: 'direct', metric: 'throughput', value: d.rate / 1e6, unit: 'MB/s', better: 'higher' },
      { case: 'screen updates while `yes` scrolls (bytes to xfreerdp)', tool: 'tollgate', metric: 'throughput', value: g.rate / 1e6, unit: 'MB/s', better: 'higher', note: 'recording on' },
    );
  } finally {
    await tg.close().catch(() => {});
    xvfb.stop();
    await srv.stop();
    spawnSync('pkill', ['-KILL', '-u', direct]);
    spawnSync('userdel', ['-r', '-f', direct]);
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}
