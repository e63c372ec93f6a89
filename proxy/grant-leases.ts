/**
 * Grant-level leases: what a grant itself entitles to, for as long as it runs, without any session.
 * Today one kind, `directory-group`: a role with `ownAccountGroups: [..]` puts the person's OWN
 * directory account (found by the directory's personAttribute, their email) into those groups when
 * the grant starts, and takes it out when the grant expires, is revoked, or a lock covers it.
 *
 * The rule is one reconcile pass, run at start-up, on the reaper's timer and whenever a grant or lock
 * changes here: a grant that runs, is not locked and whose role names ownAccountGroups has one live
 * lease; every other live grant-level lease is revoked. So a crash (kill -9) is repaired by the next
 * start from the stored leases alone, and several nodes converge on the same state: lease ids are
 * derived from the grant (`<grant>.directory-group.<n>`), so two nodes minting at once collide in
 * the store and only one goes on. The lease is stored BEFORE the membership is added; a revoke whose
 * stored DN or groups do not match the directory and the configuration now is refused (a tampered
 * store must not change other memberships) and stays a standing privilege, alerted and retried.
 */
import type { Logger } from 'pino';
import type { Clock } from '../policies/clock.js';
import type { RoleConfig, TargetConfig } from '../protocols/config.js';
import type { Directory } from '../protocols/directory.js';
import { GROUP_KIND, createMembership, revokeMembership, type GroupLeaseData } from '../protocols/directory-leases.js';
import { isDn } from '../protocols/ldap-escape.js';
import type { AuditLog } from './audit.js';
import type { GrantRecord, LeaseRecord, LockRecord, Store } from './store/types.js';
import { grantRuns, isGrantLease, ownAccountGroupsOf } from './grant-lease-kinds.js';
export { ownAccountGroupsOf } from './grant-lease-kinds.js';
import { lockMatches } from './sessions.js';

export interface GrantLeaseDeps {
  store: Store;
  clock: Clock;
  log: Logger;
  audit: Pick<AuditLog, 'append'>;
  target(name: string): TargetConfig | undefined;
  directory(): Directory | null;
  notify(event: Record<string, unknown>): void;
  /** How long after a failed mint (or revoke) the next pass tries again (default 60 s). */
  retryMs?: number;
}

/** The audit actions after which a pass runs at once (grants and locks that change what should exist). */
export const GRANT_LEASE_TRIGGERS: ReadonlySet<string> = new Set([
  'grant.created', 'grant.expired', 'grant.revoked', 'grant.checked_in', 'grant.extended', 'lock.created', 'lock.removed',
]);

function roleOf(t: TargetConfig | undefined, role: string): RoleConfig | undefined {
  return t?.roles.find((r) => r.name === role);
}

export class GrantLeases {
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;
  /** Grants whose last mint failed here, and when (the next try waits retryMs). */
  private mintFailedAt = new Map<string, number>();
  constructor(private readonly deps: GrantLeaseDeps) {}

  private get retryMs(): number { return this.deps.retryMs ?? 60_000; }

  private ctx() {
    return { state: { directory: this.deps.directory() }, log: this.deps.log };
  }

  /** The person's value of the personAttribute (their email), or null. */
  private async personOf(sub: string): Promise<string | null> {
    return (await this.deps.store.getIdentity(sub))?.email ?? null;
  }

  /**
   * Why a request for target/role by `sub` cannot be served (null: fine): the role elevates the
   * person's own directory account, and they have none (or there is no directory).
   */
  async refusal(principal: { sub: string; email?: string | null }, target: string, role: string | undefined): Promise<string | null> {
    const t = this.deps.target(target);
    const r = role ? roleOf(t, role) : t?.roles.length === 1 ? t.roles[0] : undefined;
    if (!ownAccountGroupsOf(r).length) return null;
    const dir = this.deps.directory();
    if (!dir) return `the role ${r!.name} of ${target} elevates your directory account, but no directory is configured`;
    const person = principal.email ?? await this.personOf(principal.sub);
    const attr = dir.config.personAttribute;
    if (!person) return `the role ${r!.name} of ${target} elevates your own directory account, and your identity has no ${attr} to find it by`;
    const found = await dir.with((c) => c.findPerson(person)).catch((e: Error) => { throw new Error(`the directory cannot be searched for your account: ${e.message}`); });
    if (!found) return `the role ${r!.name} of ${target} elevates your own directory account, and the directory has no account with ${attr} ${person}`;
    return null;
  }

