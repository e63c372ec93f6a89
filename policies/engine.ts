import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { Principal } from '../auth/types.js';
import { parseDuration } from '../proxy/config.js';
import type { CommandRuleConfig, GatewayConfig, HoursConfig, PolicyConfig, Risk, TargetConfig } from '../proxy/config.js';
import type {
  ApprovalRecord, ApprovalStage, BreakGlassReviewRecord, GrantRecord, RequestRecord, Store,
} from '../proxy/store/types.js';
import type { Clock, TimerHandle } from './clock.js';
import { compileRules, globMatch, RuleCompileError } from './rules.js';

/**
 * The just-in-time workflow: who may ask for what, which approvals a request needs, when it
 * escalates or times out, and when grants end. Pure logic over the Store; all time from the Clock.
 */

export type PolicyErrorCode =
  | 'invalid' | 'not_eligible' | 'self_approval' | 'not_approver' | 'mfa_required' | 'outside_hours' | 'not_found' | 'conflict';

const STATUS: Record<PolicyErrorCode, number> = {
  invalid: 400, not_eligible: 403, self_approval: 403, not_approver: 403, mfa_required: 403, outside_hours: 403,
  not_found: 404, conflict: 409,
};

export class PolicyError extends Error {
  readonly status: number;
  constructor(readonly code: PolicyErrorCode, message: string, readonly field?: string) {
    super(message);
    this.name = 'PolicyError';
    this.status = STATUS[code];
  }
}

export interface JitEngineConfig {
  targets: TargetConfig[];
  policies: PolicyConfig[];
  /** reviewers: groups whose members close break-glass reviews (the gateway adds its SOC groups). */
  breakGlass: Pick<GatewayConfig['breakGlass'], 'groups' | 'maxDuration'> & { reviewers?: string[] };
  idp: Pick<GatewayConfig['idp'], 'mfaMaxAge'>;
}

export type AuditFn = (actor: string, action: string, subject: string | null, data: Record<string, unknown>) => Promise<void>;

export interface JitEngineOptions {
  store: Store;
  clock: Clock;
  config: JitEngineConfig;
  audit: AuditFn;
  notify?: (event: { kind: string; [k: string]: unknown }) => void;
  onGrantEnded?: (grant: GrantRecord, reason: 'expired' | 'revoked') => void;
  log?: Logger;
  /** How often to look for requests and grants filed by other gateways on the same store (0: never). Default 60s. */
  sweepMs?: number;
}

export interface Eligibility {
  target: TargetConfig;
  roles: string[];
  risk: Risk;
  /** null: the policy sets no limit beyond the engine's sanity cap. */
  maxDurationMs: number | null;
  policy: string;
}

/** No request may ask for more than this, whatever the policy says. */
const MAX_DURATION_MS = 366 * 86_400_000;
/** When timer work fails (store busy, disk full), try again after this long. */
const RETRY_MS = 5_000;
const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;

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

const breakGlassBody = requestBody.extend({ duration: durationInput.optional() });

function fieldOf(err: z.ZodError): { field: string; message: string } {
  const issue = err.issues[0]!;
  const field = issue.path.length ? String(issue.path[0]) : 'body';
  let message = issue.message;
  if (issue.code === 'invalid_type') message = issue.input === undefined ? 'is required' : `expected ${issue.expected}`;
  return { field, message };
}

function toMs(v: number | string | undefined): number | null {
  if (v === undefined) return null;
  return parseDuration(v);
}

function parseRequestedDuration(v: number | string): number {
  let ms: number;
  if (typeof v === 'number') ms = v * 1000;
  else if (/^\d+(\.\d+)?$/.test(v.trim())) ms = Number(v.trim()) * 1000;
  else {
    try { ms = parseDuration(v); } catch { throw new PolicyError('invalid', 'duration: a duration such as 30m, 2h or a number of seconds', 'duration'); }
  }
  ms = Math.round(ms);
  if (!Number.isFinite(ms) || ms <= 0) throw new PolicyError('invalid', 'duration: must be more than zero', 'duration');
  if (ms > MAX_DURATION_MS) throw new PolicyError('invalid', 'duration: at most 366 days', 'duration');
  return ms;
}

/** A name someone typed, shown back safely: JSON-quoted and cut short. */
function quote(v: string): string {
  return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v);
}

