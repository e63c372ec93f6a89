/** Requests, their approval stages and decisions: filing, approving, denying, cancelling, and a stage's timeout. */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { Actor, PolicyTarget, Risk } from './config.js';
import type {
  ApprovalRecord, GrantRecord, RequestRecord, Store,
} from '../proxy/store/types.js';
import { invalidBody, PolicyError } from './errors.js';
import { describeHours, fmtDuration, inHours, parseRequestedDuration, toMs } from './hours.js';
import { portalPath, recipients } from './notices.js';
import { PolicyDelegation, type Acting } from './delegation.js';

const durationInput = z.union([
  z.number().positive('a positive number of seconds'),
  z.string().trim().min(1, 'a duration such as 30m, 2h or a number of seconds'),
]);

const requestBody = z.object({
  target: z.string().trim().min(1, 'a target name'),
  role: z.string().trim().min(1, 'a role name').optional(),
  duration: durationInput,
  reason: z.string().max(2000, 'at most 2000 characters').refine((s) => s.trim().length > 0, 'a reason (why you need access)'),
});

export const breakGlassBody = requestBody.extend({ duration: durationInput.optional() });

const extendBody = z.object({
  duration: durationInput,
  reason: z.string().max(2000, 'at most 2000 characters').refine((s) => s.trim().length > 0, 'a reason (why you need longer)'),
});

/** What a request asks for, once parsed: a new grant, or more time on one (extendsGrant). */
interface RequestSpec { target: PolicyTarget; role: string; durationMs: number; reason: string; extendsGrant: GrantRecord | null }

/** A name someone typed, shown back safely: JSON-quoted and cut short. */
export function quote(v: string): string {
  return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v);
}

export abstract class PolicyRequests<T extends PolicyTarget = PolicyTarget> extends PolicyDelegation<T> {
  /** Whether `p` could decide `r` as a member of its stage (delegation aside: see pendingFor). */
  canApprove(p: Actor, r: RequestRecord, approvals?: ApprovalRecord[]): boolean {
    if (r.state !== 'pending' || p.sub === r.requester) return false;
    const stage = r.stages[r.currentStage];
    if (!stage) return false;
    if (!stage.groups.some((g) => p.groups.includes(g))) return false;
    if (approvals && approvals.some((a) => a.approver === p.sub || a.onBehalfOf === p.sub)) return false;
    return true;
  }

  /** Pending requests `p` can decide now, as themselves or as a delegate. */
  async pendingFor(p: Actor): Promise<RequestRecord[]> {
    const pending = await this.store.listRequests({ state: 'pending' });
    const delegating = (await this.store.listDelegations({ delegate: p.sub, activeAt: this.clock.now() })).length > 0;
    const out: RequestRecord[] = [];
    for (const r of pending) {
      if (r.requester === p.sub) continue;
      if (!delegating && !this.canApprove(p, r)) continue;
      const approvals = await this.store.listApprovals(r.id);
      if (approvals.some((a) => a.approver === p.sub || a.onBehalfOf === p.sub)) continue;
      if (await this.actingFor(p, r, r.stages[r.currentStage]!, approvals)) out.push(r);
    }
    return out.sort((a, b) => a.createdAt - b.createdAt);
  }

  /** Whom `p` would decide this pending request for: null (themselves), a delegator's sub, or undefined (nobody). */
  async decidesFor(p: Actor, r: RequestRecord): Promise<string | null | undefined> {
    const stage = r.stages[r.currentStage];
    if (r.state !== 'pending' || !stage || r.requester === p.sub) return undefined;
    return (await this.actingFor(p, r, stage, await this.store.listApprovals(r.id)))?.onBehalfOf;
  }

  /* ----------------------------------------------------------------- requests */

  protected resolveTargetRole(body: { target: string; role?: string }): { target: T; role: string } {
    const target = this.target(body.target);
    if (!target) throw new PolicyError('invalid', `target: no target named ${quote(body.target)}`, 'target');
    let role = body.role;
    if (role === undefined) {
      if (target.roles.length !== 1) throw new PolicyError('invalid', `role: target "${target.name}" has several roles; name one`, 'role');
      role = target.roles[0]!.name;
    }
    if (!target.roles.some((r) => r.name === role)) {
      throw new PolicyError('invalid', `role: target "${target.name}" has no role ${quote(role)}`, 'role');
    }
    return { target, role };
  }

