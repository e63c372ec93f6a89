/**
 * RFB (VNC): client messages as the relay frames and parses them, the server's stream after
 * ServerInit through ServerStream into the recorder's framebuffer (Raw, CopyRect, Hextile, ZRLE,
 * DesktopSize, Cursor, colour maps, cut text), and the handshake pieces both sides parse
 * (ProtocolVersion, security types, VeNCrypt, ServerInit, pixel formats) over ByteReader.
 */
import { Deflate } from 'pako';
import { ResourceLimitError } from '../../../protocols/bounded.js';
import { clientMessageLength, encodeKeyEvent, encodePointerEvent, encodeSetEncodings, encodeUpdateRequest, filterEncodings, parseClientMessage } from '../../../protocols/vnc/client-messages.js';
import { encodeServerInit, MAX_CREDENTIAL, parseServerInitHead, parseVersion } from '../../../protocols/vnc/handshake.js';
import { checkPixelFormat, encodePixelFormat, parsePixelFormat } from '../../../protocols/vnc/pixel.js';
import { ByteReader, ProtocolError } from '../../../protocols/vnc/reader.js';
import { ServerStream, ServerStreamState } from '../../../protocols/vnc/server-messages.js';
import { FramebufferSink, PF32 } from '../../vnc/client.js';
import { chunks, invariant, type FuzzTarget } from '../engine.js';
import { FakeDuplex } from './fakes.js';

const expected = (e: unknown) => e instanceof ProtocolError || e instanceof ResourceLimitError;

function clientMessages(input: Buffer): void {
  let buf = Buffer.alloc(0);
  for (const c of chunks(input)) {
    buf = Buffer.concat([buf, c]);
    for (;;) {
      let m: ReturnType<typeof parseClientMessage>;
      try { m = parseClientMessage(buf); } catch (e) { if (expected(e)) return; throw e; }
      if (!m) break;
      invariant(m.length > 0 && m.length <= buf.length, `message length ${m.length} of ${buf.length}`);
      invariant(clientMessageLength(buf) === m.length, 'clientMessageLength disagrees with parseClientMessage');
      if (m.msg.type === 'SetEncodings') filterEncodings(m.msg.encodings);
      if (m.msg.type === 'SetPixelFormat') { try { checkPixelFormat(m.msg.pf); } catch (e) { if (!expected(e)) throw e; } }
      buf = buf.subarray(m.length);
    }
  }
}

/**
 * Input: a 24-byte ServerInit head (size and pixel format, as the target announced them), then the
 * server's stream. The size is kept small (the gateway would hold a framebuffer of any valid size).
 */
function serverStream(input: Buffer): void {
  if (input.length < 24) return;
  let head: ReturnType<typeof parseServerInitHead>;
  try { head = parseServerInitHead(input.subarray(0, 24)); } catch (e) { if (expected(e)) return; throw e; }
  const w = 1 + (head.width - 1) % 256;
  const h = 1 + (head.height - 1) % 256;
  let pf = head.pf;
  try { checkPixelFormat(pf); } catch { pf = PF32; }
  const st = new ServerStreamState(w, h, pf);
  const sink = new FramebufferSink(w, h);
  const body = input.subarray(24);
  let forwarded = 0;
  const s = new ServerStream(st, sink, {
    forward: (b) => {
      invariant(b.equals(body.subarray(forwarded, forwarded + b.length)), `forwarded bytes at ${forwarded} are not the stream's`);
      forwarded += b.length;
    },
    message: (_m, raw) => {
      if (raw) {
        invariant(raw.equals(body.subarray(forwarded, forwarded + raw.length)), `cut text at ${forwarded} is not the stream's`);
        forwarded += raw.length;
      }
    },
  });
  for (const c of chunks(body)) {
    try {
      s.push(c);
      s.run();
    } catch (e) {
      if (expected(e)) return;
      throw e;
    }
    invariant(forwarded <= body.length, 'forwarded more than arrived');
  }
}

