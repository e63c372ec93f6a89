/** The RDP layers as pure functions: round trips, truncation, absurd lengths, fuzzing. */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { Secret } from '../../auth/secret.js';
import { decodeBitmap, decodeInterleaved, decodePlanar, decodeRaw, parseBitmapUpdate } from '../../protocols/rdp/bitmap.js';
import { CAPSETTYPE_BITMAP_CODECS, CAPSETTYPE_SURFACE_COMMANDS, CAPSTYPE_BITMAP, CAPSTYPE_ORDER, encodeCapabilitySets, parseCapabilitySets, stripClientCapabilities } from '../../protocols/rdp/capabilities.js';
import { ChannelAssembler, parseChannelChunk, parseClipboard, parseDeviceListAnnounce } from '../../protocols/rdp/channels.js';
import { RdpProtocolError } from '../../protocols/rdp/errors.js';
import {
  CS_CORE, CS_NET, CS_SECURITY, encodeBlocks, encodeClientNetwork, encodeConferenceCreateRequest, encodeConferenceCreateResponse,
  encodeServerCore, encodeServerNetwork, parseBlocks, parseConferenceCreateRequest, parseConferenceCreateResponse, patchClientCore,
  readClientCore, readClientNetwork, readServerNetwork, RNS_UD_CS_SUPPORT_DYNVC_GFX_PROTOCOL, SC_CORE, SC_NET,
} from '../../protocols/rdp/gcc.js';
import { encodeClientInfo, INFO_AUTOLOGON, INFO_COMPRESSION, INFO_UNICODE, parseClientInfo, rewriteClientInfo } from '../../protocols/rdp/info.js';
import { KeyTranslator } from '../../protocols/rdp/keys.js';
import {
  encodeConnectInitial, encodeConnectResponse, encodeDomainPdu, parseConnectInitial, parseConnectResponse, parseDomainPdu, perLength, perReadLength,
  type DomainMessage,
} from '../../protocols/rdp/mcs.js';
import {
  encodeConfirmActive, encodeShareControl, parseConfirmActive, parseFastPathInput, parseFastPathOutput, parseShareControl, parseSlowPathInput,
  PDUTYPE_CONFIRMACTIVE,
} from '../../protocols/rdp/pdu.js';
import { isLicensing } from '../../protocols/rdp/relay.js';
import { encodeLicenseValidClient, parseSecurityHeader, SEC_LICENSE_PKT } from '../../protocols/rdp/security.js';
import { encodeFastPath, encodeTpkt, FrameSplitter, frameLength } from '../../protocols/rdp/tpkt.js';
import {
  encodeConnectionConfirm, encodeConnectionRequest, encodeData, parseConnectionConfirm, parseConnectionRequest, parseData, PROTOCOL_HYBRID, PROTOCOL_SSL,
} from '../../protocols/rdp/x224.js';

/** Only RdpProtocolError (or a clean result) may come out of a parser, whatever the input. */
function onlyProtocolErrors(t: Test, name: string, fn: () => unknown): void {
  try { fn(); } catch (e) {
    if (!(e instanceof RdpProtocolError)) t.fail(`${name}: ${(e as Error).name}: ${(e as Error).message}`);
  }
}

