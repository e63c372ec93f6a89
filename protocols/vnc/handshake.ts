/** RFB handshake pieces (RFC 6143 §7.1-7.3) and VeNCrypt (security type 19): pure encoders/parsers. */
import { ProtocolError } from './reader.js';
import { encodePixelFormat, parsePixelFormat, type PixelFormat } from './pixel.js';

export const SEC = { Invalid: 0, None: 1, VncAuth: 2, VeNCrypt: 19 } as const;
export const VENCRYPT = { Plain: 256, TLSNone: 257, TLSVnc: 258, TLSPlain: 259, X509None: 260, X509Vnc: 261, X509Plain: 262 } as const;
export const SERVER_VERSION = Buffer.from('RFB 003.008\n', 'latin1');
export const MAX_NAME = 4096;
export const MAX_CREDENTIAL = 1024;

/** The minor version of a 12-byte ProtocolVersion message (3, 7 or 8; 3.x others map down). */
export function parseVersion(b: Buffer): number {
  const m = /^RFB (\d{3})\.(\d{3})\n$/.exec(b.toString('latin1'));
  if (!m) throw new ProtocolError('not an RFB client: the first 12 bytes are not a protocol version');
  const major = Number(m[1]);
  const minor = Number(m[2]);
  if (major !== 3) throw new ProtocolError(`RFB version ${major}.${minor} is not supported`);
  if (minor >= 8) return 8;
  if (minor === 7) return 7;
  return 3;
}

/** A refusal during security negotiation (3.3: type 0 and reason; 3.7+: zero types and reason). */
export function encodeNegotiationFailure(minor: number, reason: string): Buffer {
  const r = Buffer.from(reason, 'utf8');
  const head = Buffer.alloc(minor === 3 ? 8 : 5);
  if (minor === 3) head.writeUInt32BE(r.length, 4);
  else head.writeUInt32BE(r.length, 1);
  return Buffer.concat([head, r]);
}

/** SecurityResult: OK, or failed with a reason (3.8 only; older clients get the bare code). */
export function encodeSecurityResult(minor: number, ok: boolean, reason = ''): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(ok ? 0 : 1, 0);
  if (ok || minor < 8) return b;
  const r = Buffer.from(reason, 'utf8');
  const l = Buffer.alloc(4);
  l.writeUInt32BE(r.length, 0);
  return Buffer.concat([b, l, r]);
}

export interface ServerInit {
  width: number;
  height: number;
  pf: PixelFormat;
  name: string;
}

/** ServerInit body (the fixed 24 bytes); the name follows, its length at [20..24). */
export function parseServerInitHead(b: Buffer): { width: number; height: number; pf: PixelFormat; nameLength: number } {
  if (b.length < 24) throw new ProtocolError('ServerInit is 24 bytes and a name');
  const nameLength = b.readUInt32BE(20);
  if (nameLength > MAX_NAME) throw new ProtocolError(`desktop name of ${nameLength} bytes is too long`);
  const width = b.readUInt16BE(0);
  const height = b.readUInt16BE(2);
  if (!width || !height) throw new ProtocolError(`framebuffer size ${width}x${height} is empty`);
  return { width, height, pf: parsePixelFormat(b, 4), nameLength };
}

export function encodeServerInit(s: ServerInit): Buffer {
  const name = Buffer.from(s.name, 'utf8');
  const b = Buffer.alloc(24);
  b.writeUInt16BE(s.width, 0);
  b.writeUInt16BE(s.height, 2);
  encodePixelFormat(s.pf).copy(b, 4);
  b.writeUInt32BE(name.length, 20);
  return Buffer.concat([b, name]);
}

export function u8(n: number): Buffer { return Buffer.from([n & 255]); }
export function u32(n: number): Buffer { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0, 0); return b; }