function fmtDuration(ms: number): string {
  if (ms % 86_400_000 === 0) return `${ms / 86_400_000}d`;
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  return `${Math.round(ms / 1000)}s`;
}

function hhmm(s: string): number {
  const [h, m] = s.split(':').map(Number) as [number, number];
  return h * 60 + m;
}

const fmtCache = new Map<string, Intl.DateTimeFormat>();
function localTime(at: number, tz: string): { day: (typeof DAYS)[number]; minutes: number } {
  let f = fmtCache.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: tz, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    fmtCache.set(tz, f);
  }
  const parts = Object.fromEntries(f.formatToParts(new Date(at)).map((p) => [p.type, p.value]));
  const day = String(parts.weekday).slice(0, 3).toLowerCase() as (typeof DAYS)[number];
  return { day, minutes: (Number(parts.hour) % 24) * 60 + Number(parts.minute) };
}

/** Whether `at` falls inside the window (windows past midnight belong to the day they start on). */
export function inHours(h: HoursConfig, at: number): boolean {
  const days = h.days ?? ['mon', 'tue', 'wed', 'thu', 'fri'];
  const { day, minutes } = localTime(at, h.tz ?? 'UTC');
  const from = hhmm(h.from);
  const to = hhmm(h.to);
  if (from === to) return days.includes(day);
  if (from < to) return days.includes(day) && minutes >= from && minutes < to;
  const prev = DAYS[(DAYS.indexOf(day) + 6) % 7]!;
  return (days.includes(day) && minutes >= from) || (days.includes(prev) && minutes < to);
}

function describeHours(h: HoursConfig): string {
  return `${(h.days ?? ['mon', 'tue', 'wed', 'thu', 'fri']).join(',')} ${h.from}-${h.to} ${h.tz ?? 'UTC'}`;
}

/**
 * Problems config validation cannot see from the schema alone: bad time zones, impossible hours,
 * rules whose regex does not compile. Returns the first one (path relative to the config root).
 */
export function validatePolicies(policies: PolicyConfig[]): { path: string; expected: string } | null {
  for (const [i, p] of policies.entries()) {
    if (p.hours) {
      try { new Intl.DateTimeFormat('en-US', { timeZone: p.hours.tz ?? 'UTC' }); } catch {
        return { path: `policies[${i}].hours.tz`, expected: 'an IANA time zone such as Europe/Berlin' };
      }
      for (const k of ['from', 'to'] as const) {
        const m = hhmm(p.hours[k]);
        if (!(m >= 0 && m <= 24 * 60) || Number(p.hours[k].slice(3)) > 59) {
          return { path: `policies[${i}].hours.${k}`, expected: 'a time of day HH:MM between 00:00 and 24:00' };
        }
      }
    }
    try { compileRules(p.rules ?? [], '*'); } catch (e) {
      if (e instanceof RuleCompileError) {
        return { path: `policies[${i}].rules[${e.index}].${e.field}`, expected: e.message.replace(/^rules\[\d+\]\.[^:]+: /, '') };
      }
      throw e;
    }
  }
  return null;
}

export class JitEngine {
  private readonly store: Store;
  private readonly clock: Clock;
  private readonly cfg: JitEngineConfig;
  private readonly auditFn: AuditFn;
  private readonly notifyFn?: JitEngineOptions['notify'];
  private readonly onGrantEnded?: JitEngineOptions['onGrantEnded'];
  private readonly log?: Logger;
  private readonly requestTimers = new Map<string, TimerHandle>();
  private readonly grantTimers = new Map<string, TimerHandle>();
  private readonly inflight = new Set<Promise<void>>();
  private readonly retries = new Set<TimerHandle>();
  private readonly sweepMs: number;
  private sweepTimer: TimerHandle | null = null;
  private readonly mfaMaxAgeMs: number;
  private readonly bgMaxMs: number;
  private running = false;
  /** Decisions are serialized in-process; store.transaction (with re-reads) guards other gateways. */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(opts: JitEngineOptions) {
    this.store = opts.store;
    this.clock = opts.clock;
    this.cfg = opts.config;
    this.auditFn = opts.audit;
    this.notifyFn = opts.notify;
    this.onGrantEnded = opts.onGrantEnded;
    this.log = opts.log;
    this.sweepMs = opts.sweepMs ?? 60_000;
    const problem = validatePolicies(opts.config.policies);
    if (problem) throw new Error(`invalid policy configuration: ${problem.path}: ${problem.expected}`);
    this.mfaMaxAgeMs = toMs(opts.config.idp?.mfaMaxAge) ?? 15 * 60_000;
    this.bgMaxMs = toMs(opts.config.breakGlass?.maxDuration) ?? 3_600_000;
  }

