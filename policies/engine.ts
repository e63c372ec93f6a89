import type { PolicyTarget } from './config.js';
import { PolicyReviews } from './reviews.js';

/**
 * The just-in-time workflow: who may ask for what, which approvals a request needs, when it
 * escalates or times out, and when grants end. Pure logic over the Store; all time from the Clock.
 *
 * The engine is built in layers, one file each, every layer using the ones below it:
 *   base.ts       configuration lookups (policies, approvers, plans, MFA), hooks, serialised decisions
 *   timers.ts     timers for stage deadlines and grant ends, the sweep, catch-up and retries
 *   grants.ts     grants: creation data, expiry, revocation, extension, the expiry notice, the active grant
 *   checkout.ts   exclusive check-out of shared accounts: holder, queue, check-in
 *   delegation.ts approvers delegating their approvals for a time window
 *   requests.ts   requests, stages and decisions (approve, deny, cancel, extend, stage timeout)
 *   breakglass.ts break-glass and its reviews
 *   windows.ts    working hours on live sessions: a timer per policy window end
 *   reviews.ts    access reviews (recertification), their schedule, exclusions, export
 * hours.ts holds working hours and durations, notices.ts what the workflow tells people, errors.ts PolicyError.
 */
export class JitEngine<T extends PolicyTarget = PolicyTarget> extends PolicyReviews<T> {}

export { PolicyError, type PolicyErrorCode } from './errors.js';
export { inHours } from './hours.js';
export { validatePolicies, type AuditFn, type CheckoutAccount, type Eligibility, type JitEngineConfig, type JitEngineOptions, type WindowEvent } from './base.js';
export type { Notice, NoticeKind, Recipients } from './notices.js';
export type { CheckoutView } from './checkout.js';
export type { ReviewView } from './reviews.js';
