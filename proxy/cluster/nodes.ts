/**
 * The node registry: every gateway process heartbeats in the store (table nodes). A node whose
 * heartbeat has not changed for gateway.nodeTimeout, by the observer's own clock (so clock skew
 * between machines does not matter), is claimed lost by one survivor (a compare-and-set on its row:
 * exactly one claim matches) and reaped there. A node that cannot write its heartbeat has lost the
 * store: it refuses new sessions at once and, after gateway.storeLossTimeout, ends its live
 * sessions (fail closed: it could no longer be told to kill them). A node that finds its own row
 * claimed lost ends its sessions (their leases were revoked) and registers again.
 *
 * Time here is wall-clock and monotonic time, never the injected policy clock: liveness is about
 * processes, not about the workflow's time.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { NodeRecord, NodeState, Store } from '../store/types.js';
import type { ClusterTimings } from './config.js';

export interface NodeRegistryOptions {
  store: Store;
  id: string;
  host: string;
  /** host:port of this node's internal listener (null: none). */
  internalAddr: () => string | null;
  timings: ClusterTimings;
  log: Logger;
  /** This node claimed `node` lost: end its sessions and revoke their leases. */
  reap(node: NodeRecord): Promise<void>;
  /** The store stopped answering (refuse new sessions) or answers again. */
  onStoreLost(): void;
  onStoreBack(): void;
  /** gateway.storeLossTimeout passed without the store: end the live sessions. */
  onStoreLossTimeout(): void;
  /** Another node claimed this one lost (`by`): its sessions' leases are revoked already. */
  onFenced(by: string | null): void;
}

interface Seen { heartbeatAt: number; incarnation: string; since: number }

export class NodeRegistry {
  state: NodeState = 'up';
  incarnation = randomUUID();
  /** The store has not taken a heartbeat for two periods. */
  storeLost = false;
  private lastOk = performance.now();
  private lossEnded = false;
  private timer: NodeJS.Timeout | null = null;
  private ticking: Promise<void> | null = null;
  private readonly seen = new Map<string, Seen>();
  private stopped = false;
  /** Lost peers this node reaped (tests, metrics). */
  readonly reaped: string[] = [];

  constructor(private readonly o: NodeRegistryOptions) {}

  /** Register (a new incarnation) and start heartbeating. */
  async start(): Promise<void> {
    await this.register();
    this.timer = setInterval(() => { this.tick(); }, this.o.timings.heartbeatMs);
    this.timer.unref();
  }

  private async register(): Promise<void> {
    const now = Date.now();
    this.incarnation = randomUUID();
    await this.o.store.upsertNode({
      id: this.o.id, incarnation: this.incarnation, host: this.o.host, pid: process.pid, internalAddr: this.o.internalAddr(),
      state: this.state, startedAt: now, heartbeatAt: now, lostAt: null, lostBy: null,
    });
    this.lastOk = performance.now();
  }

  /** One heartbeat and one look at the others (never two at once). */
  tick(): Promise<void> {
    if (this.ticking || this.stopped) return this.ticking ?? Promise.resolve();
    this.ticking = this.beat().then(async (ok) => { if (ok) await this.detect(); })
      .catch((e: Error) => this.o.log.error({ err: e.message }, 'node registry: tick failed'))
      .finally(() => { this.ticking = null; });
    return this.ticking;
  }

  /** Write this node's heartbeat; false when the store did not take it. */
  private async beat(): Promise<boolean> {
    const limit = this.o.timings.heartbeatMs * 2;
    let row: NodeRecord | null;
    try {
      row = await withTimeout(this.o.store.claim('nodes', this.o.id, { incarnation: this.incarnation, lostAt: null }, { heartbeatAt: Date.now(), state: this.state, internalAddr: this.o.internalAddr() }), limit);
    } catch (e) {
      this.storeTrouble(e as Error);
      return false;
    }
    if (this.storeLost) {
      this.storeLost = false;
      this.lossEnded = false;
      this.o.log.warn('node registry: the store answers again; accepting new sessions');
      this.o.onStoreBack();
    }
    this.lastOk = performance.now();
    if (row) return true;
    // Our row says another incarnation, or lost: a survivor reaped this node while it could not heartbeat.
    const now = await this.o.store.getNode(this.o.id).catch(() => null);
    this.o.log.error({ by: now?.lostBy ?? null }, 'node registry: this node was declared lost by another node; ending its sessions and registering again');
    this.o.onFenced(now?.lostBy ?? null);
    await this.register().catch((e: Error) => this.storeTrouble(e));
    return false;
  }

  private storeTrouble(e: Error): void {
    const silent = performance.now() - this.lastOk;
    if (!this.storeLost && silent >= this.o.timings.heartbeatMs * 2) {
      this.storeLost = true;
      this.o.log.error({ err: e.message, silentMs: Math.round(silent) }, 'node registry: the store does not answer; refusing new sessions');
      this.o.onStoreLost();
    }
    if (this.storeLost && !this.lossEnded && silent >= this.o.timings.storeLossTimeoutMs) {
      this.lossEnded = true;
      this.o.log.error({ silentMs: Math.round(silent) }, 'node registry: no store for gateway.storeLossTimeout; ending the live sessions (fail closed)');
      this.o.onStoreLossTimeout();
    }
  }

  /** Claim and reap the peers whose heartbeat has not changed for nodeTimeout. */
  private async detect(): Promise<void> {
    const now = performance.now();
    const nodes = await this.o.store.listNodes();
    const present = new Set<string>();
    for (const n of nodes) {
      if (n.id === this.o.id || (n.state !== 'up' && n.state !== 'draining')) continue;
      present.add(n.id);
      const s = this.seen.get(n.id);
      if (!s || s.heartbeatAt !== n.heartbeatAt || s.incarnation !== n.incarnation) {
        this.seen.set(n.id, { heartbeatAt: n.heartbeatAt, incarnation: n.incarnation, since: now });
        continue;
      }
      if (now - s.since < this.o.timings.nodeTimeoutMs || this.stopped) continue;
      await this.declareLost(n);
    }
    for (const id of this.seen.keys()) if (!present.has(id)) this.seen.delete(id);
  }

  /**
   * Claim `n` lost (only one node's claim matches: the heartbeat and incarnation it saw) and reap
   * it. Also used by the primary of worker processes when a worker exits.
   */
  async declareLost(n: Pick<NodeRecord, 'id' | 'incarnation' | 'heartbeatAt'>): Promise<boolean> {
    const won = await this.o.store.claim('nodes', n.id, { incarnation: n.incarnation, heartbeatAt: n.heartbeatAt, lostAt: null }, { state: 'lost', lostAt: Date.now(), lostBy: this.o.id });
    this.seen.delete(n.id);
    if (!won) return false;
    this.o.log.warn({ node: n.id }, 'node registry: a node went silent; ending its sessions and revoking their leases');
    this.reaped.push(n.id);
    await this.o.reap(won);
    return true;
  }

  /** Stop heartbeating; with a final state (stopped after a clean shutdown). */
  async stop(final: NodeState = 'stopped'): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.ticking;
    this.state = final;
    await this.o.store.claim('nodes', this.o.id, { incarnation: this.incarnation, lostAt: null }, { state: final, heartbeatAt: Date.now() }).catch(() => undefined);
  }

  /** Mark this node draining (its row says so; the others go on watching its heartbeat). */
  setState(s: NodeState): void { this.state = s; }
}

/** fn's result, or a rejection once ms have passed (the late result is dropped). */
export function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    p.then((v) => { clearTimeout(t); resolve(v); }, (e: unknown) => { clearTimeout(t); reject(e); });
  });
}
