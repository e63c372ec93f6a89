/**
 * Capability sets of the Demand Active / Confirm Active PDUs. The gateway rewrites the client's
 * Confirm Active so the server sends what the recorder decodes: no drawing orders (orderSupport
 * zeroed), no bitmap codecs (RemoteFX, NSCodec), no surface commands; everything else verbatim.
 */
import { RdpProtocolError, need } from './errors.js';

export const CAPSTYPE_GENERAL = 0x0001;
export const CAPSTYPE_BITMAP = 0x0002;
export const CAPSTYPE_ORDER = 0x0003;
export const CAPSTYPE_INPUT = 0x000d;
export const CAPSETTYPE_SURFACE_COMMANDS = 0x001c;
export const CAPSETTYPE_BITMAP_CODECS = 0x001d;
export const CAPSETTYPE_MULTIFRAGMENTUPDATE = 0x001a;

export interface CapabilitySet { type: number; data: Buffer }

export function parseCapabilitySets(p: Buffer, count: number): CapabilitySet[] {
  if (count > 64) throw new RdpProtocolError(`${count} capability sets is too many`);
  const out: CapabilitySet[] = [];
  let off = 0;
  for (let i = 0; i < count; i++) {
    need(p, off, 4, 'capability set header');
    const type = p.readUInt16LE(off);
    const len = p.readUInt16LE(off + 2);
    if (len < 4) throw new RdpProtocolError(`capability set 0x${type.toString(16)} has length ${len}`);
    need(p, off, len, 'capability set');
    out.push({ type, data: Buffer.from(p.subarray(off + 4, off + len)) });
    off += len;
  }
  return out;
}

export function encodeCapabilitySets(sets: CapabilitySet[]): Buffer {
  return Buffer.concat(sets.map((s) => {
    const h = Buffer.alloc(4);
    h.writeUInt16LE(s.type, 0);
    h.writeUInt16LE(s.data.length + 4, 2);
    return Buffer.concat([h, s.data]);
  }));
}

/** Offset of orderSupport[32] in the order capability set's data (after the 4-byte header). */
const ORDER_SUPPORT = 32;
/** Offset of preferredBitsPerPixel in the bitmap capability set's data. */
const BITMAP_BPP = 0;

export interface Stripped { sets: CapabilitySet[]; changed: string[] }

/** The client's capability sets with orders, codecs and surface commands turned off. */
export function stripClientCapabilities(sets: CapabilitySet[]): Stripped {
  const changed: string[] = [];
  const out = sets.map((s) => {
    if (s.type === CAPSTYPE_ORDER && s.data.length >= ORDER_SUPPORT + 32) {
      const d = Buffer.from(s.data);
      if (d.subarray(ORDER_SUPPORT, ORDER_SUPPORT + 32).some((b) => b !== 0)) changed.push('orders');
      d.fill(0, ORDER_SUPPORT, ORDER_SUPPORT + 32);
      return { type: s.type, data: d };
    }
    if (s.type === CAPSETTYPE_BITMAP_CODECS) {
      if (s.data.length && s.data[0] !== 0) changed.push('bitmap codecs');
      return { type: s.type, data: Buffer.from([0]) };
    }
    if (s.type === CAPSETTYPE_SURFACE_COMMANDS && s.data.length >= 4) {
      const d = Buffer.from(s.data);
      if (d.readUInt32LE(0) !== 0) changed.push('surface commands');
      d.writeUInt32LE(0, 0);
      return { type: s.type, data: d };
    }
    return s;
  });
  return { sets: out, changed };
}

export function bitmapBpp(sets: CapabilitySet[]): number | null {
  const s = sets.find((c) => c.type === CAPSTYPE_BITMAP);
  return s && s.data.length >= BITMAP_BPP + 2 ? s.data.readUInt16LE(BITMAP_BPP) : null;
}

/** Desktop size from the bitmap capability set (desktopWidth at 8, desktopHeight at 10). */
export function bitmapDesktop(sets: CapabilitySet[]): { width: number; height: number } | null {
  const s = sets.find((c) => c.type === CAPSTYPE_BITMAP);
  return s && s.data.length >= 12 ? { width: s.data.readUInt16LE(8), height: s.data.readUInt16LE(10) } : null;
}
