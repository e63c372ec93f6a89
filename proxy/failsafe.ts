/**
 * Fail-closed guards for what the gateway cannot work without: writing recordings and writing its
 * store. A guard is ok or failing (since when, why). The first failure runs the guard's reaction
 * (audit, alert, end sessions: the gateway decides); while failing, new sessions are refused and
 * the guard probes every retryMs; the first probe that works runs the recovery. Probes are what
 * decide recovery, never the absence of errors.
 */
import type { Logger } from 'pino';
import type { Store } from './store/types.js';

export type ProbeResult = { ok: true } | { ok: false; code: string; message: string };

export type GuardState =
  | { ok: true; failures: number; lastRecovered: number | null }
  | { ok: false; since: number; code: string; message: string; failures: number };

export interface FailSafeOptions {
  name: string;
  probe(): ProbeResult | Promise<ProbeResult>;
  onFail(state: Extract<GuardState, { ok: false }>): void | Promise<void>;
  onRecover(downMs: number, state: Extract<GuardState, { ok: false }>): void | Promise<void>;
  retryMs: number;
  now(): number;
  log: Logger;
}

export class FailSafe {
  private st: GuardState = { ok: true, failures: 0, lastRecovered: null };
  private timer: NodeJS.Timeout | null = null;
  private probing: Promise<GuardState> | null = null;
  private stopped = false;

  constructor(private readonly o: FailSafeOptions) {}

  get state(): GuardState { return this.st; }
  get failing(): boolean { return !this.st.ok; }

  /** Something failed the way this guard watches for (idempotent while failing). */
  failed(code: string, message: string): void {
    if (!this.st.ok || this.stopped) return;
    const failing = { ok: false as const, since: this.o.now(), code, message, failures: this.st.failures + 1 };
    this.st = failing;
    this.o.log.error({ guard: this.o.name, code, message }, `${this.o.name} failing: failing closed until a probe works`);
    Promise.resolve().then(() => this.o.onFail(failing)).catch((e) => this.o.log.error({ err: e, guard: this.o.name }, 'fail-safe reaction failed'));
    this.schedule();
  }

  /** The state now: while failing, probe first (so a recovered resource is used at once). */
  check(): Promise<GuardState> {
    if (this.st.ok) return Promise.resolve(this.st);
    this.probing ??= this.probe().finally(() => { this.probing = null; });
    return this.probing;
  }

  private async probe(): Promise<GuardState> {
    const was = this.st;
    if (was.ok) return was;
    let r: ProbeResult;
    try { r = await this.o.probe(); } catch (e) { r = { ok: false, code: 'EPROBE', message: (e as Error).message }; }
    if (!r.ok) {
      this.st = { ...was, code: r.code, message: r.message };
      return this.st;
    }
    const down = this.o.now() - was.since;
    this.st = { ok: true, failures: was.failures, lastRecovered: this.o.now() };
    this.o.log.warn({ guard: this.o.name, downMs: down }, `${this.o.name} recovered`);
    try { await this.o.onRecover(down, was); } catch (e) { this.o.log.error({ err: e, guard: this.o.name }, 'fail-safe recovery failed'); }
    return this.st;
  }

  private schedule(): void {
    if (this.timer || this.stopped) return;
    this.timer = setInterval(() => {
      if (this.st.ok) { this.clear(); return; }
      void this.check().then((s) => { if (s.ok) this.clear(); });
    }, this.o.retryMs);
    this.timer.unref();
  }

  private clear(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  stop(): void {
    this.stopped = true;
    this.clear();
  }
}

/**
 * Whether a store error means the store cannot take writes at all (disk full, read-only, I/O
 * error, connection lost), as opposed to one operation's own error (a constraint, a conflict).
 */
export function storeUnavailable(e: unknown): { code: string; message: string } | null {
  const err = e as { code?: unknown; message?: unknown } | null;
  const code = typeof err?.code === 'string' ? err.code : '';
  const message = typeof err?.message === 'string' ? err.message : String(e);
  // SQLite (better-sqlite3): extended codes keep their primary code as a prefix.
  if (/^SQLITE_(FULL|READONLY|IOERR|CANTOPEN|CORRUPT|NOTADB|PROTOCOL)/.test(code)) return { code, message };
  // PostgreSQL: insufficient resources (53xxx), read-only transactions, shutdowns, connection failures.
  if (/^(53\d{3}|25006|57P0[1-4]|08\d{3})$/.test(code)) return { code, message };
  if (/^(ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|ENOTFOUND|EHOSTUNREACH|ENOSPC|EROFS|EIO)$/.test(code)) return { code, message };
  if (/Connection terminated|connection is closed|Client has encountered a connection error|timeout exceeded when trying to connect/i.test(message)) return { code: code || 'ECONNLOST', message };
  return null;
}

/**
 * The store, watched: every error a method throws or rejects with is reported when it means the
 * store is unavailable (then rethrown unchanged).
 */
export function watchStore(store: Store, report: (code: string, message: string) => void): Store {
  // Keyed by the function itself: a method replaced on the store later is wrapped afresh.
  const wrapped = new WeakMap<object, unknown>();
  const seen = (e: unknown) => {
    const u = storeUnavailable(e);
    if (u) report(u.code, u.message);
  };
  return new Proxy(store, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver) as unknown;
      if (typeof v !== 'function') return v;
      let w = wrapped.get(v);
      if (!w) {
        w = function (this: unknown, ...args: unknown[]) {
          try {
            const r = (v as (...a: unknown[]) => unknown).apply(target, args);
            if (r && typeof (r as Promise<unknown>).then === 'function') return (r as Promise<unknown>).catch((e: unknown) => { seen(e); throw e; });
            return r;
          } catch (e) {
            seen(e);
            throw e;
          }
        };
        wrapped.set(v, w);
      }
      return w;
    },
  });
}
