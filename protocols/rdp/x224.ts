/**
 * X.224 (ISO 8073 class 0) as RDP uses it: Connection Request with an optional cookie
 * ("Cookie: mstshash=<name>\r\n") or routing token and an RDP Negotiation Request; Connection
 * Confirm with an RDP Negotiation Response or Failure; Data TPDUs (02 F0 80) carrying MCS.
 */
import { RdpProtocolError, need } from './errors.js';

export const PROTOCOL_RDP = 0;
export const PROTOCOL_SSL = 1;
export const PROTOCOL_HYBRID = 2;
export const PROTOCOL_RDSTLS = 4;
export const PROTOCOL_HYBRID_EX = 8;

export const TYPE_RDP_NEG_REQ = 1;
export const TYPE_RDP_NEG_RSP = 2;
export const TYPE_RDP_NEG_FAILURE = 3;

export const SSL_REQUIRED_BY_SERVER = 1;
export const SSL_NOT_ALLOWED_BY_SERVER = 2;
export const HYBRID_REQUIRED_BY_SERVER = 5;

const CR = 0xe0;
const CC = 0xd0;
const DT = 0xf0;
const DR = 0x80;

export interface ConnectionRequest {
  /** The text of "Cookie: mstshash=..." (the part after '='), if present. */
  cookie: string | null;
  /** A routing token line, if present (kept verbatim). */
  routingToken: Buffer | null;
  /** RDP Negotiation Request (absent from very old clients). */
  negotiation: { flags: number; requestedProtocols: number } | null;
  /** Bytes after the negotiation request (RDP Correlation Info), kept verbatim. */
  rest: Buffer;
}

export interface ConnectionConfirm {
  negotiation: { type: 'response'; flags: number; selectedProtocol: number } | { type: 'failure'; code: number } | null;
}

/** Parse the X.224 part of a TPKT payload that is a Connection Request. */
export function parseConnectionRequest(p: Buffer): ConnectionRequest {
  need(p, 0, 7, 'X.224 Connection Request');
  const li = p[0]!;
  if ((p[1]! & 0xf0) !== CR) throw new RdpProtocolError('expected an X.224 Connection Request');
  if (li + 1 > p.length || li < 6) throw new RdpProtocolError('bad X.224 length indicator');
  let v = p.subarray(7, li + 1);
  let cookie: string | null = null;
  let routingToken: Buffer | null = null;
  if (v.length && v[0] !== TYPE_RDP_NEG_REQ) {
    const end = v.indexOf('\r\n');
    if (end < 0) throw new RdpProtocolError('X.224 cookie without CR LF');
    const line = v.subarray(0, end);
    const text = line.toString('latin1');
    if (text.startsWith('Cookie: mstshash=')) cookie = text.slice('Cookie: mstshash='.length);
    else routingToken = Buffer.from(line);
    v = v.subarray(end + 2);
  }
  let negotiation: ConnectionRequest['negotiation'] = null;
  if (v.length >= 8 && v[0] === TYPE_RDP_NEG_REQ) {
    if (v.readUInt16LE(2) !== 8) throw new RdpProtocolError('bad RDP Negotiation Request length');
    negotiation = { flags: v[1]!, requestedProtocols: v.readUInt32LE(4) };
    v = v.subarray(8);
  } else if (v.length) {
    throw new RdpProtocolError('unexpected bytes in the X.224 Connection Request');
  }
  return { cookie, routingToken, negotiation, rest: Buffer.from(v) };
}

export function encodeConnectionRequest(r: { cookie?: string | null; requestedProtocols: number; flags?: number }): Buffer {
  const parts: Buffer[] = [];
  if (r.cookie) {
    if (/[\r\n]/.test(r.cookie)) throw new RdpProtocolError('cookie must not contain CR or LF');
    parts.push(Buffer.from(`Cookie: mstshash=${r.cookie}\r\n`, 'latin1'));
  }
  const neg = Buffer.alloc(8);
  neg[0] = TYPE_RDP_NEG_REQ;
  neg[1] = r.flags ?? 0;
  neg.writeUInt16LE(8, 2);
  neg.writeUInt32LE(r.requestedProtocols >>> 0, 4);
  parts.push(neg);
  const body = Buffer.concat(parts);
  const hdr = Buffer.from([6 + body.length, CR, 0, 0, 0, 0, 0]);
  if (6 + body.length > 254) throw new RdpProtocolError('X.224 Connection Request too long');
  return Buffer.concat([hdr, body]);
}

export function parseConnectionConfirm(p: Buffer): ConnectionConfirm {
  need(p, 0, 7, 'X.224 Connection Confirm');
  const li = p[0]!;
  if ((p[1]! & 0xf0) !== CC) throw new RdpProtocolError('expected an X.224 Connection Confirm');
  if (li + 1 > p.length || li < 6) throw new RdpProtocolError('bad X.224 length indicator');
  const v = p.subarray(7, li + 1);
  if (v.length < 8) return { negotiation: null };
  if (v.readUInt16LE(2) !== 8) throw new RdpProtocolError('bad RDP negotiation length');
  if (v[0] === TYPE_RDP_NEG_RSP) return { negotiation: { type: 'response', flags: v[1]!, selectedProtocol: v.readUInt32LE(4) } };
  if (v[0] === TYPE_RDP_NEG_FAILURE) return { negotiation: { type: 'failure', code: v.readUInt32LE(4) } };
  throw new RdpProtocolError(`unknown RDP negotiation type ${v[0]}`);
}

export function encodeConnectionConfirm(n: { selectedProtocol: number; flags?: number } | { failure: number }): Buffer {
  const neg = Buffer.alloc(8);
  if ('failure' in n) {
    neg[0] = TYPE_RDP_NEG_FAILURE;
    neg.writeUInt32LE(n.failure, 4);
  } else {
    neg[0] = TYPE_RDP_NEG_RSP;
    neg[1] = n.flags ?? 0;
    neg.writeUInt32LE(n.selectedProtocol >>> 0, 4);
  }
  neg.writeUInt16LE(8, 2);
  return Buffer.concat([Buffer.from([14, CC, 0, 0, 0x12, 0x34, 0]), neg]);
}

/** X.224 Data TPDU header + payload. */
export function encodeData(payload: Buffer): Buffer {
  return Buffer.concat([Buffer.from([2, DT, 0x80]), payload]);
}

/** The payload of an X.224 Data TPDU; null for a Disconnect Request; throws on anything else. */
export function parseData(p: Buffer): Buffer | null {
  need(p, 0, 2, 'X.224 header');
  const code = p[1]! & 0xf0;
  if (code === DR) return null;
  if (code !== DT || p[0] !== 2) throw new RdpProtocolError(`expected an X.224 Data TPDU (code 0x${code.toString(16)})`);
  need(p, 0, 3, 'X.224 Data TPDU');
  return p.subarray(3);
}
