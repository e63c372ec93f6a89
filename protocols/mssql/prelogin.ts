/**
 * The PRELOGIN message (MS-TDS 2.2.6.5): option headers (token, big-endian offset and length)
 * up to 0xFF, then their data. Parsed with every offset and length checked against the payload.
 */
import { ProtocolError } from './packets.js';

export const PL = {
  VERSION: 0x00,
  ENCRYPTION: 0x01,
  INSTOPT: 0x02,
  THREADID: 0x03,
  MARS: 0x04,
  TRACEID: 0x05,
  FEDAUTHREQUIRED: 0x06,
  NONCEOPT: 0x07,
  TERMINATOR: 0xff,
} as const;

/** ENCRYPTION option values; CLIENT_CERT is a bit a client may add to any of them. */
export const ENCRYPT = {
  OFF: 0x00,
  ON: 0x01,
  NOT_SUP: 0x02,
  REQ: 0x03,
  CLIENT_CERT: 0x80,
} as const;

export interface Prelogin {
  version?: { major: number; minor: number; build: number; subbuild: number };
  encryption?: number;
  instance?: string;
  threadId?: number;
  mars?: number;
  traceId?: Buffer;
  fedAuthRequired?: number;
  nonce?: Buffer;
}

/** At most this many option headers: a real PRELOGIN has eight at most. */
const MAX_OPTIONS = 32;

export function parsePrelogin(buf: Buffer): Prelogin {
  const out: Prelogin = {};
  let at = 0;
  for (let n = 0; ; n++) {
    if (at >= buf.length) throw new ProtocolError('PRELOGIN without a terminator');
    const token = buf[at]!;
    if (token === PL.TERMINATOR) break;
    if (n >= MAX_OPTIONS) throw new ProtocolError('PRELOGIN with too many options');
    if (at + 5 > buf.length) throw new ProtocolError('PRELOGIN option header truncated');
    const off = buf.readUInt16BE(at + 1);
    const len = buf.readUInt16BE(at + 3);
    at += 5;
    if (off + len > buf.length) throw new ProtocolError(`PRELOGIN option 0x${token.toString(16)} points past the message`);
    const data = buf.subarray(off, off + len);
    const need = (k: number) => { if (len < k) throw new ProtocolError(`PRELOGIN option 0x${token.toString(16)} is too short`); };
    switch (token) {
      case PL.VERSION:
        need(6);
        out.version ??= { major: data[0]!, minor: data[1]!, build: data.readUInt16BE(2), subbuild: data.readUInt16BE(4) };
        break;
      case PL.ENCRYPTION:
        need(1);
        out.encryption ??= data[0]!;
        break;
      case PL.INSTOPT: {
        const end = data.indexOf(0);
        out.instance ??= (end >= 0 ? data.subarray(0, end) : data).toString('latin1');
        break;
      }
      case PL.THREADID:
        if (len >= 4) out.threadId ??= data.readUInt32BE(0);
        break;
      case PL.MARS:
        need(1);
        out.mars ??= data[0]!;
        break;
      case PL.TRACEID:
        out.traceId ??= Buffer.from(data);
        break;
      case PL.FEDAUTHREQUIRED:
        need(1);
        out.fedAuthRequired ??= data[0]!;
        break;
      case PL.NONCEOPT:
        out.nonce ??= Buffer.from(data);
        break;
      default:
        break; // unknown options are skipped, as servers do
    }
  }
  return out;
}

export function buildPrelogin(p: Prelogin): Buffer {
  const opts: [number, Buffer][] = [];
  if (p.version) {
    const v = Buffer.alloc(6);
    v[0] = p.version.major;
    v[1] = p.version.minor;
    v.writeUInt16BE(p.version.build, 2);
    v.writeUInt16BE(p.version.subbuild, 4);
    opts.push([PL.VERSION, v]);
  }
  if (p.encryption !== undefined) opts.push([PL.ENCRYPTION, Buffer.from([p.encryption])]);
  if (p.instance !== undefined) opts.push([PL.INSTOPT, Buffer.concat([Buffer.from(p.instance, 'latin1'), Buffer.from([0])])]);
  if (p.threadId !== undefined) {
    const t = Buffer.alloc(4);
    t.writeUInt32BE(p.threadId >>> 0);
    opts.push([PL.THREADID, t]);
  }
  if (p.mars !== undefined) opts.push([PL.MARS, Buffer.from([p.mars])]);
  if (p.traceId) opts.push([PL.TRACEID, p.traceId]);
  if (p.fedAuthRequired !== undefined) opts.push([PL.FEDAUTHREQUIRED, Buffer.from([p.fedAuthRequired])]);
  if (p.nonce) opts.push([PL.NONCEOPT, p.nonce]);
  const headerLen = opts.length * 5 + 1;
  const header = Buffer.alloc(headerLen);
  let off = headerLen;
  opts.forEach(([token, data], i) => {
    header[i * 5] = token;
    header.writeUInt16BE(off, i * 5 + 1);
    header.writeUInt16BE(data.length, i * 5 + 3);
    off += data.length;
  });
  header[headerLen - 1] = PL.TERMINATOR;
  return Buffer.concat([header, ...opts.map(([, d]) => d)]);
}