  /* ----------------------------------------------------------------- lifecycle */

  async start(): Promise<void> {
    this.running = true;
    await this.sweep();
    this.armSweep();
  }

  /**
   * Arm timers for every pending request and active grant this engine does not watch yet (other
   * gateways on the same store file them too) and run what is overdue.
   */
  private async sweep(): Promise<void> {
    const now = this.clock.now();
    for (const r of await this.store.listRequests({ state: 'pending' })) {
      if (!this.running) return;
      if (r.stageDeadline !== null && r.stageDeadline <= now) await this.catchUp(`request ${r.id} deadline`, () => this.onStageTimeout(r.id), () => this.armRequest(r));
      else if (!this.requestTimers.has(r.id)) this.armRequest(r);
    }
    for (const g of await this.store.listGrants({ state: 'active' })) {
      if (!this.running) return;
      if (g.expiresAt <= now) await this.catchUp(`grant ${g.id} expiry`, () => this.onGrantDue(g.id), () => this.armGrant(g));
      else if (!this.grantTimers.has(g.id)) this.armGrant(g);
    }
  }

  private armSweep(): void {
    if (!this.running || !this.sweepMs) return;
    this.sweepTimer = this.clock.setTimer(this.sweepMs, () => {
      this.sweepTimer = null;
      if (!this.running) return;
      this.runTimerWork('sweep', () => this.sweep(), () => undefined);
      this.armSweep();
    });
  }

  /** Overdue work at start-up: one failure must not stop the others; the timer retries it. */
  private async catchUp(what: string, fn: () => Promise<void>, rearm: () => void): Promise<void> {
    try { await fn(); } catch (e) {
      this.log?.error({ err: e instanceof Error ? e.message : String(e), what }, 'policy catch-up failed; will retry');
      this.retryLater(rearm);
    }
  }

  private retryLater(rearm: () => void): void {
    if (!this.running) return;
    const h = this.clock.setTimer(RETRY_MS, () => { this.retries.delete(h); if (this.running) rearm(); });
    this.retries.add(h);
  }

  stop(): void {
    this.running = false;
    this.sweepTimer?.cancel();
    this.sweepTimer = null;
    for (const t of this.requestTimers.values()) t.cancel();
    for (const t of this.grantTimers.values()) t.cancel();
    for (const t of this.retries) t.cancel();
    this.retries.clear();
    this.requestTimers.clear();
    this.grantTimers.clear();
  }

  /** Resolves once the work started by timers that already fired has finished (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.inflight.size) await Promise.allSettled([...this.inflight]);
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn, fn);
    this.chain = p.catch(() => undefined);
    return p;
  }

  /**
   * Check, then apply in a transaction that re-reads and re-checks (another gateway may have acted).
   * The first check runs outside the transaction so that ordinary refusals never open one.
   */
  private decide<C, R>(check: (tx: Store) => Promise<C>, apply: (tx: Store, checked: C) => Promise<R>): Promise<R> {
    return this.exclusive(async () => {
      await check(this.store);
      return this.store.transaction(async (tx) => apply(tx, await check(tx)));
    });
  }

  private runTimerWork(what: string, fn: () => Promise<void>, rearm: () => void): void {
    const p = fn().catch((e: unknown) => {
      this.log?.error({ err: e instanceof Error ? e.message : String(e), what }, 'policy timer failed; will retry');
      this.retryLater(rearm);
    }).finally(() => { this.inflight.delete(p); });
    this.inflight.add(p);
  }

  private armRequest(r: RequestRecord): void {
    this.requestTimers.get(r.id)?.cancel();
    this.requestTimers.delete(r.id);
    if (!this.running || r.state !== 'pending' || r.stageDeadline === null) return;
    const h = this.clock.setTimer(Math.max(0, r.stageDeadline - this.clock.now()), () => {
      this.requestTimers.delete(r.id);
      if (this.running) this.runTimerWork(`request ${r.id} deadline`, () => this.onStageTimeout(r.id), () => this.armRequest(r));
    });
    this.requestTimers.set(r.id, h);
  }

