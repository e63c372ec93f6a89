/**
 * The control bus: kill, lock, revoke and grant end reach every node. Every message is a row of
 * control_events first (its seq from the store), so a node that missed the wake-up reads it on
 * the next catch-up: a missed notification is never a missed kill. Wake-ups:
 *   - PostgreSQL: the row's INSERT also NOTIFYs (delivered at commit, with the event as payload);
 *     every node LISTENs on a connection of its own and catches up after each (re)connect;
 *   - worker processes on one machine: IPC through the primary (workers.ts);
 *   - always: a catch-up query every pollMs, from the last seq this node has handled.
 * The publisher applies its message itself at once; the others skip nothing but their own.
 */
import type { Logger } from 'pino';
import type { EndReason } from '../../protocols/types.js';
import type { ControlEventRecord, LockRecord, Store, StoreSubscription } from '../store/types.js';

/**
 * Which live sessions a message ends; a session matches when any given criterion does. `lock`
 * is a lock's scope and value (identity, target or grant).
 */
export interface SessionSelector {
  session?: string;
  grant?: string;
  /** Sessions opened through this API token (it was revoked). */
  token?: string;
  /** Sessions opened through this IdP sign-in (it failed re-validation). */
  link?: string;
  /** Sessions this identity opened with a registered key (the IdP refused the identity). */
  keyIdentity?: string;
  lock?: Pick<LockRecord, 'scope' | 'value'>;
  /** Every session of the node named (a node that was declared lost and still runs). */
  node?: string;
}

export interface EndMessage { kind: 'end'; select: SessionSelector; reason: EndReason }
export type ControlMessage = EndMessage;

/** What a selector looks at in a live session. */
export interface SelectableSession {
  id: string;
  identity: string;
  target: { name: string };
  grant: { id: string };
  principal: { credential?: { kind: string; id: string; linkId: string | null } };
}

export function selects(sel: SessionSelector, s: SelectableSession, nodeId?: string): boolean {
  const c = s.principal.credential;
  if (sel.session !== undefined && s.id === sel.session) return true;
  if (sel.grant !== undefined && s.grant.id === sel.grant) return true;
  if (sel.token !== undefined && c?.kind === 'token' && c.id === sel.token) return true;
  if (sel.link !== undefined && c?.linkId === sel.link) return true;
  if (sel.keyIdentity !== undefined && c?.kind === 'key' && s.identity === sel.keyIdentity) return true;
  if (sel.node !== undefined && nodeId === sel.node) return true;
  const l = sel.lock;
  if (l) {
    if ((l.scope === 'identity' && l.value === s.identity) || (l.scope === 'target' && l.value === s.target.name) || (l.scope === 'grant' && l.value === s.grant.id)) return true;
  }
  return false;
}

/** A hole in the seq (a rolled-back INSERT, or a row not committed yet) is waited for this long, then skipped. */
const GAP_MS = 10_000;
/** Events older than this are deleted (by whichever node prunes first). */
const KEEP_MS = 24 * 3_600_000;
const PRUNE_EVERY_MS = 3_600_000;

export interface ControlBusOptions {
  store: Store;
  nodeId: string;
  log: Logger;
  /** Apply a message of another node here. */
  apply(msg: ControlMessage, e: ControlEventRecord): void | Promise<void>;
  /** Catch-up period (default 1 s). */
  pollMs?: number;
  /** How long a hole in the seq is waited for before the watermark moves past it (default 10 s). */
  gapMs?: number;
}

export class ControlBus {
  private watermark = 0;
  private readonly seen = new Set<number>();
  private readonly holes = new Map<number, number>();
  private listen: StoreSubscription | null = null;
  private poll: NodeJS.Timeout | null = null;
  private prune: NodeJS.Timeout | null = null;
  private catching: Promise<void> | null = null;
  private again = false;
  private closed = false;
  /** Other processes on this machine (workers.ts): told about each event this node stores. */
  private ipc: ((e: ControlEventRecord) => void) | null = null;
  /** Counters (tests, diagnostics): events applied, by how they arrived. */
  readonly stats = { published: 0, applied: 0, viaNotify: 0, viaIpc: 0, viaCatchUp: 0, skippedHoles: 0, listenErrors: 0 };
  /** Whether the LISTEN connection is up (PostgreSQL). */
  listening = false;

  constructor(private readonly o: ControlBusOptions) {}

  async start(): Promise<void> {
    // Earlier messages concern sessions of earlier processes, never this one's.
    this.watermark = await this.o.store.lastControlSeq();
    this.listen = this.o.store.listenControl?.({
      onPayload: (p) => this.onPayload(p),
      onConnect: () => { this.listening = true; void this.catchUp(); },
      onError: (e) => {
        this.listening = false;
        this.stats.listenErrors++;
        if (!this.closed) this.o.log.warn({ err: e.message }, 'control bus: the LISTEN connection failed; reconnecting (catch-up queries go on)');
      },
    }) ?? null;
    this.poll = setInterval(() => { void this.catchUp(); }, this.o.pollMs ?? 1_000);
    this.poll.unref();
    this.prune = setInterval(() => {
      this.o.store.pruneControlEvents(Date.now() - KEEP_MS).catch((e: Error) => this.o.log.warn({ err: e.message }, 'control bus: pruning old events failed'));
    }, PRUNE_EVERY_MS);
    this.prune.unref();
  }

