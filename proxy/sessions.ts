import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Clock, TimerHandle } from '../policies/clock.js';
import type { Store, LeaseRecord, SessionRecord, GrantRecord, LockRecord } from './store/types.js';
import {
  leaseKindOf, revokeWithModule, SessionEndedError,
  type Authorized, type ClientConnection, type EndReason, type LeaseResult, type LiveSession, type ProtocolContext, type ProtocolModule, type RuleCheckOptions, type RuleDecision, type SessionMeta,
} from '../protocols/types.js';
import type { SessionRecording, LiveBus } from '../recorder/types.js';
import type { Principal } from '../auth/types.js';
import type { TargetConfig, RoleConfig } from '../protocols/config.js';
import type { CommandRuleConfig } from '../policies/config.js';
import type { AuditLog } from './audit.js';
import { redactStatement } from '../recorder/index.js';
import { fromModule } from './audit-events.js';
import { runInSession, describeError } from './safety.js';
import { grantRuns, isGrantLease } from './grant-lease-kinds.js';
import { MemoryReturn } from './memory.js';

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
  /** When a failed revoke is tried again: first after firstMs, then twice as long each time, at most maxMs (tests shorten it). */
  revokeRetry?: { firstMs: number; maxMs: number };
  /** Why no new session may start on this node now (draining, the store is lost), or null. */
  admit?(): string | null;
  /** The store is known to be unreachable: teardown skips store writes it would wait for and revokes on the target directly. */
  storeLost?(): boolean;
  /**
   * Whether a new session may open now: null, or why not (recordings or the store cannot be
   * written, see proxy/failsafe.ts). Asked before anything is written for the session.
   */
  admission?: () => Promise<string | null>;
}

/** Why the reaper ends a session this gateway no longer runs (and marks its recordings). */
export const GATEWAY_CRASH = 'gateway_crash';

/** How long a protocol module gets to close both sides after "end now" before the proxy ends it anyway. */
const FORCE_END_MS = 5000;
/**
 * Close-first: when the gateway ends a session, teardown waits this long for the client's
 * connection to close (the module's "end now" closed it), then destroys it, and only then revokes
 * its leases, seals its recording and writes its end: the person sees the end at once, and the
 * store and target work of many sessions ended together does not delay their clients' close.
 */
export const CLOSE_FIRST_MS = 500;
/** How long a session's teardown waits for a mint still running before it revokes anyway (the mint then revokes what it made). */
const MINT_WAIT_MS = 30_000;
export const DEFAULT_REVOKE_RETRY = { firstMs: 10_000, maxMs: 3_600_000 };

/** The delay before revoke attempt n+1 after n failed ones: doubling from firstMs, capped at maxMs. */
export function revokeBackoff(failedAttempts: number, r: { firstMs: number; maxMs: number } = DEFAULT_REVOKE_RETRY): number {
  return Math.min(r.maxMs, r.firstMs * 2 ** Math.max(0, Math.min(30, failedAttempts - 1)));
}

export function lockMatches(lock: Pick<LockRecord, 'scope' | 'value'>, s: { identity: string; target: string; grantId: string }): boolean {
  return (lock.scope === 'identity' && lock.value === s.identity)
    || (lock.scope === 'target' && lock.value === s.target)
    || (lock.scope === 'grant' && lock.value === s.grantId);
}

/** What a session a lock ends is told. */
export function lockEndReason(lock: Pick<LockRecord, 'scope' | 'value' | 'reason'>): EndReason {
  return { code: 'locked', message: `Tollgate: access locked (${lock.scope} ${lock.value}): ${lock.reason}` };
}

/** What a session whose grant ended is told. */
export function grantEndReason(grant: Pick<GrantRecord, 'target' | 'endReason'>, why: 'expired' | 'revoked'): EndReason {
  return why === 'expired'
    ? { code: 'expired', message: `Tollgate: your grant for ${grant.target} expired; the session is closed.` }
    : { code: 'revoked', message: `Tollgate: your grant for ${grant.target} was revoked${grant.endReason ? `: ${grant.endReason}` : ''}.` };
}

