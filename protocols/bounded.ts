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
    // The work kick() ran may have taken a hold again (the destination pushed back): then stay paused.
    if (!this.scheduled && !this.holds.size && !this.stopped) this.src.resume();
  }

  held(why: string): boolean { return this.holds.has(why); }

  stop(): void { this.stopped = true; }
}

/**
 * At most `limit` jobs at once per key (a target), the rest queued in order. Used where a burst of
 * session ends would otherwise open one admin connection per lease at the same instant (1,000 ended
 * sessions: 1,000 SSH handshakes that sshd's MaxStartups drops, 1,000 PostgreSQL connections over
 * max_connections), so the burst fails and waits for its retry backoff instead of finishing.
 */
export class KeyedLimiter {
  private running = new Map<string, number>();
  private waiting = new Map<string, (() => void)[]>();

  constructor(private readonly limit: number) {}

  async run<T>(key: string, job: () => Promise<T>): Promise<T> {
    const n = this.running.get(key) ?? 0;
    if (n >= this.limit) {
      await new Promise<void>((r) => { const q = this.waiting.get(key) ?? []; q.push(r); this.waiting.set(key, q); });
    } else {
      this.running.set(key, n + 1);
    }
    try {
      return await job();
    } finally {
      // Hand the slot to the next one waiting (the count stays), or free it.
      const q = this.waiting.get(key);
      const next = q?.shift();
      if (q && !q.length) this.waiting.delete(key);
      if (next) next();
      else {
        const left = (this.running.get(key) ?? 1) - 1;
        if (left > 0) this.running.set(key, left); else this.running.delete(key);
      }
    }
  }

  /** Jobs running and queued for key (tests read it). */
  load(key: string): { running: number; waiting: number } {
    return { running: this.running.get(key) ?? 0, waiting: this.waiting.get(key)?.length ?? 0 };
  }
}

/** Admin connections a gateway opens to one target at once for one-shot jobs (a mint's or revoke's script, a role drop). */
export const ADMIN_CONNECTIONS_PER_TARGET = 8;
export const adminConnections = new KeyedLimiter(ADMIN_CONNECTIONS_PER_TARGET);
