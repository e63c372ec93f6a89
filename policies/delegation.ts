/**
 * Delegation: an approver hands their approvals to another approver for a time window (a holiday).
 * While it lasts the delegate may decide every stage the delegator could (by the delegator's
 * groups as the IdP last reported them); the decision records both names. Never a decision on the
 * delegate's own request, nor on the delegator's, and never twice for one person in one request.
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { Actor, PolicyTarget } from './config.js';
import type { ApprovalRecord, ApprovalStage, DelegationRecord, RequestRecord, Store } from '../proxy/store/types.js';
import { invalidBody, PolicyError } from './errors.js';
import { MAX_DURATION_MS, parseRequestedDuration } from './hours.js';
import { portalPath, recipients } from './notices.js';
import { PolicyCheckout } from './checkout.js';

const when = z.union([z.number().int().nonnegative(), z.string().trim().min(1)]);

const delegationBody = z.object({
  delegate: z.string().trim().min(1, 'the identity to delegate to').max(200),
  /** Start (epoch ms or an ISO date-time); default now. */
  from: when.optional(),
  /** End (epoch ms or an ISO date-time), or a duration from the start. */
  until: when.optional(),
  duration: z.union([z.number().positive(), z.string().trim().min(1)]).optional(),
  reason: z.string().max(2000, 'at most 2000 characters').refine((s) => s.trim().length > 0, 'a reason (why, e.g. holiday)'),
}).strict();

/** Who a decision is made as: the person themselves, or a delegate for the delegator. */
export interface Acting { onBehalfOf: string | null }


function timeOf(v: number | string, field: string): number {
  const t = typeof v === 'number' ? v : Date.parse(v);
  if (!Number.isFinite(t)) throw new PolicyError('invalid', `${field}: a time as epoch milliseconds or an ISO date-time such as 2026-12-24T08:00:00Z`, field);
  return t;
}

export abstract class PolicyDelegation<T extends PolicyTarget = PolicyTarget> extends PolicyCheckout<T> {
  /** Delegate `p`'s approvals (body: delegate, from?, until | duration, reason). */
  async delegate(p: Actor, body: unknown): Promise<DelegationRecord> {
    const parsed = delegationBody.safeParse(body);
    if (!parsed.success) throw invalidBody(parsed.error);
    const b = parsed.data;
    if (!this.isApprover(p)) throw new PolicyError('not_approver', 'only approvers can delegate their approvals');
    if (b.delegate === p.sub) throw new PolicyError('invalid', 'delegate: you cannot delegate to yourself', 'delegate');
    const to = await this.store.getIdentity(b.delegate);
    if (!to) throw new PolicyError('invalid', `delegate: no identity ${JSON.stringify(b.delegate.slice(0, 80))} has signed in to Tollgate`, 'delegate');
    if (!this.isApprover({ sub: to.sub, groups: to.groups, mfaAt: null, via: 'system' })) {
      throw new PolicyError('invalid', `delegate: ${to.sub} is not an approver (a delegate must be in an approver group)`, 'delegate');
    }
    const now = this.clock.now();
    const startsAt = b.from === undefined ? now : timeOf(b.from, 'from');
    if (startsAt < now - 60_000) throw new PolicyError('invalid', 'from: a delegation cannot start in the past', 'from');
    if ((b.until === undefined) === (b.duration === undefined)) throw new PolicyError('invalid', 'until: give either until or duration', 'until');
    const endsAt = b.until !== undefined ? timeOf(b.until, 'until') : startsAt + parseRequestedDuration(b.duration!);
    if (endsAt <= startsAt) throw new PolicyError('invalid', 'until: must be after the start', 'until');
    if (endsAt - startsAt > MAX_DURATION_MS) throw new PolicyError('invalid', 'until: a delegation lasts at most 366 days', 'until');
    const rec: DelegationRecord = {
      id: randomUUID(), delegator: p.sub, delegate: to.sub, startsAt, endsAt, reason: b.reason.trim(), createdAt: now, createdBy: p.sub,
      revokedAt: null, revokedBy: null,
    };
    await this.store.insertDelegation(rec);
    await this.audit(p.sub, 'delegation.created', rec.id, { delegator: rec.delegator, delegate: rec.delegate, startsAt, endsAt, reason: rec.reason });
    this.notify({
      kind: 'delegation.created', to: recipients([rec.delegate]), path: portalPath.delegations(),
      delegationId: rec.id, delegator: rec.delegator, delegate: rec.delegate, startsAt, endsAt, reason: rec.reason,
    });
    return rec;
  }