  async createRequest(p: Actor, body: unknown): Promise<RequestRecord> {
    const parsed = requestBody.safeParse(body);
    if (!parsed.success) {
      throw invalidBody(parsed.error);
    }
    const b = parsed.data;
    const { target, role } = this.resolveTargetRole(b);
    return this.file(p, { target, role, durationMs: parseRequestedDuration(b.duration), reason: b.reason.trim(), extendsGrant: null });
  }

  /**
   * Ask for more time on an active grant of one's own: the same policy as a new request for access
   * from now until the new end (eligibility, working hours, maximum duration, MFA, approvals). Once
   * approved the grant keeps its id and its end moves by `duration`; live sessions continue.
   */
  async extendGrant(p: Actor, grantId: string, body: unknown): Promise<RequestRecord> {
    const parsed = extendBody.safeParse(body);
    if (!parsed.success) {
      throw invalidBody(parsed.error);
    }
    const g = typeof grantId === 'string' && grantId ? await this.store.getGrant(grantId) : null;
    if (!g || g.identity !== p.sub) throw new PolicyError('not_found', 'no such grant of yours');
    if (g.state !== 'active' || g.expiresAt <= this.clock.now()) throw new PolicyError('conflict', `this grant is ${g.state === 'active' ? 'expired' : g.state}; request access anew`);
    if (g.breakGlass) throw new PolicyError('invalid', 'break-glass access is not extended; use break-glass again if the emergency goes on');
    const target = this.target(g.target);
    if (!target) throw new PolicyError('conflict', `target ${g.target} is no longer configured`);
    const open = (await this.store.listRequests({ requester: p.sub, state: 'pending', target: g.target })).find((r) => r.extendsGrant === g.id);
    if (open) throw new PolicyError('conflict', `an extension of this grant is already waiting for approval (request ${open.id})`);
    return this.file(p, { target, role: g.role, durationMs: parseRequestedDuration(parsed.data.duration), reason: parsed.data.reason.trim(), extendsGrant: g });
  }

  /** File a request: policy checks, then auto-approval or the first stage. */
  protected async file(p: Actor, spec: RequestSpec): Promise<RequestRecord> {
    const { target, role, durationMs } = spec;
    const what = spec.extendsGrant ? `an extension of ${target.name}` : target.name;
    const policy = this.policyFor(p, target.name, role, await this.exclusionsOf(p.sub));
    if (!policy) throw new PolicyError('not_eligible', `you are not eligible to request ${target.name} as ${role}`);
    const now = this.clock.now();
    if (policy.hours && !inHours(policy.hours, now)) {
      throw new PolicyError('outside_hours', `requests for ${what} are only accepted during working hours (${describeHours(policy.hours)})`);
    }
    const maxMs = toMs(policy.maxDuration);
    // An extension is measured like a new request for access from now until its new end.
    const spanMs = spec.extendsGrant ? spec.extendsGrant.expiresAt + durationMs - now : durationMs;
    if (maxMs !== null && spanMs > maxMs) {
      throw new PolicyError('invalid', spec.extendsGrant
        ? `duration: the grant would last ${fmtDuration(Math.round(spanMs / 60_000) * 60_000)} from now; at most ${fmtDuration(maxMs)} for ${target.name} (policy ${policy.name})`
        : `duration: at most ${fmtDuration(maxMs)} for ${target.name} (policy ${policy.name})`, 'duration');
    }
    if (!spec.extendsGrant) await this.assertNotHeld(target.name, p.sub);
    const risk: Risk = target.risk ?? 'medium';
    const mfaRequired = this.mfaNeeded(policy, risk);
    if (mfaRequired && !this.mfaFresh(p)) throw new PolicyError('mfa_required', this.mfaMessage(`a request for ${what}`));
    const stages = this.plan(policy, risk);
    if (stages.some((s) => s.groups.length === 0)) {
      throw new PolicyError('not_eligible', `policy ${policy.name} names no approvers for ${target.name}; ask an administrator`);
    }
    const timeoutMs = toMs(policy.approvalTimeout);
    const rec: RequestRecord = {
      id: randomUUID(),
      requester: p.sub,
      target: target.name,
      role,
      durationMs,
      reason: spec.reason,
      state: 'pending',
      risk,
      policy: policy.name,
      stages,
      currentStage: 0,
      stageDeadline: stages.length && timeoutMs ? now + timeoutMs : null,
      escalations: 0,
      mfaRequired,
      breakGlass: false,
      createdAt: now,
      decidedAt: null,
      decidedBy: null,
      decisionReason: null,
      grantId: null,
      extendsGrant: spec.extendsGrant?.id ?? null,
    };
    if (!stages.length) {
      rec.state = 'approved';
      rec.decidedAt = now;
      rec.decidedBy = 'system';
      rec.decisionReason = `auto-approved (${policy.approval === 'auto' ? 'policy' : `${risk} risk`})`;
      const outcome = await this.exclusive(() => this.store.transaction(async (tx) => {
        const o = await this.grantOrQueue(tx, rec, now);
        await tx.insertRequest(rec);
        if (o.grant) await tx.insertGrant(o.grant);
        return o;
      }));
      await this.audit(p.sub, 'request.created', rec.id, this.requestData(rec));
      await this.audit('system', 'request.approved', rec.id, { stage: null, auto: true, reason: rec.decisionReason });
      await this.decided('system', rec, outcome);
      return rec;
    }
    await this.store.insertRequest(rec);
    await this.audit(p.sub, 'request.created', rec.id, this.requestData(rec));
    this.armRequest(rec);
    await this.noticeStage(rec);
    return rec;
  }

