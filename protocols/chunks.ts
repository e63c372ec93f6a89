/**
 * The byte queue of every framer and stream parser (PostgreSQL, MySQL, SFTP, RDP, VNC, the shared
 * socket reader): socket chunks are kept as a list with a running length, and the bytes a frame
 * (or a header) needs are joined only when they span several chunks, each byte at most once per
 * peek. Work is linear in the bytes pushed, whatever the chunk sizes (a 1 MiB message in 1-byte
 * chunks costs the same as in one chunk, plus the per-chunk bookkeeping). Small chunks are copied
 * into shared blocks as they arrive, so memory stays close to the bytes held (not one object per
 * 1-byte chunk).
 */
export class ChunkQueue {
  private chunks: Buffer[] = [];
  /** Index of the first live chunk (consumed ones before it are dropped in batches). */
  private head = 0;
  private size = 0;
  /** The block small chunks are being copied into (bytes before blockUsed are written, never rewritten). */
  private block: Buffer | null = null;
  private blockUsed = 0;

  /** Bytes copied to join bytes that spanned chunks (a work count the tests keep linear). */
  copied = 0;

  /** Bytes held. */
  get length(): number { return this.size; }

  push(chunk: Buffer): void {
    const n = chunk.length;
    if (!n) return;
    this.size += n;
    if (n >= SMALL) { this.chunks.push(chunk); this.block = null; return; }
    // Small chunk: copy it into the current block; extend the last view when it ends where this starts.
    let b = this.block;
    if (!b || this.blockUsed + n > b.length) { b = this.block = Buffer.allocUnsafeSlow(BLOCK); this.blockUsed = 0; }
    chunk.copy(b, this.blockUsed);
    const last = this.chunks.length > this.head ? this.chunks[this.chunks.length - 1]! : null;
    if (last && last.buffer === b.buffer && last.byteOffset + last.length === this.blockUsed) {
      this.chunks[this.chunks.length - 1] = Buffer.from(b.buffer, last.byteOffset, last.length + n);
    } else {
      this.chunks.push(b.subarray(this.blockUsed, this.blockUsed + n));
    }
    this.blockUsed += n;
  }

  /**
   * The first n bytes (n <= length) as one buffer, not consumed: a view when they sit in the first
   * chunk; otherwise exactly those n bytes are copied once and kept joined (a later peek of them
   * is a view). The buffer stays valid: queued bytes are never rewritten.
   */
  peek(n: number): Buffer {
    if (n > this.size) throw new RangeError(`peek(${n}) with ${this.size} bytes held`);
    if (n === 0) return EMPTY;
    const first = this.chunks[this.head]!;
    if (first.length >= n) return first.subarray(0, n);
    const joined = Buffer.allocUnsafe(n);
    let got = 0;
    let i = this.head;
    while (got < n) {
      const c = this.chunks[i]!;
      const k = Math.min(n - got, c.length);
      c.copy(joined, got, 0, k);
      got += k;
      if (k < c.length) this.chunks[i] = c.subarray(k); // the rest of this chunk stays after the joined bytes
      else i++;
    }
    this.copied += n;
    // chunks[head, i) were used up: the joined bytes take the last of their slots.
    for (let j = this.head; j < i - 1; j++) this.chunks[j] = EMPTY;
    this.head = i - 1;
    this.chunks[this.head] = joined;
    this.compact();
    return joined;
  }

  /** Remove and return the first n bytes (n <= length): a view when they sit in one chunk. */
  take(n: number): Buffer {
    const out = this.peek(n);
    this.skip(n);
    return out;
  }

  /** Drop the first n bytes (n <= length). */
  skip(n: number): void {
    if (n > this.size) throw new RangeError(`skip(${n}) with ${this.size} bytes held`);
    this.size -= n;
    while (n > 0) {
      const c = this.chunks[this.head]!;
      if (c.length <= n) { n -= c.length; this.chunks[this.head++] = EMPTY; }
      else { this.chunks[this.head] = c.subarray(n); n = 0; }
    }
    this.compact();
  }

  /** Everything held, as one buffer; the queue is empty afterwards. */
  drain(): Buffer {
    const out = this.peek(this.size);
    this.clear();
    return out;
  }

  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.size = 0;
    this.block = null;
  }

  /** Drop consumed slots once they are the larger part of the list (amortised O(1) per chunk). */
  private compact(): void {
    if (this.head === this.chunks.length) { this.chunks = []; this.head = 0; return; }
    if (this.head > 64 && this.head * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
  }
}

const EMPTY = Buffer.alloc(0);
/** Chunks below this size are copied into blocks of BLOCK bytes. */
const SMALL = 512;
const BLOCK = 16 * 1024;
