/**
 * A refusal by a gateway service (locks, keys, kill): what kind, a message for the person, and
 * the field at fault. Services shared by the API, the portal and the CLI throw it; each front says
 * it in its own protocol (the API maps the code to an HTTP status in proxy/http/errors.ts).
 */
export type RefusalCode = 'invalid' | 'forbidden' | 'not_found' | 'conflict';

export class RefusedError extends Error {
  constructor(readonly code: RefusalCode, message: string, readonly field?: string, readonly extra: Record<string, unknown> = {}) {
    super(message);
    this.name = 'RefusedError';
  }
}
