/** RFB client-to-server messages (RFC 6143 §7.5): a pure parser and encoders. */
import { ProtocolError } from './reader.js';
import { parsePixelFormat, type PixelFormat } from './pixel.js';

export const ENC = {
  Raw: 0, CopyRect: 1, Hextile: 5, ZRLE: 16, Cursor: -239, DesktopSize: -223,
} as const;

/** What the recorder decodes: the client's SetEncodings is cut down to these (in its order). */
export const ALLOWED_ENCODINGS = new Set<number>([ENC.Raw, ENC.CopyRect, ENC.Hextile, ENC.ZRLE, ENC.Cursor, ENC.DesktopSize]);

export const MAX_ENCODINGS = 1024;
export const MAX_CUT_TEXT = 1 << 20;

export type ClientMessage =
  | { type: 'SetPixelFormat'; pf: PixelFormat }
  | { type: 'SetEncodings'; encodings: number[] }
  | { type: 'FramebufferUpdateRequest'; incremental: boolean; x: number; y: number; w: number; h: number }
  | { type: 'KeyEvent'; down: boolean; key: number }
  | { type: 'PointerEvent'; mask: number; x: number; y: number }
  | { type: 'ClientCutText'; text: Buffer };

/**
 * Total length of the message starting at buf[off] as far as its first bytes tell (at most 8 are
 * needed), or 0 when more of its header must arrive first. Throws ProtocolError on garbage.
 */
export function clientMessageLength(buf: Buffer, off = 0, maxCutText = MAX_CUT_TEXT): number {
  const avail = buf.length - off;
  if (avail < 1) return 0;
  const type = buf[off]!;
  switch (type) {
    case 0: return 20;
    case 2: {
      if (avail < 4) return 0;
      const n = buf.readUInt16BE(off + 2);
      if (n > MAX_ENCODINGS) throw new ProtocolError(`SetEncodings with ${n} encodings`);
      return 4 + 4 * n;
    }
    case 3: return 10;
    case 4: return 8;
    case 5: return 6;
    case 6: {
      if (avail < 8) return 0;
      const len = buf.readUInt32BE(off + 4);
      if (len > maxCutText) throw new ProtocolError(`ClientCutText of ${len} bytes is too long (at most ${maxCutText})`);
      return 8 + len;
    }
    default:
      throw new ProtocolError(`unknown client message type ${type}`);
  }
}

/** One message at buf[off], or null when more bytes are needed. Throws ProtocolError on garbage. */
export function parseClientMessage(buf: Buffer, off = 0, maxCutText = MAX_CUT_TEXT): { msg: ClientMessage; length: number } | null {
  const length = clientMessageLength(buf, off, maxCutText);
  if (!length || buf.length - off < length) return null;
  const type = buf[off]!;
  switch (type) {
    case 0:
      return { msg: { type: 'SetPixelFormat', pf: parsePixelFormat(buf, off + 4) }, length };
    case 2: {
      const encodings: number[] = [];
      for (let i = 0; i < (length - 4) / 4; i++) encodings.push(buf.readInt32BE(off + 4 + 4 * i));
      return { msg: { type: 'SetEncodings', encodings }, length };
    }
    case 3:
      return {
        msg: {
          type: 'FramebufferUpdateRequest', incremental: buf[off + 1]! !== 0,
          x: buf.readUInt16BE(off + 2), y: buf.readUInt16BE(off + 4), w: buf.readUInt16BE(off + 6), h: buf.readUInt16BE(off + 8),
        },
        length,
      };
    case 4:
      return { msg: { type: 'KeyEvent', down: buf[off + 1]! !== 0, key: buf.readUInt32BE(off + 4) }, length };
    case 5:
      return { msg: { type: 'PointerEvent', mask: buf[off + 1]!, x: buf.readUInt16BE(off + 2), y: buf.readUInt16BE(off + 4) }, length };
    default: // 6
      return { msg: { type: 'ClientCutText', text: Buffer.from(buf.subarray(off + 8, off + length)) }, length };
  }
}

export function encodeSetEncodings(encodings: number[]): Buffer {
  const b = Buffer.alloc(4 + 4 * encodings.length);
  b[0] = 2;
  b.writeUInt16BE(encodings.length, 2);
  encodings.forEach((e, i) => b.writeInt32BE(e, 4 + 4 * i));
  return b;
}

export function encodeUpdateRequest(incremental: boolean, x: number, y: number, w: number, h: number): Buffer {
  const b = Buffer.alloc(10);
  b[0] = 3; b[1] = incremental ? 1 : 0;
  b.writeUInt16BE(x, 2); b.writeUInt16BE(y, 4); b.writeUInt16BE(w, 6); b.writeUInt16BE(h, 8);
  return b;
}

export function encodeKeyEvent(down: boolean, key: number): Buffer {
  const b = Buffer.alloc(8);
  b[0] = 4; b[1] = down ? 1 : 0;
  b.writeUInt32BE(key >>> 0, 4);
  return b;
}

export function encodePointerEvent(mask: number, x: number, y: number): Buffer {
  const b = Buffer.alloc(6);
  b[0] = 5; b[1] = mask & 255;
  b.writeUInt16BE(x, 2); b.writeUInt16BE(y, 4);
  return b;
}

export function encodeClientCutText(text: Buffer): Buffer {
  const b = Buffer.alloc(8);
  b[0] = 6;
  b.writeUInt32BE(text.length, 4);
  return Buffer.concat([b, text]);
}

/** Keep only the encodings the recorder decodes, in the client's order; Raw is always there. */
export function filterEncodings(list: number[]): number[] {
  const out: number[] = [];
  for (const e of list) if (ALLOWED_ENCODINGS.has(e) && !out.includes(e)) out.push(e);
  if (!out.includes(ENC.Raw)) out.push(ENC.Raw);
  return out;
}