t.test('TPKT and fast-path framing', async (t) => {
  const p = encodeTpkt(Buffer.from('hello'));
  t.same([...p.subarray(0, 4)], [3, 0, 0, 9]);
  t.equal(frameLength(p), 9);
  t.equal(frameLength(p.subarray(0, 3)), 0, 'needs more bytes');
  t.throws(() => frameLength(Buffer.from([3, 0, 0, 2])), RdpProtocolError, 'TPKT length under the header');
  t.throws(() => frameLength(Buffer.from([0x17, 0x03, 0x03])), RdpProtocolError, 'a TLS record is not RDP');
  const small = encodeFastPath(0, Buffer.alloc(10, 1));
  t.equal(small.length, 12);
  t.equal(frameLength(small), 12);
  const big = encodeFastPath(0, Buffer.alloc(300, 2));
  t.equal(big.length, 303);
  t.equal(big[1]! & 0x80, 0x80, 'two-byte length');
  t.equal(frameLength(big), 303);
  t.throws(() => encodeTpkt(Buffer.alloc(70_000)), RdpProtocolError);
  // Split anywhere: the splitter yields the same frames.
  const stream = Buffer.concat([p, small, big, p]);
  for (let cut = 1; cut < stream.length; cut += 7) {
    const s = new FrameSplitter();
    const frames = [...s.push(stream.subarray(0, cut)), ...s.push(stream.subarray(cut))];
    t.same(frames.map((f) => f.kind), ['tpkt', 'fastpath', 'fastpath', 'tpkt'], `cut at ${cut}`);
    if (cut > 40) break;
  }
  const s = new FrameSplitter();
  t.same(s.push(big.subarray(0, 100)), []);
  t.equal(s.buffered, 100);
});

t.test('X.224 connection request / confirm', async (t) => {
  const cr = encodeConnectionRequest({ cookie: 'desk:admin', requestedProtocols: PROTOCOL_SSL | PROTOCOL_HYBRID });
  const r = parseConnectionRequest(cr);
  t.equal(r.cookie, 'desk:admin');
  t.same(r.negotiation, { flags: 0, requestedProtocols: 3 });
  t.throws(() => encodeConnectionRequest({ cookie: 'a\r\nb', requestedProtocols: 1 }), RdpProtocolError, 'no CR LF injection in the cookie');
  const noCookie = parseConnectionRequest(encodeConnectionRequest({ requestedProtocols: PROTOCOL_SSL }));
  t.equal(noCookie.cookie, null);
  t.same(parseConnectionConfirm(encodeConnectionConfirm({ selectedProtocol: PROTOCOL_SSL })).negotiation, { type: 'response', flags: 0, selectedProtocol: 1 });
  t.same(parseConnectionConfirm(encodeConnectionConfirm({ failure: 1 })).negotiation, { type: 'failure', code: 1 });
  t.throws(() => parseConnectionRequest(cr.subarray(0, 5)), RdpProtocolError, 'truncated');
  const bad = Buffer.from(cr); bad[0] = 200;
  t.throws(() => parseConnectionRequest(bad), RdpProtocolError, 'length indicator beyond the PDU');
  const noEol = Buffer.concat([Buffer.from([6 + 10, 0xe0, 0, 0, 0, 0, 0]), Buffer.from('Cookie: ms')]);
  t.throws(() => parseConnectionRequest(noEol), RdpProtocolError, 'cookie without CR LF');
  t.same(parseData(encodeData(Buffer.from('x'))), Buffer.from('x'));
  t.equal(parseData(Buffer.from([6, 0x80, 0, 0, 0, 0, 0])), null, 'disconnect request');
  t.throws(() => parseData(Buffer.from([2, 0xe0, 0x80])), RdpProtocolError);
});

function sampleBlocks() {
  const core = Buffer.alloc(212);
  core.writeUInt32LE(0x00080004, 0);
  core.writeUInt16LE(1024, 4);
  core.writeUInt16LE(768, 6);
  core.writeUInt16LE(0xca01, 8);
  core.writeUInt16LE(16, 136);
  core.writeUInt16LE(0x0001 | RNS_UD_CS_SUPPORT_DYNVC_GFX_PROTOCOL, 140);
  core.writeUInt32LE(0, 208);
  return [
    { type: CS_CORE, data: core },
    { type: CS_SECURITY, data: Buffer.alloc(8) },
    { type: CS_NET, data: encodeClientNetwork([{ name: 'cliprdr', options: 0xc0a00000 }, { name: 'rdpdr', options: 0x80800000 }, { name: 'drdynvc', options: 0xc0800000 }]) },
  ];
}