  /**
   * The final approval of `r` (inside its transaction): an extension lengthens its grant; a new
   * request gets its grant, or waits as queued while another identity holds its checked-out account.
   * Sets r's state and grant; the caller writes r.
   */
  protected async grantOrQueue(tx: Store, r: RequestRecord, now: number): Promise<{ grant: GrantRecord | null; extended: GrantRecord | null; previousEnd: number | null; queuedBehind: GrantRecord | null }> {
    if (r.extendsGrant) {
      const before = await tx.getGrant(r.extendsGrant);
      const extended = await this.extendInTx(tx, r, now);
      r.state = 'approved';
      r.grantId = extended.id;
      return { grant: null, extended, previousEnd: before?.expiresAt ?? null, queuedBehind: null };
    }
    const co = this.checkoutOf(r.target);
    const held = co ? await this.holderOf(co.key, r.requester, tx) : null;
    if (held) {
      r.state = 'queued';
      r.grantId = null;
      r.decisionReason = [r.decisionReason, this.queuedReason(r.target, held)].filter(Boolean).join('; ');
      return { grant: null, extended: null, previousEnd: null, queuedBehind: held };
    }
    const grant = this.newGrant(r, now, false);
    r.state = 'approved';
    r.grantId = grant.id;
    return { grant, extended: null, previousEnd: null, queuedBehind: null };
  }

  /** After the final decision committed: audit the grant (or the queue), arm its timers, tell the requester. */
  protected async decided(actor: string, r: RequestRecord, o: Awaited<ReturnType<PolicyRequests['grantOrQueue']>>): Promise<void> {
    this.disarmRequest(r.id);
    if (o.grant) {
      await this.audit(actor, 'grant.created', o.grant.id, this.grantData(o.grant));
      this.armGrant(o.grant);
    }
    if (o.extended) await this.grantExtended(actor, o.extended, r, o.previousEnd ?? o.extended.expiresAt - r.durationMs);
    if (o.queuedBehind) await this.audit('system', 'request.queued', r.id, { target: r.target, holder: o.queuedBehind.identity, holderGrant: o.queuedBehind.id, holderEnds: o.queuedBehind.expiresAt });
    this.notify({
      kind: 'request.decided', to: recipients([r.requester]), path: portalPath.access(),
      requestId: r.id, requester: r.requester, target: r.target, role: r.role, decision: o.queuedBehind ? 'queued' : 'approved',
      decidedBy: r.decidedBy, grantId: r.grantId, extendsGrant: r.extendsGrant ?? null,
      ...(o.queuedBehind ? { holder: o.queuedBehind.identity, holderEnds: o.queuedBehind.expiresAt } : {}),
    });
  }

