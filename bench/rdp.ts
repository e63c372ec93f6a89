/**
 * RDP scenario: session setup time (xfreerdp start until the remote xterm runs) and screen-update
 * throughput (bytes/s xfreerdp reads while `yes` scrolls in the remote xterm), through the gateway
 * with recording on vs. xfreerdp connected directly to the same xrdp, and their ratios.
 * Self-contained: its own xrdp + sesman, Xvfb, an in-process gateway and a direct test account.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startXrdp } from '../protocols/rdp/xrdp.js';
import { startTestGateway } from '../test/support/gateway.js';
import { haveRdpTools, key, sleep, startXvfb, typeText, waitFor, xfreerdp } from '../test/rdp/support.js';
import type { BenchRow } from './harness.js';

function readBytes(pid: number): number {
  const m = /rchar:\s*(\d+)/.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
  return m ? Number(m[1]) : 0;
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
        if (tool === 'tollgate') {
          const g = await tg.grant('alice', 'desk', 'user');
          const s = await tg.secret('alice', g.id);
          args = [`/v:${s.host}:${s.port}`, '/sec:tls', `/u:${s.username}`, `/p:${s.secret}`, '/bpp:16'];
        } else {
          args = [`/v:${srv.host}:${srv.port}`, '/sec:tls', `/u:${direct}`, `/p:${directPw}`, '/bpp:16'];
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
          await sleep(1500);
          typeText(xvfb.display, `timeout ${Math.ceil(scrollMs / 1000) + 1} yes`);
          key(xvfb.display, 'Return');
          await sleep(300);
          const b0 = readBytes(c.proc.pid!);
          const s0 = performance.now();
          await sleep(scrollMs);
          rate += (readBytes(c.proc.pid!) - b0) / ((performance.now() - s0) / 1000);
        } finally {
          c.stop();
          await c.exited;
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
      { case: 'session setup (xfreerdp start to remote xterm)', tool: 'tollgate/direct', metric: 'setup time ratio', value: g.setup / d.setup, unit: 'x', better: 'lower' },
      { case: 'screen updates while `yes` scrolls (bytes read by xfreerdp)', tool: 'direct', metric: 'throughput', value: d.rate / 1e6, unit: 'MB/s', better: 'higher' },
      { case: 'screen updates while `yes` scrolls (bytes read by xfreerdp)', tool: 'tollgate', metric: 'throughput', value: g.rate / 1e6, unit: 'MB/s', better: 'higher', note: 'recording on' },
      { case: 'screen updates while `yes` scrolls (bytes read by xfreerdp)', tool: 'tollgate/direct', metric: 'throughput ratio', value: g.rate / d.rate, unit: 'x', better: 'higher' },
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
