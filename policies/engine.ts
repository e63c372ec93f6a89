import type { PolicyTarget } from './config.js';
import { PolicyBreakGlass } from './breakglass.js';

/**
 * The just-in-time workflow: who may ask for what, which approvals a request needs, when it
 * escalates or times out, and when grants end. Pure logic over the Store; all time from the Clock.
 *
 * The engine is built in layers, one file each, every layer using the ones below it:
 *   base.ts       configuration lookups (policies, approvers, plans, MFA), hooks, serialised decisions
 *   timers.ts     timers for stage deadlines and grant ends, the sweep, catch-up and retries
 *   grants.ts     grants: creation data, expiry, revocation, the active grant
 *   requests.ts   requests, stages and decisions (approve, deny, cancel, stage timeout)
 *   breakglass.ts break-glass and its reviews
 * hours.ts holds working hours and durations, errors.ts PolicyError.
 */
export class JitEngine<T extends PolicyTarget = PolicyTarget> extends PolicyBreakGlass<T> {}

export { PolicyError, type PolicyErrorCode } from './errors.js';
export { inHours } from './hours.js';
export { validatePolicies, type AuditFn, type Eligibility, type JitEngineConfig, type JitEngineOptions } from './base.js';
