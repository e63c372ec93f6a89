/**
 * What an unauthenticated peer may cost the gateway beyond one connection: failed secret attempts
 * (throttled per source address) and pending sign-ins waiting for a person (bounded in total and
 * per source). Both are in memory, per gateway node: a later issue moves them into the store so
 * that several nodes share them.
 */
import type { Clock } from '../policies/clock.js';
import { sourceOf } from '../protocols/net.js';

export interface ThrottleOptions {
  /** Failed attempts from one source within `windowMs` that start a cooldown. */
  maxFailures: number;
  windowMs: number;
  cooldownMs: number;
  /** Sources remembered at most (the oldest are forgotten first), so a spray of addresses cannot exhaust memory. */
  maxSources?: number;
}

interface SourceState {
  /** Times of the recent failures (at most maxFailures kept). */
  failures: number[];
  /** Targets (as typed) of those failures, for the alert. */
  targets: Set<string>;
  blockedUntil: number;
}

/**
 * Failed secret attempts per source address (an IPv4 address or an IPv6 /64, over every target and
 * protocol). After maxFailures within the window, attempts from that source are refused until
 * the cooldown ends, whatever the target: counting per target from anywhere instead would let
 * anyone lock everybody out of a target by spraying wrong secrets at it.
 */
export class FailureThrottle {
  private sources = new Map<string, SourceState>();
  private readonly maxSources: number;

  constructor(private clock: Clock, private opts: ThrottleOptions) {
    this.maxSources = opts.maxSources ?? 10_000;
  }

  /** Milliseconds left of a cooldown for this client address, or 0. */
  blockedFor(clientAddr: string): number {
    const s = this.sources.get(sourceOf(clientAddr));
    const left = s ? s.blockedUntil - this.clock.now() : 0;
    return left > 0 ? left : 0;
  }

  /**
   * Count one failed attempt. Returns the cooldown that this failure started (for the alert), or
   * null when the source is still below the limit.
   */
  fail(clientAddr: string, target: string): { source: string; failures: number; targets: string[]; until: number } | null {
    const now = this.clock.now();
    const source = sourceOf(clientAddr);
    let s = this.sources.get(source);
    if (s) this.sources.delete(source); // re-inserted below: the map stays ordered by last failure
    else s = { failures: [], targets: new Set(), blockedUntil: 0 };
    this.sources.set(source, s);
    if (this.sources.size > this.maxSources) this.sweep(now);
    if (s.blockedUntil > now) return null;
    s.failures = s.failures.filter((t) => t > now - this.opts.windowMs);
    if (!s.failures.length) s.targets.clear();
    s.failures.push(now);
    if (s.targets.size < 20) s.targets.add(target.slice(0, 64));
    if (s.failures.length < this.opts.maxFailures) return null;
    const started = { source, failures: s.failures.length, targets: [...s.targets], until: now + this.opts.cooldownMs };
    s.blockedUntil = started.until;
    s.failures = [];
    s.targets.clear();
    return started;
  }

  private sweep(now: number): void {
    for (const [k, s] of this.sources) {
      if (s.blockedUntil <= now && !s.failures.some((t) => t > now - this.opts.windowMs)) this.sources.delete(k);
    }
    for (const k of this.sources.keys()) {
      if (this.sources.size <= this.maxSources) break;
      this.sources.delete(k);
    }
  }
}

/** A refusal from a PendingLimit, with a sentence for the person. */
export class TooManyPending extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TooManyPending';
  }
}

/** A bound on things waiting for a person (device sign-ins, browser approvals): in total and per source. */
export class PendingLimit {
  private total = 0;
  private perSource = new Map<string, number>();

  constructor(private what: string, private max: number, private maxPerSource: number) {}

  get pending(): number { return this.total; }

  /** Take a slot or throw TooManyPending; the returned release is idempotent. */
  acquire(clientAddr: string): () => void {
    const source = sourceOf(clientAddr);
    const mine = this.perSource.get(source) ?? 0;
    if (this.total >= this.max) throw new TooManyPending(`Tollgate: too many ${this.what} are pending; try again in a few minutes.`);
    if (mine >= this.maxPerSource) throw new TooManyPending(`Tollgate: too many ${this.what} are pending from your address; finish or cancel one first.`);
    this.total++;
    this.perSource.set(source, mine + 1);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.total--;
      const n = (this.perSource.get(source) ?? 1) - 1;
      if (n > 0) this.perSource.set(source, n); else this.perSource.delete(source);
    };
  }
}
