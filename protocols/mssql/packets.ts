/**
 * TDS packet framing (MS-TDS 2.2.3): an 8-byte header (type, status, big-endian length including
 * the header, SPID, packet id, window) and up to 65,527 bytes of payload; a message is the
 * packets up to the one with the EOM status bit. Pure functions over buffers; every reader bounds
 * what it keeps by what arrived and by its own limits, never by a length field alone.
 */

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

/** Packet types. */
export const PKT = {
  SQL_BATCH: 0x01,
  PRE_TDS7_LOGIN: 0x02,
  RPC: 0x03,
  TABULAR_RESULT: 0x04,
  ATTENTION: 0x06,
  BULK_LOAD: 0x07,
  FEDAUTH_TOKEN: 0x08,
  TRANSACTION_MANAGER: 0x0e,
  LOGIN7: 0x10,
  SSPI: 0x11,
  PRELOGIN: 0x12,
} as const;

/** Packet status bits. */
export const STATUS = {
  EOM: 0x01,
  IGNORE: 0x02,
  RESET_CONNECTION: 0x08,
  RESET_CONNECTION_SKIP_TRAN: 0x10,
} as const;

export const HEADER_LENGTH = 8;
/** The length field is 16 bits: no packet is longer, whatever was negotiated. */
export const MAX_PACKET = 0xffff;
/** Packet size before the login negotiated one (what clients and servers assume). */
export const DEFAULT_PACKET_SIZE = 4096;

export interface Packet {
  type: number;
  status: number;
  spid: number;
  id: number;
  /** The payload (a view of the bytes as they arrived when possible). */
  payload: Buffer;
  /** Header and payload, exactly as received (what a relay forwards). */
  raw: Buffer;
}

export function isEom(p: { status: number }): boolean {
  return (p.status & STATUS.EOM) !== 0;
}

/**
 * Splits a byte stream into packets. Chunks are kept in a list and joined only for the bytes of
 * one packet (linear), and a packet longer than maxPacket is refused before its body arrives.
 */
export class PacketReader {
  private chunks: Buffer[] = [];
  private offset = 0;
  private total = 0;

  constructor(public maxPacket = MAX_PACKET) {}

  /** Bytes received and not yet returned as a packet. */
  get buffered(): number { return this.total; }

  push(chunk: Buffer): void {
    if (!chunk.length) return;
    this.chunks.push(chunk);
    this.total += chunk.length;
  }

  /** The first n buffered bytes (n small), without consuming them. */
  peek(n: number): Buffer | null {
    if (this.total < n) return null;
    const first = this.chunks[0]!;
    if (first.length - this.offset >= n) return first.subarray(this.offset, this.offset + n);
    return this.copy(n, false);
  }

  private copy(n: number, consume: boolean): Buffer {
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    let i = 0;
    let off = this.offset;
    while (got < n) {
      const c = this.chunks[i]!;
      const take = Math.min(c.length - off, n - got);
      c.copy(out, got, off, off + take);
      got += take;
      off += take;
      if (off === c.length) { i++; off = 0; }
    }
    if (consume) {
      this.chunks.splice(0, i);
      this.offset = off;
      this.total -= n;
    }
    return out;
  }

  /** Consume n bytes (n ≤ buffered). A view when they sit in one chunk, else one copy. */
  take(n: number): Buffer {
    if (n > this.total) throw new Error('take beyond buffered bytes');
    const first = this.chunks[0];
    if (first && first.length - this.offset >= n) {
      const out = first.subarray(this.offset, this.offset + n);
      this.offset += n;
      this.total -= n;
      if (this.offset === first.length) { this.chunks.shift(); this.offset = 0; }
      return out;
    }
    return this.copy(n, true);
  }

  /** Everything buffered (e.g. the first bytes of a TLS handshake after the last plain packet). */
  takeRest(): Buffer {
    return this.total ? this.take(this.total) : Buffer.alloc(0);
  }

  /** The next complete packet, or null when more bytes are needed. Throws ProtocolError on a bad header. */
  next(): Packet | null {
    const h = this.peek(HEADER_LENGTH);
    if (!h) return null;
    const len = h.readUInt16BE(2);
    if (len < HEADER_LENGTH) throw new ProtocolError(`packet length ${len} is shorter than its header`);
    if (len > this.maxPacket) throw new ProtocolError(`packet of ${len} bytes is longer than ${this.maxPacket}`);
    if (this.total < len) return null;
    const raw = this.take(len);
    return { type: raw[0]!, status: raw[1]!, spid: raw.readUInt16BE(4), id: raw[6]!, payload: raw.subarray(HEADER_LENGTH), raw };
  }
}

/**
 * Collects the packets of one message until EOM, within maxBytes of payload. The payloads are
 * kept in a list and joined once, when the message is complete.
 */
export class MessageAssembler {
  private parts: Buffer[] = [];
  private raws: Packet[] = [];
  private size = 0;
  private type = -1;

  constructor(public maxBytes: number) {}

  get empty(): boolean { return this.raws.length === 0; }
  get bytes(): number { return this.size; }
  get messageType(): number { return this.type; }

  /** Add a packet; returns the whole message at EOM. */
  push(p: Packet): { type: number; status: number; payload: Buffer; packets: Packet[] } | null {
    if (this.raws.length && p.type !== this.type) throw new ProtocolError(`packet of type 0x${p.type.toString(16)} inside a message of type 0x${this.type.toString(16)}`);
    if (this.size + p.payload.length > this.maxBytes) throw new ProtocolError(`message longer than ${this.maxBytes} bytes`);
    this.type = p.type;
    this.parts.push(p.payload);
    this.raws.push(p);
    this.size += p.payload.length;
    if (!isEom(p)) return null;
    const out = { type: p.type, status: p.status, payload: this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.size), packets: this.raws };
    this.reset();
    return out;
  }

  reset(): void {
    this.parts = [];
    this.raws = [];
    this.size = 0;
    this.type = -1;
  }
}

/** One message as packets of at most packetSize bytes (header included), numbered from 1. */
export function encodeMessage(type: number, payload: Buffer, packetSize = DEFAULT_PACKET_SIZE, opts: { status?: number; eom?: boolean; firstId?: number } = {}): Buffer {
  const size = Math.max(512, Math.min(packetSize, MAX_PACKET));
  const room = size - HEADER_LENGTH;
  const count = Math.max(1, Math.ceil(payload.length / room));
  const out = Buffer.allocUnsafe(payload.length + count * HEADER_LENGTH);
  let id = opts.firstId ?? 1;
  let at = 0;
  for (let i = 0; i < count; i++) {
    const part = payload.subarray(i * room, Math.min(payload.length, (i + 1) * room));
    const last = i === count - 1;
    out[at] = type;
    out[at + 1] = (opts.status ?? 0) | (last && opts.eom !== false ? STATUS.EOM : 0);
    out.writeUInt16BE(part.length + HEADER_LENGTH, at + 2);
    out.writeUInt16BE(0, at + 4);
    out[at + 6] = id & 0xff;
    out[at + 7] = 0;
    part.copy(out, at + HEADER_LENGTH);
    at += part.length + HEADER_LENGTH;
    id++;
  }
  return out;
}

/** Clamp a packet size a client asked for to what TDS allows (LOGIN7 PacketSize; 0: the default). */
export function clampPacketSize(n: number): number {
  if (!n) return DEFAULT_PACKET_SIZE;
  return Math.max(512, Math.min(32767, n));
}
