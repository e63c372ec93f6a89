/**
 * Timers and their scheduler: a timer per pending request's stage deadline and per active grant's
 * end, a periodic sweep that picks up what other gateways on the same store filed, catch-up of
 * overdue work at start-up, and retries when timer work fails. What a timer does when it fires is
 * the request and grant layers' (onStageTimeout, onGrantDue).
 */
import type { PolicyTarget } from './config.js';
import type { GrantRecord, RequestRecord } from '../proxy/store/types.js';
import type { TimerHandle } from './clock.js';
import { PolicyBase, type JitEngineOptions } from './base.js';

/** When timer work fails (store busy, disk full), try again after this long. */
const RETRY_MS = 5_000;

export abstract class PolicyTimers<T extends PolicyTarget = PolicyTarget> extends PolicyBase<T> {
  protected readonly requestTimers = new Map<string, TimerHandle>();
  protected readonly grantTimers = new Map<string, TimerHandle>();
  /** The "grant.expiring" notice per active grant (expiryWarningMs before its end). */
  protected readonly warnTimers = new Map<string, TimerHandle>();
  protected readonly inflight = new Set<Promise<void>>();
  protected readonly retries = new Set<TimerHandle>();
  protected readonly sweepMs: number;
  protected sweepTimer: TimerHandle | null = null;
  protected running = false;

  constructor(opts: JitEngineOptions<T>) {
    super(opts);
    this.sweepMs = opts.sweepMs ?? 60_000;
  }

  /** A stage deadline passed (requests.ts). */
  protected abstract onStageTimeout(requestId: string): Promise<void>;
  /** A grant reached its end (grants.ts). */
  protected abstract onGrantDue(grantId: string): Promise<void>;
  /** A grant ends in expiryWarningMs: tell its holder, once (grants.ts). */
  protected abstract onGrantWarn(grantId: string): Promise<void>;

  /* ----------------------------------------------------------------- lifecycle */

  async start(): Promise<void> {
    this.running = true;
    await this.sweep();
    this.armSweep();
  }

  /**
   * Arm timers for every pending request and active grant this engine does not watch yet (other
   * gateways on the same store file them too) and run what is overdue.
   */
  protected async sweep(): Promise<void> {
    const now = this.clock.now();
    for (const r of await this.store.listRequests({ state: 'pending' })) {
      if (!this.running) return;
      if (r.stageDeadline !== null && r.stageDeadline <= now) await this.catchUp(`request ${r.id} deadline`, () => this.onStageTimeout(r.id), () => this.armRequest(r));
      else if (!this.requestTimers.has(r.id)) this.armRequest(r);
    }
    for (const g of await this.store.listGrants({ state: 'active' })) {
      if (!this.running) return;
      if (g.expiresAt <= now) await this.catchUp(`grant ${g.id} expiry`, () => this.onGrantDue(g.id), () => this.armGrant(g));
      else if (!this.grantTimers.has(g.id)) this.armGrant(g);
    }
  }

  protected armSweep(): void {
    if (!this.running || !this.sweepMs) return;
    this.sweepTimer = this.clock.setTimer(this.sweepMs, () => {
      this.sweepTimer = null;
      if (!this.running) return;
      this.runTimerWork('sweep', () => this.sweep(), () => undefined);
      this.armSweep();
    });
  }

  /** Overdue work at start-up: one failure must not stop the others; the timer retries it. */
  protected async catchUp(what: string, fn: () => Promise<void>, rearm: () => void): Promise<void> {
    try { await fn(); } catch (e) {
      this.log?.error({ err: e instanceof Error ? e.message : String(e), what }, 'policy catch-up failed; will retry');
      this.retryLater(rearm);
    }
  }

  protected retryLater(rearm: () => void): void {
    if (!this.running) return;
    const h = this.clock.setTimer(RETRY_MS, () => { this.retries.delete(h); if (this.running) rearm(); });
    this.retries.add(h);
  }

  stop(): void {
    this.running = false;
    this.sweepTimer?.cancel();
    this.sweepTimer = null;
    for (const t of this.requestTimers.values()) t.cancel();
    for (const t of this.grantTimers.values()) t.cancel();
    for (const t of this.warnTimers.values()) t.cancel();
    this.warnTimers.clear();
    for (const t of this.retries) t.cancel();
    this.retries.clear();
    this.requestTimers.clear();
    this.grantTimers.clear();
  }

  /** Resolves once the work started by timers that already fired has finished (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.inflight.size) await Promise.allSettled([...this.inflight]);
  }

  protected runTimerWork(what: string, fn: () => Promise<void>, rearm: () => void): void {
    const p = fn().catch((e: unknown) => {
      this.log?.error({ err: e instanceof Error ? e.message : String(e), what }, 'policy timer failed; will retry');
      this.retryLater(rearm);
    }).finally(() => { this.inflight.delete(p); });
    this.inflight.add(p);
  }

  protected armRequest(r: RequestRecord): void {
    this.requestTimers.get(r.id)?.cancel();
    this.requestTimers.delete(r.id);
    if (!this.running || r.state !== 'pending' || r.stageDeadline === null) return;
    const h = this.clock.setTimer(Math.max(0, r.stageDeadline - this.clock.now()), () => {
      this.requestTimers.delete(r.id);
      if (this.running) this.runTimerWork(`request ${r.id} deadline`, () => this.onStageTimeout(r.id), () => this.armRequest(r));
    });
    this.requestTimers.set(r.id, h);
  }

  protected disarmRequest(id: string): void {
    this.requestTimers.get(id)?.cancel();
    this.requestTimers.delete(id);
  }

  protected armGrant(g: GrantRecord): void {
    this.grantTimers.get(g.id)?.cancel();
    this.grantTimers.delete(g.id);
    if (!this.running || g.state !== 'active') return;
    const h = this.clock.setTimer(Math.max(0, g.expiresAt - this.clock.now()), () => {
      this.grantTimers.delete(g.id);
      if (this.running) this.runTimerWork(`grant ${g.id} expiry`, () => this.onGrantDue(g.id), () => this.armGrant(g));
    });
    this.grantTimers.set(g.id, h);
    this.armGrantWarning(g);
  }

  /** The expiry notice, unless it went out for this end already or the grant is shorter than the warning. */
  protected armGrantWarning(g: GrantRecord): void {
    this.warnTimers.get(g.id)?.cancel();
    this.warnTimers.delete(g.id);
    const warnAt = g.expiresAt - this.warnMs;
    if (!this.running || g.state !== 'active' || (g.notifiedFor ?? null) === g.expiresAt || warnAt < g.startsAt || g.expiresAt <= this.clock.now()) return;
    const h = this.clock.setTimer(Math.max(0, warnAt - this.clock.now()), () => {
      this.warnTimers.delete(g.id);
      if (this.running) this.runTimerWork(`grant ${g.id} warning`, () => this.onGrantWarn(g.id), () => this.armGrantWarning(g));
    });
    this.warnTimers.set(g.id, h);
  }

  protected disarmGrant(id: string): void {
    this.grantTimers.get(id)?.cancel();
    this.grantTimers.delete(id);
    this.warnTimers.get(id)?.cancel();
    this.warnTimers.delete(id);
  }
}
