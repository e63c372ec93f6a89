import type { Logger } from 'pino';
import type { Clock, TimerHandle } from '../../policies/clock.js';
import type { NotificationDeliveryRecord, Store } from '../store/types.js';
import { DeliveryError } from './webhook.js';

/**
 * The retry queue: deliveries live in the store (notification_deliveries), so a restart loses
 * none and every gateway on a store shares the work. A gateway claims a due delivery with a
 * compare-and-set (pending → sending, with how long its claim holds), sends it, and records the
 * outcome: delivered; pending again after a backoff (initialDelay doubled per failure, at most
 * maxDelay); or failed after the last attempt or a permanent refusal. A claim that runs out (the
 * gateway died mid-send) is handed back to the queue, so a delivery may go out twice but is never
 * lost: receivers drop repeats by the delivery id. Nothing here runs on the caller's path: the
 * workflow only enqueues.
 */

export interface Sender {
  /** Longest a send may take (the claim holds a little longer). */
  timeoutMs: number;
  send(d: NotificationDeliveryRecord, now: number): Promise<void>;
}

export interface RetryPolicy { attempts: number; initialDelayMs: number; maxDelayMs: number }

export interface QueueDeps {
  store: Store;
  clock: Clock;
  log: Logger;
  gatewayId: string;
  retry: RetryPolicy;
  senders: ReadonlyMap<string, Sender>;
  /** Delivered rows older than this are deleted. */
  keepDeliveredMs: number;
  /** A delivery gave up (audited). */
  onFailed(d: NotificationDeliveryRecord): void;
}

/** Due deliveries taken per pass, and sent at once. */
const BATCH = 50;
const CONCURRENCY = 4;
/** How often the queue looks for work other gateways enqueued (and for due retries). */
export const POLL_MS = 5_000;
const CLAIM_SLACK_MS = 30_000;
const PRUNE_EVERY_MS = 3_600_000;
/** Longest a shutdown waits for sends under way (they are handed back at the next start otherwise). */
const STOP_WAIT_MS = 5_000;

export function backoffMs(p: RetryPolicy, attempts: number): number {
  return Math.min(p.maxDelayMs, p.initialDelayMs * 2 ** Math.max(0, attempts - 1));
}

export class DeliveryQueue {
  private timer: TimerHandle | null = null;
  private busy = false;
  private again = false;
  private stopped = false;
  private readonly inflight = new Set<Promise<void>>();
  private lastPrune = 0;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly d: QueueDeps) {}

  /** Hand back what this gateway was sending when it stopped, then start working. */
  async start(): Promise<void> {
    for (const r of await this.d.store.listDeliveries({ state: ['sending'] })) {
      if (r.claimedBy === this.d.gatewayId) await this.release(r);
    }
    this.kick();
  }

  /** Look for due work soon (coalesced; never on the caller's path). */
  kick(): void {
    if (this.stopped) return;
    if (this.busy) { this.again = true; return; }
    this.busy = true;
    setImmediate(() => void this.run());
  }

  /** Resolves once no pass is running and nothing due is left (tests). */
  async idle(): Promise<void> {
    while (this.busy || this.inflight.size) await new Promise<void>((r) => this.idleWaiters.push(r));
  }

  private async run(): Promise<void> {
    try {
      do {
        this.again = false;
        await this.pass();
      } while (this.again && !this.stopped);
    } catch (e) {
      this.d.log.error({ err: e }, 'notification queue pass failed; will retry');
    } finally {
      this.busy = false;
      await this.arm().catch((e) => this.d.log.error({ err: e }, 'notification queue timer failed'));
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  private async pass(): Promise<void> {
    const { store, clock } = this.d;
    const now = clock.now();
    // Claims that ran out: their gateway died or hung mid-send.
    for (const r of await store.listDeliveries({ state: ['sending'], claimedBefore: now, limit: BATCH })) await this.release(r);
    const due = await store.listDeliveries({ state: ['pending'], dueAt: now, limit: BATCH });
    for (let i = 0; i < due.length && !this.stopped; i += CONCURRENCY) {
      await Promise.all(due.slice(i, i + CONCURRENCY).map((r) => this.track(this.deliver(r))));
    }
    if (due.length === BATCH) this.again = true;
    if (now - this.lastPrune >= PRUNE_EVERY_MS) {
      this.lastPrune = now;
      const n = await store.deleteDeliveries({ state: 'delivered', before: now - this.d.keepDeliveredMs });
      if (n) this.d.log.debug({ deleted: n }, 'old delivered notifications deleted');
    }
  }

  private track(p: Promise<void>): Promise<void> {
    this.inflight.add(p);
    return p.finally(() => this.inflight.delete(p));
  }

  private async arm(): Promise<void> {
    this.timer?.cancel();
    this.timer = null;
    if (this.stopped) return;
    const next = (await this.d.store.listDeliveries({ state: ['pending'], limit: 1 }))[0];
    const ms = next ? Math.max(0, next.nextAt - this.d.clock.now()) : POLL_MS;
    if (this.stopped) return;
    this.timer = this.d.clock.setTimer(Math.min(ms, POLL_MS), () => { this.timer = null; this.kick(); });
  }

  private async release(r: NotificationDeliveryRecord): Promise<void> {
    await this.d.store.claim('deliveries', r.id, { state: 'sending', claimedBy: r.claimedBy, claimedUntil: r.claimedUntil },
      { state: 'pending', claimedBy: null, claimedUntil: null, nextAt: this.d.clock.now() });
  }

  private async deliver(r: NotificationDeliveryRecord): Promise<void> {
    const { store, clock, gatewayId } = this.d;
    const sender = this.d.senders.get(r.channel);
    const now = clock.now();
    const claimed = await store.claim('deliveries', r.id, { state: 'pending', attempts: r.attempts, nextAt: r.nextAt },
      { state: 'sending', claimedBy: gatewayId, claimedUntil: now + (sender?.timeoutMs ?? 0) + CLAIM_SLACK_MS, updatedAt: now });
    if (!claimed) return; // another gateway took it
    let error: DeliveryError | null = null;
    if (!sender) error = new DeliveryError(`${r.channel} is not configured on gateway ${gatewayId}`, true);
    else {
      try { await sender.send(claimed, now); } catch (e) {
        error = e instanceof DeliveryError ? e : new DeliveryError((e as Error)?.message ?? String(e));
      }
    }
    const at = clock.now();
    const attempts = r.attempts + 1;
    const done = { attempts, updatedAt: at, claimedBy: null, claimedUntil: null };
    let set: Partial<NotificationDeliveryRecord>;
    if (!error) set = { ...done, state: 'delivered', deliveredAt: at, lastError: null };
    else if (error.permanent || attempts >= this.d.retry.attempts) set = { ...done, state: 'failed', lastError: error.message };
    else set = { ...done, state: 'pending', nextAt: at + backoffMs(this.d.retry, attempts), lastError: error.message };
    const out = await store.claim('deliveries', r.id, { state: 'sending', claimedBy: gatewayId }, set);
    if (error) this.d.log.warn({ delivery: r.id, channel: r.channel, attempts, error: error.message, gaveUp: set.state === 'failed' }, 'notification delivery failed');
    if (out?.state === 'failed') this.d.onFailed(out);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = null;
    if (this.inflight.size) {
      let t: NodeJS.Timeout | undefined;
      await Promise.race([Promise.allSettled([...this.inflight]), new Promise<void>((r) => { t = setTimeout(r, STOP_WAIT_MS); t.unref(); })]);
      clearTimeout(t);
    }
    for (const w of this.idleWaiters.splice(0)) w();
  }
}