class Session implements LiveSession {
  readonly id = randomUUID();
  readonly startedAt: number;
  readonly log: Logger;
  recording!: SessionRecording;
  record!: SessionRecord;
  private leases: LeaseRecord[] = [];
  /** Mints whose create() still runs: teardown waits for them, so nothing is created after the revoke. */
  private minting = new Set<Promise<unknown>>();
  private terminateHandlers: ((r: EndReason) => void)[] = [];
  private warningHandlers: ((m: string, ms: number) => void)[] = [];
  private timers: TimerHandle[] = [];
  private endPromise: Promise<void> | null = null;
  private doneResolve!: () => void;
  /** Resolves when teardown (lease revocation, sealing, audit) has completed. */
  readonly done: Promise<void> = new Promise<void>((r) => { this.doneResolve = r; });
  private endingResolve!: (r: EndReason) => void;
  readonly ending: Promise<EndReason> = new Promise<EndReason>((r) => { this.endingResolve = r; });
  private terminating: EndReason | null = null;
  private rules: RuleChecker;
  private bytesUp = 0;
  private bytesDown = 0;
  private lastFlush = 0;
  private held = 0;
  private overBudget = false;
  ended = false;
  /** The client's TCP connection, when the module gave it (close-first teardown). */
  connection: ClientConnection | undefined;

  constructor(private mgr: SessionManager, private deps: SessionDeps, readonly principal: Principal, readonly grant: GrantRecord,
    readonly target: TargetConfig, readonly role: RoleConfig, readonly protocol: string) {
    this.startedAt = deps.clock.now();
    this.log = deps.log.child({ session: this.id, target: target.name, identity: principal.sub, protocol });
    this.rules = deps.rules(target.name, role.name);
  }

  get identity(): string { return this.principal.sub; }

  get commandRules(): readonly CommandRuleConfig[] { return this.rules.list ?? []; }

  async lease<T>(kind: string, data: Record<string, unknown>, create: (leaseId: string) => Promise<LeaseResult<T>>): Promise<T> {
    if (this.ended || this.terminating) throw new SessionEndedError(`the session is ending: ${this.terminating?.message ?? 'ended'}`);
    // Only a kind the module declared, with its revoke: nothing is minted that nobody can revoke.
    const mod = this.deps.module(this.protocol);
    if (!mod) throw new Error(`no protocol module "${this.protocol}" is loaded`);
    leaseKindOf(mod, kind);
    const rec: LeaseRecord = {
      id: randomUUID(), sessionId: this.id, grantId: this.grant.id, target: this.target.name, kind, state: 'pending',
      data, createdAt: this.deps.clock.now(), activatedAt: null, revokedAt: null, error: null, attempts: 0, retryAt: null,
    };
    // Teardown waits for the whole of it, from storing the lease to knowing what exists.
    const minted = this.mint(rec, create);
    this.minting.add(minted);
    void minted.then(() => this.minting.delete(minted), () => this.minting.delete(minted));
    return minted;
  }

  private async mint<T>(rec: LeaseRecord, create: (leaseId: string) => Promise<LeaseResult<T>>): Promise<T> {
    // Stored BEFORE anything exists on the target: a crash from here on is found by the reaper.
    await this.deps.store.insertLease(rec);
    this.leases.push(rec);
    await this.deps.audit.append(this.identity, 'lease.created', rec.id, { session: this.id, target: this.target.name, kind: rec.kind, data: rec.data });
    if (this.ended || this.terminating) {
      // Ended while the lease was being stored: nothing is made; the stored lease is revoked (nothing there).
      await this.mgr.revokeLease(rec).catch(() => undefined);
      throw new SessionEndedError();
    }
    let res: LeaseResult<T>;
    try {
      res = await create(rec.id);
    } catch (e) {
      void this.deps.audit.append(this.identity, 'lease.mint_failed', rec.id, { session: this.id, target: this.target.name, kind: rec.kind, error: (e as Error).message });
      // Whatever the failed create left behind goes too.
      await this.mgr.revokeLease(rec).catch(() => undefined);
      throw e;
    }
    rec.data = { ...rec.data, ...(res.data ?? {}) };
    if (this.ended || this.terminating) {
      // Ended (kill, lock, client gone) while the credential was being made: it exists now, so revoke it now.
      await this.mgr.revokeLease(rec).catch(() => undefined);
      throw new SessionEndedError();
    }
    rec.state = 'active';
    rec.activatedAt = this.deps.clock.now();
    await this.deps.store.updateLease(rec);
    return res.credential;
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
    void this.deps.audit.append(this.identity, fromModule(action), this.id, { target: this.target.name, ...data });
  }

