/**
 * T.125 MCS as RDP uses it. Connect-Initial / Connect-Response are BER encoded (the gateway only
 * needs their user data, GCC, and keeps the rest verbatim); domain PDUs (Erect Domain, Attach
 * User, Channel Join, Send Data, Disconnect Provider Ultimatum) are ALIGNED PER.
 */
import { RdpProtocolError, need } from './errors.js';

export const MCS_BASE_CHANNEL = 1001;
export const MCS_GLOBAL_CHANNEL = 1003;

// ---- BER ----
interface Tlv { tag: number; start: number; valueStart: number; end: number }

function berRead(buf: Buffer, off: number): Tlv {
  need(buf, off, 2, 'BER element');
  let tag = buf[off]!;
  let p = off + 1;
  if ((tag & 0x1f) === 0x1f) {
    need(buf, p, 1, 'BER tag');
    tag = (tag << 8) | buf[p]!;
    p++;
  }
  need(buf, p, 1, 'BER length');
  let len = buf[p++]!;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n < 1 || n > 2) throw new RdpProtocolError('BER length too large');
    need(buf, p, n, 'BER length');
    len = n === 1 ? buf[p]! : buf.readUInt16BE(p);
    p += n;
  }
  need(buf, p, len, 'BER value');
  return { tag, start: off, valueStart: p, end: p + len };
}

function berLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  if (n < 0x100) return Buffer.from([0x81, n]);
  if (n > 0xffff) throw new RdpProtocolError('BER value too long');
  return Buffer.from([0x82, n >> 8, n & 0xff]);
}

export function berTlv(tag: number, value: Buffer): Buffer {
  const t = tag > 0xff ? Buffer.from([tag >> 8, tag & 0xff]) : Buffer.from([tag]);
  return Buffer.concat([t, berLength(value.length), value]);
}

const CONNECT_INITIAL = 0x7f65;
const CONNECT_RESPONSE = 0x7f66;
const OCTET_STRING = 0x04;

export interface ConnectInitial {
  /** callingDomainSelector .. maximumParameters, verbatim. */
  head: Buffer;
  /** GCC Conference Create Request. */
  userData: Buffer;
}

export function parseConnectInitial(p: Buffer): ConnectInitial {
  const outer = berRead(p, 0);
  if (outer.tag !== CONNECT_INITIAL) throw new RdpProtocolError('expected an MCS Connect-Initial');
  let off = outer.valueStart;
  for (let i = 0; i < 6; i++) off = berRead(p, off).end;
  if (off > outer.end) throw new RdpProtocolError('truncated MCS Connect-Initial');
  const ud = berRead(p, off);
  if (ud.tag !== OCTET_STRING || ud.end > outer.end) throw new RdpProtocolError('MCS Connect-Initial without user data');
  return { head: Buffer.from(p.subarray(outer.valueStart, off)), userData: Buffer.from(p.subarray(ud.valueStart, ud.end)) };
}

export function encodeConnectInitial(ci: ConnectInitial): Buffer {
  return berTlv(CONNECT_INITIAL, Buffer.concat([ci.head, berTlv(OCTET_STRING, ci.userData)]));
}

export interface ConnectResponse { result: number; userData: Buffer }

export function parseConnectResponse(p: Buffer): ConnectResponse {
  const outer = berRead(p, 0);
  if (outer.tag !== CONNECT_RESPONSE) throw new RdpProtocolError('expected an MCS Connect-Response');
  const res = berRead(p, outer.valueStart);
  if (res.tag !== 0x0a || res.end - res.valueStart !== 1) throw new RdpProtocolError('bad MCS Connect-Response result');
  let off = res.end;
  off = berRead(p, off).end; // calledConnectId
  off = berRead(p, off).end; // domainParameters
  const ud = berRead(p, off);
  if (ud.tag !== OCTET_STRING || ud.end > outer.end) throw new RdpProtocolError('MCS Connect-Response without user data');
  return { result: p[res.valueStart]!, userData: Buffer.from(p.subarray(ud.valueStart, ud.end)) };
}

export function berInt(n: number): Buffer {
  if (n < 0x80) return berTlv(0x02, Buffer.from([n]));
  if (n < 0x8000) return berTlv(0x02, Buffer.from([n >> 8, n & 0xff]));
  return berTlv(0x02, Buffer.from([(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]));
}

export function encodeConnectResponse(userData: Buffer, result = 0): Buffer {
  const domain = berTlv(0x30, Buffer.concat([34, 3, 0, 1, 0, 1, 0xfff8, 2].map(berInt)));
  return berTlv(CONNECT_RESPONSE, Buffer.concat([berTlv(0x0a, Buffer.from([result])), berInt(0), domain, berTlv(OCTET_STRING, userData)]));
}

// ---- PER domain PDUs ----
export const DomainPdu = {
  erectDomainRequest: 1,
  disconnectProviderUltimatum: 8,
  attachUserRequest: 10,
  attachUserConfirm: 11,
  channelJoinRequest: 14,
  channelJoinConfirm: 15,
  sendDataRequest: 25,
  sendDataIndication: 26,
} as const;

export type DomainMessage =
  | { type: 'erectDomainRequest' }
  | { type: 'disconnectProviderUltimatum'; reason: number }
  | { type: 'attachUserRequest' }
  | { type: 'attachUserConfirm'; result: number; initiator: number | null }
  | { type: 'channelJoinRequest'; initiator: number; channelId: number }
  | { type: 'channelJoinConfirm'; result: number; initiator: number; requested: number; channelId: number | null }
  | { type: 'sendData'; indication: boolean; initiator: number; channelId: number; flags: number; data: Buffer };

/** PER length: one byte, or two with the top bit set. Returns [length, bytes used]. */
export function perReadLength(p: Buffer, off: number): [number, number] {
  need(p, off, 1, 'PER length');
  const b = p[off]!;
  if (!(b & 0x80)) return [b, 1];
  if (b & 0x40) throw new RdpProtocolError('fragmented PER lengths are not supported');
  need(p, off, 2, 'PER length');
  return [((b & 0x3f) << 8) | p[off + 1]!, 2];
}

export function perLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  if (n > 0x3fff) throw new RdpProtocolError('PER length too large');
  return Buffer.from([0x80 | (n >> 8), n & 0xff]);
}

