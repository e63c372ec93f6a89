/**
 * Bounded cost per hostile VNC server (issue 25), on the parser alone: Hextile in small chunks is
 * linear, a Raw rectangle streams through instead of being buffered, a header outside the screen
 * is refused at once, and a ZRLE inflate bomb stops at what its rectangle can need.
 */
import t from 'tap';
import { deflateSync, constants as zc } from 'node:zlib';
import { ResourceLimitError } from '../../protocols/bounded.js';
import { ProtocolError } from '../../protocols/vnc/reader.js';
import { ServerStream, ServerStreamState, zrleRectMax, type ScreenSink, type ServerMessage } from '../../protocols/vnc/server-messages.js';
import { FramebufferSink, hextileScreen as screenOf, PF32, rfbRect as rectHead } from './client.js';

const W = 1920;
const H = 1080;

class FbSink extends FramebufferSink {
  constructor() { super(W, H); }
}

function parser(sink: ScreenSink | null = new FbSink()) {
  const messages: ServerMessage[] = [];
  let forwarded = 0;
  const s = new ServerStream(new ServerStreamState(W, H, PF32), sink, { forward: (b) => { forwarded += b.length; }, message: (m) => messages.push(m) });
  return { s, messages, forwarded: () => forwarded };
}

function head(type: number, rects: number): Buffer {
  const b = Buffer.alloc(4); b[0] = type; b.writeUInt16BE(rects, 2);
  return b;
}
const hextileScreen = (seed: number) => screenOf(W, H, seed);

function feed(s: ServerStream, msg: Buffer, chunk: number): void {
  for (let i = 0; i < msg.length; i += chunk) {
    s.push(msg.subarray(i, i + chunk));
    s.run();
  }
}

t.test('Hextile: 16 MiB in 64 KiB chunks costs what one chunk does (linear)', async (t) => {
  const msg = Buffer.concat([head(0, 3), hextileScreen(1), hextileScreen(2), hextileScreen(3)]);
  t.ok(msg.length > 16 << 20, `${(msg.length / 1048576).toFixed(1)} MiB of Hextile`);
  const whole = parser();
  let t0 = performance.now();
  feed(whole.s, msg, msg.length);
  const wholeMs = performance.now() - t0;
  const chunked = parser();
  t0 = performance.now();
  feed(chunked.s, msg, 64 * 1024);
  const chunkedMs = performance.now() - t0;
  t.same(chunked.messages, [{ type: 'FramebufferUpdate', rects: 3 }], 'one update');
  t.equal(chunked.forwarded(), msg.length, 'every byte forwarded');
  t.same(chunked.s.st.width, W);
  // Work counted in bytes examined: each byte is looked at a small constant number of times.
  t.ok(chunked.s.examined <= 2 * msg.length, `examined ${chunked.s.examined} bytes for ${msg.length} (at most 2x)`);
  t.ok(chunked.s.examined <= whole.s.examined * 1.01, `chunked examined ${chunked.s.examined}, whole ${whole.s.examined}`);
  // A generous time bound (the old relay took ~1 s here against ~1 ms in one chunk).
  t.ok(chunkedMs < 3 * wholeMs + 300, `chunked ${chunkedMs.toFixed(0)} ms, whole ${wholeMs.toFixed(0)} ms`);
  const bytewise = parser(null);
  const small = Buffer.concat([head(0, 1), hextileScreen(3).subarray(0, 12 + 4 * 1025)]);
  small.writeUInt16BE(64, 4 + 4); // the rectangle: 64x16, four raw tiles
  small.writeUInt16BE(16, 4 + 6);
  feed(bytewise.s, small, 1);
  t.same(bytewise.messages, [{ type: 'FramebufferUpdate', rects: 1 }], 'byte-by-byte input: the same update');
  t.ok(bytewise.s.examined <= 3 * small.length, `byte-by-byte: examined ${bytewise.s.examined} for ${small.length}`);
});

