import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Clock, TimerHandle } from '../policies/clock.js';
import type { Store, LeaseRecord, SessionRecord, GrantRecord, LockRecord } from './store/types.js';
import type {
  Authorized, EndReason, LeaseResult, LiveSession, ProtocolContext, ProtocolModule, RuleCheckOptions, RuleDecision,
} from '../protocols/types.js';
import type { SessionRecording, LiveBus } from '../recorder/types.js';
import type { Principal } from '../auth/types.js';
import type { TargetConfig, RoleConfig } from '../protocols/config.js';
import type { CommandRuleConfig } from '../policies/config.js';
import type { AuditLog } from './audit.js';
import { redactStatement } from '../recorder/index.js';
import { runInSession, describeError } from './safety.js';

export interface RuleChecker {
  check(text: string, opts?: RuleCheckOptions): RuleDecision;
  /** The rules of the role, in config order. */
  readonly list?: readonly CommandRuleConfig[];
}

export interface SessionDeps {
  store: Store;
  clock: Clock;
  log: Logger;
  audit: AuditLog;
  gatewayId: string;
  expiryWarningMs: number;
  openRecording(sessionId: string, meta: { identity: string; target: string; role: string; protocol: string; startedAt: number }): SessionRecording;
  live: LiveBus;
  rules(target: string, role: string): RuleChecker;
  module(protocol: string): ProtocolModule | undefined;
  ctx(protocol: string): ProtocolContext;
  target(name: string): TargetConfig | undefined;
  notify(event: Record<string, unknown>): void;
  metrics?: { started(protocol: string): void; ended(protocol: string, code: string): void };
  /** Per-session budgets (config `limits`). */
  limits: { sessionBufferBytes: number };
}

/** How long a protocol module gets to close both sides after "end now" before the proxy ends it anyway. */
const FORCE_END_MS = 5000;

export function lockMatches(lock: Pick<LockRecord, 'scope' | 'value'>, s: { identity: string; target: string; grantId: string }): boolean {
  return (lock.scope === 'identity' && lock.value === s.identity)
    || (lock.scope === 'target' && lock.value === s.target)
    || (lock.scope === 'grant' && lock.value === s.grantId);
}

class Session implements LiveSession {
  readonly id = randomUUID();
  readonly startedAt: number;
  readonly log: Logger;
  recording!: SessionRecording;
  record!: SessionRecord;
  private leases: LeaseRecord[] = [];
  private terminateHandlers: ((r: EndReason) => void)[] = [];
  private warningHandlers: ((m: string, ms: number) => void)[] = [];
  private timers: TimerHandle[] = [];
  private endPromise: Promise<void> | null = null;
  private doneResolve!: () => void;
  /** Resolves when teardown (lease revocation, sealing, audit) has completed. */
  readonly done: Promise<void> = new Promise<void>((r) => { this.doneResolve = r; });
  private terminating: EndReason | null = null;
  private rules: RuleChecker;
  private bytesUp = 0;
  private bytesDown = 0;
  private lastFlush = 0;
  private held = 0;
  private overBudget = false;
  ended = false;

  constructor(private mgr: SessionManager, private deps: SessionDeps, readonly principal: Principal, readonly grant: GrantRecord,
    readonly target: TargetConfig, readonly role: RoleConfig, readonly protocol: string) {
    this.startedAt = deps.clock.now();
    this.log = deps.log.child({ session: this.id, target: target.name, identity: principal.sub, protocol });
    this.rules = deps.rules(target.name, role.name);
  }

  get identity(): string { return this.principal.sub; }

  get commandRules(): readonly CommandRuleConfig[] { return this.rules.list ?? []; }

  async lease<T>(kind: string, data: Record<string, unknown>, create: (leaseId: string) => Promise<LeaseResult<T>>): Promise<T> {
    if (this.ended || this.terminating) throw new Error(`session is ending: ${this.terminating?.message ?? 'ended'}`);
    const rec: LeaseRecord = {
      id: randomUUID(), sessionId: this.id, grantId: this.grant.id, target: this.target.name, kind, state: 'pending',
      data, createdAt: this.deps.clock.now(), activatedAt: null, revokedAt: null, error: null,
    };
    // Stored BEFORE anything exists on the target: a crash from here on is found by the reaper.
    await this.deps.store.insertLease(rec);
    this.leases.push(rec);
    await this.deps.audit.append(this.identity, 'lease.created', rec.id, { session: this.id, target: this.target.name, kind, data });
    try {
      const res = await create(rec.id);
      rec.data = { ...rec.data, ...(res.data ?? {}) };
      rec.state = 'active';
      rec.activatedAt = this.deps.clock.now();
      await this.deps.store.updateLease(rec);
      return res.credential;
    } catch (e) {
      rec.error = (e as Error).message;
      await this.mgr.revokeLease(rec).catch(() => undefined);
      throw e;
    }
  }

