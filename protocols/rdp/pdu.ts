/**
 * Slow-path and fast-path PDUs: the share control header (Demand Active, Confirm Active, Data,
 * Deactivate All), the share data header (Update, Input...), and the fast-path output (server
 * updates) and input (client events) framings. Pure functions over buffers.
 */
import { RdpProtocolError, need } from './errors.js';
import { parseCapabilitySets, encodeCapabilitySets, type CapabilitySet } from './capabilities.js';

export const PDUTYPE_DEMANDACTIVE = 0x1;
export const PDUTYPE_CONFIRMACTIVE = 0x3;
export const PDUTYPE_DEACTIVATEALL = 0x6;
export const PDUTYPE_DATA = 0x7;
export const PDUTYPE_SERVER_REDIR = 0xa;

export const PDUTYPE2_UPDATE = 0x02;
export const PDUTYPE2_INPUT = 0x1c;
export const PDUTYPE2_SET_ERROR_INFO = 0x2f;

export const UPDATETYPE_ORDERS = 0;
export const UPDATETYPE_BITMAP = 1;
export const UPDATETYPE_PALETTE = 2;
export const UPDATETYPE_SYNCHRONIZE = 3;

export interface ShareControl { totalLength: number; pduType: number; pduSource: number; body: Buffer }

export function parseShareControl(p: Buffer): ShareControl {
  need(p, 0, 2, 'share control header');
  const totalLength = p.readUInt16LE(0);
  if (totalLength === 0x8000) return { totalLength, pduType: 0, pduSource: 0, body: Buffer.alloc(0) }; // flow PDU
  need(p, 0, 6, 'share control header');
  if (totalLength < 6 || totalLength > p.length) throw new RdpProtocolError(`share control length ${totalLength} does not fit the PDU`);
  return { totalLength, pduType: p.readUInt16LE(2) & 0xf, pduSource: p.readUInt16LE(4), body: p.subarray(6, totalLength) };
}

export function encodeShareControl(pduType: number, pduSource: number, body: Buffer): Buffer {
  const h = Buffer.alloc(6);
  h.writeUInt16LE(body.length + 6, 0);
  h.writeUInt16LE(pduType | 0x10, 2);
  h.writeUInt16LE(pduSource, 4);
  return Buffer.concat([h, body]);
}

/** A share data header (STREAM_LOW, uncompressed) and its body. */
export function encodeShareData(shareId: number, pduType2: number, body: Buffer): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt32LE(shareId >>> 0, 0);
  h[5] = 1; // STREAM_LOW
  h.writeUInt16LE(body.length + 4, 6);
  h[8] = pduType2;
  return Buffer.concat([h, body]);
}

export interface ShareData { shareId: number; streamId: number; pduType2: number; compressedType: number; body: Buffer }

export function parseShareData(body: Buffer): ShareData {
  need(body, 0, 12, 'share data header');
  return { shareId: body.readUInt32LE(0), streamId: body[5]!, pduType2: body[8]!, compressedType: body[9]!, body: body.subarray(12) };
}

export interface ConfirmActive { shareId: number; originatorId: number; sourceDescriptor: Buffer; sets: CapabilitySet[] }

export function parseConfirmActive(body: Buffer): ConfirmActive {
  need(body, 0, 10, 'Confirm Active PDU');
  const shareId = body.readUInt32LE(0);
  const originatorId = body.readUInt16LE(4);
  const lenSrc = body.readUInt16LE(6);
  const lenCaps = body.readUInt16LE(8);
  need(body, 10, lenSrc + lenCaps, 'Confirm Active PDU');
  const sourceDescriptor = Buffer.from(body.subarray(10, 10 + lenSrc));
  const capsStart = 10 + lenSrc;
  need(body, capsStart, 4, 'Confirm Active capabilities');
  const count = body.readUInt16LE(capsStart);
  const sets = parseCapabilitySets(body.subarray(capsStart + 4, capsStart + lenCaps), count);
  return { shareId, originatorId, sourceDescriptor, sets };
}

export function encodeConfirmActive(c: ConfirmActive): Buffer {
  const caps = encodeCapabilitySets(c.sets);
  const h = Buffer.alloc(10);
  h.writeUInt32LE(c.shareId >>> 0, 0);
  h.writeUInt16LE(c.originatorId, 4);
  h.writeUInt16LE(c.sourceDescriptor.length, 6);
  h.writeUInt16LE(caps.length + 4, 8);
  const n = Buffer.alloc(4);
  n.writeUInt16LE(c.sets.length, 0);
  return Buffer.concat([h, c.sourceDescriptor, n, caps]);
}

export interface DemandActive { shareId: number; sets: CapabilitySet[] }

export function parseDemandActive(body: Buffer): DemandActive {
  need(body, 0, 8, 'Demand Active PDU');
  const shareId = body.readUInt32LE(0);
  const lenSrc = body.readUInt16LE(4);
  const lenCaps = body.readUInt16LE(6);
  need(body, 8, lenSrc + lenCaps, 'Demand Active PDU');
  const capsStart = 8 + lenSrc;
  need(body, capsStart, 4, 'Demand Active capabilities');
  return { shareId, sets: parseCapabilitySets(body.subarray(capsStart + 4, capsStart + lenCaps), body.readUInt16LE(capsStart)) };
}