  /** Tell the current stage's approvers (and their delegates) that a request waits for them. */
  protected async noticeStage(r: RequestRecord): Promise<void> {
    const groups = r.stages[r.currentStage]!.groups;
    const delegates = (await this.delegatesOf(groups).catch(() => [])).filter((d) => d !== r.requester);
    this.notify({
      kind: 'request.created', to: recipients(delegates, groups), path: portalPath.approvals(r.id),
      requestId: r.id, requester: r.requester, target: r.target, role: r.role, durationMs: r.durationMs, reason: r.reason, risk: r.risk,
      stage: r.currentStage, stages: r.stages.length, groups, deadline: r.stageDeadline, extendsGrant: r.extendsGrant ?? null,
    });
  }

  protected requestData(r: RequestRecord): Record<string, unknown> {
    return {
      target: r.target, role: r.role, durationMs: r.durationMs, reason: r.reason, policy: r.policy, risk: r.risk,
      stages: r.stages, mfaRequired: r.mfaRequired, breakGlass: r.breakGlass, ...(r.extendsGrant ? { extendsGrant: r.extendsGrant } : {}),
    };
  }

  protected async mustGetRequest(tx: Store, id: string): Promise<RequestRecord> {
    const r = typeof id === 'string' && id ? await tx.getRequest(id) : null;
    if (!r) throw new PolicyError('not_found', 'no such request');
    return r;
  }

  /**
   * Who decides, and as whom: a member of the stage's groups, or a delegate for a delegator who is.
   * Nobody decides their own request (a delegate neither, nor for the requester); one decision per
   * person per request, counting decisions made on their behalf.
   */
  protected async decider(p: Actor, r: RequestRecord, approvals: ApprovalRecord[], tx: Store): Promise<Acting> {
    const mine = approvals.find((a) => a.approver === p.sub);
    if (mine) throw new PolicyError('conflict', `you already ${mine.decision === 'approve' ? 'approved' : 'decided on'} this request; another approver is needed`);
    const forMe = approvals.find((a) => a.onBehalfOf === p.sub);
    if (forMe) throw new PolicyError('conflict', `${forMe.approver} already approved this request on your behalf; another approver is needed`);
    const stage = r.stages[r.currentStage]!;
    const acting = await this.actingFor(p, r, stage, approvals, tx);
    if (!acting) {
      throw new PolicyError('not_approver', `you are not an approver for this request (stage ${r.currentStage + 1} needs a member of ${stage.groups.join(', ')}, or their delegate)`);
    }
    return acting;
  }

  async approve(p: Actor, requestId: string, comment?: string): Promise<RequestRecord> {
    const note = typeof comment === 'string' && comment.trim() ? comment.trim().slice(0, 2000) : null;
    const check = async (tx: Store) => {
      const r = await this.mustGetRequest(tx, requestId);
      if (r.state !== 'pending') throw new PolicyError('conflict', `this request is already ${r.state}`);
      if (r.requester === p.sub) throw new PolicyError('self_approval', 'you cannot approve your own request');
      const approvals = await tx.listApprovals(r.id);
      const stage = r.stages[r.currentStage]!;
      this.assertNotOverdue(r);
      const acting = await this.decider(p, r, approvals, tx);
      if (r.mfaRequired && !this.mfaFresh(p)) throw new PolicyError('mfa_required', this.mfaMessage('approving this request'));
      return { r, approvals, stage, acting };
    };
    const result = await this.decide(check, async (tx, { r, approvals, stage, acting }) => {
      const now = this.clock.now();
      const approval: ApprovalRecord = {
        id: randomUUID(), requestId: r.id, stage: r.currentStage, approver: p.sub, decision: 'approve', comment: note, at: now, onBehalfOf: acting.onBehalfOf,
      };
      await tx.insertApproval(approval);
      const inStage = approvals.filter((a) => a.stage === r.currentStage && a.decision === 'approve').length + 1;
      const stageDone = inStage >= stage.count;
      const approvedStage = r.currentStage;
      let outcome: Awaited<ReturnType<PolicyRequests['grantOrQueue']>> | null = null;
      if (stageDone) {
        r.currentStage += 1;
        if (r.currentStage >= r.stages.length) {
          r.decidedAt = now;
          r.decidedBy = p.sub;
          r.decisionReason = note;
          r.stageDeadline = null;
          outcome = await this.grantOrQueue(tx, r, now);
          if (outcome.grant) await tx.insertGrant(outcome.grant);
        } else {
          const pol = this.policyByName(r.policy);
          const timeoutMs = pol ? toMs(pol.approvalTimeout) : null;
          r.stageDeadline = timeoutMs ? now + timeoutMs : null;
        }
        await tx.updateRequest(r);
      }
      return { r, outcome, approvedStage, inStage, stageDone, acting };
    });
    const { r, outcome } = result;
    await this.audit(p.sub, 'request.approved', r.id, {
      stage: result.approvedStage, approvals: result.inStage, needed: r.stages[result.approvedStage]!.count,
      stageComplete: result.stageDone, final: outcome !== null, comment: note,
      ...(result.acting.onBehalfOf ? { onBehalfOf: result.acting.onBehalfOf } : {}),
    });
    if (outcome) await this.decided(p.sub, r, outcome);
    else if (result.stageDone) {
      this.armRequest(r);
      await this.noticeStage(r);
    }
    return r;
  }