  check(text: string, opts: RuleCheckOptions = {}): RuleDecision {
    const d = this.rules.check(text, opts);
    if (d.action === 'allow' && !d.uncertain) return d;
    // Redacted as in the query log (no PASSWORD '…' literals in the audit log or alerts), then shortened.
    const redacted = redactStatement(text);
    const shown = redacted.length > 500 ? `${redacted.slice(0, 500)}…` : redacted;
    if (d.strict || d.action === 'allow') {
      // A text the gateway cannot read. A terminal line may be a password typed at a prompt, so
      // only its recording holds the line; the audit event says what could not be read.
      const line = opts.kind === 'shell';
      void this.deps.audit.append(this.identity, 'session.rule.uncertain', this.id, {
        target: this.target.name, kind: opts.kind ?? null, ...(opts.channel ? { channel: opts.channel } : {}),
        uncertain: d.uncertain ?? [], strict: d.strict === true, action: d.action,
        ...(line ? { commands: [...new Set((opts.shell?.commands ?? []).flatMap((c) => c.commands))].slice(0, 20) } : { text: shown }),
      });
      if (d.action === 'allow') return d;
    } else {
      void this.deps.audit.append(this.identity, `session.rule.${d.action}`, this.id, {
        target: this.target.name, text: shown, kind: opts.kind ?? null, pattern: d.rule?.pattern ?? null, kinds: d.rule?.kinds ?? null,
        ...(d.rule?.commands ? { commands: d.rule.commands } : {}), ...(d.uncertain ? { uncertain: d.uncertain } : {}),
      });
    }
    if (d.action === 'alert' || d.action === 'kill') {
      this.deps.notify({ kind: 'rule', action: d.action, session: this.id, identity: this.identity, target: this.target.name, text: shown });
    }
    if (d.action === 'kill') queueMicrotask(() => this.terminate({ code: 'forbidden', message: d.message }));
    return d;
  }

  onTerminate(handler: (reason: EndReason) => void): void {
    this.terminateHandlers.push(handler);
    if (this.terminating) queueMicrotask(() => handler(this.terminating!));
  }
  onWarning(handler: (message: string, msLeft: number) => void): void { this.warningHandlers.push(handler); }

  addBytes(up: number, down: number): void {
    this.bytesUp += up;
    this.bytesDown += down;
    const now = this.deps.clock.now();
    if (now - this.lastFlush > 5000 && this.record) {
      this.lastFlush = now;
      this.record.bytesUp = this.bytesUp;
      this.record.bytesDown = this.bytesDown;
      void this.deps.store.updateSession(this.record).catch(() => undefined);
    }
  }

  bytes() { return { up: this.bytesUp, down: this.bytesDown }; }

  holdBytes(delta: number): boolean {
    this.held = Math.max(0, this.held + delta);
    if (this.overBudget) return false;
    const limit = this.deps.limits.sessionBufferBytes;
    if (this.held <= limit) return true;
    this.overBudget = true;
    this.log.warn({ held: this.held, limit }, 'session exceeded its buffer budget');
    this.audit('session.resource_limit', { budget: 'sessionBufferBytes', held: this.held, limit });
    this.terminate({ code: 'resource_limit', message: `Tollgate: the session needed more than ${limit} bytes of gateway memory (limits.sessionBufferBytes); it was ended.` });
    return false;
  }

  guard<A extends unknown[]>(handler: (...args: A) => void): (...args: A) => void {
    return (...args: A) => {
      try { runInSession(this, () => handler(...args)); } catch (e) { this.fail(e, 'handler'); }
    };
  }

  /** An internal error in this session's handlers: log, audit, end this session only. */
  fail(err: unknown, origin: string): void {
    this.log.error({ err, origin }, 'internal error in the session; ending it');
    this.audit('session.error', { origin, error: describeError(err) });
    this.terminate({ code: 'error', message: 'Tollgate: an internal error ended this session (the gateway keeps running).' });
  }

  audit(action: string, data: Record<string, unknown>): void {
    void this.deps.audit.append(this.identity, action, this.id, { target: this.target.name, ...data });
  }

  arm(): void {
    const left = this.grant.expiresAt - this.deps.clock.now();
    const warnAt = left - this.deps.expiryWarningMs;
    if (warnAt > 0) {
      this.timers.push(this.deps.clock.setTimer(warnAt, () => {
        const ms = this.grant.expiresAt - this.deps.clock.now();
        const msg = `Tollgate: your access to ${this.target.name} ends in ${Math.max(1, Math.round(ms / 1000))} seconds (grant ${this.grant.id}).`;
        for (const h of this.warningHandlers) { try { h(msg, ms); } catch (e) { this.log.warn({ err: e }, 'warning handler failed'); } }
        this.audit('session.warned', { msLeft: ms });
      }));
    }
    this.timers.push(this.deps.clock.setTimer(Math.max(0, left), () => {
      this.terminate({ code: 'expired', message: `Tollgate: your grant for ${this.target.name} expired; the session is closed.` });
    }));
  }

