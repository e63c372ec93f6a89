/**
 * A fake RDP target (the hostile server of the tests): X.224 selecting TLS, TLS with the given
 * certificate, the MCS connection sequence, the Client Info PDU, then a Demand Active announcing
 * the desktop; after that onReady gets the socket to send whatever the test wants (fast-path
 * output PDUs built with fastPathBitmaps).
 */
import net from 'node:net';
import tls from 'node:tls';
import { CAPSTYPE_BITMAP, encodeCapabilitySets } from '../../protocols/rdp/capabilities.js';
import {
  CS_NET, encodeConferenceCreateResponse, encodeServerCore, encodeServerNetwork, encodeServerSecurityNone,
  parseConferenceCreateRequest, readClientNetwork, SC_CORE, SC_NET, SC_SECURITY,
} from '../../protocols/rdp/gcc.js';
import { encodeConnectResponse, encodeDomainPdu, MCS_GLOBAL_CHANNEL, parseConnectInitial, parseDomainPdu } from '../../protocols/rdp/mcs.js';
import { encodeShareControl, PDUTYPE_DEMANDACTIVE } from '../../protocols/rdp/pdu.js';
import { FrameReader } from '../../protocols/rdp/reader.js';
import { parseClientInfo, type ClientInfo } from '../../protocols/rdp/info.js';
import { parseSecurityHeader } from '../../protocols/rdp/security.js';
import { encodeFastPath, encodeTpkt } from '../../protocols/rdp/tpkt.js';
import { encodeConnectionConfirm, encodeData, parseConnectionRequest, parseData, PROTOCOL_SSL } from '../../protocols/rdp/x224.js';

const USER = 1007;
const mcs = (pdu: Buffer) => encodeTpkt(encodeData(pdu));

function demandActive(width: number, height: number): Buffer {
  const bitmap = Buffer.alloc(24);
  bitmap.writeUInt16LE(16, 0);
  bitmap.writeUInt16LE(1, 2); bitmap.writeUInt16LE(1, 4); bitmap.writeUInt16LE(1, 6);
  bitmap.writeUInt16LE(width, 8);
  bitmap.writeUInt16LE(height, 10);
  const caps = encodeCapabilitySets([{ type: CAPSTYPE_BITMAP, data: bitmap }]);
  const src = Buffer.from('RDP\0');
  const head = Buffer.alloc(8);
  head.writeUInt32LE(0x1000ea, 0);
  head.writeUInt16LE(src.length, 4);
  head.writeUInt16LE(caps.length + 4, 6);
  const count = Buffer.alloc(4);
  count.writeUInt16LE(1, 0);
  const body = Buffer.concat([head, src, count, caps, Buffer.alloc(4)]);
  return mcs(encodeDomainPdu({ type: 'sendData', indication: true, initiator: 1002, channelId: MCS_GLOBAL_CHANNEL, flags: 0x70, data: encodeShareControl(PDUTYPE_DEMANDACTIVE, 1002, body) }));
}

export interface Bitmap { x: number; y: number; w: number; h: number; bpp: number; compressed: boolean; data: Buffer }

/** A fast-path output PDU with one bitmap update of these bitmaps. */
export function fastPathBitmaps(bitmaps: Bitmap[]): Buffer {
  const rects = bitmaps.map((b) => {
    const h = Buffer.alloc(18);
    [b.x, b.y, b.x + b.w - 1, b.y + b.h - 1, b.w, b.h, b.bpp, b.compressed ? 0x0401 : 0, b.data.length].forEach((v, i) => h.writeUInt16LE(v, i * 2));
    return Buffer.concat([h, b.data]);
  });
  const count = Buffer.alloc(4);
  count.writeUInt16LE(1, 0);
  count.writeUInt16LE(bitmaps.length, 2);
  const update = Buffer.concat([count, ...rects]);
  const uh = Buffer.alloc(3);
  uh[0] = 0x01; // bitmap, not fragmented, not compressed
  uh.writeUInt16LE(update.length, 1);
  return encodeFastPath(0, Buffer.concat([uh, update]));
}

