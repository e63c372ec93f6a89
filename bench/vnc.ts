/**
 * VNC scenario: full-screen (non-incremental) FramebufferUpdates per second and bytes per update,
 * through the gateway with recording on vs. connected directly to x11vnc, and their ratio.
 * Self-contained: its own Xvfb + xterm + x11vnc and an in-process gateway.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { ManualClock, SystemClock } from '../policies/clock.js';
import { Secret } from '../auth/secret.js';
import { startDesktop } from '../protocols/vnc/demo.js';
import { vncPasswdFile } from '../protocols/vnc/des.js';
import { dialUpstream } from '../protocols/vnc/upstream.js';
import { encodeSetEncodings, encodeUpdateRequest } from '../protocols/vnc/client-messages.js';
import { ServerStream, ServerStreamState } from '../protocols/vnc/server-messages.js';
import type { PixelFormat } from '../protocols/vnc/pixel.js';
import { startTestGateway } from '../test/support/gateway.js';
import { rfbLogin } from '../test/vnc/client.js';
import type { BenchRow, Scenario } from './harness.js';

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

export async function run({ smoke }: { smoke: boolean }): Promise<BenchRow[]> {
  const dir = mkdtempSync(join(tmpdir(), 'tg-bench-vnc-'));
  const desktop = await startDesktop(join(dir, 'server'), { size: smoke ? '640x480x24' : '1280x800x24' });
  if (!desktop) throw new Error('Xvfb and x11vnc are needed for the vnc bench');
  const rows: BenchRow[] = [];
  const target = { name: 'bench-desk', protocol: 'vnc', address: `127.0.0.1:${desktop.port}`, roles: [{ name: 'operator' }], credentials: { passwordFile: desktop.passwordFile } };
  const tg = await startTestGateway({ targets: [target], listeners: ['vnc'], clock: new ManualClock(Date.now()) });
  const ms = smoke ? 1500 : 10_000;
  try {
    for (const [name, encodings] of [['raw', [0]], ['zrle', [16, 0]]] as const) {
      // Direct: install a known password and log in with classic VNC auth.
      const pw = 'bench123';
      writeFileSync(desktop.passwordFile, vncPasswdFile(pw));
      const up = await dialUpstream({ host: '127.0.0.1', port: desktop.port, password: new Secret(pw), timeoutMs: 10_000, clock: new SystemClock() });
      const direct = await pump(up.socket, up.rest, up.init.width, up.init.height, up.init.pf, [...encodings], ms);
      up.socket.destroy();
      // Through the gateway (VeNCrypt X509Plain, recording on).
      const g = await tg.grant('alice', 'bench-desk', 'operator');
      const s = await tg.secret('alice', g.id);
      const { host, port } = tg.listener('vnc');
      const c = await rfbLogin({ host, port, ca: tg.gw.tls.ca, username: 'bench-desk', password: s.secret });
      if (!c.ok) throw new Error(`gateway login failed: ${c.reason}`);
      c.reader.detach();
      const via = await pump(c.sock, c.reader.take(), c.init!.width, c.init!.height, c.init!.pf, [...encodings], ms);
      c.sock.destroy();
      const caseName = `${name} ${up.init.width}x${up.init.height} full-screen`;
      const dUps = direct.updates / direct.seconds;
      const gUps = via.updates / via.seconds;
      rows.push({ scenario: 'vnc', case: caseName, tool: 'direct', metric: 'updates/s', value: dUps, unit: 'updates/s', better: 'higher' });
      rows.push({ scenario: 'vnc', case: caseName, tool: 'tollgate', metric: 'updates/s', value: gUps, unit: 'updates/s', better: 'higher', note: 'recording on' });
      rows.push({ scenario: 'vnc', case: caseName, tool: 'direct', metric: 'bytes/update', value: direct.updates ? direct.bytes / direct.updates : 0, unit: 'B', better: 'lower' });
      rows.push({ scenario: 'vnc', case: caseName, tool: 'tollgate', metric: 'bytes/update', value: via.updates ? via.bytes / via.updates : 0, unit: 'B', better: 'lower', note: 'TLS' });
      rows.push({ scenario: 'vnc', case: caseName, tool: 'tollgate', metric: 'throughput', value: via.bytes / via.seconds / 1e6, unit: 'MB/s', better: 'higher' });
      rows.push({ scenario: 'vnc', case: caseName, tool: 'direct', metric: 'throughput', value: direct.bytes / direct.seconds / 1e6, unit: 'MB/s', better: 'higher' });
      await new Promise((r) => setTimeout(r, 300));
    }
  } finally {
    await tg.close();
    await desktop.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

export const scenario: Scenario = {
  name: 'vnc',
  describe: 'VNC full-screen updates/s and bytes through the gateway (recording on) vs direct to x11vnc',
  run: (opts) => run({ smoke: opts.smoke }),
};
