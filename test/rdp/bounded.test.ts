/**
 * Bounded cost per hostile RDP peer (issue 25). On the parts: a 28-byte PDU claiming a 4096x4096
 * RLE picture allocates nothing big, planar data too short for its size is refused before any
 * plane is allocated, TPKT in 1-byte chunks is linear. Through the real gateway, against a fake
 * hostile target: the same PDUs leave the session running and memory flat, and an update covering
 * more than 4 desktops ends the session as resource_limit. (A flood of full-desktop RLE bitmaps next
 * to a live SSH session is test/proxy/fairness.test.ts.)
 */
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type tls from 'node:tls';
import { ManualClock } from '../../policies/clock.js';
import { BitmapScratch, decodeBitmap, decodeInterleaved, decodePlanar } from '../../protocols/rdp/bitmap.js';
import { RdpProtocolError } from '../../protocols/rdp/errors.js';
import { encodeTpkt, FrameSplitter } from '../../protocols/rdp/tpkt.js';
import { startTestGateway } from '../support/gateway.js';
import { login } from './client.js';
import { fakeRdpTarget, fastPathBitmaps, rleFill } from './fake-target.js';
import { waitFor } from './support.js';

const arrayBuffers = () => process.memoryUsage().arrayBuffers;

t.test('a 28-byte PDU claiming 4096x4096 allocates nothing big; planar is checked before its planes', async (t) => {
  const pdu = fastPathBitmaps([{ x: 0, y: 0, w: 4096, h: 4096, bpp: 16, compressed: true, data: Buffer.from([0x60]) }]);
  t.equal(pdu.length, 28, 'the PDU of the report');
  const rect = { left: 0, top: 0, right: 4095, bottom: 4095, width: 4096, height: 4096, bpp: 16, flags: 0x0401, data: Buffer.from([0x60]) };
  const before = arrayBuffers();
  t.throws(() => decodeBitmap(rect), /RLE data of 1 bytes cannot cover 4096x4096/);
  t.throws(() => decodeInterleaved(Buffer.from([0xf0, 0xff, 0xff]), 4096, 4096, 16), /cannot cover/, 'one mega run cannot cover 16M pixels either');
  t.throws(() => decodePlanar(Buffer.from([0x10, 0x00, 0x00]), 2048, 2048), /planar data of 3 bytes cannot cover 2048x2048/);
  const grew = arrayBuffers() - before;
  t.ok(grew < 1 << 20, `array buffers grew ${grew} bytes (the old decoder: 128 MiB for the RLE, 16 MiB for planar)`);

  // Legitimate decodes reuse one scratch: a second full-size decode allocates nothing new.
  const scratch = new BitmapScratch();
  const fill = { ...rect, width: 1024, height: 768, right: 1023, bottom: 767, data: rleFill(1024, 768, 0xf800) };
  const px = decodeBitmap(fill, scratch)!;
  t.same([...px.subarray(0, 4)], [255, 0, 0, 255], 'a full-size RLE fill decodes (red)');
  const mid = arrayBuffers();
  decodeBitmap({ ...fill, data: rleFill(1024, 768, 0x07e0) }, scratch);
  t.ok(arrayBuffers() - mid < 64 << 10, `the second decode reused the scratch (+${arrayBuffers() - mid} bytes)`);
  t.throws(() => decodeInterleaved(Buffer.from([0x60 | 31, 0, 0]), 4, 2, 16), RdpProtocolError, 'overruns are still protocol errors');
});

t.test('TPKT: a 64 KiB PDU in 1-byte chunks is linear', async (t) => {
  const frame = encodeTpkt(Buffer.concat([Buffer.from([2, 0xf0, 0x80]), Buffer.alloc(65535 - 7, 0x41)]));
  t.equal(frame.length, 65535);
  const whole = new FrameSplitter();
  let t0 = performance.now();
  t.equal(whole.push(frame).length, 1);
  const wholeMs = performance.now() - t0;
  const s = new FrameSplitter();
  let frames = 0;
  t0 = performance.now();
  for (let i = 0; i < frame.length; i++) frames += s.push(frame.subarray(i, i + 1)).length;
  const bytewiseMs = performance.now() - t0;
  t.equal(frames, 1, 'one frame');
  t.equal(s.buffered, 0);
  // Work as an operation count: bytes copied while framing (re-concatenating on every chunk copies ~2 GiB).
  t.ok(s.copied <= 2 * frame.length, `copied ${s.copied} bytes for a ${frame.length}-byte PDU (at most 2x)`);
  t.ok(bytewiseMs < 2000, `1-byte chunks took ${bytewiseMs.toFixed(0)} ms (one chunk: ${wholeMs.toFixed(2)} ms)`);
});

