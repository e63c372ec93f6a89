export type PolicyErrorCode =
  | 'invalid' | 'not_eligible' | 'self_approval' | 'not_approver' | 'mfa_required' | 'outside_hours' | 'not_found' | 'conflict';

/** A refusal by the policy: a code saying what kind (each front maps it to its own protocol: the API to an HTTP status), a message for the person, the field at fault. */
export class PolicyError extends Error {
  constructor(readonly code: PolicyErrorCode, message: string, readonly field?: string) {
    super(message);
    this.name = 'PolicyError';
  }
}