t.test('MCS connect PDUs and GCC user data', async (t) => {
  const blocks = sampleBlocks();
  const head = Buffer.from('0401010401010101ff30190201220201020201000201010201000201010202ffff020102301902010102010102010102010102010002010102020420020102301c0202ffff0202fc170202ffff0201010201000201010202ffff020102', 'hex');
  const ci = encodeConnectInitial({ head, userData: encodeConferenceCreateRequest(blocks) });
  const parsed = parseConnectInitial(ci);
  t.same(parsed.head, head, 'domain parameters kept verbatim');
  const back = parseConferenceCreateRequest(parsed.userData);
  t.same(back.map((b) => b.type), [CS_CORE, CS_SECURITY, CS_NET]);
  t.same(readClientNetwork(back[2]!.data).map((c) => c.name), ['cliprdr', 'rdpdr', 'drdynvc']);
  const core = readClientCore(back[0]!.data);
  t.equal(core.width, 1024);
  const patched = readClientCore(patchClientCore(back[0]!.data, PROTOCOL_SSL));
  t.equal(patched.serverSelectedProtocol, PROTOCOL_SSL, 'serverSelectedProtocol patched');
  t.equal((patched.earlyCapabilityFlags ?? 0) & RNS_UD_CS_SUPPORT_DYNVC_GFX_PROTOCOL, 0, 'GFX early capability cleared');
  t.equal((patched.earlyCapabilityFlags ?? 0) & 1, 1, 'other early capabilities kept');

  const resp = encodeConnectResponse(encodeConferenceCreateResponse([
    { type: SC_CORE, data: encodeServerCore(3) },
    { type: SC_NET, data: encodeServerNetwork({ ioChannel: 1003, channelIds: [1004, 1005, 1006] }) },
  ]));
  const r = parseConnectResponse(resp);
  t.equal(r.result, 0);
  const sb = parseConferenceCreateResponse(r.userData);
  t.equal(sb[0]!.data.readUInt32LE(4), 3, 'clientRequestedProtocols echoed');
  t.same(readServerNetwork(sb[1]!.data), { ioChannel: 1003, channelIds: [1004, 1005, 1006] });
  t.equal(sb[1]!.data.length % 4, 0, 'odd channel count padded');

  t.throws(() => parseConnectInitial(ci.subarray(0, ci.length - 10)), RdpProtocolError, 'truncated Connect-Initial');
  t.throws(() => parseBlocks(Buffer.from([1, 0xc0, 2, 0])), RdpProtocolError, 'block length under its header');
  t.throws(() => parseBlocks(Buffer.from([1, 0xc0, 0xff, 0xff, 0])), RdpProtocolError, 'absurd block length');
  const many = Buffer.alloc(4 + 40 * 12); many.writeUInt32LE(40, 0);
  t.throws(() => readClientNetwork(many), RdpProtocolError, 'more than 31 channels');
  const absurd = Buffer.alloc(8); absurd.writeUInt32LE(0xffffffff, 0);
  t.throws(() => readClientNetwork(absurd), RdpProtocolError, 'absurd channel count');
  t.same(encodeBlocks(parseBlocks(encodeBlocks(blocks))), encodeBlocks(blocks), 'blocks round trip');
});

t.test('MCS domain PDUs', async (t) => {
  const msgs: DomainMessage[] = [
    { type: 'erectDomainRequest' },
    { type: 'attachUserRequest' },
    { type: 'attachUserConfirm', result: 0, initiator: 1007 },
    { type: 'channelJoinRequest', initiator: 1007, channelId: 1003 },
    { type: 'channelJoinConfirm', result: 0, initiator: 1007, requested: 1004, channelId: 1004 },
    { type: 'disconnectProviderUltimatum', reason: 3 },
    { type: 'sendData', indication: true, initiator: 1002, channelId: 1003, flags: 0x70, data: Buffer.alloc(300, 7) },
    { type: 'sendData', indication: false, initiator: 1007, channelId: 1004, flags: 0x70, data: Buffer.from('x') },
  ];
  for (const m of msgs) t.same(parseDomainPdu(encodeDomainPdu(m)), m, `${m.type} round trip`);
  t.same(perReadLength(perLength(0x3fff), 0), [0x3fff, 2]);
  t.throws(() => perLength(0x4000), RdpProtocolError);
  t.throws(() => perReadLength(Buffer.from([0xc0, 0]), 0), RdpProtocolError, 'fragmented PER length refused');
  const sd = encodeDomainPdu(msgs[6]!);
  t.throws(() => parseDomainPdu(sd.subarray(0, sd.length - 1)), RdpProtocolError, 'truncated Send Data');
  t.throws(() => parseDomainPdu(Buffer.from([0xfc])), RdpProtocolError, 'unknown PDU');
});

