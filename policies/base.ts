/**
 * The policy engine's foundation: the configuration it decides by (which policy covers a target
 * and role, who approves, the approval plan a risk level needs, MFA freshness), the hooks it
 * reports through (audit, notify, grant ended), and the serialisation of decisions. The layers on
 * top (timers.ts, grants.ts, requests.ts, breakglass.ts) each add one part of the workflow;
 * engine.ts is the whole.
 */
import type { Logger } from 'pino';
import type { Actor, BreakGlassConfig, CommandRuleConfig, PolicyConfig, PolicyTarget, Risk } from './config.js';
import type { ApprovalStage, GrantRecord, Store } from '../proxy/store/types.js';
import type { Clock } from './clock.js';
import { compileRules, globMatch, RuleCompileError } from './rules.js';
import { fmtDuration, hhmm, inHours, toMs } from './hours.js';

export interface JitEngineConfig<T extends PolicyTarget = PolicyTarget> {
  targets: T[];
  policies: PolicyConfig[];
  /** reviewers: groups whose members close break-glass reviews (the gateway adds its SOC groups). */
  breakGlass: Pick<BreakGlassConfig, 'groups' | 'maxDuration'> & { reviewers?: string[] };
  idp: { mfaMaxAge?: number | string };
}

export type AuditFn = (actor: string, action: string, subject: string | null, data: Record<string, unknown>) => Promise<void>;

export interface JitEngineOptions<T extends PolicyTarget = PolicyTarget> {
  store: Store;
  clock: Clock;
  config: JitEngineConfig<T>;
  audit: AuditFn;
  notify?: (event: { kind: string; [k: string]: unknown }) => void;
  onGrantEnded?: (grant: GrantRecord, reason: 'expired' | 'revoked') => void;
  log?: Logger;
  /** How often to look for requests and grants filed by other gateways on the same store (0: never). Default 60s. */
  sweepMs?: number;
}

export interface Eligibility<T extends PolicyTarget = PolicyTarget> {
  target: T;
  roles: string[];
  risk: Risk;
  /** null: the policy sets no limit beyond the engine's sanity cap. */
  maxDurationMs: number | null;
  policy: string;
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

export abstract class PolicyBase<T extends PolicyTarget = PolicyTarget> {
  protected readonly store: Store;
  protected readonly clock: Clock;
  protected readonly cfg: JitEngineConfig<T>;
  protected readonly auditFn: AuditFn;
  protected readonly notifyFn?: JitEngineOptions['notify'];
  protected readonly onGrantEnded?: JitEngineOptions['onGrantEnded'];
  protected readonly log?: Logger;
  protected readonly mfaMaxAgeMs: number;
  protected readonly bgMaxMs: number;
  /** Decisions are serialized in-process; store.transaction (with re-reads) guards other gateways. */
  protected chain: Promise<unknown> = Promise.resolve();

  constructor(opts: JitEngineOptions<T>) {
    this.store = opts.store;
    this.clock = opts.clock;
    this.cfg = opts.config;
    this.auditFn = opts.audit;
    this.notifyFn = opts.notify;
    this.onGrantEnded = opts.onGrantEnded;
    this.log = opts.log;
    const problem = validatePolicies(opts.config.policies);
    if (problem) throw new Error(`invalid policy configuration: ${problem.path}: ${problem.expected}`);
    this.mfaMaxAgeMs = toMs(opts.config.idp?.mfaMaxAge) ?? 15 * 60_000;
    this.bgMaxMs = toMs(opts.config.breakGlass?.maxDuration) ?? 3_600_000;
  }

  protected exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn, fn);
    this.chain = p.catch(() => undefined);
    return p;
  }

  /**
   * Check, then apply in a transaction that re-reads and re-checks (another gateway may have acted).
   * The first check runs outside the transaction so that ordinary refusals never open one. This
   * relies on Store.transaction: serializable, and on PostgreSQL possibly run again, so check and
   * apply only use `tx` and change nothing outside it.
   */
  protected decide<C, R>(check: (tx: Store) => Promise<C>, apply: (tx: Store, checked: C) => Promise<R>): Promise<R> {
    return this.exclusive(async () => {
      await check(this.store);
      return this.store.transaction(async (tx) => apply(tx, await check(tx)));
    });
  }

  protected async audit(actor: string, action: string, subject: string | null, data: Record<string, unknown>): Promise<void> {
    await this.auditFn(actor, action, subject, data);
  }

  protected notify(event: { kind: string; [k: string]: unknown }): void {
    try { this.notifyFn?.(event); } catch (e) {
      this.log?.warn({ err: e instanceof Error ? e.message : String(e), kind: event.kind }, 'notify hook failed');
    }
  }

  protected grantEnded(g: GrantRecord, reason: 'expired' | 'revoked'): void {
    try { this.onGrantEnded?.(g, reason); } catch (e) {
      this.log?.warn({ err: e instanceof Error ? e.message : String(e), grant: g.id }, 'onGrantEnded hook failed');
    }
  }

  /* ----------------------------------------------------------------- config lookups */

  protected target(name: string): T | undefined {
    return this.cfg.targets.find((t) => t.name === name);
  }

  protected policyMatches(p: PolicyConfig, target: string, role: string): boolean {
    return (p.targets ?? ['*']).some((g) => globMatch(g, target)) && (p.roles ?? ['*']).some((g) => globMatch(g, role));
  }

  protected isRequester(p: PolicyConfig, who: Actor): boolean {
    return (p.requesters ?? []).some((g) => g === '*' || who.groups.includes(g));
  }

  /** The first policy in config order that matches the target/role and lets the principal ask. */
  protected policyFor(who: Actor, target: string, role: string): PolicyConfig | undefined {
    return this.cfg.policies.find((p) => this.policyMatches(p, target, role) && this.isRequester(p, who));
  }

  protected policyByName(name: string): PolicyConfig | undefined {
    return this.cfg.policies.find((p) => p.name === name);
  }

  /** Every group that approves anything (policy approvers, explicit stages, escalation groups). */
  protected approverGroups(): Set<string> {
    const s = new Set<string>();
    for (const p of this.cfg.policies) {
      for (const g of p.approvers ?? []) s.add(g);
      for (const st of p.stages ?? []) for (const g of st.groups) s.add(g);
      for (const g of p.escalateTo ?? []) s.add(g);
    }
    return s;
  }

  /** Whether `p` approves anything under some policy (approvers, stage groups or escalation groups). */
  isApprover(p: Actor): boolean {
    const groups = this.approverGroups();
    return p.groups.some((g) => groups.has(g));
  }

  protected mfaFresh(p: Actor): boolean {
    if (p.mfaAt === null || p.mfaAt === undefined) return false;
    const age = this.clock.now() - p.mfaAt;
    return age <= this.mfaMaxAgeMs && age >= -60_000;
  }

  protected mfaMessage(what: string): string {
    return `${what} needs a fresh MFA sign-in (within the last ${fmtDuration(this.mfaMaxAgeMs)}): sign in again with your second factor and retry`;
  }

  /** The approval plan a request to this target under this policy needs (empty: auto-approve). */
  protected plan(policy: PolicyConfig, risk: Risk): ApprovalStage[] {
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

  protected mfaNeeded(policy: PolicyConfig, risk: Risk): boolean {
    return risk === 'critical' || policy.mfa === true;
  }

  /* ----------------------------------------------------------------- queries */

  eligible(p: Actor): Eligibility<T>[] {
    const out: Eligibility<T>[] = [];
    for (const t of this.cfg.targets) {
      const byPolicy = new Map<string, Eligibility<T>>();
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

}