  private disarmRequest(id: string): void {
    this.requestTimers.get(id)?.cancel();
    this.requestTimers.delete(id);
  }

  private armGrant(g: GrantRecord): void {
    this.grantTimers.get(g.id)?.cancel();
    this.grantTimers.delete(g.id);
    if (!this.running || g.state !== 'active') return;
    const h = this.clock.setTimer(Math.max(0, g.expiresAt - this.clock.now()), () => {
      this.grantTimers.delete(g.id);
      if (this.running) this.runTimerWork(`grant ${g.id} expiry`, () => this.onGrantDue(g.id), () => this.armGrant(g));
    });
    this.grantTimers.set(g.id, h);
  }

  private async audit(actor: string, action: string, subject: string | null, data: Record<string, unknown>): Promise<void> {
    await this.auditFn(actor, action, subject, data);
  }

  private notify(event: { kind: string; [k: string]: unknown }): void {
    try { this.notifyFn?.(event); } catch (e) {
      this.log?.warn({ err: e instanceof Error ? e.message : String(e), kind: event.kind }, 'notify hook failed');
    }
  }

  private grantEnded(g: GrantRecord, reason: 'expired' | 'revoked'): void {
    try { this.onGrantEnded?.(g, reason); } catch (e) {
      this.log?.warn({ err: e instanceof Error ? e.message : String(e), grant: g.id }, 'onGrantEnded hook failed');
    }
  }

  /* ----------------------------------------------------------------- config lookups */

  private target(name: string): TargetConfig | undefined {
    return this.cfg.targets.find((t) => t.name === name);
  }

  private policyMatches(p: PolicyConfig, target: string, role: string): boolean {
    return (p.targets ?? ['*']).some((g) => globMatch(g, target)) && (p.roles ?? ['*']).some((g) => globMatch(g, role));
  }

  private isRequester(p: PolicyConfig, who: Principal): boolean {
    return (p.requesters ?? []).some((g) => g === '*' || who.groups.includes(g));
  }

  /** The first policy in config order that matches the target/role and lets the principal ask. */
  private policyFor(who: Principal, target: string, role: string): PolicyConfig | undefined {
    return this.cfg.policies.find((p) => this.policyMatches(p, target, role) && this.isRequester(p, who));
  }

  private policyByName(name: string): PolicyConfig | undefined {
    return this.cfg.policies.find((p) => p.name === name);
  }

  /** Every group that approves anything (policy approvers, explicit stages, escalation groups). */
  private approverGroups(): Set<string> {
    const s = new Set<string>();
    for (const p of this.cfg.policies) {
      for (const g of p.approvers ?? []) s.add(g);
      for (const st of p.stages ?? []) for (const g of st.groups) s.add(g);
      for (const g of p.escalateTo ?? []) s.add(g);
    }
    return s;
  }

  private mfaFresh(p: Principal): boolean {
    if (p.mfaAt === null || p.mfaAt === undefined) return false;
    const age = this.clock.now() - p.mfaAt;
    return age <= this.mfaMaxAgeMs && age >= -60_000;
  }

  private mfaMessage(what: string): string {
    return `${what} needs a fresh MFA sign-in (within the last ${fmtDuration(this.mfaMaxAgeMs)}): sign in again with your second factor and retry`;
  }

  /** The approval plan a request to this target under this policy needs (empty: auto-approve). */
  private plan(policy: PolicyConfig, risk: Risk): ApprovalStage[] {
    const approvers = policy.approvers ?? [];
    const escalate = policy.escalateTo ?? [];
    const staged = (): ApprovalStage[] => policy.stages?.length
      ? policy.stages.map((s) => ({ groups: [...s.groups], count: s.count ?? 1 }))
      : [{ groups: [...approvers], count: 1 }, { groups: [...(escalate.length ? escalate : approvers)], count: 1 }];
    switch (policy.approval) {
      case 'auto': return [];
      case 'one': return [{ groups: [...approvers], count: 1 }];
      case 'two': return [{ groups: [...approvers], count: 2 }];
      case 'stages': return staged();
      default: break;
    }
    if (policy.stages?.length) return staged();
    switch (risk) {
      case 'low': return [];
      case 'medium': return [{ groups: [...approvers], count: 1 }];
      case 'high': return [{ groups: [...approvers], count: 2 }];
      case 'critical': return staged();
    }
  }