/** Both handshakes' reads over ByteReader: version, security type list, VeNCrypt sub-types and credentials, ServerInit. */
async function handshake(input: Buffer): Promise<void> {
  const sock = new FakeDuplex();
  const r = new ByteReader(sock as never, 'the peer');
  const run = (async () => {
    parseVersion(await r.read(12));
    const n = await r.u8();
    if (n === 0) { await r.string(4096, 'reason'); return; }
    await r.read(n);
    const sub = await r.u32();
    if (sub === 262 || sub === 259 || sub === 256) {
      await r.string(MAX_CREDENTIAL, 'user name');
      await r.string(MAX_CREDENTIAL, 'password');
    }
    const h = parseServerInitHead(await r.read(24));
    await r.read(h.nameLength);
    parsePixelFormat(await r.read(16));
  })();
  for (const c of chunks(input)) sock.emit('data', c);
  sock.emit('end');
  try { await run; } catch (e) { if (!expected(e)) throw e; }
}

function zrle(colour: number, w: number, h: number): Buffer {
  const z = new Deflate();
  const tiles = Math.ceil(w / 64) * Math.ceil(h / 64);
  const raw = Buffer.alloc(tiles * 4);
  for (let i = 0; i < tiles; i++) { raw[i * 4] = 1; raw[i * 4 + 1] = colour; raw[i * 4 + 2] = 255 - colour; raw[i * 4 + 3] = 9; }
  z.push(raw, 2);
  const data = Buffer.concat(z.chunks);
  return Buffer.concat([rect(0, 0, w, h, 16), u32(data.length), data]);
}
const u16 = (n: number) => { const b = Buffer.alloc(2); b.writeUInt16BE(n); return b; };
const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0); return b; };
const rect = (x: number, y: number, w: number, h: number, enc: number) => { const b = Buffer.alloc(12); b.writeUInt16BE(x, 0); b.writeUInt16BE(y, 2); b.writeUInt16BE(w, 4); b.writeUInt16BE(h, 6); b.writeInt32BE(enc, 8); return b; };
const update = (rects: Buffer[]) => Buffer.concat([Buffer.from([0, 0]), u16(rects.length), ...rects]);
const px = (r: number, g: number, b: number) => Buffer.from([b, g, r, 0]);
const initHead = (w: number, h: number, pf = PF32) => encodeServerInit({ width: w, height: h, pf, name: '' });

function serverSeed(): Buffer {
  const hex = Buffer.concat([rect(16, 16, 16, 16, 5), Buffer.from([2 | 4 | 8]), px(0, 0, 255), px(255, 255, 255), Buffer.from([1, (4 << 4) | 5, (2 << 4) | 1])]);
  const cursor = Buffer.concat([rect(1, 1, 2, 2, -239), Buffer.alloc(2 * 2 * 4, 0x80), Buffer.from([0xc0, 0xc0])]);
  const cut = Buffer.concat([Buffer.from([3, 0, 0, 0]), u32(5), Buffer.from('hello')]);
  const colours = Buffer.concat([Buffer.from([1, 0]), u16(0), u16(1), u16(65535), u16(0), u16(0)]);
  return Buffer.concat([initHead(64, 48), update([Buffer.concat([rect(0, 0, 2, 1, 0), px(255, 0, 0), px(0, 255, 0)]), Buffer.concat([rect(10, 10, 2, 1, 1), Buffer.from([0, 0, 0, 0])]), hex, zrle(200, 64, 48), cursor]), Buffer.from([2]), cut, colours, update([rect(0, 0, 80, 60, -223)])]);
}

