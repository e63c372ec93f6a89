/**
 * RDP scenario: session setup time (xfreerdp start until the remote xterm runs) and screen-update
 * throughput (bytes/s towards xfreerdp, counted by the same pass-through TCP hop on both paths,
 * while `yes` scrolls in the remote xterm), through the gateway with recording on vs. xfreerdp
 * connected directly to the same xrdp, and their ratios. It uses the demo gateway (`tollgate demo`)
 * and its xrdp target like every other scenario: grants, secrets and the minted account come from
 * the API. The client runs in its own Xvfb (xvfb-run); the direct path uses a test account.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { splitAddress, type BenchRow, type DemoGateway, type Scenario } from './harness.js';

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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, fn: () => T | Promise<T>, ms = 20_000): Promise<NonNullable<T>> {
  const until = Date.now() + ms;
  let v = await fn();
  while (!v) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
    v = await fn();
  }
  return v as NonNullable<T>;
}

/** An X display for the client: xvfb-run picks a free one and prints it with its auth file; stop() ends it. */
async function clientDisplay(): Promise<{ env: Record<string, string>; stop(): void }> {
  const proc = spawn('xvfb-run', ['-a', '-s', '-screen 0 1024x768x24 -nolisten tcp', 'sh', '-c', 'echo "$DISPLAY $XAUTHORITY"; exec sleep 100000'], { stdio: ['ignore', 'pipe', 'ignore'], detached: true });
  const stop = () => { try { process.kill(-proc.pid!, 'SIGKILL'); } catch { /* gone */ } };
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).once('line', resolve);
    proc.once('error', reject);
    proc.once('exit', (c) => reject(new Error(`xvfb-run exited with ${c}`)));
  }).catch((e) => { stop(); throw e; });
  const [display, xauthority] = line.trim().split(' ');
  return { env: { DISPLAY: display!, XAUTHORITY: xauthority ?? '' }, stop };
}

function x(env: Record<string, string>, cmd: string, args: string[]): void {
  spawnSync(cmd, args, { env: { ...process.env, ...env } });
}

export async function run({ smoke }: { smoke: boolean }, d: DemoGateway): Promise<BenchRow[]> {
  if (process.getuid?.() !== 0) throw new Error('the rdp bench must run as root (it creates a test account)');
  for (const b of ['xfreerdp', 'xvfb-run', 'xdotool']) {
    if (spawnSync('sh', ['-c', `command -v ${b}`]).status !== 0) throw new Error(`the rdp bench needs ${b}`);
  }
  // The xrdp desktop (fresh local account per session); with Samba installed the demo also has
  // the directory target `domain`, an RDP target with no reachable host here, so pick by mode.
  const target = d.demo.targets.find((t) => t.protocol === 'rdp' && d.demo.direct[t.name]?.credentials?.mode === 'local-account');
  if (!target) throw new Error('the demo has no xrdp target (xrdp and xorgxrdp not installed?)');
  const srv = splitAddress(d.demo.direct[target.name]!.address);
  const screen = await clientDisplay();
  const direct = `tgbench${randomBytes(3).toString('hex')}`;
  const directPw = randomBytes(12).toString('base64url');
  spawnSync('useradd', ['-m', '-s', '/bin/bash', direct]);
  spawnSync('chpasswd', [], { input: `${direct}:${directPw}\n` });
  const rows: BenchRow[] = [];
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
          const g = await d.grant('alice', target.name, 'user');
          const s = await d.secret('alice', g);
          proxy = await countingProxy(s.host, s.port);
          args = [`/v:127.0.0.1:${proxy.port}`, '/sec:tls', `/u:${s.username}`, `/p:${s.secret}`, '/bpp:16'];
        } else {
          proxy = await countingProxy(srv.host, srv.port);
          args = [`/v:127.0.0.1:${proxy.port}`, '/sec:tls', `/u:${direct}`, `/p:${directPw}`, '/bpp:16'];
        }
        const t0 = performance.now();
        const c: ChildProcess = spawn('xfreerdp', ['/cert:ignore', '/size:800x600', '-grab-keyboard', '+auto-reconnect', '/auto-reconnect-max-retries:0', ...args], {
          env: { ...process.env, ...screen.env }, stdio: 'ignore',
        });
        const exited = new Promise((r) => c.once('exit', r));
        try {
          if (tool === 'tollgate') {
            // The account minted for this session, as the SOC sees it in the audit log.
            const live = await waitFor('a live session', async () => ((await d.api('carol', 'GET', '/api/v1/sessions?state=active')) as { id: string; protocol: string }[]).find((x) => x.protocol === 'rdp'));
            const a = await waitFor('rdp.connect', async () => ((await d.api('carol', 'GET', `/api/v1/audit?action=rdp.connect&subject=${live.id}`)) as { data: { account?: string } }[])[0]);
            user = String(a.data.account);
          }
          await waitFor('the remote xterm', () => xtermOf(user), 90_000);
          setup += performance.now() - t0;
          await sleep(3500); // the xterm maps its window and takes the keyboard
          x(screen.env, 'xdotool', ['type', '--delay', '60', `timeout ${Math.ceil(scrollMs / 1000) + 1} yes`]);
          x(screen.env, 'xdotool', ['key', 'Return']);
          await sleep(300);
          const b0 = proxy.down();
          const s0 = performance.now();
          await sleep(scrollMs);
          rate += (proxy.down() - b0) / ((performance.now() - s0) / 1000);
        } finally {
          if (c.exitCode === null) c.kill('SIGKILL');
          await exited;
          proxy.close();
          if (tool === 'direct') spawnSync('pkill', ['-KILL', '-u', direct]);
          await sleep(1000);
        }
      }
      return { setup: setup / rounds, rate: rate / rounds };
    };
    const dm = await measure('direct');
    const g = await measure('tollgate');
    const row = (r: Omit<BenchRow, 'scenario'>): BenchRow => ({ scenario: 'rdp', ...r });
    rows.push(
      row({ case: 'session setup (xfreerdp start to remote xterm)', tool: 'direct', metric: 'setup time', value: dm.setup, unit: 'ms', better: 'lower' }),
      row({ case: 'session setup (xfreerdp start to remote xterm)', tool: 'tollgate', metric: 'setup time', value: g.setup, unit: 'ms', better: 'lower' }),
      row({ case: 'screen updates while `yes` scrolls (bytes to xfreerdp)', tool: 'direct', metric: 'throughput', value: dm.rate / 1e6, unit: 'MB/s', better: 'higher' }),
      row({ case: 'screen updates while `yes` scrolls (bytes to xfreerdp)', tool: 'tollgate', metric: 'throughput', value: g.rate / 1e6, unit: 'MB/s', better: 'higher', note: 'recording on' }),
    );
  } finally {
    screen.stop();
    spawnSync('pkill', ['-KILL', '-u', direct]);
    spawnSync('userdel', ['-r', '-f', direct]);
  }
  return rows;
}

export const scenario: Scenario = {
  name: 'rdp',
  describe: 'RDP session setup and screen updates through Tollgate (recording on) vs xfreerdp direct to the same xrdp',
  run: async (opts, demo) => run({ smoke: opts.smoke }, await demo()),
};