  /** Tell the client (where its protocol can) that access ends soon (expiry, working hours, a draining gateway). */
  warn(message: string, msLeft: number): void {
    if (this.ended || this.terminating) return;
    for (const h of this.warningHandlers) { try { h(message, msLeft); } catch (e) { this.log.warn({ err: e }, 'warning handler failed'); } }
    this.audit('session.warned', { msLeft, message });
  }

  /**
   * The expiry warning and the end, from the grant's end. At the end the grant is read again: an
   * extension approved meanwhile (here or on another gateway) moves the timers instead.
   */
  arm(): void {
    for (const t of this.timers) t.cancel();
    this.timers = [];
    const left = this.grant.expiresAt - this.deps.clock.now();
    const warnAt = left - this.deps.expiryWarningMs;
    if (warnAt > 0) {
      this.timers.push(this.deps.clock.setTimer(warnAt, () => {
        const ms = this.grant.expiresAt - this.deps.clock.now();
        this.warn(`Tollgate: your access to ${this.target.name} ends in ${Math.max(1, Math.round(ms / 1000))} seconds (grant ${this.grant.id}).`, ms);
      }));
    }
    const expired = () => this.terminate({ code: 'expired', message: `Tollgate: your grant for ${this.target.name} expired; the session is closed.` });
    this.timers.push(this.deps.clock.setTimer(Math.max(0, left), () => {
      this.deps.store.getGrant(this.grant.id).then((g) => {
        if (g && g.state === 'active' && g.expiresAt > this.deps.clock.now() && g.expiresAt > this.grant.expiresAt) this.extendTo(g.expiresAt);
        else expired();
      }, expired);
    }));
  }

  /** The grant now ends later (an approved extension): the session goes on to the new end. */
  extendTo(expiresAt: number): void {
    if (this.ended || this.terminating || expiresAt <= this.grant.expiresAt) return;
    const from = this.grant.expiresAt;
    this.grant.expiresAt = expiresAt;
    this.arm();
    this.audit('session.extended', { grant: this.grant.id, from, to: expiresAt });
  }

  /**
   * Close-first: wait (at most CLOSE_FIRST_MS) for the client's connection to close, then destroy
   * it if it has not. The lease is revoked after this, as before, whatever the client does.
   */
  private async closeClient(): Promise<void> {
    const c = this.connection;
    if (!c || c.destroyed || c.closed) return;
    // No module handler closes it (the session ended while still being set up, before its module
    // took over the connection): close it now; waiting would only wait for the client.
    if (!this.terminateHandlers.length) { try { c.destroy?.(); } catch { /* already gone */ } return; }
    let timer: NodeJS.Timeout | undefined;
    let onClose: (() => void) | undefined;
    const closed = await new Promise<boolean>((r) => {
      onClose = () => r(true);
      c.once('close', onClose);
      timer = setTimeout(() => r(false), CLOSE_FIRST_MS);
      timer.unref();
    });
    clearTimeout(timer);
    if (onClose) c.off('close', onClose);
    if (!closed) {
      this.log.debug({ waitedMs: CLOSE_FIRST_MS }, 'the client connection did not close in time; destroying it');
      try { c.destroy?.(); } catch { /* already gone */ }
    }
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
    this.endingResolve(final);
    this.endPromise = this.finish(final)
      .catch((e) => { this.log.error({ err: e }, 'session teardown failed'); })
      .finally(() => this.doneResolve());
    return this.endPromise;
  }

