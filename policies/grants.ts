/** Grants: the active grant of an identity, a new grant and what its audit event says, expiry, revocation. */
import { randomUUID } from 'node:crypto';
import type { Actor, PolicyTarget } from './config.js';
import type { GrantRecord, RequestRecord, Store } from '../proxy/store/types.js';
import { PolicyError } from './errors.js';
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
      endedAt: null, endedBy: null, endReason: null, used: false,
    };
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
    await this.audit('system', 'grant.expired', out.g.id, { identity: out.g.identity, target: out.g.target, role: out.g.role, used: out.g.used });
    this.grantEnded(out.g, 'expired');
  }

  async revokeGrant(actor: Actor, grantId: string, reason: string): Promise<GrantRecord> {
    const why = typeof reason === 'string' && reason.trim() ? reason.trim().slice(0, 2000) : `revoked by ${actor.sub}`;
    const check = async (tx: Store) => {
      const g = typeof grantId === 'string' && grantId ? await tx.getGrant(grantId) : null;
      if (!g) throw new PolicyError('not_found', 'no such grant');
      if (!this.mayRevoke(actor, g)) throw new PolicyError('not_approver', 'only the grant holder or an approver can revoke this grant');
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
    this.grantTimers.get(g.id)?.cancel();
    this.grantTimers.delete(g.id);
    await this.audit(actor.via === 'system' ? 'system' : actor.sub, 'grant.revoked', g.id, { identity: g.identity, target: g.target, role: g.role, reason: why });
    this.grantEnded(g, 'revoked');
    return g;
  }

  protected mayRevoke(actor: Actor, g: GrantRecord): boolean {
    if (actor.via === 'system' && actor.sub === 'system') return true;
    if (actor.sub === g.identity) return true;
    const groups = this.approverGroups();
    return actor.groups.some((x) => groups.has(x));
  }
}