t.test('Raw: a 65535x65535 header is refused at once; a full-screen Raw rectangle streams through', async (t) => {
  const p = parser();
  p.s.push(Buffer.concat([head(0, 1), rectHead(0, 0, 65535, 65535, 0)]));
  t.throws(() => p.s.run(), ProtocolError, 'outside the screen: a protocol error before any data');
  t.throws(() => new ServerStreamState(65535, 65535, PF32), /out of range/, 'a 65535x65535 screen is refused at ServerInit');

  const q = parser();
  const rowBytes = W * 4;
  const body = Buffer.alloc(W * H * 4, 0x5a);
  const msg = Buffer.concat([head(0, 1), rectHead(0, 0, W, H, 0), body]);
  let maxBuffered = 0;
  let lagging = 0;
  for (let i = 0; i < msg.length; i += 65536) {
    q.s.push(msg.subarray(i, i + 65536));
    q.s.run();
    maxBuffered = Math.max(maxBuffered, q.s.buffered);
    lagging = Math.max(lagging, Math.min(i + 65536, msg.length) - q.forwarded());
  }
  t.same(q.messages, [{ type: 'FramebufferUpdate', rects: 1 }]);
  t.ok(maxBuffered < rowBytes, `at most ${maxBuffered} bytes held (less than one ${rowBytes}-byte row), not the ${body.length}-byte rectangle`);
  t.ok(lagging < rowBytes, `forwarded as it arrived (at most ${lagging} bytes behind)`);
});

t.test('ZRLE: an inflate bomb ends at the rectangle budget with bounded memory', async (t) => {
  const budget = zrleRectMax(W, H, 3);
  // 128 MiB of zeros (valid raw tiles, then far more than the rectangle needs) deflate to ~130 KB.
  const bomb = deflateSync(Buffer.alloc(128 << 20), { level: 9, finishFlush: zc.Z_SYNC_FLUSH });
  t.ok(bomb.length < 200_000, `bomb: ${bomb.length} compressed bytes`);
  const len = Buffer.alloc(4); len.writeUInt32BE(bomb.length, 0);
  const msg = Buffer.concat([head(0, 1), rectHead(0, 0, W, H, 16), len, bomb]);
  const p = parser();
  const mem = () => { const m = process.memoryUsage(); return m.arrayBuffers + m.external; };
  const before = mem();
  let peak = before;
  let err: unknown = null;
  try {
    for (let i = 0; i < msg.length; i += 16384) {
      p.s.push(msg.subarray(i, i + 16384));
      p.s.run();
      peak = Math.max(peak, mem());
    }
  } catch (e) { err = e; }
  t.type(err, ResourceLimitError, 'the session is ended as a resource limit');
  t.match((err as Error).message, new RegExp(`inflates to more than the ${budget} bytes it can need`));
  t.ok(peak - before < 32 << 20, `external memory grew ${((peak - before) / 1048576).toFixed(1)} MiB (bound 32 MiB; the old relay: +480 MiB)`);
  t.ok(p.s.examined < budget * 2, `work stopped near the budget (${p.s.examined} bytes examined, budget ${budget})`);

  // A compressed length no rectangle of that size can need is refused before inflating anything.
  const small = parser();
  const l2 = Buffer.alloc(4); l2.writeUInt32BE(bomb.length, 0);
  small.s.push(Buffer.concat([head(0, 1), rectHead(0, 0, 64, 48, 16), l2]));
  t.throws(() => small.s.run(), ResourceLimitError, 'a 64x48 rectangle with 130 KB of zlib data');
});

t.test('an update covering more than 4 screens is a resource limit; garbage and truncation stay protocol errors', async (t) => {
  const p = parser();
  const copies = Array.from({ length: 5 }, () => Buffer.concat([rectHead(0, 0, W, H, 1), Buffer.alloc(4)]));
  p.s.push(Buffer.concat([head(0, 5), ...copies]));
  t.throws(() => p.s.run(), /covers more than 4 times/);
  const z = parser();
  const l = Buffer.alloc(4); l.writeUInt32BE(4, 0);
  z.s.push(Buffer.concat([head(0, 1), rectHead(0, 0, 8, 8, 16), l, Buffer.from('junk')]));
  t.throws(() => z.s.run(), ProtocolError, 'corrupt zlib data');
  const trunc = parser();
  const ok = deflateSync(Buffer.from([1, 0, 0]), { finishFlush: zc.Z_SYNC_FLUSH }); // one solid tile, short of its 3-byte colour
  const l3 = Buffer.alloc(4); l3.writeUInt32BE(ok.length, 0);
  trunc.s.push(Buffer.concat([head(0, 1), rectHead(0, 0, 8, 8, 16), l3, ok]));
  t.throws(() => trunc.s.run(), /ZRLE tile data is truncated/);
});