  private async finish(reason: EndReason): Promise<void> {
    for (const t of this.timers) t.cancel();
    this.timers = [];
    const errors: string[] = [];
    // Ended by the gateway: the client's connection closes first, then the credentials go.
    if (this.terminating) await this.closeClient();
    // A credential still being made is revoked by its own mint once made (the session has ended).
    if (this.minting.size) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...this.minting]),
        new Promise<void>((r) => { timer = setTimeout(r, MINT_WAIT_MS); timer.unref(); }),
      ]);
      clearTimeout(timer);
    }
    for (const l of [...this.leases].reverse()) {
      if (l.state === 'revoked') continue;
      try { await this.mgr.revokeLease(l); } catch (e) { errors.push((e as Error).message); }
    }
    // Without the store (lost: it may hang) no store write is waited for: the end is recorded when it is back.
    const lost = this.deps.storeLost?.() === true;
    // The files are sealed either way; with the store lost their index rows are written later.
    const sealing = this.recording.close().catch((e: Error) => { errors.push(`recording: ${e.message}`); });
    if (!lost) await sealing;
    // The seals go into the hash-chained audit log, so changing a recording and its stored hash is still caught.
    const seals = lost ? [] : await this.deps.store.listRecordings({ sessionId: this.id }).then(
      (rs) => rs.map((r) => ({ id: r.id, kind: r.kind, sha256: r.sha256, bytes: r.bytes })),
      () => [],
    );
    this.record.state = 'ended';
    this.record.endedAt = this.deps.clock.now();
    this.record.endReason = `${reason.code}: ${reason.message}`;
    this.record.bytesUp = this.bytesUp;
    this.record.bytesDown = this.bytesDown;
    if (lost) {
      errors.push('the store is lost: the end is recorded when it is back');
      this.mgr.unrecorded.set(this.record.id, this.record);
    } else {
      await this.deps.store.updateSession(this.record).catch((e) => {
        errors.push((e as Error).message);
        // Written when the store takes writes again (SessionManager.flushUnrecorded), not reaped as a crash.
        this.mgr.unrecorded.set(this.record.id, this.record);
      });
    }
    try {
      const ended = this.deps.audit.append(this.identity, 'session.ended', this.id, {
        target: this.target.name, protocol: this.protocol, reason: reason.code, message: reason.message,
        durationMs: this.record.endedAt - this.startedAt, bytesUp: this.bytesUp, bytesDown: this.bytesDown, recordings: seals,
        ...(errors.length ? { teardownErrors: errors } : {}),
      }).catch((e) => {
        // A store that cannot take it holds the event and writes it when it is back (AuditLog retainOn): the session still ends here.
        this.log.error({ err: (e as Error).message }, 'session end cannot be audited now');
      });
      if (!lost) await ended;
    } finally {
      // Without the store (lost) the session still leaves this node; the reaper records what is missing.
      this.deps.live.end(this.id);
      this.deps.metrics?.ended(this.protocol, reason.code);
      this.mgr.forget(this);
      this.log.info({ reason: reason.code, errors: errors.length }, 'session ended');
    }
  }
}

export class SessionManager {
  private live = new Map<string, Session>();
  /** Revokes running now, by lease id (one at a time per lease; the reaper leaves these alone). */
  private revoking = new Map<string, Promise<void>>();
  /** Retries of failed revokes, by lease id. */
  private retries = new Map<string, TimerHandle>();
  private stopped = false;
  /** Sessions that ended while their final record could not be written (the store was unavailable). */
  readonly unrecorded = new Map<string, SessionRecord>();
  /** Full collections once a burst of sessions has ended and the gateway is quiet (proxy/memory.ts). */
  readonly memory = new MemoryReturn();
  constructor(private deps: SessionDeps) {}

  /** Write the final records of sessions that ended while the store was unavailable; returns how many are still unwritten. */
  async flushUnrecorded(): Promise<number> {
    for (const [id, rec] of [...this.unrecorded]) {
      try {
        await this.deps.store.updateSession(rec);
        this.unrecorded.delete(id);
      } catch (e) {
        this.deps.log.warn({ err: (e as Error).message, session: id }, 'final session record still cannot be written');
      }
    }
    return this.unrecorded.size;
  }

  list(): Session[] { return [...this.live.values()]; }
  get(id: string): Session | undefined { return this.live.get(id); }
  forget(s: Session): void {
    this.live.delete(s.id);
    this.memory.live(this.live.size, false);
  }

  async activeLocks(): Promise<LockRecord[]> {
    return this.deps.store.listLocks({ active: true, at: this.deps.clock.now() });
  }