  /** Run a pass now (another one follows if asked for while one runs). Resolves when done. */
  reconcile(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.running) { this.again = true; return this.running; }
    const run = (async () => {
      do {
        this.again = false;
        try { await this.pass(); } catch (e) { this.deps.log.error({ err: (e as Error).message }, 'grant leases: reconcile pass failed'); }
      } while (this.again && !this.stopped);
    })();
    this.running = run.finally(() => { this.running = null; });
    return this.running;
  }

  /** A pass soon (an audit event said a grant or lock changed). */
  kick(): void { void this.reconcile(); }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.running?.catch(() => undefined);
  }

  /** Whether grant g should hold its directory-group lease now. */
  private wanted(g: GrantRecord | null, locks: LockRecord[], now: number): g is GrantRecord {
    if (!g || !grantRuns(g, now)) return false;
    if (locks.some((l) => lockMatches(l, { identity: g.identity, target: g.target, grantId: g.id }))) return false;
    return ownAccountGroupsOf(roleOf(this.deps.target(g.target), g.role)).length > 0;
  }

  private async pass(): Promise<void> {
    const now = this.deps.clock.now();
    const locks = await this.deps.store.listLocks({ active: true, at: now });
    const live = (await this.deps.store.listLeases({ state: ['pending', 'active', 'revoking'] })).filter(isGrantLease);
    const held = new Set<string>();
    for (const l of live) {
      if (this.stopped) return;
      const g = await this.deps.store.getGrant(l.grantId);
      if (this.wanted(g, locks, now) && l.state !== 'revoking') {
        held.add(g.id);
        // Stored but never finished (a crash between storing and adding): add again (idempotent).
        if (l.state === 'pending') await this.finish(l).catch(() => undefined);
        continue;
      }
      if (l.retryAt && l.retryAt > now) continue;
      await this.revoke(l, g).catch(() => undefined);
    }
    const grants = await this.deps.store.listGrants({ state: 'active', limit: 100_000 });
    for (const g of grants) {
      if (this.stopped) return;
      if (held.has(g.id) || !this.wanted(g, locks, now)) continue;
      const failed = this.mintFailedAt.get(g.id);
      if (failed !== undefined && now - failed < this.retryMs) continue;
      await this.mint(g).catch(() => undefined);
    }
    for (const id of this.mintFailedAt.keys()) if (!grants.some((g) => g.id === id)) this.mintFailedAt.delete(id);
  }

  /** The configured groups of the grant's role, as DNs (a cn is looked up). */
  private async groupsOf(target: string, role: string): Promise<string[]> {
    const refs = ownAccountGroupsOf(roleOf(this.deps.target(target), role));
    const dir = this.deps.directory();
    if (!dir) throw new Error('no directory is configured (the `directory` section)');
    return dir.with(async (c) => Promise.all(refs.map((g) => c.resolveGroup(g))));
  }

  /** The groups the configuration elevates to now, as DNs (those that resolve; a revoke refuses anything else). */
  private async allowedGroups(target: string, role: string): Promise<string[]> {
    const refs = ownAccountGroupsOf(roleOf(this.deps.target(target), role));
    const dir = this.deps.directory();
    if (!dir || !refs.length) return [];
    return dir.with(async (c) => {
      const out: string[] = [];
      for (const g of refs) {
        if (g.includes('=') && isDn(g)) out.push(g);
        else { try { out.push(await c.resolveGroup(g)); } catch { /* gone: nothing to allow */ } }
      }
      return out;
    });
  }

  private async mint(g: GrantRecord): Promise<void> {
    const prior = await this.deps.store.listLeases({ grantId: g.id });
    const n = prior.filter((l) => l.kind === GROUP_KIND).length;
    let data: GroupLeaseData & { identity: string };
    try {
      const person = await this.personOf(g.identity);
      if (!person) throw new Error(`the identity ${g.identity} has no email to find its directory account by`);
      data = { person, groups: await this.groupsOf(g.target, g.role), identity: g.identity };
    } catch (e) {
      this.mintFailedAt.set(g.id, this.deps.clock.now());
      await this.deps.audit.append('system', 'lease.mint_failed', null, { grant: g.id, target: g.target, kind: GROUP_KIND, error: (e as Error).message }).catch(() => undefined);
      this.deps.log.warn({ err: (e as Error).message, grant: g.id }, 'grant leases: directory-group lease not minted');
      throw e;
    }
    const rec: LeaseRecord = {
      id: `${g.id}.${GROUP_KIND}.${n}`, sessionId: null, grantId: g.id, target: g.target, kind: GROUP_KIND, state: 'pending',
      data: data as unknown as Record<string, unknown>, createdAt: this.deps.clock.now(), activatedAt: null, revokedAt: null, error: null, attempts: 0, retryAt: null,
    };
    // Stored BEFORE the membership exists; another node that got here first wins (same id).
    try { await this.deps.store.insertLease(rec); } catch { return; }
    await this.deps.audit.append(g.identity, 'lease.created', rec.id, { grant: g.id, target: g.target, kind: rec.kind, data: rec.data });
    await this.finish(rec);
  }

  /** Add the membership of a stored pending lease; on failure, undo what may exist and mark it revoked (or standing). */
  private async finish(rec: LeaseRecord): Promise<void> {
    try {
      const { memberDn } = await createMembership(this.ctx(), rec.data as unknown as GroupLeaseData);
      rec.data = { ...rec.data, memberDn };
      rec.state = 'active';
      rec.activatedAt = this.deps.clock.now();
      await this.deps.store.updateLease(rec);
    } catch (e) {
      this.mintFailedAt.set(rec.grantId, this.deps.clock.now());
      await this.deps.audit.append('system', 'lease.mint_failed', rec.id, { grant: rec.grantId, target: rec.target, kind: rec.kind, error: (e as Error).message }).catch(() => undefined);
      await this.revoke(rec, await this.deps.store.getGrant(rec.grantId)).catch(() => undefined);
      throw e;
    }
  }

  /** Take the membership away (from the stored data, checked against the directory and the configuration). */
  private async revoke(l: LeaseRecord, g: GrantRecord | null): Promise<void> {
    l.state = 'revoking';
    l.attempts = (l.attempts ?? 0) + 1;
    await this.deps.store.updateLease(l).catch(() => undefined);
    try {
      await revokeMembership(this.ctx(), l, await this.allowedGroups(l.target, g?.role ?? ''));
    } catch (e) {
      l.error = (e as Error).message;
      l.retryAt = this.deps.clock.now() + this.retryMs;
      await this.deps.store.updateLease(l).catch(() => undefined);
      await this.deps.audit.append('system', 'lease.revoke_failed', l.id, { grant: l.grantId, target: l.target, kind: l.kind, error: l.error, attempts: l.attempts, retryAt: l.retryAt }).catch(() => undefined);
      if (l.attempts === 1) this.deps.notify({ kind: 'standing_privilege', lease: l.id, target: l.target, leaseKind: l.kind, grant: l.grantId, error: l.error });
      this.deps.log.error({ err: l.error, lease: l.id }, 'grant leases: directory-group membership not removed');
      throw e;
    }
    Object.assign(l, { state: 'revoked', revokedAt: this.deps.clock.now(), error: null, retryAt: null });
    await this.deps.store.updateLease(l);
    const why = !g ? 'grant gone' : g.state !== 'active' ? `grant ${g.state}` : g.expiresAt <= this.deps.clock.now() ? 'grant expired' : 'locked or no longer configured';
    await this.deps.audit.append('system', 'lease.revoked', l.id, { grant: l.grantId, target: l.target, kind: l.kind, data: l.data, detail: `directory-group membership removed (${why})`, attempts: l.attempts });
  }
}
