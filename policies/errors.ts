import type { z } from 'zod';

export type PolicyErrorCode =
  | 'invalid' | 'not_eligible' | 'self_approval' | 'not_approver' | 'mfa_required' | 'outside_hours' | 'not_found' | 'conflict';

/** A refusal by the policy: a code saying what kind (each front maps it to its own protocol: the API to an HTTP status), a message for the person, the field at fault. */
export class PolicyError extends Error {
  constructor(readonly code: PolicyErrorCode, message: string, readonly field?: string) {
    super(message);
    this.name = 'PolicyError';
  }
}

/** A body that failed its schema: a PolicyError naming the first field at fault. */
export function invalidBody(err: z.ZodError): PolicyError {
  const issue = err.issues[0]!;
  const field = issue.path.length ? String(issue.path[0]) : 'body';
  const message = issue.code === 'invalid_type' ? (issue.input === undefined ? 'is required' : `expected ${issue.expected}`)
    : issue.code === 'invalid_value' ? `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`
      : issue.code === 'unrecognized_keys' ? `unknown field(s) ${issue.keys.join(', ')}` : issue.message;
  return new PolicyError('invalid', `${field}: ${message}`, field);
}
