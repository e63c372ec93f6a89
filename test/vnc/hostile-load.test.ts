/**
 * A hostile VNC server behind a grant, through the real gateway, while a second session (real
 * sshd, native ssh) types: the inflate bomb and the absurd Raw header end only their own session
 * (resource_limit / a protocol error) with bounded memory, and a flood of expensive but valid
 * updates (Hextile megabytes in 64 KiB pieces, full-screen ZRLE fills that each change the whole
 * recorded screen) keeps the other session's keystroke echo under 50 ms.
 */
import t from 'tap';
import net from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { setPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync, constants as zc } from 'node:zlib';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Deflate } from 'pako';
import { ManualClock } from '../../policies/clock.js';
import { vncPasswdFile } from '../../protocols/vnc/des.js';
import { startTestGateway } from '../support/gateway.js';
import { assertEcho, echoLatencies, haveSshd, startTestSshd, Terminal } from '../support/sshd.js';
import { fakeServer, rfbLogin, sleep, waitFor } from './client.js';

if (!haveSshd) throw new Error('this test needs root and /usr/sbin/sshd (run node proxy/bin/ensure-deps.js test)');
// Latency is measured on a shared machine: the gateway (this process) and the sshd and ssh it
// starts run at a higher priority, so other machines' worth of test jobs do not blur it.
setPriority(-10);

const W = 1920;
const H = 1080;

function head(rects: number): Buffer {
  const b = Buffer.alloc(4); b.writeUInt16BE(rects, 2);
  return b;
}
function rectHead(x: number, y: number, w: number, h: number, enc: number, extra?: number): Buffer {
  const b = Buffer.alloc(extra === undefined ? 12 : 16);
  b.writeUInt16BE(x, 0); b.writeUInt16BE(y, 2); b.writeUInt16BE(w, 4); b.writeUInt16BE(h, 6); b.writeInt32BE(enc, 8);
  if (extra !== undefined) b.writeUInt32BE(extra, 12);
  return b;
}
function hextileScreen(seed: number): Buffer {
  const parts: Buffer[] = [rectHead(0, 0, W, H, 5)];
  for (let ty = 0; ty < H; ty += 16) {
    for (let tx = 0; tx < W; tx += 16) {
      const tile = Buffer.alloc(1 + 16 * Math.min(16, H - ty) * 4, (tx * 7 + ty * 3 + seed) & 255);
      tile[0] = 1;
      parts.push(tile);
    }
  }
  return Buffer.concat(parts);
}

/** Full-screen ZRLE updates, each one solid colour per tile (a few dozen bytes for 2 million pixels). */
class ZrleFills {
  private z = new Deflate({ level: 9 });
  update(colour: number): Buffer {
    const tiles = Math.ceil(W / 64) * Math.ceil(H / 64);
    const raw = Buffer.alloc(tiles * 4);
    for (let i = 0; i < tiles; i++) { raw[i * 4] = 1; raw[i * 4 + 1] = colour; raw[i * 4 + 2] = 255 - colour; raw[i * 4 + 3] = i & 255; }
    const out: Uint8Array[] = [];
    this.z.onData = (c: Uint8Array) => { out.push(c); };
    this.z.push(raw, 2);
    const data = Buffer.concat(out);
    return Buffer.concat([head(1), rectHead(0, 0, W, H, 16, data.length), data]);
  }
}

/** Write in pieces, waiting for drain (the gateway's backpressure) between them. */
async function writeAll(sock: net.Socket, b: Buffer, piece = 65536): Promise<void> {
  for (let i = 0; i < b.length && !sock.destroyed; i += piece) {
    if (sock.write(b.subarray(i, i + piece))) continue;
    await new Promise<void>((r) => {
      const done = () => { sock.off('drain', done); sock.off('close', done); r(); };
      sock.on('drain', done);
      sock.on('close', done);
    });
  }
}