  /** A stage past its deadline takes no more decisions; its timeout runs (escalation or expiry). */
  protected assertNotOverdue(r: RequestRecord): void {
    if (r.stageDeadline === null || r.stageDeadline > this.clock.now()) return;
    if (this.running) this.runTimerWork(`request ${r.id} deadline`, () => this.onStageTimeout(r.id), () => this.armRequest(r));
    throw new PolicyError('conflict', 'the time to decide on this stage has run out; the request is being escalated or expired');
  }

  async deny(p: Actor, requestId: string, comment?: string): Promise<RequestRecord> {
    const note = typeof comment === 'string' && comment.trim() ? comment.trim().slice(0, 2000) : null;
    const check = async (tx: Store) => {
      const r = await this.mustGetRequest(tx, requestId);
      if (r.state !== 'pending') throw new PolicyError('conflict', `this request is already ${r.state}`);
      if (r.requester === p.sub) throw new PolicyError('self_approval', 'you cannot decide your own request; cancel it instead');
      this.assertNotOverdue(r);
      const acting = await this.decider(p, r, await tx.listApprovals(r.id), tx);
      return { r, acting };
    };
    const { r, acting } = await this.decide(check, async (tx, { r, acting }) => {
      const now = this.clock.now();
      await tx.insertApproval({ id: randomUUID(), requestId: r.id, stage: r.currentStage, approver: p.sub, decision: 'deny', comment: note, at: now, onBehalfOf: acting.onBehalfOf });
      r.state = 'denied';
      r.decidedAt = now;
      r.decidedBy = p.sub;
      r.decisionReason = note ?? `denied by ${p.sub}${acting.onBehalfOf ? ` for ${acting.onBehalfOf}` : ''}`;
      r.stageDeadline = null;
      await tx.updateRequest(r);
      return { r, acting };
    });
    this.disarmRequest(r.id);
    await this.audit(p.sub, 'request.denied', r.id, { stage: r.currentStage, comment: note, ...(acting.onBehalfOf ? { onBehalfOf: acting.onBehalfOf } : {}) });
    this.notify({
      kind: 'request.decided', to: recipients([r.requester]), path: portalPath.access(),
      requestId: r.id, requester: r.requester, target: r.target, role: r.role, decision: 'denied', decidedBy: p.sub, onBehalfOf: acting.onBehalfOf, comment: note,
      extendsGrant: r.extendsGrant ?? null,
    });
    return r;
  }

  /** The requester withdraws a pending request, or one queued for a checked-out account. */
  async cancel(p: Actor, requestId: string): Promise<RequestRecord> {
    const check = async (tx: Store) => {
      const r = await this.mustGetRequest(tx, requestId);
      if (r.requester !== p.sub) throw new PolicyError('not_eligible', 'only the requester can cancel a request');
      if (r.state !== 'pending' && r.state !== 'queued') throw new PolicyError('conflict', `this request is already ${r.state}`);
      return r;
    };
    const r = await this.decide(check, async (tx, r) => {
      const now = this.clock.now();
      const wasQueued = r.state === 'queued';
      r.state = 'cancelled';
      r.decidedAt = now;
      r.decidedBy = p.sub;
      r.decisionReason = wasQueued ? 'cancelled by the requester while queued' : 'cancelled by the requester';
      r.stageDeadline = null;
      await tx.updateRequest(r);
      return r;
    });
    this.disarmRequest(r.id);
    await this.audit(p.sub, 'request.cancelled', r.id, {});
    return r;
  }