  /** The gateway ends the session: tell the module; end it ourselves if the module does not. */
  terminate(reason: EndReason): void {
    if (this.ended || this.terminating) return;
    this.terminating = reason;
    this.log.info({ reason: reason.code }, 'terminating session');
    for (const h of this.terminateHandlers) { try { h(reason); } catch (e) { this.log.warn({ err: e }, 'terminate handler failed'); } }
    const t = setTimeout(() => { void this.end(reason); }, this.terminateHandlers.length ? FORCE_END_MS : 0);
    t.unref();
  }

  end(reason: EndReason): Promise<void> {
    if (this.endPromise) return this.endPromise;
    // The gateway's reason wins over what the module saw (e.g. "client closed" after a kill).
    const final = this.terminating ?? reason;
    this.ended = true;
    this.endPromise = this.finish(final)
      .catch((e) => { this.log.error({ err: e }, 'session teardown failed'); })
      .finally(() => this.doneResolve());
    return this.endPromise;
  }

  private async finish(reason: EndReason): Promise<void> {
    for (const t of this.timers) t.cancel();
    this.timers = [];
    const errors: string[] = [];
    for (const l of [...this.leases].reverse()) {
      if (l.state === 'revoked' || l.state === 'failed') continue;
      try { await this.mgr.revokeLease(l); } catch (e) { errors.push((e as Error).message); }
    }
    try { await this.recording.close(); } catch (e) { errors.push(`recording: ${(e as Error).message}`); }
    // The seals go into the hash-chained audit log, so changing a recording and its stored hash is still caught.
    const seals = await this.deps.store.listRecordings({ sessionId: this.id }).then(
      (rs) => rs.map((r) => ({ id: r.id, kind: r.kind, sha256: r.sha256, bytes: r.bytes })),
      () => [],
    );
    this.record.state = 'ended';
    this.record.endedAt = this.deps.clock.now();
    this.record.endReason = `${reason.code}: ${reason.message}`;
    this.record.bytesUp = this.bytesUp;
    this.record.bytesDown = this.bytesDown;
    await this.deps.store.updateSession(this.record).catch((e) => errors.push((e as Error).message));
    await this.deps.audit.append(this.identity, 'session.ended', this.id, {
      target: this.target.name, protocol: this.protocol, reason: reason.code, message: reason.message,
      durationMs: this.record.endedAt - this.startedAt, bytesUp: this.bytesUp, bytesDown: this.bytesDown, recordings: seals,
      ...(errors.length ? { teardownErrors: errors } : {}),
    });
    this.deps.live.end(this.id);
    this.deps.metrics?.ended(this.protocol, reason.code);
    this.mgr.forget(this);
    this.log.info({ reason: reason.code, errors: errors.length }, 'session ended');
  }
}

export class SessionManager {
  private live = new Map<string, Session>();
  constructor(private deps: SessionDeps) {}

  list(): Session[] { return [...this.live.values()]; }
  get(id: string): Session | undefined { return this.live.get(id); }
  forget(s: Session): void { this.live.delete(s.id); }

  async activeLocks(): Promise<LockRecord[]> {
    return this.deps.store.listLocks({ active: true, at: this.deps.clock.now() });
  }

  async open(auth: Authorized, meta: { protocol: string; clientAddr: string }): Promise<LiveSession> {
    const now = this.deps.clock.now();
    const grant = await this.deps.store.getGrant(auth.grant.id);
    if (!grant || grant.state !== 'active' || grant.expiresAt <= now) throw new Error('the grant is no longer active');
    const locks = (await this.activeLocks()).filter((l) => lockMatches(l, { identity: auth.principal.sub, target: auth.target.name, grantId: grant.id }));
    if (locks.length) throw new Error(`locked: ${locks[0]!.reason}`);
    const s = new Session(this, this.deps, auth.principal, grant, auth.target, auth.role, meta.protocol);
    s.record = {
      id: s.id, grantId: grant.id, identity: auth.principal.sub, target: auth.target.name, role: auth.role.name, protocol: meta.protocol,
      clientAddr: meta.clientAddr, state: 'active', startedAt: s.startedAt, endedAt: null, endReason: null, bytesUp: 0, bytesDown: 0,
      gatewayId: this.deps.gatewayId,
    };
    await this.deps.store.insertSession(s.record);
    // Only the flag: writing back the whole grant read above would undo a revoke or expiry that
    // committed meanwhile (on another gateway, or another request of this one).
    if (!grant.used) await this.deps.store.claim('grants', grant.id, { used: false }, { used: true });
    s.recording = this.deps.openRecording(s.id, { identity: s.identity, target: auth.target.name, role: auth.role.name, protocol: meta.protocol, startedAt: s.startedAt });
    this.live.set(s.id, s);
    s.arm();
    this.deps.metrics?.started(meta.protocol);
    await this.deps.audit.append(s.identity, 'session.started', s.id, {
      target: auth.target.name, role: auth.role.name, protocol: meta.protocol, grant: grant.id, clientAddr: meta.clientAddr,
    });
    return s;
  }

