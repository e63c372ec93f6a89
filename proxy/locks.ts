import { randomUUID } from 'node:crypto';
import type { Clock } from '../policies/clock.js';
import { parseDuration } from '../policies/config.js';
import type { LockRecord, LockScope, Store } from './store/types.js';
import type { AuditLog } from './audit.js';
import type { SessionManager } from './sessions.js';
import { lockMatches } from './sessions.js';
import { RefusedError } from './errors.js';

/**
 * Locks: a kill switch on an identity, a target or a grant. Creating one ends the matching live
 * sessions at once and refuses new ones; removing one is audited. The API, the portal and the CLI
 * (through the API) share this one implementation.
 */
export class Locks {
  constructor(private readonly deps: {
    store: Store;
    clock: Clock;
    audit: Pick<AuditLog, 'append'>;
    sessions: Pick<SessionManager, 'applyLock'>;
  }) {}

  /** Locks in force now. */
  active(): Promise<LockRecord[]> {
    return this.deps.store.listLocks({ active: true, at: this.deps.clock.now() });
  }

  list(opts: { active: boolean }): Promise<LockRecord[]> {
    return this.deps.store.listLocks({ active: opts.active, at: this.deps.clock.now() });
  }

  /** The active lock on identity `sub`, if any. */
  async identityLock(sub: string): Promise<LockRecord | null> {
    return (await this.active()).find((l) => l.scope === 'identity' && l.value === sub) ?? null;
  }

  /** The first active lock that covers this identity, target or grant. */
  async covering(s: { identity: string; target: string; grantId: string }): Promise<LockRecord | null> {
    return (await this.active()).find((l) => lockMatches(l, s)) ?? null;
  }

  /** Lock, audit, and end the live sessions it covers. `ttl`: lifted automatically after this long. */
  async create(by: string, input: { scope: LockScope; value: string; reason: string; ttl?: number | string }): Promise<{ lock: LockRecord; sessionsEnded: number }> {
    const now = this.deps.clock.now();
    let expiresAt: number | null = null;
    if (input.ttl !== undefined) {
      try { expiresAt = now + parseDuration(input.ttl); } catch { throw new RefusedError('invalid', 'ttl: a duration', 'ttl'); }
    }
    const lock: LockRecord = { id: randomUUID(), scope: input.scope, value: input.value, reason: input.reason, createdBy: by, createdAt: now, expiresAt, removedAt: null, removedBy: null };
    await this.deps.store.insertLock(lock);
    await this.deps.audit.append(by, 'lock.created', lock.id, { scope: lock.scope, value: lock.value, reason: lock.reason, expiresAt });
    const sessionsEnded = await this.deps.sessions.applyLock(lock);
    return { lock, sessionsEnded };
  }

  /** Lift a lock (audited); refused when there is no such active lock. */
  async remove(id: string, by: string): Promise<LockRecord> {
    const l = (await this.deps.store.listLocks({})).find((x) => x.id === id);
    if (!l || l.removedAt) throw new RefusedError('not_found', 'no such active lock');
    l.removedAt = this.deps.clock.now();
    l.removedBy = by;
    await this.deps.store.updateLock(l);
    await this.deps.audit.append(by, 'lock.removed', l.id, { scope: l.scope, value: l.value });
    return l;
  }
}

/** What a locked identity is told. */
export function lockedMessage(sub: string, lock: LockRecord): string {
  return `${sub} is locked: ${lock.reason} (lock ${lock.id} by ${lock.createdBy}); ask the SOC to lift it`;
}
