/** RFB parsers, DES and the screen model: known answers, round trips, and random garbage. */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { deflateSync } from 'node:zlib';
import { Deflate } from 'pako';
import { vncPasswdFile, readVncPasswdFile, vncAuthResponse, vncDesDecrypt, passwordKey } from '../../protocols/vnc/des.js';
import { parseClientMessage, filterEncodings, encodeSetEncodings } from '../../protocols/vnc/client-messages.js';
import { ServerStream, ServerStreamState, type ScreenSink, type ServerMessage } from '../../protocols/vnc/server-messages.js';
import { ResourceLimitError } from '../../protocols/bounded.js';
import { ProtocolError } from '../../protocols/vnc/reader.js';
import { KeyLog } from '../../protocols/vnc/keysym.js';
import { Framebuffer, ScreenWriter, ScreenReplay } from '../../recorder/screen/index.js';
import { ManualClock } from '../../policies/clock.js';
import type { PixelFormat } from '../../protocols/vnc/pixel.js';

const PF32: PixelFormat = { bpp: 32, depth: 24, bigEndian: false, trueColour: true, redMax: 255, greenMax: 255, blueMax: 255, redShift: 16, greenShift: 8, blueShift: 0 };

t.test('VNC password file matches TigerVNC vncpasswd -f; challenge response round-trips', async (t) => {
  const r = spawnSync('vncpasswd', ['-f'], { input: 'S3cret!x\n' });
  if (r.status === 0) t.same(vncPasswdFile('S3cret!x'), r.stdout.subarray(0, 8), 'same bytes as vncpasswd -f');
  else t.fail('vncpasswd (tigervnc-tools) is required');
  t.equal(readVncPasswdFile(vncPasswdFile('abc')), 'abc');
  const ch = randomBytes(16);
  t.same(vncDesDecrypt(passwordKey('pw12345678'), vncAuthResponse('pw12345678', ch)), ch, 'only the first 8 characters count');
});

t.test('client messages: complete, partial, garbage', async (t) => {
  const se = encodeSetEncodings([7, 16, -239, 5, 1, -223, -314]);
  const m = parseClientMessage(se)!;
  t.same(m.msg, { type: 'SetEncodings', encodings: [7, 16, -239, 5, 1, -223, -314] });
  t.same(filterEncodings([7, 16, -239, 5, 1, -223, -314]), [16, -239, 5, 1, -223, 0], 'Tight and others dropped, Raw added');
  t.equal(parseClientMessage(se.subarray(0, 9)), null, 'partial message waits');
  t.throws(() => parseClientMessage(Buffer.from([99])), ProtocolError);
  const cut = Buffer.alloc(8); cut[0] = 6; cut.writeUInt32BE(0xffffffff, 4);
  t.throws(() => parseClientMessage(cut), /too long/);
  const big = Buffer.alloc(4); big[0] = 2; big.writeUInt16BE(60000, 2);
  t.throws(() => parseClientMessage(big), ProtocolError);
  for (let i = 0; i < 3000; i++) {
    const b = randomBytes(1 + (i % 40));
    try { parseClientMessage(b); } catch (e) { if (!(e instanceof ProtocolError)) throw e; }
  }
  t.pass('random client bytes only ever give ProtocolError');
});

class Sink implements ScreenSink {
  fb = new Framebuffer(64, 64);
  ops: string[] = [];
  putRect(x: number, y: number, w: number, h: number, rgba: Uint8Array) { this.fb.putRect(x, y, w, h, rgba); this.ops.push(`put ${x},${y} ${w}x${h}`); }
  fillRect(x: number, y: number, w: number, h: number, r: number, g: number, b: number) { this.fb.fillRect(x, y, w, h, r, g, b); this.ops.push(`fill ${x},${y} ${w}x${h}`); }
  copyRect(sx: number, sy: number, x: number, y: number, w: number, h: number) { this.fb.copyRect(sx, sy, x, y, w, h); this.ops.push('copy'); }
  resize(w: number, h: number) { this.fb.resize(w, h); this.ops.push(`resize ${w}x${h}`); }
  cursor() { this.ops.push('cursor'); }
  endUpdate() { this.ops.push('end'); }
}