  private mfaNeeded(policy: PolicyConfig, risk: Risk): boolean {
    return risk === 'critical' || policy.mfa === true;
  }

  /* ----------------------------------------------------------------- queries */

  eligible(p: Principal): Eligibility[] {
    const out: Eligibility[] = [];
    for (const t of this.cfg.targets) {
      const byPolicy = new Map<string, Eligibility>();
      for (const r of t.roles) {
        const pol = this.policyFor(p, t.name, r.name);
        if (!pol) continue;
        let e = byPolicy.get(pol.name);
        if (!e) {
          e = { target: t, roles: [], risk: t.risk ?? 'medium', maxDurationMs: toMs(pol.maxDuration), policy: pol.name };
          byPolicy.set(pol.name, e);
          out.push(e);
        }
        e.roles.push(r.name);
      }
    }
    return out;
  }

  /**
   * Whether the target/role may be used at `at` (default now) under the first policy covering it.
   * Pass the grant to let break-glass grants through outside working hours (their point).
   */
  withinHours(target: string, role: string, at?: number, grant?: Pick<GrantRecord, 'breakGlass'>): boolean {
    if (!this.target(target)) return false;
    if (grant?.breakGlass) return true;
    const pol = this.cfg.policies.find((p) => this.policyMatches(p, target, role));
    if (!pol?.hours) return true;
    return inHours(pol.hours, at ?? this.clock.now());
  }

  /** Command rules of every policy that covers the target and role, in config order. */
  rulesFor(target: string, role: string): CommandRuleConfig[] {
    return this.cfg.policies.filter((p) => this.policyMatches(p, target, role)).flatMap((p) => p.rules ?? []);
  }

  /** Whether a policy covering the target and role turns strict rules on (`strictRules: true`). */
  strictRulesFor(target: string, role: string): boolean {
    return this.cfg.policies.some((p) => p.strictRules === true && this.policyMatches(p, target, role));
  }

  async activeGrant(sub: string, target: string, role?: string): Promise<GrantRecord | null> {
    const now = this.clock.now();
    const grants = await this.store.listGrants({ identity: sub, state: 'active', target });
    const live = grants
      .filter((g) => g.identity === sub && g.target === target && (role === undefined || g.role === role))
      .filter((g) => g.state === 'active' && g.startsAt <= now && g.expiresAt > now)
      .sort((a, b) => b.expiresAt - a.expiresAt);
    return live[0] ?? null;
  }

  canApprove(p: Principal, r: RequestRecord, approvals?: ApprovalRecord[]): boolean {
    if (r.state !== 'pending' || p.sub === r.requester) return false;
    const stage = r.stages[r.currentStage];
    if (!stage) return false;
    if (!stage.groups.some((g) => p.groups.includes(g))) return false;
    if (approvals && approvals.some((a) => a.approver === p.sub)) return false;
    return true;
  }