// ---- fast-path output ----
export const FASTPATH_UPDATETYPE_ORDERS = 0x0;
export const FASTPATH_UPDATETYPE_BITMAP = 0x1;
export const FASTPATH_UPDATETYPE_PALETTE = 0x2;
export const FASTPATH_UPDATETYPE_SYNCHRONIZE = 0x3;
export const FASTPATH_UPDATETYPE_SURFCMDS = 0x4;

export const FASTPATH_FRAGMENT_SINGLE = 0;
export const FASTPATH_FRAGMENT_LAST = 1;
export const FASTPATH_FRAGMENT_FIRST = 2;
export const FASTPATH_FRAGMENT_NEXT = 3;

export interface FastPathUpdate { code: number; fragmentation: number; compression: number; data: Buffer }

/** Split a fast-path output PDU body (after header and length) into its updates. */
export function parseFastPathOutput(header: number, body: Buffer): FastPathUpdate[] {
  if ((header >> 6) & 0x2) throw new RdpProtocolError('encrypted fast-path output is not supported');
  const out: FastPathUpdate[] = [];
  let off = 0;
  while (off < body.length) {
    const h = body[off++]!;
    const code = h & 0xf;
    const fragmentation = (h >> 4) & 0x3;
    const compressionFlag = (h >> 6) & 0x3;
    let compression = 0;
    if (compressionFlag & 0x2) {
      need(body, off, 1, 'fast-path compression flags');
      compression = body[off++]!;
    }
    need(body, off, 2, 'fast-path update size');
    const size = body.readUInt16LE(off);
    off += 2;
    need(body, off, size, 'fast-path update');
    out.push({ code, fragmentation, compression, data: body.subarray(off, off + size) });
    off += size;
  }
  return out;
}

// ---- input events (fast-path and slow-path share one model) ----
export type InputEvent =
  | { kind: 'scancode'; code: number; release: boolean; extended: boolean }
  | { kind: 'unicode'; code: number; release: boolean }
  | { kind: 'mouse'; flags: number; x: number; y: number; extended: boolean }
  | { kind: 'sync'; flags: number }
  | { kind: 'other' };

export const PTR_FLAGS_DOWN = 0x8000;
export const PTR_FLAGS_BUTTON1 = 0x1000;
export const PTR_FLAGS_BUTTON2 = 0x2000;
export const PTR_FLAGS_BUTTON3 = 0x4000;
export const PTRX_FLAGS_DOWN = 0x8000;

/** Events of a fast-path input PDU (header byte and body after the length). */
export function parseFastPathInput(header: number, body: Buffer): InputEvent[] {
  if ((header >> 6) & 0x2) throw new RdpProtocolError('encrypted fast-path input is not supported');
  let n = (header >> 2) & 0xf;
  let off = 0;
  if (n === 0) {
    need(body, 0, 1, 'fast-path input event count');
    n = body[0]!;
    off = 1;
  }
  const out: InputEvent[] = [];
  for (let i = 0; i < n; i++) {
    need(body, off, 1, 'fast-path input event');
    const eh = body[off++]!;
    const flags = eh & 0x1f;
    const code = eh >> 5;
    switch (code) {
      case 0: need(body, off, 1, 'scancode event'); out.push({ kind: 'scancode', code: body[off]!, release: (flags & 1) !== 0, extended: (flags & 2) !== 0 }); off += 1; break;
      case 1: case 2:
        need(body, off, 6, 'mouse event');
        out.push({ kind: 'mouse', flags: body.readUInt16LE(off), x: body.readUInt16LE(off + 2), y: body.readUInt16LE(off + 4), extended: code === 2 });
        off += 6;
        break;
      case 3: out.push({ kind: 'sync', flags }); break;
      case 4: need(body, off, 2, 'unicode event'); out.push({ kind: 'unicode', code: body.readUInt16LE(off), release: (flags & 1) !== 0 }); off += 2; break;
      case 5: need(body, off, 6, 'relative mouse event'); out.push({ kind: 'other' }); off += 6; break;
      case 6: need(body, off, 2, 'quality of experience event'); out.push({ kind: 'other' }); off += 2; break;
      default: throw new RdpProtocolError(`unknown fast-path input event ${code}`);
    }
  }
  return out;
}

/** Events of a slow-path Input PDU (share data body). */
export function parseSlowPathInput(body: Buffer): InputEvent[] {
  need(body, 0, 4, 'Input PDU');
  const n = body.readUInt16LE(0);
  need(body, 4, n * 12, 'Input PDU events');
  const out: InputEvent[] = [];
  for (let i = 0; i < n; i++) {
    const off = 4 + i * 12;
    const type = body.readUInt16LE(off + 4);
    const a = body.readUInt16LE(off + 6);
    const b = body.readUInt16LE(off + 8);
    const c = body.readUInt16LE(off + 10);
    switch (type) {
      case 0x0000: out.push({ kind: 'sync', flags: body.readUInt32LE(off + 8) }); break;
      case 0x0004: out.push({ kind: 'scancode', code: b & 0xff, release: (a & 0x8000) !== 0, extended: (a & 0x0100) !== 0 }); break;
      case 0x0005: out.push({ kind: 'unicode', code: b, release: (a & 0x8000) !== 0 }); break;
      case 0x8001: out.push({ kind: 'mouse', flags: a, x: b, y: c, extended: false }); break;
      case 0x8002: out.push({ kind: 'mouse', flags: a, x: b, y: c, extended: true }); break;
      default: out.push({ kind: 'other' });
    }
  }
  return out;
}