export const targets: FuzzTarget[] = [
  {
    name: 'vnc.client-messages',
    covers: 'RFB client messages: SetPixelFormat, SetEncodings, FramebufferUpdateRequest, KeyEvent, PointerEvent, ClientCutText',
    expected, run: clientMessages,
    arbitrary: (fcl) => fcl.array(fcl.oneof(
      fcl.array(fcl.integer(), { maxLength: 20 }).map((e) => encodeSetEncodings(e)),
      fcl.tuple(fcl.boolean(), fcl.nat(0xffff), fcl.nat(0xffff), fcl.nat(0xffff), fcl.nat(0xffff)).map(([i, x, y, w, h]) => encodeUpdateRequest(i, x, y, w, h)),
      fcl.tuple(fcl.boolean(), fcl.nat()).map(([d, k]) => encodeKeyEvent(d, k)),
      fcl.tuple(fcl.nat(255), fcl.nat(0xffff), fcl.nat(0xffff)).map(([m, x, y]) => encodePointerEvent(m, x, y)),
      fcl.uint8Array({ maxLength: 64 }).map((t) => Buffer.concat([Buffer.from([6, 0, 0, 0]), u32(t.length), Buffer.from(t)])),
      fcl.uint8Array({ minLength: 16, maxLength: 16 }).map((p) => Buffer.concat([Buffer.from([0, 0, 0, 0]), Buffer.from(p)])),
    ), { maxLength: 16 }).map((ms) => new Uint8Array(Buffer.concat(ms))),
    seeds: () => [Buffer.concat([Buffer.concat([Buffer.from([0, 0, 0, 0]), encodePixelFormat(PF32)]), encodeSetEncodings([16, 5, 1, 0, -239, -223]), encodeUpdateRequest(false, 0, 0, 64, 48), encodeKeyEvent(true, 0x61), encodePointerEvent(1, 3, 4)])],
  },
  {
    name: 'vnc.server-messages',
    covers: 'ServerStream after ServerInit: FramebufferUpdate (Raw, CopyRect, Hextile, ZRLE, DesktopSize, Cursor) into the framebuffer model, SetColourMapEntries, Bell, ServerCutText',
    expected, run: serverStream,
    arbitrary: (fcl) => fcl.tuple(fcl.integer({ min: 1, max: 128 }), fcl.integer({ min: 1, max: 128 }), fcl.array(fcl.oneof(
      fcl.tuple(fcl.nat(127), fcl.nat(127), fcl.integer({ min: 1, max: 8 }), fcl.integer({ min: 1, max: 8 }), fcl.nat(255)).map(([x, y, w, h, v]) => Buffer.concat([rect(x, y, w, h, 0), Buffer.alloc(w * h * 4, v)])),
      fcl.tuple(fcl.nat(127), fcl.nat(127), fcl.nat(127), fcl.nat(127)).map(([x, y, sx, sy]) => Buffer.concat([rect(x, y, 4, 4, 1), u16(sx), u16(sy)])),
      fcl.tuple(fcl.integer({ min: 1, max: 32 }), fcl.integer({ min: 1, max: 32 }), fcl.uint8Array({ maxLength: 80 })).map(([w, h, d]) => Buffer.concat([rect(0, 0, w, h, 5), Buffer.from(d)])),
      fcl.tuple(fcl.nat(255), fcl.integer({ min: 1, max: 128 }), fcl.integer({ min: 1, max: 128 })).map(([c, w, h]) => zrle(c, w, h)),
    ), { maxLength: 5 })).map(([w, h, rects]) => new Uint8Array(Buffer.concat([initHead(w, h), update(rects)]))),
    seeds: () => [serverSeed()],
  },
  {
    name: 'vnc.handshake',
    covers: 'RFB handshake reads over ByteReader: ProtocolVersion, security type lists and failure reasons, VeNCrypt sub-type and credentials, ServerInit and its name, pixel format',
    expected, run: handshake,
    arbitrary: (fcl) => fcl.tuple(fcl.constantFrom('RFB 003.008\n', 'RFB 003.003\n', 'RFB 003.007\n', 'RFB 004.001\n'), fcl.uint8Array({ maxLength: 5 }), fcl.string({ maxLength: 20 }), fcl.string({ maxLength: 20 }))
      .map(([v, types, u, p]) => new Uint8Array(Buffer.concat([Buffer.from(v), Buffer.from([types.length]), Buffer.from(types), u32(262), u32(Buffer.byteLength(u)), Buffer.from(u), u32(Buffer.byteLength(p)), Buffer.from(p), encodeServerInit({ width: 64, height: 48, pf: PF32, name: 'desk' }), encodePixelFormat(PF32)]))),
  },
];