  /**
   * Open a session, run fn, end the session on every path (see SessionsFacet.withSession): fn's
   * EndReason or client_exit when it returns, `error` when it throws (rethrown), client_exit when
   * meta.client closes first (onTerminate handlers run, so the module closes the other side).
   */
  async withSession(auth: Authorized, meta: SessionMeta, fn: (session: LiveSession) => Promise<EndReason | void>): Promise<void> {
    const s = await this.open(auth, meta) as Session;
    const client = meta.client;
    // A turn later, so the module's own close handling (which knows more) can end the session first.
    const dropped = () => { setImmediate(() => s.terminate({ code: 'client_exit', message: 'the client disconnected' })); };
    client?.once('close', dropped);
    if ((client as { destroyed?: boolean } | undefined)?.destroyed) dropped();
    let reason: EndReason | void;
    try {
      reason = await fn(s);
    } catch (e) {
      await s.end({ code: 'error', message: e instanceof SessionEndedError ? e.message : `the session failed: ${(e as Error).message}` });
      throw e;
    } finally {
      client?.off('close', dropped);
    }
    await s.end(reason ?? { code: 'client_exit', message: 'the session finished' });
  }

  async open(auth: Authorized, meta: SessionMeta): Promise<LiveSession> {
    const refused = this.deps.admit?.();
    if (!refused) {
      const unavailable = await this.deps.admission?.();
      if (unavailable) throw new Error(unavailable);
    }
    if (refused) throw new Error(refused);
    const now = this.deps.clock.now();
    const grant = await this.deps.store.getGrant(auth.grant.id);
    if (!grant || grant.state !== 'active' || grant.expiresAt <= now) throw new Error('the grant is no longer active');
    const locks = (await this.activeLocks()).filter((l) => lockMatches(l, { identity: auth.principal.sub, target: auth.target.name, grantId: grant.id }));
    if (locks.length) throw new Error(`locked: ${locks[0]!.reason}`);
    const s = new Session(this, this.deps, auth.principal, grant, auth.target, auth.role, meta.protocol);
    s.connection = meta.socket ?? (isConnection(meta.client) ? meta.client : undefined);
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
    this.memory.live(this.live.size, true);
    s.arm();
    this.deps.metrics?.started(meta.protocol);
    await this.deps.audit.append(s.identity, 'session.started', s.id, {
      target: auth.target.name, role: auth.role.name, protocol: meta.protocol, grant: grant.id, clientAddr: meta.clientAddr,
    });
    // A revoke or expiry that committed while this session was being opened ended the grant's live
    // sessions before this one was live here: read the grant again now that it is.
    const now2 = await this.deps.store.getGrant(grant.id).catch(() => grant);
    if (!now2 || now2.state !== 'active' || now2.expiresAt <= this.deps.clock.now()) {
      const reason = grantEndReason(now2 ?? grant, now2?.state === 'revoked' ? 'revoked' : 'expired');
      await s.end(reason);
      throw new Error(reason.message);
    }
    return s;
  }

  /** Warn every live session (drain), the way the expiry warning reaches each client. */
  warnAll(message: string, msLeft: number): void {
    for (const s of this.list()) s.warn(message, msLeft);
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
    return this.terminateWhere((s) => lockMatches(lock, { identity: s.identity, target: s.target.name, grantId: s.grant.id }), lockEndReason(lock));
  }

  /** A grant's end moved later: its live sessions here continue to the new end. */
  grantExtended(grant: GrantRecord): number {
    const hit = this.list().filter((s) => s.grant.id === grant.id);
    for (const s of hit) s.extendTo(grant.expiresAt);
    return hit.length;
  }

  /** Warn every live session matching pred (e.g. working hours closing). */
  warnWhere(pred: (s: Session) => boolean, message: (s: Session) => string, msLeft: number): number {
    const hit = this.list().filter(pred);
    for (const s of hit) s.warn(message(s), msLeft);
    return hit.length;
  }

  async grantEnded(grant: GrantRecord, why: 'expired' | 'revoked'): Promise<number> {
    return this.terminateWhere((s) => s.grant.id === grant.id, grantEndReason(grant, why));
  }