t.test('Client Info PDU: credentials in, minted credential out, secret never printed', async (t) => {
  const info = {
    codePage: 0, flags: INFO_UNICODE | INFO_COMPRESSION | 0x1, domain: '', userName: 'desk:admin', password: new Secret('s3cret-value'),
    alternateShell: '/bin/evil', workingDir: '/tmp', extra: Buffer.from([2, 0, 20, 0]),
  };
  const enc = encodeClientInfo(info);
  const p = parseClientInfo(enc);
  t.equal(p.userName, 'desk:admin');
  t.equal(p.password.reveal(), 's3cret-value');
  t.same(p.extra, info.extra, 'extended info kept');
  t.notMatch(inspect(p), /s3cret/, 'inspect never shows the secret');
  t.notMatch(JSON.stringify(p), /s3cret/, 'JSON never shows the secret');
  const rw = rewriteClientInfo(p, { username: 'tg-alice-abcd', password: new Secret('minted') });
  t.equal(rw.flags & INFO_AUTOLOGON, INFO_AUTOLOGON, 'auto-logon on');
  t.equal(rw.flags & INFO_COMPRESSION, 0, 'bulk compression off');
  t.equal(rw.alternateShell, '', 'no alternate shell from the client');
  const again = parseClientInfo(encodeClientInfo(rw));
  t.equal(again.userName, 'tg-alice-abcd');
  t.equal(again.password.reveal(), 'minted');
  const ansi = parseClientInfo(encodeClientInfo({ ...info, flags: 0 }));
  t.equal(ansi.userName, 'desk:admin', 'ANSI strings');
  const absurd = Buffer.from(enc); absurd.writeUInt16LE(0xfff0, 10);
  t.throws(() => parseClientInfo(absurd), RdpProtocolError, 'absurd field length');
  t.throws(() => parseClientInfo(enc.subarray(0, 30)), RdpProtocolError, 'truncated');
  const odd = Buffer.from(enc); odd.writeUInt16LE(3, 10);
  t.throws(() => parseClientInfo(odd), RdpProtocolError, 'odd UTF-16 length');
});

t.test('security header and licensing', async (t) => {
  const lic = encodeLicenseValidClient();
  const h = parseSecurityHeader(lic);
  t.equal(h.flags & SEC_LICENSE_PKT, SEC_LICENSE_PKT);
  t.ok(isLicensing(lic), 'a licensing PDU is recognised');
  t.ok(isLicensing(Buffer.from('80001000ff02100007000000020000002814000000', 'hex').subarray(0, 20)), "xrdp's licensing PDU (flagsHi 0x10) is recognised");
  const demand = encodeShareControl(1, 1002, Buffer.alloc(0x80 - 6));
  t.notOk(isLicensing(demand), 'a share control PDU of length 0x80 is not licensing');
});