  /** Every seq up to this one has been handled (or given up as a hole). */
  get handledUpTo(): number { return this.watermark; }

  /** Workers on one machine: `send` tells the others of each event this process stores. */
  attachIpc(send: (e: ControlEventRecord) => void): void { this.ipc = send; }

  /** Store a message (the other nodes apply it); the caller applies it here itself. */
  async publish(msg: ControlMessage): Promise<ControlEventRecord> {
    const e = await this.o.store.appendControlEvent({ at: Date.now(), origin: this.o.nodeId, kind: msg.kind, data: { select: msg.select, reason: msg.reason } });
    this.stats.published++;
    this.mark(e.seq);
    try { this.ipc?.(e); } catch (err) { this.o.log.warn({ err: (err as Error).message }, 'control bus: IPC send failed (the others catch up)'); }
    return e;
  }

  /** An event another process on this machine stored (IPC). */
  receive(e: ControlEventRecord): void {
    if (this.take(e)) this.stats.viaIpc++;
  }

  private onPayload(payload: string): void {
    let p: { seq?: unknown; at?: unknown; origin?: unknown; kind?: unknown; data?: unknown };
    try { p = JSON.parse(payload) as typeof p; } catch { return; }
    if (typeof p.seq !== 'number') return;
    if (typeof p.kind !== 'string' || typeof p.origin !== 'string' || typeof p.data !== 'string') {
      // Too large for a payload: read it.
      void this.catchUp();
      return;
    }
    let data: Record<string, unknown>;
    try { data = JSON.parse(p.data) as Record<string, unknown>; } catch { return; }
    if (this.take({ seq: p.seq, at: Number(p.at), origin: p.origin, kind: p.kind, data })) this.stats.viaNotify++;
  }

  /** Read what this node has not handled yet (after a reconnect, on the timer, after a large payload). */
  catchUp(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.catching) { this.again = true; return this.catching; }
    this.catching = (async () => {
      do {
        this.again = false;
        try {
          for (;;) {
            const rows = await this.o.store.listControlEvents(this.watermark, 1000);
            const now = performance.now();
            let max = this.watermark;
            for (const e of rows) {
              if (this.take(e)) this.stats.viaCatchUp++;
              max = Math.max(max, e.seq);
            }
            for (let s = this.watermark + 1; s < max; s++) if (!this.seen.has(s) && !this.holes.has(s)) this.holes.set(s, now);
            this.advance();
            if (rows.length < 1000) break;
          }
        } catch (e) {
          if (!this.closed) this.o.log.debug({ err: (e as Error).message }, 'control bus: catch-up failed (will retry)');
          break;
        }
      } while (this.again && !this.closed);
    })().finally(() => { this.catching = null; });
    return this.catching;
  }

  /** Handle an event once: apply it unless this node published it. */
  private take(e: ControlEventRecord): boolean {
    if (this.closed || e.seq <= this.watermark || this.seen.has(e.seq)) return false;
    this.mark(e.seq);
    if (e.origin === this.o.nodeId) return false;
    const msg = toMessage(e);
    if (!msg) {
      this.o.log.warn({ seq: e.seq, kind: e.kind }, 'control bus: unknown message kind; ignored');
      return false;
    }
    this.stats.applied++;
    try {
      Promise.resolve(this.o.apply(msg, e)).catch((err: Error) => this.o.log.error({ err: err.message, seq: e.seq }, 'control bus: applying a message failed'));
    } catch (err) {
      this.o.log.error({ err: (err as Error).message, seq: e.seq }, 'control bus: applying a message failed');
    }
    return true;
  }

  private mark(seq: number): void {
    if (seq <= this.watermark) return;
    this.seen.add(seq);
    this.holes.delete(seq);
    this.advance();
  }

  /** Move the watermark over handled seqs, and over holes that stayed empty for GAP_MS. */
  private advance(): void {
    const now = performance.now();
    for (;;) {
      const next = this.watermark + 1;
      if (this.seen.delete(next)) { this.watermark = next; continue; }
      const since = this.holes.get(next);
      if (since === undefined || now - since < (this.o.gapMs ?? GAP_MS) || !this.seen.size) break;
      this.holes.delete(next);
      this.stats.skippedHoles++;
      this.watermark = next;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.poll) clearInterval(this.poll);
    if (this.prune) clearInterval(this.prune);
    await this.listen?.close();
    await this.catching;
  }
}

function toMessage(e: ControlEventRecord): ControlMessage | null {
  if (e.kind !== 'end') return null;
  const d = e.data as { select?: unknown; reason?: unknown };
  const r = d.reason as Partial<EndReason> | undefined;
  if (!d.select || typeof d.select !== 'object' || !r || typeof r.code !== 'string' || typeof r.message !== 'string') return null;
  return { kind: 'end', select: d.select as SessionSelector, reason: { code: r.code as EndReason['code'], message: r.message } };
}
