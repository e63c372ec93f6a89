/**
 * One LiveSession per (identity, app), kept in an LRU cache so the data path does no store round
 * trip per request. The cache entry goes away when the gateway terminates the session (revoke,
 * lock, expiry, kill): open WebSockets are closed with the reason, in-flight requests aborted,
 * then session.end(). Idle sessions end after the app's idle timeout with code client_exit.
 */
import { LRUCache } from 'lru-cache';
import type { AuthOutcome, EndReason, LiveSession, ProtocolContext, RefusalCode } from '../types.js';
import type { Principal } from '../../auth/types.js';
import type { TimerHandle } from '../../policies/clock.js';
import type { AppConfig } from './config.js';
import { SessionCredential } from './credentials.js';
import type { AssertionKey } from './assertion.js';

/** Something that must be closed when the session ends (a WebSocket, an in-flight request). */
export interface Closable { close(reason: EndReason): void }

export interface AppSession {
  readonly key: string;
  readonly app: AppConfig;
  readonly session: LiveSession;
  readonly credential: SessionCredential;
  /** Open WebSockets and in-flight requests. */
  readonly open: Set<Closable>;
  lastUsed: number;
  idleTimer: TimerHandle | null;
  closing: boolean;
}

export type Acquire = { ok: true; entry: AppSession } | { ok: false; code: RefusalCode | 'error'; reason: string };

const MAX_SESSIONS = 10_000;

export class AppSessions {
  private cache: LRUCache<string, AppSession>;
  private pending = new Map<string, Promise<Acquire>>();

  constructor(private ctx: ProtocolContext, private key: () => Promise<AssertionKey>) {
    this.cache = new LRUCache<string, AppSession>({
      max: MAX_SESSIONS,
      dispose: (entry, _k, reason) => {
        if (reason === 'evict') this.finish(entry, { code: 'client_exit', message: 'Tollgate: the app session was evicted (too many sessions).' });
      },
    });
  }

  static cacheKey(sub: string, app: string): string { return `${sub}\u0000${app}`; }

  /** The cached session, without any I/O (the common case on the data path). */
  peek(sub: string, app: AppConfig): AppSession | undefined {
    const e = this.cache.get(AppSessions.cacheKey(sub, app.target.name));
    if (!e || e.closing || e.session.ended) return undefined;
    e.lastUsed = this.ctx.clock.now();
    return e;
  }

  /** Grant check and session start for one identity and app (deduplicated while in flight). */
  acquire(principal: Principal, app: AppConfig, clientAddr: string): Promise<Acquire> {
    const cached = this.peek(principal.sub, app);
    if (cached) return Promise.resolve({ ok: true, entry: cached });
    const k = AppSessions.cacheKey(principal.sub, app.target.name);
    let p = this.pending.get(k);
    if (!p) {
      p = this.open(k, principal, app, clientAddr).finally(() => this.pending.delete(k));
      this.pending.set(k, p);
    }
    return p;
  }

  private async open(k: string, principal: Principal, app: AppConfig, clientAddr: string): Promise<Acquire> {
    const out: AuthOutcome = await this.ctx.access.authenticate({ protocol: 'http', username: app.target.name, clientAddr, principal });
    if (!out.ok) return { ok: false, code: out.code, reason: out.reason };
    let session: LiveSession;
    try {
      session = await this.ctx.sessions.open(out.auth, { protocol: 'http', clientAddr });
    } catch (e) {
      return { ok: false, code: 'denied', reason: `Tollgate: ${(e as Error).message}` };
    }
    let credential: SessionCredential;
    try {
      credential = await SessionCredential.create(this.ctx, app, session, await this.key());
    } catch (e) {
      session.log.warn({ err: (e as Error).message }, 'app credential failed');
      await session.end({ code: 'error', message: `Tollgate: could not prepare the credential for ${app.target.name}.` });
      return { ok: false, code: 'error', reason: `Tollgate: could not prepare the credential for ${app.target.name}.` };
    }
    const entry: AppSession = {
      key: k, app, session, credential, open: new Set(), lastUsed: this.ctx.clock.now(), idleTimer: null, closing: false,
    };
    session.onTerminate((reason) => this.finish(entry, reason));
    this.cache.set(k, entry);
    this.armIdle(entry, app.idleMs);
    return { ok: true, entry };
  }

  private armIdle(entry: AppSession, ms: number): void {
    entry.idleTimer = this.ctx.clock.setTimer(ms, () => {
      entry.idleTimer = null;
      if (entry.closing) return;
      const idleFor = this.ctx.clock.now() - entry.lastUsed;
      if (entry.open.size === 0 && idleFor >= entry.app.idleMs) {
        const minutes = Math.max(1, Math.round(entry.app.idleMs / 60_000));
        this.finish(entry, { code: 'client_exit', message: `Tollgate: the session to ${entry.app.target.name} ended after ${minutes} minute(s) without use.` });
      } else {
        this.armIdle(entry, Math.max(1000, entry.app.idleMs - (entry.open.size ? 0 : idleFor)));
      }
    });
  }

  /** Close everything of this session and end it (idempotent). */
  finish(entry: AppSession, reason: EndReason): void {
    if (entry.closing) return;
    entry.closing = true;
    entry.idleTimer?.cancel();
    entry.idleTimer = null;
    if (this.cache.peek(entry.key) === entry) this.cache.delete(entry.key);
    for (const c of [...entry.open]) {
      try { c.close(reason); } catch (e) { entry.session.log.warn({ err: (e as Error).message }, 'close failed'); }
    }
    entry.open.clear();
    entry.session.end(reason).catch((e) => this.ctx.log.warn({ err: (e as Error).message, session: entry.session.id }, 'session end failed'));
  }

  /** End every cached session (module shutdown). */
  closeAll(reason: EndReason): void {
    for (const e of [...this.cache.values()]) this.finish(e, reason);
  }

  get size(): number { return this.cache.size; }
}
