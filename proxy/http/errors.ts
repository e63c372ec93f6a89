import type { Logger } from 'pino';
import { PolicyError, type PolicyErrorCode } from '../../policies/errors.js';
import { RefusedError, type RefusalCode } from '../errors.js';
import { HttpError, type HttpReply, type HttpRequest } from './server.js';

/**
 * The one place where the API turns errors into HTTP answers: policy refusals and service
 * refusals by their code, HttpErrors by their status; anything else is a 500 that points to the
 * log (the error itself is logged, never sent). Every answer is JSON with a reason.
 */

const POLICY_STATUS: Record<PolicyErrorCode, number> = {
  invalid: 400, not_eligible: 403, self_approval: 403, not_approver: 403, mfa_required: 403, outside_hours: 403,
  not_found: 404, conflict: 409,
};

const REFUSAL_STATUS: Record<RefusalCode, number> = { invalid: 400, forbidden: 403, not_found: 404, conflict: 409 };

/** The HTTP status the API answers a policy refusal with. */
export function policyStatus(code: PolicyErrorCode): number {
  return POLICY_STATUS[code];
}

/** The `error` field of an answer with this status. */
export function codeFor(status: number): string {
  return ({ 400: 'invalid', 401: 'unauthenticated', 403: 'forbidden', 404: 'not_found', 405: 'method_not_allowed', 409: 'conflict', 410: 'gone', 413: 'too_large', 415: 'unsupported_media_type', 503: 'unavailable' } as Record<number, string>)[status] ?? 'error';
}

export function errorReply(e: unknown, req: HttpRequest, log: Logger): HttpReply {
  if (e instanceof HttpError) return { status: e.status, body: { error: codeFor(e.status), message: e.message, ...e.extra } };
  if (e instanceof PolicyError) return { status: policyStatus(e.code), body: { error: e.code, message: e.message, ...(e.field ? { field: e.field } : {}) } };
  if (e instanceof RefusedError) return { status: REFUSAL_STATUS[e.code], body: { error: e.code, message: e.message, ...(e.field ? { field: e.field } : {}), ...e.extra } };
  log.error({ err: e, path: req.path, method: req.method }, 'API handler failed');
  return { status: 500, body: { error: 'internal', message: 'internal error; see the gateway log' } };
}