const px = (r: number, g: number, b: number) => Buffer.from([b, g, r, 0]);
function update(rects: Buffer[]): Buffer {
  const h = Buffer.alloc(4); h[0] = 0; h.writeUInt16BE(rects.length, 2);
  return Buffer.concat([h, ...rects]);
}
function rectHead(x: number, y: number, w: number, h: number, enc: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(x, 0); b.writeUInt16BE(y, 2); b.writeUInt16BE(w, 4); b.writeUInt16BE(h, 6); b.writeInt32BE(enc, 8);
  return b;
}
const at = (fb: Framebuffer, x: number, y: number) => Array.from(fb.data.subarray((y * fb.width + x) * 4, (y * fb.width + x) * 4 + 3));

/** A parser over st/sink that records what it forwards and the messages it ends. */
function stream(st: ServerStreamState, sink: ScreenSink | null) {
  const forwarded: Buffer[] = [];
  const messages: ServerMessage[] = [];
  const s = new ServerStream(st, sink, { forward: (b) => forwarded.push(Buffer.from(b)), message: (m, raw) => { messages.push(m); if (raw) forwarded.push(raw); } });
  return { s, forwarded, messages, feed: (b: Buffer) => { s.push(b); s.run(); } };
}

t.test('server messages: Raw, CopyRect, Hextile, ZRLE, DesktopSize decode into the model', async (t) => {
  const st = new ServerStreamState(64, 64, PF32);
  const sink = new Sink();
  const raw = Buffer.concat([rectHead(0, 0, 2, 1, 0), px(255, 0, 0), px(0, 255, 0)]);
  const copy = Buffer.concat([rectHead(10, 10, 2, 1, 1), Buffer.from([0, 0, 0, 0])]);
  // Hextile 16x16 tile: background blue, foreground white, one 3x2 subrect at 4,5.
  const hex = Buffer.concat([rectHead(16, 16, 16, 16, 5), Buffer.from([2 | 4 | 8]), px(0, 0, 255), px(255, 255, 255), Buffer.from([1, (4 << 4) | 5, (2 << 4) | 1])]);
  // ZRLE: one solid 8x8 tile of yellow (CPIXEL = 3 bytes), zlib stream shared across rects.
  const z = new Deflate();
  z.push(Buffer.from([1, 0, 255, 255]), 2);
  const zdata = Buffer.concat(z.chunks);
  const zl = Buffer.alloc(4); zl.writeUInt32BE(zdata.length, 0);
  const zr = Buffer.concat([rectHead(40, 40, 8, 8, 16), zl, zdata]);
  const msg = update([raw, copy, hex, zr]);
  const p = stream(st, sink);
  for (let i = 0; i < msg.length; i++) {
    p.feed(msg.subarray(i, i + 1));
    if (p.messages.length && i < msg.length - 1) { t.fail(`message ended at byte ${i}`); break; }
  }
  t.same(p.messages, [{ type: 'FramebufferUpdate', rects: 4 }], 'one update, ended with its last byte (fed byte by byte)');
  t.same(Buffer.concat(p.forwarded), msg, 'every byte forwarded once, in order');
  t.same(at(sink.fb, 0, 0), [255, 0, 0]);
  t.same(at(sink.fb, 1, 0), [0, 255, 0]);
  t.same(at(sink.fb, 10, 10), [255, 0, 0], 'CopyRect');
  t.same(at(sink.fb, 16, 16), [0, 0, 255], 'hextile background');
  t.same(at(sink.fb, 20, 21), [255, 255, 255], 'hextile subrect');
  t.same(at(sink.fb, 23, 21), [0, 0, 255], 'outside subrect');
  t.same(at(sink.fb, 44, 44), [255, 255, 0], 'ZRLE solid tile');
  p.feed(update([rectHead(0, 0, 100, 50, -223)]));
  t.equal(st.width, 100);
  t.equal(sink.fb.width, 100);
  t.throws(() => p.feed(update([rectHead(0, 0, 20000, 50, -223)])), /DesktopSize to 20000x50 is out of range/, 'a DesktopSize the recorder cannot hold is a protocol error');
  t.ok(deflateSync);
});