const dir = mkdtempSync(join(tmpdir(), 'tg-vncload-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const pwFile = join(dir, 'passwd');
writeFileSync(pwFile, vncPasswdFile('initial1'));

let behaviour: (sock: net.Socket) => void = () => {};
const fake = await fakeServer((sock) => behaviour(sock), { width: W, height: H });
t.teardown(() => fake.close());
const env = await startTestSshd(t, { eph: 'load-eph', cert: 'load-cert', pw: 'load-pw' });
const cert = env.targets.find((x) => x.name === 'load-cert')!;
const vncTarget = { name: 'hostile', protocol: 'vnc', address: `127.0.0.1:${fake.port}`, roles: [{ name: 'operator' }], credentials: { passwordFile: pwFile } };
const tg = await startTestGateway({ targets: [vncTarget, cert], listeners: ['vnc', 'ssh'], clock: new ManualClock(Date.now()) });
t.teardown(() => tg.close());
const vnc = tg.listener('vnc');

const settle = () => waitFor(async () => (await tg.store.listSessions({ state: 'active', target: 'hostile' })).length === 0, 15_000, 'the VNC session to end');
const viewer = async () => {
  const g = await tg.grant('alice', 'hostile', 'operator');
  const s = await tg.secret('alice', g.id);
  const c = await rfbLogin({ host: vnc.host, port: vnc.port, ca: tg.gw.tls.ca, username: 'hostile', password: s.secret });
  if (!c.ok) throw new Error(`login failed: ${c.reason}`);
  // Read and drop the screen (the viewer keeps up, so only the gateway's work limits the flow).
  c.reader.detach();
  let bytes = 0;
  c.sock.on('data', (d: Buffer) => { bytes += d.length; });
  c.sock.resume();
  return { ...c, bytes: () => bytes, grantId: g.id };
};
const ended = (grantId: string) => waitFor(async () => (await tg.store.listSessions({ grantId })).find((s) => s.state === 'ended'), 15_000, 'the session to end');

t.test('ZRLE inflate bomb: the session ends as resource_limit with bounded memory; the gateway keeps serving', async (t) => {
  const bomb = deflateSync(Buffer.alloc(128 << 20), { level: 9, finishFlush: zc.Z_SYNC_FLUSH });
  behaviour = (sock) => { void writeAll(sock, Buffer.concat([head(1), rectHead(0, 0, W, H, 16, bomb.length), bomb])); };
  const mem = () => { const m = process.memoryUsage(); return m.arrayBuffers + m.external; };
  const c = await viewer();
  const before = mem();
  let peak = before;
  const sampler = setInterval(() => { peak = Math.max(peak, mem()); }, 5);
  await c.closed;
  clearInterval(sampler);
  const s = await ended(c.grantId);
  t.match(s.endReason, /^resource_limit: the VNC server exceeded a limit: ZRLE rectangle 1920x1080 inflates to more than/, s.endReason ?? '');
  t.ok(peak - before < 64 << 20, `external memory grew ${((peak - before) / 1048576).toFixed(1)} MiB during the bomb (bound 64 MiB)`);
  const audit = await tg.store.listAudit({ action: 'vnc.resource_limit' });
  t.ok(audit.length >= 1, 'audited as vnc.resource_limit');
});

t.test('a Raw 65535x65535 header ends the session as a protocol error without buffering', async (t) => {
  behaviour = (sock) => { sock.write(Buffer.concat([head(1), rectHead(0, 0, 65535, 65535, 0), Buffer.alloc(1 << 20)])); };
  const c = await viewer();
  await c.closed;
  const s = await ended(c.grantId);
  t.match(s.endReason, /^target_error: protocol error from the server: rectangle 65535x65535\+0\+0 is outside the 1920x1080 framebuffer/);
});

t.test('a flood of expensive valid updates keeps another session echoing within 50 ms', async (t) => {
  let stop = false;
  let rounds = 0;
  behaviour = (sock) => {
    void (async () => {
      const hex = Buffer.concat([head(3), hextileScreen(1), hextileScreen(2), hextileScreen(3)]);
      const fills = new ZrleFills();
      while (!stop && !sock.destroyed) {
        await writeAll(sock, hex);
        for (let k = 0; k < 8 && !sock.destroyed; k++) await writeAll(sock, fills.update(k * 37 + rounds));
        rounds++;
      }
    })();
  };
  const grant = await tg.grant('alice', 'load-cert', 'ops');
  const s = await tg.secret('alice', grant.id);
  const term = new Terminal(s.secret, ['-p', String(tg.listener('ssh').port), `${s.username}@127.0.0.1`]);
  t.teardown(() => term.kill());
  await term.waitFor(/[$#] $/m, 20_000);
  const quiet = await echoLatencies(term, 10);
  const c = await viewer();
  try {
    await waitFor(() => rounds >= 1, 60_000, 'the flood to be under way');
    const loop = monitorEventLoopDelay({ resolution: 5 });
    loop.enable();
    const bytesBefore = c.bytes();
    const roundsBefore = rounds;
    const lat = await echoLatencies(term, 40);
    loop.disable();
    const during = c.bytes() - bytesBefore;
    t.ok(during > 1 << 20, `the hostile session kept flowing: ${(during / 1048576).toFixed(0)} MiB relayed during the measurement (${rounds - roundsBefore} rounds)`);
    assertEcho(t, lat, quiet, loop.max / 1e6);
  } finally {
    stop = true;
    c.sock.destroy();
  }
  await settle();
  term.type('exit\r');
  await term.exited();
});