t.test('capabilities: orders, codecs and surface commands are stripped', async (t) => {
  const order = Buffer.alloc(84); order.fill(1, 32, 64);
  const bitmap = Buffer.alloc(24); bitmap.writeUInt16LE(16, 0); bitmap.writeUInt16LE(800, 8); bitmap.writeUInt16LE(600, 10);
  const sets = [
    { type: CAPSTYPE_BITMAP, data: bitmap },
    { type: CAPSTYPE_ORDER, data: order },
    { type: CAPSETTYPE_BITMAP_CODECS, data: Buffer.from([2, 1, 2, 3, 4, 5]) },
    { type: CAPSETTYPE_SURFACE_COMMANDS, data: Buffer.from([0x52, 0, 0, 0, 0, 0, 0, 0]) },
  ];
  const s = stripClientCapabilities(sets);
  t.same(s.changed.sort(), ['bitmap codecs', 'orders', 'surface commands']);
  t.ok(s.sets[1]!.data.subarray(32, 64).every((b) => b === 0), 'orderSupport zeroed');
  t.same([...s.sets[2]!.data], [0], 'no codecs');
  t.equal(s.sets[3]!.data.readUInt32LE(0), 0, 'no surface commands');
  t.same(s.sets[0], sets[0], 'bitmap capability untouched');
  const ca = { shareId: 0x1000, originatorId: 1002, sourceDescriptor: Buffer.from('MSTSC\0'), sets: s.sets };
  const body = encodeConfirmActive(ca);
  const sc = parseShareControl(encodeShareControl(PDUTYPE_CONFIRMACTIVE, 1007, body));
  t.equal(sc.pduType, PDUTYPE_CONFIRMACTIVE);
  t.same(parseConfirmActive(sc.body), ca, 'Confirm Active round trip');
  t.throws(() => parseCapabilitySets(encodeCapabilitySets(sets), 5), RdpProtocolError, 'more sets than bytes');
  t.throws(() => parseCapabilitySets(Buffer.from([1, 0, 2, 0]), 1), RdpProtocolError, 'set length under its header');
  t.throws(() => parseShareControl(Buffer.from([0xff, 0x7f, 0x17, 0, 0, 0])), RdpProtocolError, 'share control longer than the PDU');
});

t.test('input events (fast-path and slow-path) and keystrokes as text', async (t) => {
  // fast-path: 3 events: scancode 'a' press, scancode 'a' release, mouse left down.
  const body = Buffer.from([0x00, 0x1e, 0x01, 0x1e, 0x20, 0x00, 0x90, 10, 0, 20, 0]);
  const ev = parseFastPathInput(3 << 2, body);
  t.same(ev, [
    { kind: 'scancode', code: 0x1e, release: false, extended: false },
    { kind: 'scancode', code: 0x1e, release: true, extended: false },
    { kind: 'mouse', flags: 0x9000, x: 10, y: 20, extended: false },
  ]);
  t.throws(() => parseFastPathInput(3 << 2, body.subarray(0, 5)), RdpProtocolError, 'truncated events');
  t.throws(() => parseFastPathInput(1 << 2, Buffer.from([0xe0])), RdpProtocolError, 'unknown event code');
  const slow = Buffer.alloc(4 + 12); slow.writeUInt16LE(1, 0); slow.writeUInt16LE(0x0004, 8); slow.writeUInt16LE(0x8000, 10); slow.writeUInt16LE(0x1c, 12);
  t.same(parseSlowPathInput(slow), [{ kind: 'scancode', code: 0x1c, release: true, extended: false }]);
  const k = new KeyTranslator();
  const typed = [
    [0x17, false], [0x17, true], [0x20, false], [0x20, true], [0x39, false], [0x0c, false], [0x2a, false], [0x16, false], [0x2a, true], [0x31, false], [0x1c, false],
    [0x1d, false], [0x2e, false], [0x2e, true], [0x1d, true],
  ].map(([c, r]) => k.scancode(c as number, r as boolean, false)).join('');
  t.equal(typed, 'id -Un<Enter><C-c>', 'text with shift, Enter and Ctrl-C');
  t.equal(k.scancode(0x48, false, true), '<Up>', 'extended keys by name');
  t.equal(k.unicode(0x00e9, false), 'é', 'unicode events');
});

