/**
 * VNC scenario: full-screen (non-incremental) FramebufferUpdates per second and bytes per update,
 * through the gateway with recording on vs. connected directly to x11vnc, and their ratio. It
 * uses the demo gateway (`tollgate demo`) and its x11vnc desktop: grants, secrets and the CA come
 * from the API; the direct leg logs in with classic VNC auth after x11vnc -storepasswd installs a
 * known password in the desktop's password file.
 */
import type { Duplex } from 'node:stream';
import { encodeSetEncodings, encodeUpdateRequest } from '../protocols/vnc/client-messages.js';
import { ServerStream, ServerStreamState } from '../protocols/vnc/server-messages.js';
import type { PixelFormat } from '../protocols/vnc/pixel.js';
import { rfbLogin } from '../test/vnc/client.js';
import { cpuMeter, execFileP, listenerPid, processStats, splitAddress, type BenchRow, type DemoGateway, type Scenario } from './harness.js';

/** Request full-screen updates back to back for `ms`; count complete updates and bytes. */
async function pump(sock: Duplex, rest: Buffer, w: number, h: number, pf: PixelFormat, encodings: number[], ms: number): Promise<{ updates: number; bytes: number; seconds: number }> {
  let updates = 0;
  let bytes = 0;
  const t0 = performance.now();
  const deadline = t0 + ms;
  return new Promise((resolve, reject) => {
    let finished = false;
    const request = () => sock.write(encodeUpdateRequest(false, 0, 0, w, h));
    const done = () => { finished = true; sock.off('data', onData); resolve({ updates, bytes, seconds: (performance.now() - t0) / 1000 }); };
    // Only framing is measured (no screen model): the parser counts whole updates as they end.
    const stream = new ServerStream(new ServerStreamState(w, h, pf), null, {
      forward: () => {},
      message: (m) => {
        if (m.type !== 'FramebufferUpdate' || finished) return;
        updates++;
        if (performance.now() >= deadline) done();
        else request();
      },
    }, { decode: false });
    const onData = (c: Buffer) => {
      bytes += c.length;
      stream.push(c);
      try { stream.run(); } catch (e) { reject(e); }
    };
    sock.on('data', onData);
    sock.resume();
    sock.on('close', () => reject(new Error('connection closed during the benchmark')));
    sock.write(encodeSetEncodings(encodings));
    stream.push(rest);
    request();
  });
}

export async function run({ smoke }: { smoke: boolean }, d: DemoGateway): Promise<BenchRow[]> {
  const target = d.demo.targets.find((t) => t.protocol === 'vnc');
  if (!target) throw new Error('the demo has no VNC target (Xvfb and x11vnc not installed?)');
  const direct = d.demo.direct[target.name]!;
  const desktop = splitAddress(direct.address);
  const passwordFile = String(direct.credentials.passwordFile);
  const ca = await (await fetch(`${d.url}/api/v1/ca.pem`)).text();
  const rows: BenchRow[] = [];
  const ms = smoke ? 1500 : 10_000;
  for (const [name, encodings] of [['raw', [0]], ['zrle', [16, 0]]] as const) {
    // Direct: install a known password and log in with classic VNC auth.
    const pw = 'bench123';
    await execFileP('x11vnc', ['-storepasswd', pw, passwordFile]);
    const up = await rfbLogin({ host: desktop.host, port: desktop.port, ca, classic: pw });
    if (!up.ok) throw new Error(`direct login failed: ${up.reason}`);
    up.reader.detach();
    const x11vnc = cpuMeter(await listenerPid(desktop.port));
    x11vnc?.start();
    const directRun = await pump(up.sock, up.reader.take(), up.init!.width, up.init!.height, up.init!.pf, [...encodings], ms);
    const directServerMs = x11vnc?.ms();
    up.sock.destroy();
    // Through the gateway (VeNCrypt X509Plain, recording on).
    const g = await d.grant('alice', target.name, 'operator');
    const s = await d.secret('alice', g);
    const c = await rfbLogin({ host: s.host, port: s.port, ca, username: s.username, password: s.secret });
    if (!c.ok) throw new Error(`gateway login failed: ${c.reason}`);
    c.reader.detach();
    x11vnc?.start();
    const gw0 = processStats(d.pid).cpuMs;
    const via = await pump(c.sock, c.reader.take(), c.init!.width, c.init!.height, c.init!.pf, [...encodings], ms);
    const viaGatewayMs = processStats(d.pid).cpuMs - gw0;
    const viaServerMs = x11vnc?.ms();
    c.sock.destroy();
    const caseName = `${name} ${up.init!.width}x${up.init!.height} full-screen`;
    const dUps = directRun.updates / directRun.seconds;
    const gUps = via.updates / via.seconds;
    rows.push({ scenario: 'vnc', case: caseName, tool: 'direct', metric: 'updates/s', value: dUps, unit: 'updates/s', better: 'higher' });
    rows.push({ scenario: 'vnc', case: caseName, tool: 'tollgate', metric: 'updates/s', value: gUps, unit: 'updates/s', better: 'higher', note: 'recording on' });
    rows.push({ scenario: 'vnc', case: caseName, tool: 'direct', metric: 'bytes/update', value: directRun.updates ? directRun.bytes / directRun.updates : 0, unit: 'B', better: 'lower' });
    rows.push({ scenario: 'vnc', case: caseName, tool: 'tollgate', metric: 'bytes/update', value: via.updates ? via.bytes / via.updates : 0, unit: 'B', better: 'lower', note: 'TLS' });
    rows.push({ scenario: 'vnc', case: caseName, tool: 'tollgate', metric: 'throughput', value: via.bytes / via.seconds / 1e6, unit: 'MB/s', better: 'higher' });
    rows.push({ scenario: 'vnc', case: caseName, tool: 'direct', metric: 'throughput', value: directRun.bytes / directRun.seconds / 1e6, unit: 'MB/s', better: 'higher' });
    // CPU per full-screen update: the gateway (relay, TLS, recorder) and x11vnc on both paths.
    if (via.updates) rows.push({ scenario: 'vnc', case: caseName, tool: 'tollgate', metric: 'proxy CPU per update', value: (viaGatewayMs * 1000) / via.updates, unit: 'µs', better: 'lower', note: 'the gateway process, recording on' });
    if (directServerMs !== undefined && directRun.updates) rows.push({ scenario: 'vnc', case: caseName, tool: 'direct', metric: 'x11vnc CPU per update', value: (directServerMs * 1000) / directRun.updates, unit: 'µs', better: 'lower' });
    if (viaServerMs !== undefined && via.updates) rows.push({ scenario: 'vnc', case: caseName, tool: 'tollgate', metric: 'x11vnc CPU per update', value: (viaServerMs * 1000) / via.updates, unit: 'µs', better: 'lower' });
    await new Promise((r) => setTimeout(r, 300));
  }
  return rows;
}

export const scenario: Scenario = {
  name: 'vnc',
  describe: 'VNC full-screen updates/s and bytes through the gateway (recording on) vs direct to x11vnc',
  run: async (opts, demo) => run({ smoke: opts.smoke }, await demo()),
};
