import type { Actor } from '../policies/config.js';

/** What the portal and the API let a signed-in person do beyond their own access. */
export interface Roles { soc: boolean; approver: boolean; reviewer: boolean }

/**
 * Who runs the SOC console (gateway.socGroups) and who approves (policies decide that), in one
 * place for the API, the portal and the live view.
 */
export class GatewayRoles {
  constructor(private readonly socGroups: readonly string[], private readonly policies: { isApprover(p: Actor): boolean; isScheduledReviewer(p: Actor): boolean }) {}

  isSoc(p: Pick<Actor, 'groups'>): boolean {
    return p.groups.some((g) => this.socGroups.includes(g));
  }

  isApprover(p: Actor): boolean {
    return this.policies.isApprover(p);
  }

  /** Decides access reviews: a reviewer or escalation group of a configured schedule (approvers review their policies by default). */
  isReviewer(p: Actor): boolean {
    return this.policies.isScheduledReviewer(p);
  }

  of(p: Actor | null): Roles {
    return p ? { soc: this.isSoc(p), approver: this.isApprover(p), reviewer: this.isReviewer(p) } : { soc: false, approver: false, reviewer: false };
  }
}