  /**
   * Revoke one lease through the revoke of the kind that minted it; one at a time per lease (a
   * second call waits for the first, then tries again). The lease is marked revoked only when that
   * revoke confirmed. Otherwise it stays a standing privilege: the error and attempt count are
   * stored, the first failure alerts, and it is tried again with backoff (here, and by any
   * gateway's reaper). Throws the revoke's error.
   */
  revokeLease(l: LeaseRecord): Promise<void> {
    const before = this.revoking.get(l.id) ?? Promise.resolve();
    const run = before.catch(() => undefined).then(() => this.revokeOnce(l));
    this.revoking.set(l.id, run);
    const forget = () => { if (this.revoking.get(l.id) === run) this.revoking.delete(l.id); };
    run.then(forget, forget);
    return run;
  }

  private async revokeOnce(l: LeaseRecord): Promise<void> {
    this.retries.get(l.id)?.cancel();
    this.retries.delete(l.id);
    l.state = 'revoking';
    l.attempts = (l.attempts ?? 0) + 1;
    // Without the store the lease is revoked on the target all the same (fail closed); the lease row
    // stays unrevoked and the reaper revokes it again (idempotent) once the store is back.
    if (!this.deps.storeLost?.()) {
      await this.deps.store.updateLease(l).catch((e) => this.deps.log.error({ err: (e as Error).message, lease: l.id }, 'lease state cannot be stored; revoking it anyway'));
    }
    let detail: string;
    try {
      const target = this.deps.target(l.target);
      if (!target) throw new Error(`target ${l.target} is no longer configured`);
      // The protocol of the session that minted it: known here while it is live; otherwise read, but
      // never waited for while the store is lost (the target's protocol then).
      const live = l.sessionId ? this.live.get(l.sessionId) : undefined;
      const session = live || !l.sessionId || this.deps.storeLost?.() ? null : await this.deps.store.getSession(l.sessionId).catch(() => null);
      const protocol = live?.protocol ?? session?.protocol ?? target.protocol;
      const mod = this.deps.module(protocol);
      if (!mod) throw new Error(`no protocol module "${protocol}" is loaded`);
      // Only the kind's own revoke, and only its explicit confirmation, makes the lease revoked.
      detail = String((await revokeWithModule(mod, this.deps.ctx(mod.name), target, l)).detail ?? '');
    } catch (e) {
      const failed = l.attempts;
      l.error = (e as Error).message;
      l.retryAt = this.deps.clock.now() + revokeBackoff(failed, this.deps.revokeRetry);
      await this.deps.store.updateLease(l).catch(() => undefined);
      await this.deps.audit.append('system', 'lease.revoke_failed', l.id, {
        session: l.sessionId, target: l.target, kind: l.kind, error: l.error, attempts: failed, retryAt: l.retryAt,
      }).catch(() => undefined);
      if (failed === 1) {
        this.deps.notify({ kind: 'standing_privilege', lease: l.id, target: l.target, leaseKind: l.kind, session: l.sessionId, error: l.error });
      }
      this.scheduleRetry(l);
      throw e;
    }
    l.state = 'revoked';
    l.revokedAt = this.deps.clock.now();
    l.error = null;
    l.retryAt = null;
    // Gone on the target: a failure to record it (store unavailable) leaves the row for the reaper.
    const stored = this.deps.store.updateLease(l);
    const audited = stored.then(() => this.deps.audit.append('system', 'lease.revoked', l.id, { session: l.sessionId, target: l.target, kind: l.kind, data: l.data, detail, attempts: l.attempts }));
    if (this.deps.storeLost?.()) {
      // A lost store may hang rather than fail: the revoke is confirmed on the target, its record
      // is written when the store answers (or the reaper revokes the row again, idempotent).
      audited.catch((e: Error) => this.deps.log.warn({ err: e.message, lease: l.id }, 'revoked lease not recorded yet (store lost)'));
      return;
    }
    await audited;
  }

  /** Try a failed revoke again when its backoff is over (unless it is revoked meanwhile, or the gateway stops). */
  private scheduleRetry(l: LeaseRecord): void {
    if (this.stopped || this.retries.has(l.id) || l.retryAt === null || l.retryAt === undefined) return;
    const timer = this.deps.clock.setTimer(Math.max(0, l.retryAt - this.deps.clock.now()), () => {
      if (this.retries.get(l.id) !== timer) return;
      this.retries.delete(l.id);
      void (async () => {
        const now = await this.deps.store.getLease(l.id);
        if (!now || now.state === 'revoked' || this.stopped) return;
        if (now.sessionId && this.live.has(now.sessionId)) return;
        await this.revokeLease(now);
      })().catch((e) => this.deps.log.warn({ err: (e as Error).message, lease: l.id }, 'revoke retry failed'));
    });
    this.retries.set(l.id, timer);
  }