t.test('server messages: absurd rectangles, unknown encodings and garbage are ProtocolErrors', async (t) => {
  const st = new ServerStreamState(64, 64, PF32);
  t.throws(() => stream(st, null).feed(update([rectHead(0, 0, 65535, 65535, 0)])), /outside/);
  t.throws(() => stream(st, null).feed(update([rectHead(0, 0, 8, 8, 7)])), /not negotiated/);
  t.throws(() => stream(st, null).feed(Buffer.from([77])), /unknown server message/);
  const zbad = Buffer.concat([rectHead(0, 0, 8, 8, 16), Buffer.from([0, 0, 0, 4]), Buffer.from('junk')]);
  t.throws(() => stream(st, new Sink()).feed(update([zbad])), ProtocolError);
  t.throws(() => new ServerStreamState(65535, 65535, PF32), /out of range/, 'a ServerInit frame the recorder cannot hold is refused');
  for (let i = 0; i < 3000; i++) {
    const b = Buffer.concat([Buffer.from([i % 4]), randomBytes(1 + (i % 200))]);
    try {
      stream(new ServerStreamState(64, 64, PF32), new Sink()).feed(b);
    } catch (e) {
      if (!(e instanceof ProtocolError) && !(e instanceof ResourceLimitError)) throw e;
    }
  }
  t.pass('random server bytes only ever give ProtocolError or ResourceLimitError');
});

t.test('keysyms to keystroke text', async (t) => {
  const k = new KeyLog();
  const seq: [boolean, number][] = [[true, 0x6c], [false, 0x6c], [true, 0x73], [true, 0xff0d], [true, 0xffe3], [true, 0x63], [false, 0xffe3], [true, 0x41]];
  t.equal(seq.map(([d, s]) => k.key(d, s)).join(''), 'ls\n<Ctrl+c>A');
});

t.test('screen writer and replay: keyframes, rects, copies, seek', async (t) => {
  const lines: Record<string, unknown>[] = [];
  const clock = new ManualClock(0);
  const rec = { write: (type: string, data: Record<string, unknown>) => lines.push({ t: clock.now() / 1000, type, ...data }), close: () => {} };
  const w = new ScreenWriter(rec, clock, 32, 16, { keyframeIntervalMs: 5000 });
  w.fillRect(0, 0, 32, 16, 10, 20, 30);
  w.endUpdate();
  clock.advance(1000);
  w.fillRect(0, 0, 4, 4, 200, 0, 0);
  w.endUpdate();
  clock.advance(1000);
  w.copyRect(0, 0, 8, 8, 4, 4);
  w.endUpdate();
  clock.advance(5000);
  w.fillRect(20, 0, 4, 4, 0, 200, 0);
  w.endUpdate();
  t.same(lines.map((l) => l.type), ['keyframe', 'rect', 'copy', 'keyframe']);
  const r = new ScreenReplay(lines);
  t.same(r.index.map((e) => e.t), [0, 7], 'seek index = keyframes');
  const f1 = r.frameAt(1.5)!;
  t.same(at(f1, 1, 1), [200, 0, 0]);
  t.same(at(f1, 9, 9), [10, 20, 30], 'copy not yet at 1.5 s');
  const f2 = r.frameAt(2)!;
  t.same(at(f2, 9, 9), [200, 0, 0], 'copy applied at 2 s');
  t.same(at(r.frameAt()!, 21, 1), [0, 200, 0]);
});