export function parseDomainPdu(p: Buffer): DomainMessage {
  need(p, 0, 1, 'MCS domain PDU');
  const choice = p[0]! >> 2;
  switch (choice) {
    case DomainPdu.erectDomainRequest: return { type: 'erectDomainRequest' };
    case DomainPdu.disconnectProviderUltimatum: return { type: 'disconnectProviderUltimatum', reason: ((p[0]! & 1) << 1) | ((p[1] ?? 0) >> 7) };
    case DomainPdu.attachUserRequest: return { type: 'attachUserRequest' };
    case DomainPdu.attachUserConfirm: {
      need(p, 1, 1, 'Attach User Confirm');
      const hasInit = (p[0]! & 2) !== 0;
      if (hasInit) need(p, 2, 2, 'Attach User Confirm');
      return { type: 'attachUserConfirm', result: p[1]!, initiator: hasInit ? p.readUInt16BE(2) + MCS_BASE_CHANNEL : null };
    }
    case DomainPdu.channelJoinRequest:
      need(p, 1, 4, 'Channel Join Request');
      return { type: 'channelJoinRequest', initiator: p.readUInt16BE(1) + MCS_BASE_CHANNEL, channelId: p.readUInt16BE(3) };
    case DomainPdu.channelJoinConfirm: {
      need(p, 1, 5, 'Channel Join Confirm');
      const hasId = (p[0]! & 2) !== 0;
      if (hasId) need(p, 6, 2, 'Channel Join Confirm');
      return { type: 'channelJoinConfirm', result: p[1]!, initiator: p.readUInt16BE(2) + MCS_BASE_CHANNEL, requested: p.readUInt16BE(4), channelId: hasId ? p.readUInt16BE(6) : null };
    }
    case DomainPdu.sendDataRequest:
    case DomainPdu.sendDataIndication: {
      need(p, 1, 5, 'MCS Send Data');
      const initiator = p.readUInt16BE(1) + MCS_BASE_CHANNEL;
      const channelId = p.readUInt16BE(3);
      const flags = p[5]!;
      const [len, used] = perReadLength(p, 6);
      need(p, 6 + used, len, 'MCS Send Data payload');
      return { type: 'sendData', indication: choice === DomainPdu.sendDataIndication, initiator, channelId, flags, data: p.subarray(6 + used, 6 + used + len) };
    }
    default:
      throw new RdpProtocolError(`unsupported MCS domain PDU ${choice}`);
  }
}

export function encodeDomainPdu(m: DomainMessage): Buffer {
  switch (m.type) {
    case 'erectDomainRequest': return Buffer.from([DomainPdu.erectDomainRequest << 2, 1, 0, 1, 0]);
    case 'disconnectProviderUltimatum': return Buffer.from([(DomainPdu.disconnectProviderUltimatum << 2) | ((m.reason >> 1) & 1), (m.reason & 1) << 7]);
    case 'attachUserRequest': return Buffer.from([DomainPdu.attachUserRequest << 2]);
    case 'attachUserConfirm': {
      if (m.initiator === null) return Buffer.from([DomainPdu.attachUserConfirm << 2, m.result]);
      const b = Buffer.from([(DomainPdu.attachUserConfirm << 2) | 2, m.result, 0, 0]);
      b.writeUInt16BE(m.initiator - MCS_BASE_CHANNEL, 2);
      return b;
    }
    case 'channelJoinRequest': {
      const b = Buffer.alloc(5);
      b[0] = DomainPdu.channelJoinRequest << 2;
      b.writeUInt16BE(m.initiator - MCS_BASE_CHANNEL, 1);
      b.writeUInt16BE(m.channelId, 3);
      return b;
    }
    case 'channelJoinConfirm': {
      const b = Buffer.alloc(m.channelId === null ? 6 : 8);
      b[0] = (DomainPdu.channelJoinConfirm << 2) | (m.channelId === null ? 0 : 2);
      b[1] = m.result;
      b.writeUInt16BE(m.initiator - MCS_BASE_CHANNEL, 2);
      b.writeUInt16BE(m.requested, 4);
      if (m.channelId !== null) b.writeUInt16BE(m.channelId, 6);
      return b;
    }
    case 'sendData': {
      const h = Buffer.alloc(6);
      h[0] = (m.indication ? DomainPdu.sendDataIndication : DomainPdu.sendDataRequest) << 2;
      h.writeUInt16BE(m.initiator - MCS_BASE_CHANNEL, 1);
      h.writeUInt16BE(m.channelId, 3);
      h[5] = m.flags;
      return Buffer.concat([h, perLength(m.data.length), m.data]);
    }
  }
}
