/**
 * TLS the TDS 7.x way (MS-TDS 2.2.6.5, 3.2.5.3): after PRELOGIN the TLS handshake records travel
 * inside TDS PRELOGIN packets; once the handshake is done, TLS records go on the wire as they
 * are and carry the TDS packets. TdsTlsTransport is the transport a Node TLSSocket runs over:
 * it wraps outgoing handshake records into one PRELOGIN message per flight and unwraps
 * incoming PRELOGIN packets, until the first application-data record in each direction.
 * TLS 1.2 at most in this mode (as SQL Server; TLS 1.3 handshakes end in encrypted records the
 * wrapper could not tell apart). TDS 8.0 "strict" connections are plain TLS from the first byte.
 */
import { Duplex } from 'node:stream';
import { encodeMessage, PacketReader, PKT, ProtocolError, MAX_PACKET } from './packets.js';

const CONTENT_CHANGE_CIPHER_SPEC = 0x14;
const CONTENT_APPLICATION_DATA = 0x17;
const RECORD_HEADER = 5;

/** The first byte of a TLS record (change_cipher_spec, alert, handshake, application_data). */
export function isTlsRecordStart(b: number): boolean {
  return b >= CONTENT_CHANGE_CIPHER_SPEC && b <= CONTENT_APPLICATION_DATA;
}

export class TdsTlsTransport extends Duplex {
  private wrappedOut = true;
  private wrappedIn = true;
  private reader = new PacketReader(MAX_PACKET);
  private outPending: Buffer[] = [];
  private flushScheduled = false;
  /** Bytes of an outgoing record header not yet complete (records are classified by their header). */
  private carry = Buffer.alloc(0);
  /** Bytes left of the outgoing record being passed. */
  private recordLeft = 0;

  /**
   * role: 'server' (the gateway's client side) or 'client' (the gateway towards the database).
   * initial: bytes already read from raw that belong to the handshake.
   */
  constructor(private raw: Duplex, private role: 'server' | 'client', initial: Buffer) {
    super();
    raw.on('data', (c: Buffer) => this.fromRaw(c));
    raw.on('end', () => this.push(null));
    raw.on('close', () => this.destroy());
    raw.on('error', (e) => this.destroy(e));
    if (initial.length) queueMicrotask(() => this.fromRaw(initial));
  }

  /** True once both directions carry TLS records directly. */
  get handshakeDone(): boolean { return !this.wrappedIn && !this.wrappedOut; }

  private fromRaw(chunk: Buffer): void {
    if (!this.wrappedIn) {
      if (!this.push(chunk)) this.raw.pause();
      return;
    }
    try {
      this.reader.push(chunk);
      for (;;) {
        const first = this.reader.peek(1);
        if (!first) return;
        if (isTlsRecordStart(first[0]!)) {
          this.wrappedIn = false;
          if (!this.push(this.reader.takeRest())) this.raw.pause();
          return;
        }
        const p = this.reader.next();
        if (!p) return;
        const okType = p.type === PKT.PRELOGIN || (this.role === 'client' && p.type === PKT.TABULAR_RESULT);
        if (!okType) throw new ProtocolError(`a TDS packet of type 0x${p.type.toString(16)} during the TLS handshake`);
        if (p.payload.length && !this.push(p.payload)) this.raw.pause();
      }
    } catch (e) {
      this.destroy(e as Error);
    }
  }

  override _read(): void {
    this.raw.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (!this.wrappedOut) {
      this.raw.write(chunk, cb);
      return;
    }
    const data = this.carry.length ? Buffer.concat([this.carry, chunk]) : chunk;
    this.carry = Buffer.alloc(0);
    let pos = 0;
    let switchAt = -1;
    while (pos < data.length) {
      if (this.recordLeft > 0) {
        const k = Math.min(this.recordLeft, data.length - pos);
        pos += k;
        this.recordLeft -= k;
        continue;
      }
      if (data.length - pos < RECORD_HEADER) {
        this.carry = Buffer.from(data.subarray(pos));
        break;
      }
      if (data[pos] === CONTENT_APPLICATION_DATA) { switchAt = pos; break; }
      this.recordLeft = RECORD_HEADER + data.readUInt16BE(pos + 3);
    }
    const wrappedEnd = switchAt >= 0 ? switchAt : data.length - this.carry.length;
    if (wrappedEnd > 0) this.outPending.push(data.subarray(0, wrappedEnd));
    if (switchAt < 0) {
      // One PRELOGIN message per flight: the peer (tedious, for one) answers one message with one.
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flushWrapped());
      }
      cb();
      return;
    }
    this.flushWrapped();
    this.wrappedOut = false;
    this.raw.write(data.subarray(switchAt), cb);
  }

  private flushWrapped(): void {
    this.flushScheduled = false;
    if (!this.outPending.length || this.raw.destroyed) return;
    const payload = Buffer.concat(this.outPending);
    this.outPending = [];
    this.raw.write(encodeMessage(PKT.PRELOGIN, payload, 4096));
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.flushWrapped();
    this.raw.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.raw.destroy();
    cb(err);
  }
}