t.test('fast-path output updates and virtual channels', async (t) => {
  const upd = Buffer.concat([Buffer.from([0x01, 4, 0]), Buffer.from([1, 0, 0, 0]), Buffer.from([0x23, 2, 0]), Buffer.from([9, 9])]);
  const u = parseFastPathOutput(0, upd);
  t.same(u.map((x) => [x.code, x.fragmentation, x.data.length]), [[1, 0, 4], [3, 2, 2]]);
  t.throws(() => parseFastPathOutput(0, Buffer.from([0x01, 0xff, 0xff, 1])), RdpProtocolError, 'absurd update size');
  t.throws(() => parseFastPathOutput(0x80, upd), RdpProtocolError, 'encrypted output refused');
  const chunk = (flags: number, data: Buffer, total: number) => { const h = Buffer.alloc(8); h.writeUInt32LE(total, 0); h.writeUInt32LE(flags, 4); return Buffer.concat([h, data]); };
  const msg = Buffer.alloc(8 + 100); msg.writeUInt16LE(0x0005, 0); msg.writeUInt32LE(100, 4);
  const a = new ChannelAssembler(64);
  t.equal(a.push(parseChannelChunk(chunk(1, msg.subarray(0, 50), msg.length))), null, 'first part');
  const whole = a.push(parseChannelChunk(chunk(2, msg.subarray(50), msg.length)));
  t.equal(whole?.length, 108, 'total length kept');
  t.equal(whole?.head.length, 64, 'buffered up to the limit only');
  t.equal(parseClipboard(whole!.head).type, 'format_data_response');
  t.equal(parseClipboard(whole!.head).dataLen, 100);
  const dev = Buffer.alloc(4 + 20 + 4); dev.writeUInt32LE(1, 0); dev.writeUInt32LE(8, 4); dev.writeUInt32LE(1, 8); dev.write('HOME', 12); dev.writeUInt32LE(4, 20);
  t.same(parseDeviceListAnnounce(dev), [{ type: 8, id: 1, name: 'HOME' }]);
  const badDev = Buffer.from(dev); badDev.writeUInt32LE(0xffffff, 20);
  t.throws(() => parseDeviceListAnnounce(badDev), RdpProtocolError, 'absurd device data length');
});

const px16 = (r: number, g: number, b: number) => ((r >> 3) << 11) | ((g >> 2) << 5) | (b >> 3);

