/**
 * Gateway banners as pure functions: the bitmap font and layout, then each protocol's encoding
 * read back by the gateway's own decoders (the same ones that record native sessions): an RFB
 * Raw rectangle in several pixel formats through ServerStream, and RDP bitmap update PDUs in
 * every colour depth through the MCS / share / bitmap parsers.
 */
import t from 'tap';
import { BANNER_COLOURS, glyph, GLYPH_H, GLYPH_W, renderBanner, wrapText } from '../../protocols/banner.js';
import { bannerUpdate } from '../../protocols/vnc/banner.js';
import { ServerStream, ServerStreamState, type ScreenSink } from '../../protocols/vnc/server-messages.js';
import type { PixelFormat } from '../../protocols/vnc/pixel.js';
import { bannerPdus } from '../../protocols/rdp/banner.js';
import { decodeBitmap, parseBitmapUpdate } from '../../protocols/rdp/bitmap.js';
import { parseDomainPdu } from '../../protocols/rdp/mcs.js';
import { parseShareControl, parseShareData, PDUTYPE_DATA, PDUTYPE2_UPDATE } from '../../protocols/rdp/pdu.js';
import { FrameSplitter } from '../../protocols/rdp/tpkt.js';
import { parseData } from '../../protocols/rdp/x224.js';

const ink = (rgba: Uint8Array, fg: number[]) => { let n = 0; for (let i = 0; i < rgba.length; i += 4) if (rgba[i] === fg[0] && rgba[i + 1] === fg[1] && rgba[i + 2] === fg[2]) n++; return n; };

t.test('font: every printable ASCII glyph is 5x8; unknown characters are drawn as "?"', async (t) => {
  for (let c = 32; c < 127; c++) {
    const rows = glyph(String.fromCharCode(c));
    t.equal(rows.length, GLYPH_H, `glyph ${c} has ${GLYPH_H} rows`);
    t.ok(rows.every((r) => r >= 0 && r < 1 << GLYPH_W), `glyph ${c} fits ${GLYPH_W} columns`);
    if (c !== 32) t.ok(rows.some((r) => r), `glyph ${JSON.stringify(String.fromCharCode(c))} has ink`);
  }
  t.same(glyph('é'), glyph('?'));
  t.same(glyph('\u0000'), glyph('?'));
  const letters = new Set<string>();
  for (let c = 33; c < 127; c++) letters.add(glyph(String.fromCharCode(c)).join(','));
  t.equal(letters.size, 94, 'no two printable glyphs look alike');
});

t.test('layout: wrapped to the screen, 2x on wide screens, at most a third of the height', async (t) => {
  t.same(wrapText('aaa bbb ccc', 7), ['aaa bbb', 'ccc']);
  t.same(wrapText('x'.repeat(20), 8), ['xxxxxxxx', 'xxxxxxxx', 'xxxx'], 'unbreakable text is cut');
  t.same(wrapText('x'.repeat(30), 8), ['xxxxxxxx', 'xxxxxxxx', 'xxxxx...'], 'unbreakable text is cut, and the overflow says so');
  const text = 'Tollgate: your access to desk ends in 60 seconds (grant 0f3a).';
  const wide = renderBanner(1024, 768, text, 'warning');
  t.equal(wide.width, 1024);
  t.equal(wide.height, 1 * 20 + 16, 'one line of 2x glyphs with padding');
  t.equal(wide.rgba.length, wide.width * wide.height * 4);
  const { fg, bg } = BANNER_COLOURS.warning;
  const inkPx = ink(wide.rgba, fg);
  let glyphBits = 0;
  for (const ch of text) for (const r of glyph(ch)) for (let b = 0; b < GLYPH_W; b++) if (r & (1 << b)) glyphBits++;
  t.equal(inkPx, glyphBits * 4, 'every ink bit of the text is a 2x2 block, nothing else is ink');
  t.equal(ink(wide.rgba, bg) + inkPx, wide.width * wide.height, 'the rest is background');
  const narrow = renderBanner(320, 200, text, 'ended');
  t.ok(narrow.height <= Math.floor(200 / 3) + 1, `a narrow screen gets a short banner (${narrow.height} px)`);
  t.ok(ink(narrow.rgba, BANNER_COLOURS.ended.fg) > 0, 'with text');
  const tiny = renderBanner(10, 5, text, 'ended');
  t.equal(tiny.width, 10);
  t.ok(tiny.height >= 1 && tiny.height <= 5, 'a tiny screen still gets a banner inside it');
});

