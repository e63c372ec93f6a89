/** Requests, their approval stages and decisions: filing, approving, denying, cancelling, and a stage's timeout. */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { Actor, PolicyTarget, Risk } from './config.js';
import type {
  ApprovalRecord, GrantRecord, RequestRecord, Store,
} from '../proxy/store/types.js';
import { PolicyError } from './errors.js';
import { describeHours, fmtDuration, inHours, parseRequestedDuration, toMs } from './hours.js';
import { PolicyGrants } from './grants.js';

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

export function fieldOf(err: z.ZodError): { field: string; message: string } {
  const issue = err.issues[0]!;
  const field = issue.path.length ? String(issue.path[0]) : 'body';
  let message = issue.message;
  if (issue.code === 'invalid_type') message = issue.input === undefined ? 'is required' : `expected ${issue.expected}`;
  return { field, message };
}

/** A name someone typed, shown back safely: JSON-quoted and cut short. */
export function quote(v: string): string {
  return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v);
}

export abstract class PolicyRequests<T extends PolicyTarget = PolicyTarget> extends PolicyGrants<T> {
  canApprove(p: Actor, r: RequestRecord, approvals?: ApprovalRecord[]): boolean {
    if (r.state !== 'pending' || p.sub === r.requester) return false;
    const stage = r.stages[r.currentStage];
    if (!stage) return false;
    if (!stage.groups.some((g) => p.groups.includes(g))) return false;
    if (approvals && approvals.some((a) => a.approver === p.sub)) return false;
    return true;
  }