t.test('bitmaps: raw, interleaved RLE, planar', async (t) => {
  // raw 16 bpp, 2x2, bottom-up rows padded to 4 bytes: bottom row red,green; top row blue,white.
  const raw = Buffer.alloc(8);
  raw.writeUInt16LE(px16(255, 0, 0), 0); raw.writeUInt16LE(px16(0, 255, 0), 2);
  raw.writeUInt16LE(px16(0, 0, 255), 4); raw.writeUInt16LE(0xffff, 6);
  const rgba = decodeRaw(raw, 2, 2, 16);
  t.same([...rgba.subarray(0, 8)], [0, 0, 255, 255, 255, 255, 255, 255], 'top row first after the flip');
  t.same([...rgba.subarray(8, 16)], [255, 0, 0, 255, 0, 255, 0, 255]);
  t.throws(() => decodeRaw(raw.subarray(0, 6), 2, 2, 16), RdpProtocolError, 'short raw data');

  // RLE 16 bpp, 4x2: COLOR_RUN of 4 red (first, bottom line), then FG_RUN 4 (above XOR white = cyan-ish).
  const red = px16(255, 0, 0);
  const rle = Buffer.from([0x60 | 4, red & 0xff, red >> 8, 0x20 | 4]);
  const out = decodeInterleaved(rle, 4, 2, 16);
  const top = [...out.subarray(0, 4)];
  const bottom = [...out.subarray(16, 20)];
  t.same(bottom, [255, 0, 0, 255], 'bottom line is the colour run');
  t.same(top, [0, 255, 255, 255], 'second line = above XOR white foreground');
  // BG run on the first line is black; a following BG run inserts one foreground pixel.
  const bg = decodeInterleaved(Buffer.from([0x00 | 3, 0x00 | 3]), 6, 1, 16);
  t.same([...bg.subarray(8, 12)], [0, 0, 0, 255], 'first BG run on the first line is black');
  t.same([...bg.subarray(12, 16)], [255, 255, 255, 255], 'a BG run after a BG run starts with the foreground pixel');
  t.same([...bg.subarray(16, 20)], [0, 0, 0, 255], 'then black again');
  // FGBG image: 8 pixels, mask 0b01010101 on the first line: fg, black, fg, ...
  const fgbg = decodeInterleaved(Buffer.from([0x40 | 1, 0x55]), 8, 1, 16);
  t.same([fgbg[0], fgbg[4], fgbg[8], fgbg[12]], [255, 0, 255, 0], 'FGBG bitmask');
  // MEGA_MEGA_COLOR_IMAGE of 2 pixels at 24 bpp.
  const mega = decodeInterleaved(Buffer.from([0xf4, 2, 0, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06]), 2, 1, 24);
  t.same([...mega], [3, 2, 1, 255, 6, 5, 4, 255], '24 bpp pixels are BGR in the stream');
  t.throws(() => decodeInterleaved(Buffer.from([0x60 | 31, 0, 0]), 4, 2, 16), RdpProtocolError, 'run beyond the bitmap');
  t.throws(() => decodeInterleaved(Buffer.from([0x80 | 4, 1]), 4, 1, 16), RdpProtocolError, 'truncated colour image');
  t.throws(() => decodeInterleaved(Buffer.from([0xf5]), 4, 1, 16), RdpProtocolError, 'unknown order');

  // planar, no alpha, raw planes 2x1: R=[10,20], G=[30,40], B=[50,60] + pad.
  const planarRaw = Buffer.from([0x20, 10, 20, 30, 40, 50, 60, 0]);
  t.same([...decodePlanar(planarRaw, 2, 1)!], [10, 30, 50, 255, 20, 40, 60, 255]);
  // planar RLE, no alpha, 4x2: each plane's first line is 1 raw 5 + a run of 3; the second line deltas +1 (encoded 2).
  const plane = Buffer.from([0x13, 5, 0x13, 2]);
  const planarRle = Buffer.concat([Buffer.from([0x30]), plane, plane, plane]);
  const pr = decodePlanar(planarRle, 4, 2)!;
  t.same([pr[0], pr[1], pr[2], pr[12]], [6, 6, 6, 6], 'top (second in the stream) line = previous + delta');
  t.same([pr[16], pr[17], pr[18], pr[28]], [5, 5, 5, 5], 'bottom line raw values');
  const neg = Buffer.from([0x13, 5, 0x13, 3]);
  const pn = decodePlanar(Buffer.concat([Buffer.from([0x30]), neg, neg, neg]), 4, 2)!;
  t.equal(pn[0], 3, 'odd delta codes are negative (3 -> -2)');
  t.equal(decodePlanar(Buffer.from([0x21, 0]), 1, 1), null, 'colour loss not supported: not decoded');
  t.throws(() => decodePlanar(Buffer.from([0x30, 0xf0, 0xf0, 0xf0]), 3, 1), /planar run overflows the scanline/, 'planar run beyond the line');
  t.throws(() => decodePlanar(Buffer.from([0x30, 0xf0]), 3, 1), /cannot cover 3x1/, 'planar data too short for its size: refused before decoding');

  // A bitmap update with two rectangles, the second with a compression header.
  const rect = (x: number, data: Buffer, flags: number) => {
    const h = Buffer.alloc(18);
    [x, 0, x + 1, 0, 2, 1, 16, flags, data.length].forEach((v, i) => h.writeUInt16LE(v, i * 2));
    return Buffer.concat([h, data]);
  };
  const upd = Buffer.concat([Buffer.from([1, 0, 2, 0]), rect(0, Buffer.alloc(4), 0), rect(2, Buffer.concat([Buffer.alloc(8), Buffer.from([0x60 | 2, 0, 0])]), 1)]);
  const rects = parseBitmapUpdate(upd);
  t.equal(rects.length, 2);
  t.equal(rects[1]!.data.length, 3, 'compression header skipped');
  t.ok(decodeBitmap(rects[0]!), 'raw rectangle decodes');
  t.ok(decodeBitmap(rects[1]!), 'RLE rectangle decodes');
  t.equal(decodeBitmap({ ...rects[0]!, width: 60000, height: 60000 }), null, 'absurd size not decoded');
  t.equal(decodeBitmap({ ...rects[0]!, bpp: 8 }), null, '8 bpp (palette) not decoded');
});