/** Interleaved RLE (16 bpp) filling w*h pixels with one colour: MEGA_MEGA colour runs of up to 65535. */
export function rleFill(w: number, h: number, colour: number): Buffer {
  const parts: Buffer[] = [];
  for (let left = w * h; left > 0;) {
    const n = Math.min(left, 65535);
    const o = Buffer.alloc(5);
    o[0] = 0xf3;
    o.writeUInt16LE(n, 1);
    o.writeUInt16LE(colour & 0xffff, 3);
    parts.push(o);
    left -= n;
  }
  return Buffer.concat(parts);
}

async function handshake(raw: net.Socket, cert: { cert: string; key: string }, onInfo?: (info: ClientInfo) => void): Promise<tls.TLSSocket> {
  const r0 = new FrameReader();
  r0.attach(raw);
  const cr = await r0.next('the X.224 Connection Request');
  if (cr.kind !== 'tpkt') throw new Error('expected a connection request');
  const requested = parseConnectionRequest(cr.payload).negotiation?.requestedProtocols ?? 0;
  r0.detach();
  raw.write(encodeTpkt(encodeConnectionConfirm({ selectedProtocol: PROTOCOL_SSL })));
  const t = new tls.TLSSocket(raw, { isServer: true, cert: cert.cert, key: cert.key });
  t.on('error', () => {});
  await new Promise<void>((res, rej) => { t.once('secure', () => res()); t.once('error', rej); });
  const r = new FrameReader();
  r.attach(t);
  const data = async (what: string) => {
    const f = await r.next(what);
    if (f.kind !== 'tpkt') throw new Error(`expected ${what}`);
    return parseData(f.payload)!;
  };
  const blocks = parseConferenceCreateRequest(parseConnectInitial(await data('Connect-Initial')).userData);
  const net_ = blocks.find((b) => b.type === CS_NET);
  const ids = (net_ ? readClientNetwork(net_.data) : []).map((_, i) => 1004 + i);
  t.write(mcs(encodeConnectResponse(encodeConferenceCreateResponse([
    { type: SC_CORE, data: encodeServerCore(requested) },
    { type: SC_SECURITY, data: encodeServerSecurityNone() },
    { type: SC_NET, data: encodeServerNetwork({ ioChannel: MCS_GLOBAL_CHANNEL, channelIds: ids }) },
  ]))));
  for (;;) {
    const m = parseDomainPdu(await data('the MCS sequence'));
    if (m.type === 'attachUserRequest') t.write(mcs(encodeDomainPdu({ type: 'attachUserConfirm', result: 0, initiator: USER })));
    else if (m.type === 'channelJoinRequest') t.write(mcs(encodeDomainPdu({ type: 'channelJoinConfirm', result: 0, initiator: USER, requested: m.channelId, channelId: m.channelId })));
    else if (m.type === 'sendData') { // the Client Info PDU
      onInfo?.(parseClientInfo(parseSecurityHeader(m.data).body));
      break;
    }
  }
  r.detach();
  t.resume();
  return t;
}

/** onInfo: the Client Info PDU the gateway logged in with (the minted credential). */
export async function fakeRdpTarget(cert: { cert: string; key: string }, desktop: { width: number; height: number }, onReady: (sock: tls.TLSSocket) => void, onInfo?: (info: ClientInfo) => void) {
  const open = new Set<net.Socket>();
  const server = net.createServer((raw) => {
    open.add(raw);
    raw.on('close', () => open.delete(raw));
    raw.on('error', () => {});
    handshake(raw, cert, onInfo).then((t) => {
      t.write(demandActive(desktop.width, desktop.height));
      onReady(t);
    }, () => raw.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise<void>((r) => { for (const s of open) s.destroy(); server.close(() => r()); }),
  };
}