  async pendingFor(p: Principal): Promise<RequestRecord[]> {
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

  private resolveTargetRole(body: { target: string; role?: string }): { target: TargetConfig; role: string } {
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

  async createRequest(p: Principal, body: unknown): Promise<RequestRecord> {
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

  private requestData(r: RequestRecord): Record<string, unknown> {
    return {
      target: r.target, role: r.role, durationMs: r.durationMs, reason: r.reason, policy: r.policy, risk: r.risk,
      stages: r.stages, mfaRequired: r.mfaRequired, breakGlass: r.breakGlass,
    };
  }

  private grantData(g: GrantRecord): Record<string, unknown> {
    return {
      identity: g.identity, target: g.target, role: g.role, requestId: g.requestId, startsAt: g.startsAt,
      expiresAt: g.expiresAt, breakGlass: g.breakGlass,
    };
  }

  private newGrant(r: Pick<RequestRecord, 'id' | 'requester' | 'target' | 'role' | 'durationMs'>, now: number, breakGlass: boolean): GrantRecord {
    return {
      id: randomUUID(), requestId: r.id, identity: r.requester, target: r.target, role: r.role, state: 'active',
      startsAt: now, expiresAt: now + r.durationMs, breakGlass, createdAt: now,
      endedAt: null, endedBy: null, endReason: null, used: false,
    };
  }

  private async mustGetRequest(tx: Store, id: string): Promise<RequestRecord> {
    const r = typeof id === 'string' && id ? await tx.getRequest(id) : null;
    if (!r) throw new PolicyError('not_found', 'no such request');
    return r;
  }

  async approve(p: Principal, requestId: string, comment?: string): Promise<RequestRecord> {
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
  private assertNotOverdue(r: RequestRecord): void {
    if (r.stageDeadline === null || r.stageDeadline > this.clock.now()) return;
    if (this.running) this.runTimerWork(`request ${r.id} deadline`, () => this.onStageTimeout(r.id), () => this.armRequest(r));
    throw new PolicyError('conflict', 'the time to decide on this stage has run out; the request is being escalated or expired');
  }

  private assertStageMember(p: Principal, r: RequestRecord): void {
    const stage = r.stages[r.currentStage]!;
    if (!stage.groups.some((g) => p.groups.includes(g))) {
      throw new PolicyError('not_approver', `you are not an approver for this request (stage ${r.currentStage + 1} needs a member of ${stage.groups.join(', ')})`);
    }
  }

  async deny(p: Principal, requestId: string, comment?: string): Promise<RequestRecord> {
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

  async cancel(p: Principal, requestId: string): Promise<RequestRecord> {
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

  /** A stage deadline passed: escalate once when the policy says so, else the request expires. */
  private async onStageTimeout(requestId: string): Promise<void> {
    const out = await this.exclusive(() => this.store.transaction(async (tx) => {
      const r = await tx.getRequest(requestId);
      if (!r || r.state !== 'pending' || r.stageDeadline === null) return null;
      const now = this.clock.now();
      if (r.stageDeadline > now) return { r, action: 'rearm' as const };
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

  /* ----------------------------------------------------------------- grants */

  private async onGrantDue(grantId: string): Promise<void> {
    const out = await this.exclusive(() => this.store.transaction(async (tx) => {
      const g = await tx.getGrant(grantId);
      if (!g || g.state !== 'active') return null;
      const now = this.clock.now();
      if (g.expiresAt > now) return { g, expired: false };
      g.state = 'expired';
      g.endedAt = now;
      g.endedBy = 'system';
      g.endReason = 'expired';
      await tx.updateGrant(g);
      return { g, expired: true };
    }));
    if (!out) return;
    if (!out.expired) { this.armGrant(out.g); return; }
    await this.audit('system', 'grant.expired', out.g.id, { identity: out.g.identity, target: out.g.target, role: out.g.role, used: out.g.used });
    this.grantEnded(out.g, 'expired');
  }

  async revokeGrant(actor: Principal, grantId: string, reason: string): Promise<GrantRecord> {
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

  private mayRevoke(actor: Principal, g: GrantRecord): boolean {
    if (actor.via === 'system' && actor.sub === 'system') return true;
    if (actor.sub === g.identity) return true;
    const groups = this.approverGroups();
    return actor.groups.some((x) => groups.has(x));
  }

  /* ----------------------------------------------------------------- break-glass */

  async breakGlass(p: Principal, body: unknown): Promise<GrantRecord> {
    const allowed = this.cfg.breakGlass?.groups ?? [];
    if (!p.groups.some((g) => allowed.includes(g))) {
      throw new PolicyError('not_eligible', 'break-glass access is only for members of the break-glass groups');
    }
    const parsed = breakGlassBody.safeParse(body);
    if (!parsed.success) {
      const { field, message } = fieldOf(parsed.error);
      throw new PolicyError('invalid', `${field}: ${message}`, field);
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
      kind: 'breakglass', identity: p.sub, target: target.name, role, reason, grantId: grant.id, reviewId: review.id,
      expiresAt: grant.expiresAt,
    });
    return grant;
  }

  /**
   * Why `p` may not close this review (null: may). Reviews are closed from outside: never by the
   * person who used break-glass nor by any member of a break-glass group, only by the reviewer
   * groups (breakGlass.reviewers; the gateway adds its SOC groups).
   */
  reviewRefusal(p: Principal, rv: Pick<BreakGlassReviewRecord, 'identity'>): PolicyError | null {
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
  isReviewer(p: Principal): boolean {
    const reviewers = this.cfg.breakGlass?.reviewers ?? [];
    return p.groups.some((g) => reviewers.includes(g));
  }

  async closeReview(p: Principal, reviewId: string, comment: string): Promise<BreakGlassReviewRecord> {
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