  /** Pending extensions of a grant that ended can no longer be granted: they expire with it. */
  protected override async grantClosed(g: GrantRecord): Promise<void> {
    await super.grantClosed(g);
    const pending = (await this.store.listRequests({ requester: g.identity, state: 'pending', target: g.target })).filter((r) => r.extendsGrant === g.id);
    for (const r of pending) {
      const done = await this.store.claim('requests', r.id, { state: 'pending' }, {
        state: 'expired', decidedAt: this.clock.now(), decidedBy: 'system', decisionReason: `the grant ended (${g.state}) before the extension was decided`, stageDeadline: null,
      });
      if (!done) continue;
      this.disarmRequest(r.id);
      await this.audit('system', 'request.expired', r.id, { reason: done.decisionReason, extendsGrant: g.id });
      this.notify({ kind: 'request.decided', to: recipients([r.requester]), path: portalPath.access(), requestId: r.id, requester: r.requester, target: r.target, role: r.role, decision: 'expired', extendsGrant: g.id });
    }
  }
  /**
   * A stage deadline passed: escalate once when the policy says so, else the request expires.
   * Every gateway on the store arms this timer; the one whose claim of the due deadline matches
   * acts (inside the transaction, so a failure leaves the deadline to fire again), the others
   * re-arm from what the winner wrote.
   */
  protected async onStageTimeout(requestId: string): Promise<void> {
    const out = await this.exclusive(() => this.store.transaction(async (tx) => {
      const seen = await tx.getRequest(requestId);
      if (!seen || seen.state !== 'pending' || seen.stageDeadline === null) return null;
      const now = this.clock.now();
      if (seen.stageDeadline > now) return { r: seen, action: 'rearm' as const };
      const r = await tx.claim('requests', requestId, { state: 'pending', stageDeadline: seen.stageDeadline }, { stageDeadline: null });
      if (!r) {
        const after = await tx.getRequest(requestId);
        return after ? { r: after, action: 'rearm' as const } : null;
      }
      const pol = this.policyByName(r.policy);
      const escalateTo = pol?.escalateTo ?? [];
      const timeoutMs = pol ? toMs(pol.approvalTimeout) : null;
      if (pol?.onTimeout === 'escalate' && r.escalations === 0 && escalateTo.length && timeoutMs) {
        const stage = r.stages[r.currentStage]!;
        const from = stage.groups;
        r.stages = r.stages.map((s, i) => (i === r.currentStage ? { groups: [...escalateTo], count: s.count } : s));
        r.escalations += 1;
        r.stageDeadline = now + timeoutMs;
        await tx.updateRequest(r);
        return { r, action: 'escalated' as const, from };
      }
      r.state = 'expired';
      r.decidedAt = now;
      r.decidedBy = 'system';
      r.decisionReason = r.escalations
        ? `approval timed out: no decision at stage ${r.currentStage + 1} after escalation`
        : `approval timed out: no decision at stage ${r.currentStage + 1} in time`;
      r.stageDeadline = null;
      await tx.updateRequest(r);
      return { r, action: 'expired' as const };
    }));
    if (!out) return;
    const { r } = out;
    if (out.action === 'rearm') { this.armRequest(r); return; }
    if (out.action === 'escalated') {
      const groups = r.stages[r.currentStage]!.groups;
      await this.audit('system', 'request.escalated', r.id, { stage: r.currentStage, from: out.from, to: groups, deadline: r.stageDeadline });
      const delegates = (await this.delegatesOf(groups).catch(() => [])).filter((d) => d !== r.requester);
      this.notify({
        kind: 'request.escalated', to: recipients(delegates, groups), path: portalPath.approvals(r.id),
        requestId: r.id, requester: r.requester, target: r.target, role: r.role, reason: r.reason, stage: r.currentStage, from: out.from, groups, deadline: r.stageDeadline,
      });
      this.armRequest(r);
      return;
    }
    this.disarmRequest(r.id);
    await this.audit('system', 'request.expired', r.id, { stage: r.currentStage, reason: r.decisionReason, escalations: r.escalations });
    this.notify({ kind: 'request.decided', to: recipients([r.requester]), path: portalPath.access(), requestId: r.id, requester: r.requester, target: r.target, role: r.role, decision: 'expired', reason: r.decisionReason });
  }
}
