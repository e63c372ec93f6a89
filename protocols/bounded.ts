/**
 * A byte queue for stream parsers: a list of received chunks with a running length, so waiting
 * for a unit that arrives in many small pieces costs time linear in its size (no re-concatenating
 * everything on every chunk). Peek and take copy only the bytes asked for, and only when they
 * span chunks.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0;
  /** Offset into chunks[head] of the first unread byte. */
  private off = 0;
  private total = 0;
  /** Bytes copied so far (a unit spanning chunks is copied once per peek or take): a work count. */
  copied = 0;

  get length(): number { return this.total; }

  push(b: Buffer): void {
    if (!b.length) return;
    this.chunks.push(b);
    this.total += b.length;
  }

  /** The first n bytes (n <= length) without consuming them; valid until the next push or take. */
  peek(n: number): Buffer {
    if (n > this.total) throw new RangeError(`peek(${n}) with ${this.total} bytes queued`);
    const first = this.chunks[this.head];
    if (!first) return Buffer.alloc(0);
    if (first.length - this.off >= n) return first.subarray(this.off, this.off + n);
    const out = Buffer.allocUnsafe(n);
    this.copied += n;
    let got = 0;
    for (let i = this.head, o = this.off; got < n; i++, o = 0) {
      const c = this.chunks[i]!;
      const k = Math.min(n - got, c.length - o);
      c.copy(out, got, o, o + k);
      got += k;
    }
    return out;
  }

  /** Remove and return the first n bytes (a view when they lie in one chunk, else a copy). */
  take(n: number): Buffer {
    const b = this.peek(n);
    this.skip(n);
    return b;
  }

  skip(n: number): void {
    if (n > this.total) throw new RangeError(`skip(${n}) with ${this.total} bytes queued`);
    this.total -= n;
    while (n > 0) {
      const c = this.chunks[this.head]!;
      const left = c.length - this.off;
      if (n < left) { this.off += n; return; }
      n -= left;
      this.chunks[this.head++] = undefined as unknown as Buffer;
      this.off = 0;
    }
    if (this.head === this.chunks.length) { this.chunks = []; this.head = 0; }
    else if (this.head > 64 && this.head * 2 > this.chunks.length) { this.chunks = this.chunks.slice(this.head); this.head = 0; }
  }

  /** Everything queued, as one buffer; the queue is empty afterwards. */
  drain(): Buffer {
    const b = this.peek(this.total);
    this.chunks = [];
    this.head = 0;
    this.off = 0;
    this.total = 0;
    return b;
  }
}

/**
 * A peer exceeded a per-session budget (bytes buffered, inflation, work per message): the relay
 * ends the session with reason `resource_limit`, in the client's protocol, and nothing else.
 */
export class ResourceLimitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ResourceLimitError';
  }
}

/** Longest a relay parses or decodes in one event-loop turn before it lets other sessions run. */
export const SLICE_MS = 4;

/**
 * Runs a relay's parse/decode work in slices of at most SLICE_MS per event-loop turn. When a slice
 * ends with work left, the source socket is paused and the rest runs after other I/O (setImmediate),
 * so one peer's expensive input never stalls the sessions sharing the event loop. The same gate
 * holds the source for other reasons too (the destination's backpressure, a recorder backlog):
 * it reads again only when no reason is left.
 */
export class SlicedPump {
  private holds = new Set<string>();
  private scheduled = false;
  private stopped = false;
  /** Slices that ran out of time (tests read it). */
  deferrals = 0;

  /** work(more) processes queued input while more() is true; returns whether work is left. */
  constructor(private src: { pause(): void; resume(): void }, private work: (more: () => boolean) => boolean, private sliceMs = SLICE_MS) {}

  /** New input was queued: process it now unless a slice is already scheduled or the pump is held. */
  kick(): void {
    if (this.scheduled || this.stopped || this.holds.size) return;
    const until = performance.now() + this.sliceMs;
    const left = this.work(() => !this.holds.size && performance.now() < until);
    // Held meanwhile (backpressure): release() picks the rest up.
    if (!left || this.stopped || this.holds.size) return;
    this.deferrals++;
    this.scheduled = true;
    this.src.pause();
    setImmediate(() => {
      this.scheduled = false;
      this.kick();
      if (!this.scheduled && !this.holds.size && !this.stopped) this.src.resume();
    });
  }

  /** Stop reading the source until release(why). */
  hold(why: string): void {
    this.holds.add(why);
    this.src.pause();
  }

  release(why: string): void {
    if (!this.holds.delete(why) || this.holds.size || this.stopped) return;
    this.kick();
    if (!this.scheduled) this.src.resume();
  }

  held(why: string): boolean { return this.holds.has(why); }

  stop(): void { this.stopped = true; }
}
