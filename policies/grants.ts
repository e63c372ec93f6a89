/** Grants: the active grant of an identity, a new grant and what its audit event says, expiry, revocation. */
import { randomUUID } from 'node:crypto';
import type { Actor, PolicyTarget } from './config.js';
import type { GrantRecord, RequestRecord, Store } from '../proxy/store/types.js';
import { PolicyError } from './errors.js';
import { recipients, portalPath } from './notices.js';
import { PolicyTimers } from './timers.js';

export abstract class PolicyGrants<T extends PolicyTarget = PolicyTarget> extends PolicyTimers<T> {
  async activeGrant(sub: string, target: string, role?: string): Promise<GrantRecord | null> {
    const now = this.clock.now();
    const grants = await this.store.listGrants({ identity: sub, state: 'active', target });
    const live = grants
      .filter((g) => g.identity === sub && g.target === target && (role === undefined || g.role === role))
      .filter((g) => g.state === 'active' && g.startsAt <= now && g.expiresAt > now)
      .sort((a, b) => b.expiresAt - a.expiresAt);
    return live[0] ?? null;
  }

  protected grantData(g: GrantRecord): Record<string, unknown> {
    return {
      identity: g.identity, target: g.target, role: g.role, requestId: g.requestId, startsAt: g.startsAt,
      expiresAt: g.expiresAt, breakGlass: g.breakGlass,
    };
  }

  protected newGrant(r: Pick<RequestRecord, 'id' | 'requester' | 'target' | 'role' | 'durationMs'>, now: number, breakGlass: boolean): GrantRecord {
    return {
      id: randomUUID(), requestId: r.id, identity: r.requester, target: r.target, role: r.role, state: 'active',
      startsAt: now, expiresAt: now + r.durationMs, breakGlass, createdAt: now,
      endedAt: null, endedBy: null, endReason: null, used: false, notifiedFor: null,
    };
  }

  /**
   * What else ends with a grant (upper layers add to it: pending extensions expire, a checked-out
   * account goes to the next in its queue). Runs after the end is committed and audited.
   */
  protected async grantClosed(_g: GrantRecord): Promise<void> {}

  private async closed(g: GrantRecord): Promise<void> {
    try { await this.grantClosed(g); } catch (e) {
      this.log?.error({ err: e instanceof Error ? e.message : String(e), grant: g.id }, 'work after a grant ended failed; the sweep retries it');
    }
  }

  /* ----------------------------------------------------------------- grants */

  /** A grant reached its end: the one gateway whose claim (active → expired) matches audits it and ends its sessions. */
  protected async onGrantDue(grantId: string): Promise<void> {
    const out = await this.exclusive(() => this.store.transaction(async (tx) => {
      const seen = await tx.getGrant(grantId);
      if (!seen || seen.state !== 'active') return null;
      const now = this.clock.now();
      if (seen.expiresAt > now) return { g: seen, expired: false };
      const g = await tx.claim('grants', grantId, { state: 'active', expiresAt: seen.expiresAt }, { state: 'expired', endedAt: now, endedBy: 'system', endReason: 'expired' });
      return g ? { g, expired: true } : null;
    }));
    if (!out) return;
    if (!out.expired) { this.armGrant(out.g); return; }
    this.disarmGrant(out.g.id);
    await this.audit('system', 'grant.expired', out.g.id, { identity: out.g.identity, target: out.g.target, role: out.g.role, used: out.g.used });
    this.grantEnded(out.g, 'expired');
    await this.closed(out.g);
  }

  /** The grant ends in expiryWarningMs: the one gateway whose claim of this end matches tells the holder. */
  protected async onGrantWarn(grantId: string): Promise<void> {
    const g = await this.store.getGrant(grantId);
    if (!g || g.state !== 'active' || (g.notifiedFor ?? null) === g.expiresAt) return;
    const claimed = await this.store.claim('grants', g.id, { state: 'active', expiresAt: g.expiresAt, notifiedFor: g.notifiedFor ?? null }, { notifiedFor: g.expiresAt });
    if (!claimed) return;
    this.notify({
      kind: 'grant.expiring', to: recipients([g.identity]), path: portalPath.access(),
      grantId: g.id, identity: g.identity, target: g.target, role: g.role, expiresAt: g.expiresAt, msLeft: Math.max(0, g.expiresAt - this.clock.now()),
    });
  }

