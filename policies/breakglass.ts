/** Break-glass: an immediate grant without approvers (a fresh second factor instead), an alert, and a review someone else must close. */
import { randomUUID } from 'node:crypto';
import type { Actor, PolicyTarget } from './config.js';
import type { BreakGlassReviewRecord, GrantRecord, RequestRecord, Store } from '../proxy/store/types.js';
import { invalidBody, PolicyError } from './errors.js';
import { fmtDuration, parseRequestedDuration } from './hours.js';
import { portalPath, recipients } from './notices.js';
import { breakGlassBody, PolicyRequests } from './requests.js';

export abstract class PolicyBreakGlass<T extends PolicyTarget = PolicyTarget> extends PolicyRequests<T> {
  /* ----------------------------------------------------------------- break-glass */

  async breakGlass(p: Actor, body: unknown): Promise<GrantRecord> {
    const allowed = this.cfg.breakGlass?.groups ?? [];
    if (!p.groups.some((g) => allowed.includes(g))) {
      throw new PolicyError('not_eligible', 'break-glass access is only for members of the break-glass groups');
    }
    if ((await this.exclusionsOf(p.sub)).breakGlass) {
      throw new PolicyError('not_eligible', 'an access review removed your break-glass access; ask the SOC if you need it back');
    }
    const parsed = breakGlassBody.safeParse(body);
    if (!parsed.success) {
      throw invalidBody(parsed.error);
    }
    const b = parsed.data;
    const { target, role } = this.resolveTargetRole(b);
    const durationMs = b.duration === undefined ? this.bgMaxMs : parseRequestedDuration(b.duration);
    if (durationMs > this.bgMaxMs) {
      throw new PolicyError('invalid', `duration: break-glass access lasts at most ${fmtDuration(this.bgMaxMs)}`, 'duration');
    }
    // No approver stands between break-glass and the target: a fresh second factor does.
    if (!this.mfaFresh(p)) throw new PolicyError('mfa_required', this.mfaMessage('break-glass access'));
    const now = this.clock.now();
    const reason = b.reason.trim();
    const req: RequestRecord = {
      id: randomUUID(), requester: p.sub, target: target.name, role, durationMs, reason, state: 'approved',
      risk: target.risk ?? 'medium', policy: 'break-glass', stages: [], currentStage: 0, stageDeadline: null, escalations: 0,
      mfaRequired: false, breakGlass: true, createdAt: now, decidedAt: now, decidedBy: 'system',
      decisionReason: 'break-glass: granted immediately, review pending', grantId: null,
    };
    const grant = this.newGrant(req, now, true);
    req.grantId = grant.id;
    const review: BreakGlassReviewRecord = {
      id: randomUUID(), grantId: grant.id, identity: p.sub, reason, state: 'open', openedAt: now,
      closedAt: null, closedBy: null, comment: null,
    };
    await this.store.transaction(async (tx) => {
      await tx.insertRequest(req);
      await tx.insertGrant(grant);
      await tx.insertReview(review);
    });
    await this.audit(p.sub, 'breakglass.used', grant.id, {
      requestId: req.id, reviewId: review.id, target: target.name, role, durationMs, reason, expiresAt: grant.expiresAt,
    });
    await this.audit(p.sub, 'grant.created', grant.id, this.grantData(grant));
    this.armGrant(grant);
    this.notify({
      kind: 'breakglass', to: recipients([], this.cfg.breakGlass?.reviewers ?? []), path: portalPath.breakGlassReviews(),
      identity: p.sub, target: target.name, role, reason, grantId: grant.id, reviewId: review.id, expiresAt: grant.expiresAt,
    });
    return grant;
  }

  /**
   * Why `p` may not close this review (null: may). Reviews are closed from outside: never by the
   * person who used break-glass nor by any member of a break-glass group, only by the reviewer
   * groups (breakGlass.reviewers; the gateway adds its SOC groups).
   */
  reviewRefusal(p: Actor, rv: Pick<BreakGlassReviewRecord, 'identity'>): PolicyError | null {
    if (rv.identity === p.sub) return new PolicyError('self_approval', 'someone other than the person who used break-glass must close its review');
    const bgGroups = this.cfg.breakGlass?.groups ?? [];
    const inBreakGlass = p.groups.filter((g) => bgGroups.includes(g));
    if (inBreakGlass.length) {
      return new PolicyError('self_approval', `a break-glass review must be closed by someone outside the break-glass groups (you are in ${inBreakGlass.join(', ')})`);
    }
    const reviewers = this.cfg.breakGlass?.reviewers ?? [];
    if (!p.groups.some((g) => reviewers.includes(g))) {
      return new PolicyError('not_approver', `only members of ${reviewers.length ? reviewers.join(', ') : 'the reviewer groups (breakGlass.reviewers)'} can close a break-glass review`);
    }
    return null;
  }

  /** Whether `p` is in a group that reviews break-glass use. */
  isReviewer(p: Actor): boolean {
    const reviewers = this.cfg.breakGlass?.reviewers ?? [];
    return p.groups.some((g) => reviewers.includes(g));
  }

  async closeReview(p: Actor, reviewId: string, comment: string): Promise<BreakGlassReviewRecord> {
    const note = typeof comment === 'string' ? comment.trim() : '';
    const check = async (tx: Store) => {
      const rv = typeof reviewId === 'string' && reviewId ? await tx.getReview(reviewId) : null;
      if (!rv) throw new PolicyError('not_found', 'no such break-glass review');
      const refusal = this.reviewRefusal(p, rv);
      if (refusal) throw refusal;
      if (rv.state !== 'open') throw new PolicyError('conflict', 'this review is already closed');
      if (!note) throw new PolicyError('invalid', 'comment: say what you checked', 'comment');
      return rv;
    };
    const rv = await this.decide(check, async (tx, rv) => {
      rv.state = 'closed';
      rv.closedAt = this.clock.now();
      rv.closedBy = p.sub;
      rv.comment = note.slice(0, 2000);
      await tx.updateReview(rv);
      return rv;
    });
    await this.audit(p.sub, 'breakglass.reviewed', rv.id, { grantId: rv.grantId, identity: rv.identity, comment: rv.comment });
    return rv;
  }
}