t.test('fuzz: mutated and random PDUs only ever raise protocol errors', async (t) => {
  const samples: [string, Buffer, (b: Buffer) => unknown][] = [
    ['x224 CR', encodeConnectionRequest({ cookie: 'desk', requestedProtocols: 3 }), parseConnectionRequest],
    ['x224 CC', encodeConnectionConfirm({ selectedProtocol: 1 }), parseConnectionConfirm],
    ['connect-initial', encodeConnectInitial({ head: Buffer.from('0401010401010101ff30190201220201020201000201010201000201010202ffff020102301902010102010102010102010102010002010102020420020102301c0202ffff0202fc170202ffff0201010201000201010202ffff020102', 'hex'), userData: encodeConferenceCreateRequest(sampleBlocks()) }), (b) => { const c = parseConnectInitial(b); return parseConferenceCreateRequest(c.userData).map((x) => x.type === CS_NET ? readClientNetwork(x.data) : x.type === CS_CORE ? readClientCore(x.data) : x); }],
    ['connect-response', encodeConnectResponse(encodeConferenceCreateResponse([{ type: SC_NET, data: encodeServerNetwork({ ioChannel: 1003, channelIds: [1004] }) }])), (b) => parseConferenceCreateResponse(parseConnectResponse(b).userData).map((x) => readServerNetwork(x.data))],
    ['send data', encodeDomainPdu({ type: 'sendData', indication: false, initiator: 1007, channelId: 1003, flags: 0x70, data: Buffer.alloc(200) }), parseDomainPdu],
    ['client info', encodeClientInfo({ codePage: 0, flags: INFO_UNICODE, domain: 'd', userName: 'u', password: new Secret('p'), alternateShell: '', workingDir: '', extra: Buffer.alloc(10) }), parseClientInfo],
    ['confirm active', encodeConfirmActive({ shareId: 1, originatorId: 1002, sourceDescriptor: Buffer.from('x'), sets: [{ type: 2, data: Buffer.alloc(24) }, { type: 3, data: Buffer.alloc(84) }] }), parseConfirmActive],
    ['fast-path input', Buffer.from([0x00, 0x1e, 0x01, 0x1e, 0x20, 0x00, 0x90, 10, 0, 20, 0]), (b) => parseFastPathInput(3 << 2, b)],
    ['fast-path output', Buffer.from([0x01, 4, 0, 1, 0, 0, 0]), (b) => parseFastPathOutput(0, b)],
    ['bitmap update', Buffer.concat([Buffer.from([1, 0, 1, 0]), Buffer.from([0, 0, 0, 0, 3, 0, 1, 0, 4, 0, 2, 0, 16, 0, 0x01, 0x04, 4, 0]), Buffer.from([0x60 | 3, 1, 2, 0x00])]), (b) => parseBitmapUpdate(b).map((r) => decodeBitmap(r))],
    ['planar', Buffer.concat([Buffer.from([0x30]), Buffer.from([0x13, 5, 0x13, 2, 0x13, 5, 0x13, 2, 0x13, 5, 0x13, 2])]), (b) => decodePlanar(b, 4, 2)],
  ];
  let runs = 0;
  for (const [name, good, parse] of samples) {
    onlyProtocolErrors(t, `${name} as built`, () => parse(good));
    for (let i = 0; i < 400; i++) {
      const b = Buffer.from(good);
      const n = 1 + (i % 4);
      for (let k = 0; k < n; k++) b[Math.floor(Math.random() * b.length)] = randomBytes(1)[0]!;
      const cut = i % 3 === 0 ? b.subarray(0, Math.floor(Math.random() * b.length)) : b;
      onlyProtocolErrors(t, `${name} mutated`, () => parse(cut));
      runs++;
    }
    for (let i = 0; i < 100; i++) { onlyProtocolErrors(t, `${name} random`, () => parse(randomBytes(1 + Math.floor(Math.random() * 300)))); runs++; }
  }
  t.ok(runs > 5000, `${runs} fuzzed inputs, no crash`);
});