class Sink implements ScreenSink {
  rects: { x: number; y: number; w: number; h: number; rgba: Uint8Array }[] = [];
  updates = 0;
  putRect(x: number, y: number, w: number, h: number, rgba: Uint8Array) { this.rects.push({ x, y, w, h, rgba: rgba.slice() }); }
  fillRect() {}
  copyRect() {}
  resize() {}
  cursor() {}
  endUpdate() { this.updates++; }
}

const FORMATS: [string, PixelFormat][] = [
  ['32 bpp little-endian rgb888', { bpp: 32, depth: 24, bigEndian: false, trueColour: true, redMax: 255, greenMax: 255, blueMax: 255, redShift: 16, greenShift: 8, blueShift: 0 }],
  ['32 bpp big-endian bgr', { bpp: 32, depth: 24, bigEndian: true, trueColour: true, redMax: 255, greenMax: 255, blueMax: 255, redShift: 0, greenShift: 8, blueShift: 16 }],
  ['16 bpp big-endian rgb565', { bpp: 16, depth: 16, bigEndian: true, trueColour: true, redMax: 31, greenMax: 63, blueMax: 31, redShift: 11, greenShift: 5, blueShift: 0 }],
  ['8 bpp bgr233', { bpp: 8, depth: 8, bigEndian: false, trueColour: true, redMax: 7, greenMax: 7, blueMax: 3, redShift: 0, greenShift: 3, blueShift: 6 }],
  ['8 bpp colour map', { bpp: 8, depth: 8, bigEndian: false, trueColour: false, redMax: 0, greenMax: 0, blueMax: 0, redShift: 0, greenShift: 0, blueShift: 0 }],
];

t.test('VNC: the banner is one Raw rectangle the viewer (and the gateway\'s own parser) reads in its pixel format', async (t) => {
  for (const [name, pf] of FORMATS) {
    const st = new ServerStreamState(800, 600, pf);
    // A colour map with the banner colours somewhere in it, among others.
    for (let i = 0; i < 256; i++) { st.colourMap[i * 3] = (i * 37) & 255; st.colourMap[i * 3 + 1] = (i * 91) & 255; st.colourMap[i * 3 + 2] = (i * 53) & 255; }
    st.colourMap.set([255, 196, 0], 7 * 3);
    st.colourMap.set([0, 0, 0], 9 * 3);
    const b = bannerUpdate(st.pf, st.colourMap, st.width, st.height, 'Tollgate: your access to desk ends in 60 seconds.', 'warning');
    const sink = new Sink();
    const forwarded: Buffer[] = [];
    const msgs: string[] = [];
    const s = new ServerStream(st, sink, { forward: (x) => forwarded.push(Buffer.from(x)), message: (m) => msgs.push(m.type) });
    t.ok(s.idle, `${name}: a fresh stream is at a message boundary`);
    s.push(b.message);
    s.run();
    t.same(msgs, ['FramebufferUpdate'], `${name}: one FramebufferUpdate`);
    t.ok(s.idle, `${name}: and at a boundary again after it`);
    t.same(Buffer.concat(forwarded), b.message, `${name}: forwarded as it is`);
    const got = new Uint8Array(b.w * b.h * 4);
    for (const r of sink.rects) for (let y = 0; y < r.h; y++) got.set(r.rgba.subarray(y * r.w * 4, (y + 1) * r.w * 4), ((r.y + y) * b.w + r.x) * 4);
    t.same(Buffer.from(got), Buffer.from(b.shown), `${name}: the pixels decoded are the ones the recording gets`);
    const expected = renderBanner(800, 600, 'Tollgate: your access to desk ends in 60 seconds.', 'warning');
    let far = 0;
    for (let i = 0; i < expected.rgba.length; i += 4) {
      const d = Math.abs(expected.rgba[i]! - b.shown[i]!) + Math.abs(expected.rgba[i + 1]! - b.shown[i + 1]!) + Math.abs(expected.rgba[i + 2]! - b.shown[i + 2]!);
      if (d > 96) far++;
    }
    t.equal(far, 0, `${name}: every pixel is close to the rendered banner`);
  }
  const st = new ServerStreamState(64, 64, FORMATS[0]![1]);
  const s = new ServerStream(st, null, { forward: () => {}, message: () => {} });
  s.push(Buffer.from([0, 0, 0, 1, 0, 0, 0, 0, 0, 4, 0, 4, 0, 0, 0, 0]));
  s.run();
  t.notOk(s.idle, 'inside a rectangle the stream is not at a boundary');
});