  /**
   * Lengthen an active grant of the requester by `byMs` (an approved extension), inside the
   * deciding transaction; it keeps its id. Refused when the grant has ended meanwhile.
   */
  protected async extendInTx(tx: Store, r: RequestRecord, now: number): Promise<GrantRecord> {
    const g = r.extendsGrant ? await tx.getGrant(r.extendsGrant) : null;
    if (!g || g.identity !== r.requester || g.state !== 'active' || g.expiresAt <= now) {
      throw new PolicyError('conflict', 'the grant this extension is for has ended; request access anew');
    }
    const extended = await tx.claim('grants', g.id, { state: 'active', expiresAt: g.expiresAt }, { expiresAt: g.expiresAt + r.durationMs });
    if (!extended) throw new PolicyError('conflict', 'the grant changed meanwhile; try again');
    return extended;
  }

  /** After an extension committed: timers move, live sessions follow, the holder hears of it. */
  protected async grantExtended(actor: string, g: GrantRecord, r: RequestRecord, previousEnd: number): Promise<void> {
    this.armGrant(g);
    await this.audit(actor, 'grant.extended', g.id, { requestId: r.id, identity: g.identity, target: g.target, role: g.role, from: previousEnd, to: g.expiresAt, byMs: r.durationMs });
    this.hook('onGrantExtended', () => this.onGrantExtendedFn?.(g));
    this.notify({
      kind: 'grant.extended', to: recipients([g.identity]), path: portalPath.access(),
      grantId: g.id, requestId: r.id, identity: g.identity, target: g.target, role: g.role, expiresAt: g.expiresAt, previousExpiresAt: previousEnd,
    });
  }

  async revokeGrant(actor: Actor, grantId: string, reason: string): Promise<GrantRecord> {
    const why = typeof reason === 'string' && reason.trim() ? reason.trim().slice(0, 2000) : `revoked by ${actor.sub}`;
    return this.endGrant(actor, grantId, why, 'grant.revoked', (g) => {
      if (!this.mayRevoke(actor, g)) throw new PolicyError('not_approver', 'only the grant holder or an approver can revoke this grant');
    });
  }

  /** End an active grant now (revocation, check-in): `allowed` throws when the actor may not. */
  protected async endGrant(actor: Actor, grantId: string, why: string, action: string, allowed: (g: GrantRecord) => void): Promise<GrantRecord> {
    const check = async (tx: Store) => {
      const g = typeof grantId === 'string' && grantId ? await tx.getGrant(grantId) : null;
      if (!g) throw new PolicyError('not_found', 'no such grant');
      allowed(g);
      if (g.state !== 'active') throw new PolicyError('conflict', `this grant is already ${g.state}`);
      return g;
    };
    const g = await this.decide(check, async (tx, g) => {
      g.state = 'revoked';
      g.endedAt = this.clock.now();
      g.endedBy = actor.sub;
      g.endReason = why;
      await tx.updateGrant(g);
      return g;
    });
    this.disarmGrant(g.id);
    // The audit event is queued first (it stays before the sessions' ends in the chain), but the
    // live sessions are not kept waiting for its write: they end as soon as the revoke committed.
    const audited = this.audit(actor.via === 'system' ? 'system' : actor.sub, action, g.id, { identity: g.identity, target: g.target, role: g.role, reason: why });
    this.grantEnded(g, 'revoked');
    await audited;
    await this.closed(g);
    return g;
  }

  protected mayRevoke(actor: Actor, g: GrantRecord): boolean {
    if (actor.via === 'system' && actor.sub === 'system') return true;
    if (actor.sub === g.identity) return true;
    const groups = this.approverGroups();
    return actor.groups.some((x) => groups.has(x));
  }
}