  async pendingFor(p: Actor): Promise<RequestRecord[]> {
    const pending = await this.store.listRequests({ state: 'pending' });
    const out: RequestRecord[] = [];
    for (const r of pending) {
      if (!this.canApprove(p, r)) continue;
      const approvals = await this.store.listApprovals(r.id);
      if (this.canApprove(p, r, approvals)) out.push(r);
    }
    return out.sort((a, b) => a.createdAt - b.createdAt);
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
      const { field, message } = fieldOf(parsed.error);
      throw new PolicyError('invalid', `${field}: ${message}`, field);
    }
    const b = parsed.data;
    const { target, role } = this.resolveTargetRole(b);
    const durationMs = parseRequestedDuration(b.duration);
    const policy = this.policyFor(p, target.name, role);
    if (!policy) throw new PolicyError('not_eligible', `you are not eligible to request ${target.name} as ${role}`);
    const now = this.clock.now();
    if (policy.hours && !inHours(policy.hours, now)) {
      throw new PolicyError('outside_hours', `requests for ${target.name} are only accepted during working hours (${describeHours(policy.hours)})`);
    }
    const maxMs = toMs(policy.maxDuration);
    if (maxMs !== null && durationMs > maxMs) {
      throw new PolicyError('invalid', `duration: at most ${fmtDuration(maxMs)} for ${target.name} (policy ${policy.name})`, 'duration');
    }
    const risk: Risk = target.risk ?? 'medium';
    const mfaRequired = this.mfaNeeded(policy, risk);
    if (mfaRequired && !this.mfaFresh(p)) throw new PolicyError('mfa_required', this.mfaMessage(`a request for ${target.name}`));
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
      reason: b.reason.trim(),
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
    };
    if (!stages.length) {
      const grant = this.newGrant(rec, now, false);
      rec.state = 'approved';
      rec.decidedAt = now;
      rec.decidedBy = 'system';
      rec.decisionReason = `auto-approved (${policy.approval === 'auto' ? 'policy' : `${risk} risk`})`;
      rec.grantId = grant.id;
      await this.store.transaction(async (tx) => {
        await tx.insertRequest(rec);
        await tx.insertGrant(grant);
      });
      await this.audit(p.sub, 'request.created', rec.id, this.requestData(rec));
      await this.audit('system', 'request.approved', rec.id, { stage: null, auto: true, reason: rec.decisionReason });
      await this.audit('system', 'grant.created', grant.id, this.grantData(grant));
      this.armGrant(grant);
      return rec;
    }
    await this.store.insertRequest(rec);
    await this.audit(p.sub, 'request.created', rec.id, this.requestData(rec));
    this.armRequest(rec);
    this.notify({ kind: 'request', requestId: rec.id, requester: rec.requester, target: rec.target, role: rec.role, stage: 0, groups: stages[0]!.groups });
    return rec;
  }

  protected requestData(r: RequestRecord): Record<string, unknown> {
    return {
      target: r.target, role: r.role, durationMs: r.durationMs, reason: r.reason, policy: r.policy, risk: r.risk,
      stages: r.stages, mfaRequired: r.mfaRequired, breakGlass: r.breakGlass,
    };
  }

  protected async mustGetRequest(tx: Store, id: string): Promise<RequestRecord> {
    const r = typeof id === 'string' && id ? await tx.getRequest(id) : null;
    if (!r) throw new PolicyError('not_found', 'no such request');
    return r;
  }

  async approve(p: Actor, requestId: string, comment?: string): Promise<RequestRecord> {
    const note = typeof comment === 'string' && comment.trim() ? comment.trim().slice(0, 2000) : null;
    const check = async (tx: Store) => {
      const r = await this.mustGetRequest(tx, requestId);
      if (r.state !== 'pending') throw new PolicyError('conflict', `this request is already ${r.state}`);
      if (r.requester === p.sub) throw new PolicyError('self_approval', 'you cannot approve your own request');
      const approvals = await tx.listApprovals(r.id);
      if (approvals.some((a) => a.approver === p.sub)) throw new PolicyError('conflict', 'you already approved this request; another approver is needed');
      const stage = r.stages[r.currentStage]!;
      this.assertNotOverdue(r);
      this.assertStageMember(p, r);
      if (r.mfaRequired && !this.mfaFresh(p)) throw new PolicyError('mfa_required', this.mfaMessage('approving this request'));
      return { r, approvals, stage };
    };
    const result = await this.decide(check, async (tx, { r, approvals, stage }) => {
      const now = this.clock.now();
      const approval: ApprovalRecord = {
        id: randomUUID(), requestId: r.id, stage: r.currentStage, approver: p.sub, decision: 'approve', comment: note, at: now,
      };
      await tx.insertApproval(approval);
      const inStage = approvals.filter((a) => a.stage === r.currentStage && a.decision === 'approve').length + 1;
      const stageDone = inStage >= stage.count;
      const approvedStage = r.currentStage;
      let grant: GrantRecord | null = null;
      if (stageDone) {
        r.currentStage += 1;
        if (r.currentStage >= r.stages.length) {
          grant = this.newGrant(r, now, false);
          r.state = 'approved';
          r.decidedAt = now;
          r.decidedBy = p.sub;
          r.decisionReason = note;
          r.grantId = grant.id;
          r.stageDeadline = null;
          await tx.insertGrant(grant);
        } else {
          const pol = this.policyByName(r.policy);
          const timeoutMs = pol ? toMs(pol.approvalTimeout) : null;
          r.stageDeadline = timeoutMs ? now + timeoutMs : null;
        }
        await tx.updateRequest(r);
      }
      return { r, grant, approvedStage, inStage, stageDone };
    });
    const { r, grant } = result;
    await this.audit(p.sub, 'request.approved', r.id, {
      stage: result.approvedStage, approvals: result.inStage, needed: r.stages[result.approvedStage]!.count,
      stageComplete: result.stageDone, final: r.state === 'approved', comment: note,
    });
    if (grant) {
      this.disarmRequest(r.id);
      await this.audit(p.sub, 'grant.created', grant.id, this.grantData(grant));
      this.armGrant(grant);
      this.notify({ kind: 'request.approved', requestId: r.id, requester: r.requester, grantId: grant.id, target: r.target, role: r.role });
    } else if (result.stageDone) {
      this.armRequest(r);
      this.notify({ kind: 'request', requestId: r.id, requester: r.requester, target: r.target, role: r.role, stage: r.currentStage, groups: r.stages[r.currentStage]!.groups });
    }
    return r;
  }

  /** A stage past its deadline takes no more decisions; its timeout runs (escalation or expiry). */
  protected assertNotOverdue(r: RequestRecord): void {
    if (r.stageDeadline === null || r.stageDeadline > this.clock.now()) return;
    if (this.running) this.runTimerWork(`request ${r.id} deadline`, () => this.onStageTimeout(r.id), () => this.armRequest(r));
    throw new PolicyError('conflict', 'the time to decide on this stage has run out; the request is being escalated or expired');
  }

  protected assertStageMember(p: Actor, r: RequestRecord): void {
    const stage = r.stages[r.currentStage]!;
    if (!stage.groups.some((g) => p.groups.includes(g))) {
      throw new PolicyError('not_approver', `you are not an approver for this request (stage ${r.currentStage + 1} needs a member of ${stage.groups.join(', ')})`);
    }
  }

  async deny(p: Actor, requestId: string, comment?: string): Promise<RequestRecord> {
    const note = typeof comment === 'string' && comment.trim() ? comment.trim().slice(0, 2000) : null;
    const check = async (tx: Store) => {
      const r = await this.mustGetRequest(tx, requestId);
      if (r.state !== 'pending') throw new PolicyError('conflict', `this request is already ${r.state}`);
      if (r.requester === p.sub) throw new PolicyError('self_approval', 'you cannot decide your own request; cancel it instead');
      this.assertNotOverdue(r);
      this.assertStageMember(p, r);
      return r;
    };
    const r = await this.decide(check, async (tx, r) => {
      const now = this.clock.now();
      await tx.insertApproval({ id: randomUUID(), requestId: r.id, stage: r.currentStage, approver: p.sub, decision: 'deny', comment: note, at: now });
      r.state = 'denied';
      r.decidedAt = now;
      r.decidedBy = p.sub;
      r.decisionReason = note ?? `denied by ${p.sub}`;
      r.stageDeadline = null;
      await tx.updateRequest(r);
      return r;
    });
    this.disarmRequest(r.id);
    await this.audit(p.sub, 'request.denied', r.id, { stage: r.currentStage, comment: note });
    this.notify({ kind: 'request.denied', requestId: r.id, requester: r.requester, target: r.target, role: r.role });
    return r;
  }

  async cancel(p: Actor, requestId: string): Promise<RequestRecord> {
    const check = async (tx: Store) => {
      const r = await this.mustGetRequest(tx, requestId);
      if (r.requester !== p.sub) throw new PolicyError('not_eligible', 'only the requester can cancel a request');
      if (r.state !== 'pending') throw new PolicyError('conflict', `this request is already ${r.state}`);
      return r;
    };
    const r = await this.decide(check, async (tx, r) => {
      const now = this.clock.now();
      r.state = 'cancelled';
      r.decidedAt = now;
      r.decidedBy = p.sub;
      r.decisionReason = 'cancelled by the requester';
      r.stageDeadline = null;
      await tx.updateRequest(r);
      return r;
    });
    this.disarmRequest(r.id);
    await this.audit(p.sub, 'request.cancelled', r.id, {});
    return r;
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
      this.notify({ kind: 'escalation', requestId: r.id, requester: r.requester, target: r.target, role: r.role, stage: r.currentStage, groups });
      this.armRequest(r);
      return;
    }
    this.disarmRequest(r.id);
    await this.audit('system', 'request.expired', r.id, { stage: r.currentStage, reason: r.decisionReason, escalations: r.escalations });
    this.notify({ kind: 'request.expired', requestId: r.id, requester: r.requester, target: r.target, role: r.role });
  }
}