  /** Standing privileges now (see standingPrivileges), as this gateway sees them. */
  standing(): Promise<LeaseRecord[]> {
    return standingPrivileges(this.deps.store, (id) => this.live.has(id), this.deps.gatewayId, this.deps.clock.now());
  }

  /** No more retries (the gateway stops; the next start's reaper takes over). */
  stop(): void {
    this.stopped = true;
    this.memory.stop();
    for (const t of this.retries.values()) t.cancel();
    this.retries.clear();
  }

  /**
   * The reaper: every lease without a live session in this gateway is revoked (after a crash, a
   * failed teardown, or a session another gateway instance lost); one whose revoke failed is tried
   * again once its backoff is over. Sessions this gateway owned but no longer runs are marked ended.
   */
  async reap(): Promise<{ leases: number; sessions: number; failed: number }> {
    let leases = 0;
    let failed = 0;
    let sessions = 0;
    const liveIds = new Set(this.live.keys());
    for (const s of await this.deps.store.listSessions({ state: 'active' })) {
      if (s.gatewayId !== this.deps.gatewayId || liveIds.has(s.id)) continue;
      // A clean stop ends every session (gateway_shutdown): one still active here was cut by a crash
      // (or by a store that could not record its end).
      s.state = 'ended';
      s.endedAt = this.deps.clock.now();
      s.endReason = `${GATEWAY_CRASH}: the gateway stopped without ending the session (crash, kill or lost store)`;
      await this.deps.store.updateSession(s);
      await this.deps.audit.append('system', 'session.ended', s.id, { target: s.target, protocol: s.protocol, reason: GATEWAY_CRASH, message: s.endReason });
      sessions++;
    }
    const now = this.deps.clock.now();
    for (const l of await this.deps.store.listLeases({ state: ['pending', 'active', 'revoking'] })) {
      if (l.sessionId && liveIds.has(l.sessionId)) continue;
      // Grant-level leases end with their grant (proxy/grant-leases.ts reaps them).
      if (isGrantLease(l)) continue;
      if (this.revoking.has(l.id)) continue;
      // A failed revoke waits for its backoff (a retry is scheduled for it here, whichever gateway failed it).
      if (l.retryAt && l.retryAt > now) { this.scheduleRetry(l); continue; }
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

/**
 * Standing privileges: leases not revoked whose session is not running (on this gateway, or
 * active on another gateway of the same store): a revoke that failed and waits for its retry, or
 * one the reaper has not reached yet. Nobody should hold any; the dashboard and
 * GET /api/v1/leases?standing=1 show them with their last error and attempts.
 */
export async function standingPrivileges(store: Store, isLive: (sessionId: string) => boolean, gatewayId?: string, now = Date.now()): Promise<LeaseRecord[]> {
  const leases = await store.listLeases({ state: ['pending', 'active', 'revoking'] });
  const out: LeaseRecord[] = [];
  for (const l of leases) {
    // A grant-level lease (directory-group membership) is what its running grant entitles to, unless its revoke failed.
    if (isGrantLease(l)) {
      if (!l.error && grantRuns(await store.getGrant(l.grantId), now)) continue;
      out.push(l);
      continue;
    }
    if (l.sessionId && isLive(l.sessionId)) continue;
    if (l.sessionId && gatewayId !== undefined) {
      const s = await store.getSession(l.sessionId);
      if (s && s.state === 'active' && s.gatewayId !== gatewayId) continue;
    }
    out.push(l);
  }
  return out;
}

/** A withSession client that is a connection close-first can wait for and destroy (a socket, not an emitter). */
function isConnection(c: SessionMeta['client']): c is ClientConnection {
  return !!c && typeof (c as { destroy?: unknown }).destroy === 'function' && 'destroyed' in c;
}

export type { Session };
export type { CommandRuleConfig };