  /** End a delegation early: its delegator, its delegate (declining it), or `opts.admin` (the SOC). */
  async revokeDelegation(p: Actor, id: string, opts: { admin?: boolean } = {}): Promise<DelegationRecord> {
    const check = async (tx: Store) => {
      const d = typeof id === 'string' && id ? await tx.getDelegation(id) : null;
      if (!d) throw new PolicyError('not_found', 'no such delegation');
      if (d.delegator !== p.sub && d.delegate !== p.sub && !opts.admin) throw new PolicyError('not_approver', 'only its delegator, its delegate or the SOC can end a delegation');
      if (d.revokedAt !== null) throw new PolicyError('conflict', 'this delegation was already ended');
      if (d.endsAt <= this.clock.now()) throw new PolicyError('conflict', 'this delegation is already over');
      return d;
    };
    const d = await this.decide(check, async (tx, d) => {
      const done = await tx.claim('delegations', d.id, { revokedAt: null }, { revokedAt: this.clock.now(), revokedBy: p.sub });
      if (!done) throw new PolicyError('conflict', 'this delegation was already ended');
      return done;
    });
    await this.audit(p.sub, 'delegation.revoked', d.id, { delegator: d.delegator, delegate: d.delegate });
    return d;
  }

  /** Delegations `p` gave or received that are not over (all: every one, for the SOC). */
  async delegationsFor(p: Actor, opts: { all?: boolean } = {}): Promise<DelegationRecord[]> {
    const now = this.clock.now();
    if (opts.all) return this.store.listDelegations({ endsAfter: now });
    const [given, received] = await Promise.all([
      this.store.listDelegations({ delegator: p.sub, endsAfter: now }),
      this.store.listDelegations({ delegate: p.sub, endsAfter: now }),
    ]);
    return [...given, ...received].sort((a, b) => a.startsAt - b.startsAt);
  }

  /**
   * As whom `p` may decide this stage of `r` now: as themselves (a member of the stage's groups), or
   * for a delegator who is, who is not the requester and whose decision is not in yet; null: not at all.
   */
  protected async actingFor(p: Actor, r: RequestRecord, stage: ApprovalStage, approvals: ApprovalRecord[], tx: Store = this.store): Promise<Acting | null> {
    if (stage.groups.some((g) => p.groups.includes(g))) return { onBehalfOf: null };
    const decided = new Set(approvals.flatMap((a) => [a.approver, a.onBehalfOf ?? null]).filter((x): x is string => !!x));
    for (const d of await tx.listDelegations({ delegate: p.sub, activeAt: this.clock.now() })) {
      if (d.delegator === r.requester || d.delegator === p.sub || decided.has(d.delegator)) continue;
      const delegator = await tx.getIdentity(d.delegator);
      if (delegator && stage.groups.some((g) => delegator.groups.includes(g))) return { onBehalfOf: d.delegator };
    }
    return null;
  }

  /** Active delegates of the members of `groups` (they hear of requests too). */
  protected async delegatesOf(groups: string[]): Promise<string[]> {
    const now = this.clock.now();
    const out: string[] = [];
    for (const d of await this.store.listDelegations({ activeAt: now })) {
      const delegator = await this.store.getIdentity(d.delegator);
      if (delegator && delegator.groups.some((g) => groups.includes(g))) out.push(d.delegate);
    }
    return out;
  }
}
