/**
 * Access reviews (recertification): a review of one policy lists every eligibility (who may
 * request under it, from the groups the IdP last reported for each identity), every break-glass
 * group member and every active grant under it longer than a day. Reviewers confirm or revoke
 * each line; a revoked eligibility or break-glass membership becomes a Tollgate-side exclusion
 * (the IdP's groups are not Tollgate's to change) and the identity's live grants under it end.
 * Reviews run on a schedule (config `reviews`, once per slot across gateways: the slot names the
 * review) and on demand; an overdue review escalates once. Results export as CSV and JSON.
 */
import { createHash, randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { Actor, PolicyConfig, PolicyTarget, ReviewScheduleConfig } from './config.js';
import { parseDuration } from './config.js';
import type { AccessReviewRecord, ExclusionRecord, GrantRecord, IdentityRecord, ReviewLineRecord, Store } from '../proxy/store/types.js';
import type { TimerHandle } from './clock.js';
import { invalidBody, PolicyError } from './errors.js';
import { portalPath, recipients } from './notices.js';
import { PolicyWindows } from './windows.js';

const DAY = 86_400_000;
const SYSTEM_ACTOR: Actor = { sub: 'system', groups: [], mfaAt: null, via: 'system' };
/** The policy name break-glass lines carry. */
export const BREAK_GLASS = 'break-glass';

const startBody = z.object({
  policy: z.string().trim().min(1, 'the policy to review'),
  reviewers: z.array(z.string().trim().min(1)).min(1, 'at least one reviewer group').optional(),
  dueIn: z.union([z.number().positive(), z.string().trim().min(1)]).optional(),
}).strict();

const decideBody = z.object({
  decision: z.enum(['confirm', 'revoke']),
  comment: z.string().max(2000, 'at most 2000 characters').optional(),
}).strict();

export interface ReviewView extends AccessReviewRecord {
  lines: ReviewLineRecord[];
  counts: { total: number; decided: number; revoked: number };
}


/** A CSV cell (RFC 4180); a leading = + - @ or control character is neutralised so spreadsheets do not run it. */
function csvCell(v: unknown): string {
  let s = v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v);
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

const iso = (t: number | null) => (t === null ? '' : new Date(t).toISOString());

export abstract class PolicyReviews<T extends PolicyTarget = PolicyTarget> extends PolicyWindows<T> {
  private readonly reviewTimers = new Map<string, TimerHandle>();

  override stop(): void {
    super.stop();
    for (const h of this.reviewTimers.values()) h.cancel();
    this.reviewTimers.clear();
  }

  protected override async sweep(): Promise<void> {
    await super.sweep();
    const now = this.clock.now();
    for (const sch of this.cfg.reviews ?? []) {
      if (!this.running) return;
      await this.catchUp(`access review schedule ${sch.policy}`, () => this.schedule(sch, now), () => undefined);
    }
    for (const rv of await this.store.listAccessReviews({ state: 'open' })) {
      if (!this.running) return;
      if (rv.escalatedAt !== null) continue;
      if (rv.dueAt <= now) await this.catchUp(`access review ${rv.id} due`, () => this.escalate(rv.id), () => this.armDue(rv));
      else this.armDue(rv);
    }
  }

  /* ----------------------------------------------------------------- schedule */

  /** The schedule's first start: slots fall every `every` after it (kept in the store, so every gateway agrees). */
  private async anchorOf(sch: ReviewScheduleConfig, now: number): Promise<number> {
    const key = `access-review.anchor:${sch.policy}`;
    return this.store.transaction(async (tx) => {
      const v = await tx.getKv(key);
      if (v !== null && Number.isFinite(Number(v))) return Number(v);
      await tx.setKv(key, String(now));
      return now;
    });
  }

  /** Run the latest slot that is due (once: its id is the slot's) and arm the next one. */
  private async schedule(sch: ReviewScheduleConfig, now: number): Promise<void> {
    const every = parseDuration(sch.every);
    const anchor = await this.anchorOf(sch, now);
    const k = Math.floor((now - anchor) / every);
    if (k >= 1) {
      const slot = anchor + k * every;
      await this.createReview({
        id: `s-${createHash('sha256').update(`${sch.policy}\u0000${slot}`).digest('hex').slice(0, 32)}`,
        policy: sch.policy, reviewers: sch.reviewers, escalateTo: this.escalationGroups(sch.escalateTo), dueAt: now + parseDuration(sch.dueIn),
        createdBy: 'system', scheduled: true,
      });
    }
    const next = anchor + (Math.max(k, 0) + 1) * every;
    const key = `schedule:${sch.policy}`;
    this.reviewTimers.get(key)?.cancel();
    this.reviewTimers.set(key, this.clock.setTimer(Math.max(0, next - this.clock.now()), () => {
      this.reviewTimers.delete(key);
      if (this.running) this.runTimerWork(`access review schedule ${sch.policy}`, () => this.schedule(sch, this.clock.now()), () => undefined);
    }));
  }

  private escalationGroups(groups: string[] | undefined): string[] {
    return groups?.length ? [...groups] : [...(this.cfg.socGroups ?? [])];
  }

  private armDue(rv: AccessReviewRecord): void {
    const key = `due:${rv.id}`;
    this.reviewTimers.get(key)?.cancel();
    if (!this.running || rv.state !== 'open' || rv.escalatedAt !== null) { this.reviewTimers.delete(key); return; }
    this.reviewTimers.set(key, this.clock.setTimer(Math.max(0, rv.dueAt - this.clock.now()), () => {
      this.reviewTimers.delete(key);
      if (this.running) this.runTimerWork(`access review ${rv.id} due`, () => this.escalate(rv.id), () => this.armDue(rv));
    }));
  }

  /** Overdue: the one gateway whose claim matches escalates it (its escalation groups may decide too) and tells them. */
  private async escalate(id: string): Promise<void> {
    const rv = await this.store.getAccessReview(id);
    if (!rv || rv.state !== 'open' || rv.escalatedAt !== null) return;
    if (rv.dueAt > this.clock.now()) { this.armDue(rv); return; }
    const done = await this.store.claim('accessReviews', id, { state: 'open', escalatedAt: null }, { escalatedAt: this.clock.now() });
    if (!done) return;
    const lines = await this.store.listReviewLines(id);
    const open = lines.filter((l) => l.decision === null).length;
    await this.audit('system', 'review.escalated', id, { policy: done.policy, dueAt: done.dueAt, undecided: open, to: done.escalateTo });
    this.notify({
      kind: 'review.escalated', to: recipients([], [...done.escalateTo, ...done.reviewers]), path: portalPath.accessReview(id),
      reviewId: id, policy: done.policy, dueAt: done.dueAt, undecided: open, lines: lines.length, escalateTo: done.escalateTo, reviewers: done.reviewers,
    });
  }

  /* ----------------------------------------------------------------- campaigns */

  /** Start a review of a policy now (the SOC; the route checks). */
  async startReview(p: Actor, body: unknown): Promise<ReviewView> {
    const parsed = startBody.safeParse(body);
    if (!parsed.success) throw invalidBody(parsed.error);
    const b = parsed.data;
    const policy = this.policyByName(b.policy);
    if (!policy) throw new PolicyError('invalid', `policy: no policy named ${JSON.stringify(b.policy.slice(0, 80))}`, 'policy');
    const sch = this.cfg.reviews?.find((r) => r.policy === policy.name);
    let dueInMs: number;
    try { dueInMs = b.dueIn !== undefined ? parseDuration(b.dueIn) : parseDuration(sch?.dueIn ?? '14d'); } catch {
      throw new PolicyError('invalid', 'dueIn: a duration such as 7d or 12h', 'dueIn');
    }
    if (!(dueInMs > 0)) throw new PolicyError('invalid', 'dueIn: must be more than zero', 'dueIn');
    const reviewers = b.reviewers ?? sch?.reviewers ?? policy.approvers ?? [];
    if (!reviewers.length) throw new PolicyError('invalid', `reviewers: policy ${policy.name} has no approvers to review it; name the reviewer groups`, 'reviewers');
    const rv = await this.createReview({
      id: randomUUID(), policy: policy.name, reviewers, escalateTo: this.escalationGroups(sch?.escalateTo), dueAt: this.clock.now() + dueInMs,
      createdBy: p.sub, scheduled: false,
    });
    return (await this.reviewView(rv!.id))!;
  }

  /** The lines a review of `policy` has now. */
  private async linesFor(policy: PolicyConfig, reviewId: string): Promise<ReviewLineRecord[]> {
    const [identities, exclusions, grants] = await Promise.all([
      this.store.listIdentities(), this.store.listExclusions({ active: true }), this.store.listGrants({ state: 'active' }),
    ]);
    const excluded = (id: string, scope: ExclusionRecord['scope'], pol: string | null) => exclusions.some((x) => x.identity === id && x.scope === scope && (scope === 'breakglass' || x.policy === pol));
    const line = (kind: ReviewLineRecord['kind'], identity: string, pol: string, detail: Record<string, unknown>, grantId: string | null = null): ReviewLineRecord => ({
      id: randomUUID(), reviewId, kind, identity, policy: pol, grantId, detail, decision: null, decidedBy: null, decidedAt: null, comment: null, exclusionId: null,
    });
    const out: ReviewLineRecord[] = [];
    const requesters = policy.requesters ?? [];
    const bgGroups = this.cfg.breakGlass?.groups ?? [];
    const byGroups = (id: IdentityRecord, groups: string[]) => (groups.includes('*') ? ['*'] : id.groups.filter((g) => groups.includes(g)));
    for (const id of identities) {
      const via = byGroups(id, requesters);
      if (via.length && !excluded(id.sub, 'policy', policy.name)) {
        out.push(line('eligibility', id.sub, policy.name, { groups: via, targets: policy.targets ?? ['*'], roles: policy.roles ?? ['*'], email: id.email, lastSeen: id.lastSeen }));
      }
      const bg = id.groups.filter((g) => bgGroups.includes(g));
      if (bg.length && !excluded(id.sub, 'breakglass', null)) {
        out.push(line('breakglass', id.sub, BREAK_GLASS, { groups: bg, email: id.email, lastSeen: id.lastSeen }));
      }
    }
    for (const g of grants) {
      if (g.expiresAt - g.startsAt <= DAY || !g.requestId) continue;
      const r = await this.store.getRequest(g.requestId);
      if (r?.policy !== policy.name) continue;
      out.push(line('grant', g.identity, policy.name, { target: g.target, role: g.role, startsAt: g.startsAt, expiresAt: g.expiresAt, reason: r.reason }, g.id));
    }
    return out;
  }

  private async createReview(spec: Omit<AccessReviewRecord, 'state' | 'createdAt' | 'escalatedAt' | 'completedAt'>): Promise<AccessReviewRecord | null> {
    const policy = this.policyByName(spec.policy);
    if (!policy) {
      this.log?.warn({ policy: spec.policy }, 'access review schedule names no configured policy; skipped');
      return null;
    }
    const now = this.clock.now();
    const rv: AccessReviewRecord = { ...spec, state: 'open', createdAt: now, escalatedAt: null, completedAt: null };
    const lines = await this.linesFor(policy, rv.id);
    const created = await this.store.transaction(async (tx) => {
      if (await tx.getAccessReview(rv.id)) return false; // this slot ran already (here or on another gateway)
      await tx.insertAccessReview(rv);
      for (const l of lines) await tx.insertReviewLine(l);
      return true;
    });
    if (!created) return null;
    await this.audit(spec.createdBy === 'system' ? 'system' : spec.createdBy, 'review.started', rv.id, {
      policy: rv.policy, scheduled: rv.scheduled, reviewers: rv.reviewers, dueAt: rv.dueAt,
      lines: { eligibility: lines.filter((l) => l.kind === 'eligibility').length, breakglass: lines.filter((l) => l.kind === 'breakglass').length, grant: lines.filter((l) => l.kind === 'grant').length },
    });
    this.notify({
      kind: 'review.due', to: recipients([], rv.reviewers), path: portalPath.accessReview(rv.id),
      reviewId: rv.id, policy: rv.policy, dueAt: rv.dueAt, lines: lines.length, reviewers: rv.reviewers, scheduled: rv.scheduled,
    });
    if (!lines.length) await this.completeIfDone(rv.id);
    else this.armDue(rv);
    return rv;
  }

  /** Whether `p` is in a reviewer or escalation group of a configured review schedule. */
  isScheduledReviewer(p: Actor): boolean {
    return (this.cfg.reviews ?? []).some((r) => p.groups.some((g) => r.reviewers.includes(g) || r.escalateTo.includes(g)));
  }

  /** Whether `p` decides lines of this review: its reviewer groups, and once escalated its escalation groups. */
  isReviewerOf(p: Actor, rv: AccessReviewRecord): boolean {
    const groups = [...rv.reviewers, ...(rv.escalatedAt !== null ? rv.escalateTo : [])];
    return p.groups.some((g) => groups.includes(g));
  }

  async reviewView(id: string): Promise<ReviewView | null> {
    const rv = typeof id === 'string' && id ? await this.store.getAccessReview(id) : null;
    if (!rv) return null;
    const lines = await this.store.listReviewLines(rv.id);
    return { ...rv, lines, counts: { total: lines.length, decided: lines.filter((l) => l.decision !== null).length, revoked: lines.filter((l) => l.decision === 'revoke').length } };
  }

  /** Reviews `p` decides (all: every review, for the SOC). */
  async reviewsFor(p: Actor, opts: { all?: boolean; state?: AccessReviewRecord['state'] } = {}): Promise<AccessReviewRecord[]> {
    const list = await this.store.listAccessReviews({ state: opts.state, limit: 500 });
    return opts.all ? list : list.filter((rv) => this.isReviewerOf(p, rv));
  }

  /**
   * Confirm or revoke one line. Never a line about oneself. Revoking an eligibility or a break-glass
   * membership makes an exclusion and ends the identity's live grants under it; revoking a grant ends it.
   */
  async decideLine(p: Actor, reviewId: string, lineId: string, body: unknown): Promise<ReviewLineRecord> {
    const parsed = decideBody.safeParse(body);
    if (!parsed.success) throw invalidBody(parsed.error);
    const { decision } = parsed.data;
    const comment = parsed.data.comment?.trim() || null;
    const check = async (tx: Store) => {
      const rv = typeof reviewId === 'string' && reviewId ? await tx.getAccessReview(reviewId) : null;
      if (!rv) throw new PolicyError('not_found', 'no such access review');
      if (!this.isReviewerOf(p, rv)) {
        throw new PolicyError('not_approver', `only members of ${rv.reviewers.join(', ')}${rv.escalatedAt !== null && rv.escalateTo.length ? ` or ${rv.escalateTo.join(', ')}` : ''} decide this review`);
      }
      const line = typeof lineId === 'string' && lineId ? await tx.getReviewLine(lineId) : null;
      if (!line || line.reviewId !== rv.id) throw new PolicyError('not_found', 'no such line in this review');
      if (line.identity === p.sub) throw new PolicyError('self_approval', 'someone else must review your own access');
      if (rv.state !== 'open') throw new PolicyError('conflict', 'this review is completed');
      if (line.decision !== null) throw new PolicyError('conflict', `this line was already decided (${line.decision}) by ${line.decidedBy}`);
      if (decision === 'revoke' && !comment) throw new PolicyError('invalid', 'comment: say why the access goes', 'comment');
      return { rv, line };
    };
    const { rv, line } = await this.decide(check, async (tx, { rv, line }) => {
      const now = this.clock.now();
      let exclusionId: string | null = null;
      if (decision === 'revoke' && line.kind !== 'grant') {
        const ex: ExclusionRecord = {
          id: randomUUID(), identity: line.identity, scope: line.kind === 'breakglass' ? 'breakglass' : 'policy',
          policy: line.kind === 'breakglass' ? null : line.policy, reason: comment!, createdAt: now, createdBy: p.sub, reviewId: rv.id, lineId: line.id,
          removedAt: null, removedBy: null,
        };
        await tx.insertExclusion(ex);
        exclusionId = ex.id;
      }
      const done = await tx.claim('reviewLines', line.id, { decision: null }, { decision, decidedBy: p.sub, decidedAt: now, comment, exclusionId });
      if (!done) throw new PolicyError('conflict', 'this line was decided meanwhile');
      return { rv, line: done };
    });
    await this.audit(p.sub, decision === 'revoke' ? 'review.revoked' : 'review.confirmed', line.id, {
      review: rv.id, policy: line.policy, kind: line.kind, identity: line.identity, grantId: line.grantId, comment, exclusion: line.exclusionId,
    });
    if (decision === 'revoke') await this.endRevokedAccess(p, rv, line);
    await this.completeIfDone(rv.id);
    return line;
  }

  /** The live grants a revoked line stood for end now. */
  private async endRevokedAccess(p: Actor, rv: AccessReviewRecord, line: ReviewLineRecord): Promise<void> {
    const why = `access review ${rv.id}: ${line.kind === 'grant' ? 'grant' : line.kind === 'breakglass' ? 'break-glass membership' : `eligibility under ${line.policy}`} revoked by ${p.sub}${line.comment ? ` (${line.comment})` : ''}`;
    let grants: GrantRecord[];
    if (line.kind === 'grant') {
      const g = line.grantId ? await this.store.getGrant(line.grantId) : null;
      grants = g ? [g] : [];
    } else {
      grants = [];
      for (const g of await this.store.listGrants({ identity: line.identity, state: 'active' })) {
        if (line.kind === 'breakglass' ? g.breakGlass : (g.requestId && (await this.store.getRequest(g.requestId))?.policy === line.policy && !g.breakGlass)) grants.push(g);
      }
    }
    for (const g of grants) {
      if (g.state !== 'active') continue;
      try { await this.revokeGrant(SYSTEM_ACTOR, g.id, why); } catch (e) {
        if (!(e instanceof PolicyError && e.code === 'conflict')) throw e; // ended meanwhile
      }
    }
  }

  private async completeIfDone(id: string): Promise<void> {
    const lines = await this.store.listReviewLines(id);
    if (lines.some((l) => l.decision === null)) return;
    const done = await this.store.claim('accessReviews', id, { state: 'open' }, { state: 'completed', completedAt: this.clock.now() });
    if (!done) return;
    this.reviewTimers.get(`due:${id}`)?.cancel();
    this.reviewTimers.delete(`due:${id}`);
    await this.audit('system', 'review.completed', id, { policy: done.policy, lines: lines.length, revoked: lines.filter((l) => l.decision === 'revoke').length });
  }

  /** A review's results as CSV (one row per line) or JSON (the review with its lines). */
  async exportReview(id: string, format: 'csv' | 'json'): Promise<{ contentType: string; body: string } | null> {
    const v = await this.reviewView(id);
    if (!v) return null;
    if (format === 'json') return { contentType: 'application/json; charset=utf-8', body: `${JSON.stringify(v, null, 2)}\n` };
    const head = ['review', 'policy', 'line', 'kind', 'identity', 'grant', 'detail', 'decision', 'decided_by', 'decided_at', 'comment'];
    const rows = v.lines.map((l) => [v.id, l.policy, l.id, l.kind, l.identity, l.grantId, l.detail, l.decision ?? 'undecided', l.decidedBy, iso(l.decidedAt), l.comment]);
    return { contentType: 'text/csv; charset=utf-8', body: [head, ...rows].map((r) => r.map(csvCell).join(',')).join('\r\n') + '\r\n' };
  }

  /* ----------------------------------------------------------------- exclusions */

  async exclusions(opts: { active?: boolean } = {}): Promise<ExclusionRecord[]> {
    return this.store.listExclusions({ active: opts.active });
  }

  /** Give an excluded eligibility back (the SOC; the route checks). */
  async liftExclusion(p: Actor, id: string, reason: string): Promise<ExclusionRecord> {
    const why = typeof reason === 'string' ? reason.trim().slice(0, 2000) : '';
    const check = async (tx: Store) => {
      const x = typeof id === 'string' && id ? await tx.getExclusion(id) : null;
      if (!x) throw new PolicyError('not_found', 'no such exclusion');
      if (x.identity === p.sub) throw new PolicyError('self_approval', 'someone else must give your own access back');
      if (x.removedAt !== null) throw new PolicyError('conflict', 'this exclusion was already lifted');
      if (!why) throw new PolicyError('invalid', 'reason: say why the access comes back', 'reason');
      return x;
    };
    const x = await this.decide(check, async (tx, x) => {
      const done = await tx.claim('exclusions', x.id, { removedAt: null }, { removedAt: this.clock.now(), removedBy: p.sub });
      if (!done) throw new PolicyError('conflict', 'this exclusion was already lifted');
      return done;
    });
    await this.audit(p.sub, 'exclusion.lifted', x.id, { identity: x.identity, scope: x.scope, policy: x.policy, reason: why });
    return x;
  }
}