t.test('through the gateway, against a hostile target', async (t) => {
  const W = 1024, H = 768;
  const dir = mkdtempSync(join(tmpdir(), 'tg-rdpload-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sam = join(dir, 'SAM');
  writeFileSync(sam, '', { mode: 0o600 });
  let behaviour: (sock: tls.TLSSocket) => void = () => {};
  const clock = new ManualClock(Date.now());
  // The fake target serves the gateway's own certificate (the gateway does not verify targets without options.ca).
  let tg: Awaited<ReturnType<typeof startTestGateway>> | null = null;
  const fake = await fakeRdpTarget({ get cert() { return tg!.gw.tls.cert; }, get key() { return tg!.gw.tls.key.reveal(); } }, { width: W, height: H }, (s) => behaviour(s));
  t.teardown(() => fake.close());
  tg = await startTestGateway({
    clock, listeners: ['rdp'],
    targets: [{ name: 'fakerdp', protocol: 'rdp', address: `127.0.0.1:${fake.port}`, roles: [{ name: 'user' }], credentials: { mode: 'sam-file', path: sam, user: 'tguser' } }],
  });
  const gw = tg;
  t.teardown(() => gw.close());
  const rdpPort = gw.listener('rdp').port;

  const session = async () => {
    const g = await gw.grant('alice', 'fakerdp', 'user');
    const s = await gw.secret('alice', g.id);
    const c = await login(rdpPort, s.username, s.secret);
    let bytes = 0;
    let closed = false;
    c.sock.on('data', (d: Buffer) => { bytes += d.length; });
    c.sock.on('close', () => { closed = true; });
    c.sock.on('error', () => {});
    c.sock.resume();
    const live = await waitFor('the session', async () => (await gw.store.listSessions({ grantId: g.id }))[0]);
    return { sock: c.sock, grantId: g.id, id: live.id, bytes: () => bytes, closed: () => closed };
  };
  const ended = (grantId: string) => waitFor('the session to end', async () => (await gw.store.listSessions({ grantId })).find((s) => s.state === 'ended'), 15_000);

  await t.test('the 28-byte PDU and its in-desktop variant: nothing allocated, nothing recorded, the session goes on', async (t) => {
    const small = fastPathBitmaps([{ x: 0, y: 0, w: 4096, h: 4096, bpp: 16, compressed: true, data: Buffer.from([0x60]) }]);
    const inside = fastPathBitmaps([{ x: 0, y: 0, w: W, h: H, bpp: 16, compressed: true, data: Buffer.from([0x60]) }]);
    const planar = fastPathBitmaps([{ x: 0, y: 0, w: W, h: H, bpp: 32, compressed: true, data: Buffer.from([0x10, 0, 0]) }]);
    behaviour = (sock) => { sock.write(Buffer.concat(Array.from({ length: 300 }, (_, i) => [small, inside, planar][i % 3]!))); };
    const c = await session();
    const peakStart = arrayBuffers();
    let peak = peakStart;
    const sampler = setInterval(() => { peak = Math.max(peak, arrayBuffers()); }, 2);
    await waitFor('the burst to pass', () => c.bytes() >= 300 * 28 ? true : null, 10_000);
    clearInterval(sampler);
    t.ok(peak - peakStart < 24 << 20, `array buffers peaked ${((peak - peakStart) / 1048576).toFixed(1)} MiB above the start for 300 such PDUs (old decoder: 128 MiB each)`);
    t.notOk(c.closed(), 'the session is still open');
    c.sock.destroy();
    const s = await ended(c.grantId);
    t.match(s.endReason, /^client_exit/, 'it ended when the client left');
  });

  await t.test('an update covering more than 4 desktops ends the session as resource_limit', async (t) => {
    const full = { x: 0, y: 0, w: W, h: H, bpp: 16, compressed: true, data: rleFill(W, H, 0x001f) };
    behaviour = (sock) => { sock.write(fastPathBitmaps([full, full, full, full, full])); };
    const c = await session();
    const s = await ended(c.grantId);
    t.match(s.endReason, /^resource_limit: the RDP target exceeded a limit: a bitmap update covers more than 4 times the 1024x768 desktop/, s.endReason ?? '');
    await waitFor('the client to be disconnected', () => c.closed() || null, 5000);
  });
});
