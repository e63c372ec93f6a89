import type { Actor } from '../policies/config.js';

/** What the portal and the API let a signed-in person do beyond their own access. */
export interface Roles { soc: boolean; approver: boolean }

/**
 * Who runs the SOC console (gateway.socGroups) and who approves (policies decide that), in one
 * place for the API, the portal and the live view.
 */
export class GatewayRoles {
  constructor(private readonly socGroups: readonly string[], private readonly policies: { isApprover(p: Actor): boolean }) {}

  isSoc(p: Pick<Actor, 'groups'>): boolean {
    return p.groups.some((g) => this.socGroups.includes(g));
  }

  isApprover(p: Actor): boolean {
    return this.policies.isApprover(p);
  }

  of(p: Actor | null): Roles {
    return p ? { soc: this.isSoc(p), approver: this.isApprover(p) } : { soc: false, approver: false };
  }
}
