/**
 * Resumable readers for TDS structures: a reader is a generator that yields how many bytes it
 * needs (or how many to skip) and receives them. The same reader runs over a complete buffer
 * (client requests, which the relay holds whole) and over a stream of packets (server
 * responses, which are forwarded as they arrive), so TYPE_INFO and value parsing exist once.
 *
 * Bounded cost: a stream reader never asks to keep more than maxRead bytes at once (values are
 * skipped, not read), and a buffer reader refuses a request beyond the bytes that arrived.
 */
import { ProtocolError } from './packets.js';

/** A read request: n bytes, or skip n bytes. */
export type Need = number | { skip: number };
export type Reader<T> = Generator<Need, T, Buffer>;

const EMPTY = Buffer.alloc(0);

export function* bytes(n: number): Reader<Buffer> {
  if (n === 0) return EMPTY;
  return yield n;
}
export function* skip(n: number): Reader<void> {
  if (n > 0) yield { skip: n };
}
export function* u8(): Reader<number> { return (yield 1)[0]!; }
export function* u16(): Reader<number> { return (yield 2).readUInt16LE(0); }
export function* u32(): Reader<number> { return (yield 4).readUInt32LE(0); }
/** A little-endian 64-bit count as a number (exact up to 2^53). */
export function* u64(): Reader<number> {
  const b = yield 8;
  return b.readUInt32LE(4) * 0x100000000 + b.readUInt32LE(0);
}
/** B_VARCHAR: a one-byte character count and UTF-16LE. */
export function* bVarchar(): Reader<string> {
  const n = yield* u8();
  return (yield* bytes(n * 2)).toString('utf16le');
}
/** US_VARCHAR: a two-byte character count and UTF-16LE. */
export function* usVarchar(): Reader<string> {
  const n = yield* u16();
  return (yield* bytes(n * 2)).toString('utf16le');
}

/** Run a reader over a complete buffer; it must end exactly at the end (unless partial is set). */
export function readAll<T>(gen: Reader<T>, buf: Buffer, opts: { partial?: boolean } = {}): { value: T; used: number } {
  let at = 0;
  let r = gen.next(EMPTY);
  while (!r.done) {
    const need = r.value;
    if (typeof need === 'number') {
      if (at + need > buf.length) throw new ProtocolError(`truncated: ${need} bytes declared, ${buf.length - at} left`);
      const v = buf.subarray(at, at + need);
      at += need;
      r = gen.next(v);
    } else {
      if (at + need.skip > buf.length) throw new ProtocolError(`truncated: ${need.skip} bytes declared, ${buf.length - at} left`);
      at += need.skip;
      r = gen.next(EMPTY);
    }
  }
  if (!opts.partial && at !== buf.length) throw new ProtocolError(`${buf.length - at} unexpected bytes after the end`);
  return { value: r.value, used: at };
}

/**
 * Runs a reader over bytes as they arrive. push() feeds a chunk; the reader advances as far as
 * the bytes allow. Pending bytes are kept in a chunk list; a single request is at most maxRead.
 */
export class StreamReader<T> {
  private chunks: Buffer[] = [];
  private offset = 0;
  private avail = 0;
  private need: number | null = null;
  private skipLeft = 0;
  private gen: Reader<T>;
  done = false;
  value: T | undefined;

  constructor(gen: Reader<T>, private maxRead = 1 << 20) {
    this.gen = gen;
    this.step(EMPTY);
  }

  /** Bytes received and not yet consumed by the reader. */
  get pending(): number { return this.avail; }

  private step(v: Buffer): void {
    const r = this.gen.next(v);
    if (r.done) {
      this.done = true;
      this.value = r.value;
      this.need = null;
      return;
    }
    const need = r.value;
    if (typeof need === 'number') {
      if (need > this.maxRead) throw new ProtocolError(`a length of ${need} bytes is beyond what the gateway reads (${this.maxRead})`);
      this.need = need;
    } else {
      this.need = null;
      this.skipLeft = need.skip;
    }
  }

  push(chunk: Buffer): void {
    if (chunk.length) {
      this.chunks.push(chunk);
      this.avail += chunk.length;
    }
    while (!this.done) {
      if (this.need === null) {
        const s = Math.min(this.skipLeft, this.avail);
        this.drop(s);
        this.skipLeft -= s;
        if (this.skipLeft > 0) return;
        this.step(EMPTY);
      } else {
        if (this.avail < this.need) return;
        this.step(this.take(this.need));
      }
    }
  }

  private drop(n: number): void {
    this.avail -= n;
    while (n > 0) {
      const c = this.chunks[0]!;
      const left = c.length - this.offset;
      if (left > n) { this.offset += n; return; }
      n -= left;
      this.chunks.shift();
      this.offset = 0;
    }
  }

  private take(n: number): Buffer {
    if (n === 0) return EMPTY;
    const c = this.chunks[0]!;
    if (c.length - this.offset >= n) {
      const v = c.subarray(this.offset, this.offset + n);
      this.drop(n);
      return v;
    }
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const h = this.chunks[0]!;
      const k = Math.min(h.length - this.offset, n - got);
      h.copy(out, got, this.offset, this.offset + k);
      got += k;
      this.drop(k);
    }
    return out;
  }
}
