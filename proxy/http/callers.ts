import type { Principal } from '../../auth/types.js';
import type { CallerResult, Callers } from '../../auth/lifecycle.js';
import type { HttpRequest } from './server.js';

/**
 * Who is calling over HTTP: a Bearer API token or the web session cookie, re-validated with the
 * IdP when due (auth/lifecycle.ts). The API, the portal, the sign-in pages and the live view ask
 * here; the answer is kept per request, so the front's check before the body is read and the
 * handler's own share one lookup.
 */

export interface CallerDeps {
  callers: Pick<Callers, 'fromToken' | 'fromCookie'>;
  http: { security: { sessionCookie: string } };
}

/** The answer of principalOf per request (keyed by its headers). */
const principals = new WeakMap<Record<string, string>, Promise<Principal | null>>();

/** Why a request carried credentials that did not establish a principal (suspended token, IdP down...). */
const authProblems = new WeakMap<Record<string, string>, { status: number; message: string }>();

export function authProblem(req: HttpRequest): { status: number; message: string } | undefined {
  return authProblems.get(req.headers);
}

/** The caller of `req`, or null when no credential is valid (authProblem(req) then says why). */
export function principalOf(deps: CallerDeps, req: HttpRequest): Promise<Principal | null> {
  let p = principals.get(req.headers);
  if (!p) {
    p = lookupPrincipal(deps, req);
    principals.set(req.headers, p);
  }
  return p;
}

async function lookupPrincipal(deps: CallerDeps, req: HttpRequest): Promise<Principal | null> {
  const auth = req.headers['authorization'];
  let r: CallerResult | null = null;
  if (auth) {
    const m = /^Bearer\s+(\S+)$/i.exec(auth);
    r = m ? await deps.callers.fromToken(m[1]!) : { ok: false, status: 401, message: 'the Authorization header must be "Bearer <API token>"' };
  } else {
    const cookie = req.cookie(deps.http.security.sessionCookie);
    if (cookie) r = await deps.callers.fromCookie(cookie);
  }
  if (!r) return null;
  if (!r.ok) { authProblems.set(req.headers, r); return null; }
  return r.principal;
}
