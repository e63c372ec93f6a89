/**
 * Framing of the RDP byte stream: TPKT (RFC 1006: version 3, reserved, big-endian length that
 * includes the 4-byte header) and fast-path PDUs (first byte's low two bits 0, length in one byte
 * or, with the top bit set, fifteen bits over two bytes). Both kinds share one stream after the
 * connection sequence, so the splitter tells them apart by the first byte.
 */
import { ChunkQueue } from '../chunks.js';
import { RdpProtocolError } from './errors.js';

export const TPKT_VERSION = 3;
/** Largest PDU either side may send through the gateway (TPKT allows 65535, fast-path 32767). */
export const MAX_PDU = 65535;

export type Frame = { kind: 'tpkt'; raw: Buffer; payload: Buffer } | { kind: 'fastpath'; raw: Buffer; header: number; payload: Buffer };

export function encodeTpkt(payload: Buffer): Buffer {
  const len = payload.length + 4;
  if (len > MAX_PDU) throw new RdpProtocolError(`TPKT payload of ${payload.length} bytes is too long`);
  const h = Buffer.alloc(4);
  h[0] = TPKT_VERSION;
  h.writeUInt16BE(len, 2);
  return Buffer.concat([h, payload]);
}

/** Fast-path length field: one byte below 0x80, else two bytes with the top bit set. */
export function encodeFastPathLength(total: number): Buffer {
  if (total < 0x80) return Buffer.from([total]);
  if (total > 0x7fff) throw new RdpProtocolError(`fast-path PDU of ${total} bytes is too long`);
  return Buffer.from([0x80 | (total >> 8), total & 0xff]);
}

/** Build a fast-path PDU from its header byte and body (the length covers header + length + body). */
export function encodeFastPath(header: number, body: Buffer): Buffer {
  let total = 1 + 1 + body.length;
  if (total >= 0x80) total = 1 + 2 + body.length;
  return Buffer.concat([Buffer.from([header]), encodeFastPathLength(total), body]);
}

/**
 * The length of the frame at the start of buf, or 0 when more bytes are needed. Throws on
 * impossible headers (a TPKT length under 4 or a bad version byte).
 */
export function frameLength(buf: Buffer): number {
  if (buf.length < 1) return 0;
  const b0 = buf[0]!;
  if (b0 === TPKT_VERSION) {
    if (buf.length < 4) return 0;
    const len = buf.readUInt16BE(2);
    if (len < 7) throw new RdpProtocolError(`TPKT length ${len} is too short`);
    return len;
  }
  if ((b0 & 0x3) !== 0) throw new RdpProtocolError(`not a TPKT or fast-path header (first byte 0x${b0.toString(16)})`);
  if (buf.length < 2) return 0;
  const b1 = buf[1]!;
  if (b1 & 0x80) {
    if (buf.length < 3) return 0;
    const len = ((b1 & 0x7f) << 8) | buf[2]!;
    if (len < 3) throw new RdpProtocolError(`fast-path length ${len} is too short`);
    return len;
  }
  if (b1 < 2) throw new RdpProtocolError(`fast-path length ${b1} is too short`);
  return b1;
}

/** Parse one complete frame (buf holds exactly the frame). */
export function parseFrame(raw: Buffer): Frame {
  if (raw[0] === TPKT_VERSION) return { kind: 'tpkt', raw, payload: raw.subarray(4) };
  const hdrLen = raw[1]! & 0x80 ? 3 : 2;
  return { kind: 'fastpath', raw, header: raw[0]!, payload: raw.subarray(hdrLen) };
}

/** Splits a byte stream into frames; keeps at most one partial frame buffered (as a chunk list, so a frame arriving in tiny pieces costs linear time). */
export class FrameSplitter {
  private q = new ChunkQueue();
  /** Length of the frame being waited for (0: its header is not complete yet). */
  private need = 0;

  push(chunk: Buffer): Frame[] {
    this.q.push(chunk);
    if (this.q.length < this.need) return [];
    const out: Frame[] = [];
    for (;;) {
      const len = frameLength(this.q.peek(Math.min(this.q.length, 4)));
      this.need = len;
      if (!len || this.q.length < len) break;
      out.push(parseFrame(Buffer.from(this.q.take(len))));
      this.need = 0;
    }
    return out;
  }

  get buffered(): number { return this.q.length; }

  /** Bytes copied while framing (tests check it stays linear in the input). */
  get copied(): number { return this.q.copied; }

  take(): Buffer {
    this.need = 0;
    return this.q.drain();
  }
}