  /** End every live session matching pred; resolves when all have ended. */
  async terminateWhere(pred: (s: Session) => boolean, reason: EndReason): Promise<number> {
    const hit = this.list().filter(pred);
    for (const s of hit) s.terminate(reason);
    await Promise.all(hit.map((s) => s.done));
    return hit.length;
  }

  kill(id: string, by: string, reason: string): boolean {
    const s = this.live.get(id);
    if (!s) return false;
    s.terminate({ code: 'killed', message: `Tollgate: session terminated by ${by}${reason ? `: ${reason}` : ''}.` });
    return true;
  }

  async applyLock(lock: LockRecord): Promise<number> {
    return this.terminateWhere(
      (s) => lockMatches(lock, { identity: s.identity, target: s.target.name, grantId: s.grant.id }),
      { code: 'locked', message: `Tollgate: access locked (${lock.scope} ${lock.value}): ${lock.reason}` },
    );
  }

  async grantEnded(grant: GrantRecord, why: 'expired' | 'revoked'): Promise<number> {
    return this.terminateWhere((s) => s.grant.id === grant.id, why === 'expired'
      ? { code: 'expired', message: `Tollgate: your grant for ${grant.target} expired; the session is closed.` }
      : { code: 'revoked', message: `Tollgate: your grant for ${grant.target} was revoked${grant.endReason ? `: ${grant.endReason}` : ''}.` });
  }

  /** Revoke one lease through its protocol module (idempotent). */
  async revokeLease(l: LeaseRecord): Promise<void> {
    const target = this.deps.target(l.target);
    l.state = 'revoking';
    await this.deps.store.updateLease(l);
    try {
      const session = l.sessionId ? await this.deps.store.getSession(l.sessionId) : null;
      const mod = this.deps.module(session?.protocol ?? target?.protocol ?? '');
      if (!target) throw new Error(`target ${l.target} is no longer configured`);
      if (mod?.revokeLease) await mod.revokeLease(this.deps.ctx(mod.name), target, l);
      l.state = 'revoked';
      l.revokedAt = this.deps.clock.now();
      l.error = null;
      await this.deps.store.updateLease(l);
      await this.deps.audit.append('system', 'lease.revoked', l.id, { session: l.sessionId, target: l.target, kind: l.kind, data: l.data });
    } catch (e) {
      l.error = (e as Error).message;
      await this.deps.store.updateLease(l);
      await this.deps.audit.append('system', 'lease.revoke_failed', l.id, { session: l.sessionId, target: l.target, kind: l.kind, error: l.error });
      throw e;
    }
  }

  /**
   * The reaper: every lease without a live session in this gateway is revoked (after a crash, a
   * failed teardown, or a session another gateway instance lost). Sessions this gateway owned but no
   * longer runs are marked ended.
   */
  async reap(): Promise<{ leases: number; sessions: number; failed: number }> {
    let leases = 0;
    let failed = 0;
    let sessions = 0;
    const liveIds = new Set(this.live.keys());
    for (const s of await this.deps.store.listSessions({ state: 'active' })) {
      if (s.gatewayId !== this.deps.gatewayId || liveIds.has(s.id)) continue;
      s.state = 'ended';
      s.endedAt = this.deps.clock.now();
      s.endReason = 'gateway_restart: the gateway stopped while the session ran';
      await this.deps.store.updateSession(s);
      await this.deps.audit.append('system', 'session.ended', s.id, { target: s.target, reason: 'gateway_restart', message: s.endReason });
      sessions++;
    }
    for (const l of await this.deps.store.listLeases({ state: ['pending', 'active', 'revoking'] })) {
      if (l.sessionId && liveIds.has(l.sessionId)) continue;
      if (l.sessionId) {
        const s = await this.deps.store.getSession(l.sessionId);
        // Another gateway's live session: not ours to reap.
        if (s && s.state === 'active' && s.gatewayId !== this.deps.gatewayId) continue;
      }
      try { await this.revokeLease(l); leases++; } catch { failed++; }
    }
    return { leases, sessions, failed };
  }
}

export type { Session };
export type { CommandRuleConfig };