t.test('RDP: the banner is bitmap update PDUs the gateway\'s parsers read back, in every colour depth', async (t) => {
  const text = 'Tollgate: session terminated by carol: done.';
  const expected = renderBanner(810, 600, text, 'ended');
  for (const bpp of [15, 16, 24, 32]) {
    const b = bannerPdus({ shareId: 0x1234, pduSource: 0x3ea, initiator: 1002, ioChannel: 1003, bpp, width: 810, height: 600 }, text, 'ended')!;
    t.ok(b, `${bpp} bpp: drawn`);
    const frames = new FrameSplitter().push(Buffer.concat(b.frames));
    t.equal(frames.length, b.frames.length, `${bpp} bpp: ${frames.length} whole TPKT frames`);
    const got = new Uint8Array(expected.width * expected.height * 4);
    let covered = 0;
    frames.forEach((f, i) => {
      if (f.kind !== 'tpkt') throw new Error('fast-path');
      const m = parseDomainPdu(parseData(f.payload)!);
      if (m.type !== 'sendData') throw new Error(m.type);
      t.ok(m.indication && m.channelId === 1003 && m.initiator === 1002, 'a Send Data Indication on the I/O channel');
      t.ok(f.raw.length < 16384, 'well below the MCS length limit');
      const sc = parseShareControl(m.data);
      t.equal(sc.pduType, PDUTYPE_DATA);
      const sd = parseShareData(sc.body);
      t.equal(sd.shareId, 0x1234);
      t.equal(sd.pduType2, PDUTYPE2_UPDATE);
      t.same(sd.body, b.updates[i], 'the recorder gets the same update body');
      for (const r of parseBitmapUpdate(sd.body.subarray(0))) {
        const px = decodeBitmap(r)!;
        const w = r.right - r.left + 1;
        const h = r.bottom - r.top + 1;
        for (let y = 0; y < h; y++) got.set(px.subarray(y * r.width * 4, y * r.width * 4 + w * 4), ((r.top + y) * expected.width + r.left) * 4);
        covered += w * h;
      }
    });
    t.equal(covered, expected.width * expected.height, `${bpp} bpp: the tiles cover the banner exactly once (width 810 is not a multiple of 4)`);
    let far = 0;
    for (let i = 0; i < got.length; i += 4) {
      const d = Math.abs(expected.rgba[i]! - got[i]!) + Math.abs(expected.rgba[i + 1]! - got[i + 1]!) + Math.abs(expected.rgba[i + 2]! - got[i + 2]!);
      if (d > 24) far++;
    }
    t.equal(far, 0, `${bpp} bpp: decoded, it is the rendered banner (within the depth's precision)`);
  }
  t.equal(bannerPdus({ shareId: 1, pduSource: 0x3ea, initiator: 1002, ioChannel: 1003, bpp: 8, width: 800, height: 600 }, 'x', 'warning'), null, '8 bpp (a palette) is not drawn');
});
