import { lockedMessage } from '../locks.js';
import { authProblem, principalOf } from './callers.js';
import { errorReply } from './errors.js';
import { openApiDocument, type ApiRoute } from './openapi.js';
import { HttpError, type Handler } from './server.js';
import type { ApiServices } from './services.js';
import { isUnsafeMethod } from './web-security.js';
import { mountAccessReviewRoutes } from './routes/access-reviews.js';
import { mountAuditRoutes } from './routes/audit.js';
import { mountCredentialRoutes } from './routes/credentials.js';
import { mountDelegationRoutes } from './routes/delegations.js';
import { mountAuthRoutes } from './routes/auth.js';
import { mountCheckoutRoutes } from './routes/checkouts.js';
import { mountGrantRoutes } from './routes/grants.js';
import { mountHealthRoutes } from './routes/health.js';
import { mountKeyRoutes } from './routes/keys.js';
import { mountLeaseRoutes } from './routes/leases.js';
import { mountLive } from './routes/live.js';
import { mountLockRoutes } from './routes/locks.js';
import { mountNotificationRoutes } from './routes/notifications.js';
import { mountRequestRoutes } from './routes/requests.js';
import { mountSessionRoutes } from './routes/sessions.js';
import { mountTargetRoutes } from './routes/targets.js';
import { mountTokenRoutes } from './routes/tokens.js';
import type { AddRoute, Authed } from './routes/route.js';

/** Routes a locked identity may still call: who am I (it says so). */
const OPEN_WHEN_LOCKED = new Set(['GET /api/v1/me']);

/**
 * The REST API: one route table (it is also the OpenAPI document) whose entries share the checks
 * every route needs: who is calling (callers.ts), an identity lock refusing its API calls (audited,
 * 403 naming the lock), CSRF for cookie-authenticated changes, SOC-only routes. The routes
 * themselves live in routes/, one file per resource, each taking only the services it uses.
 */
export function mountApi(s: ApiServices): void {
  const routes: ApiRoute[] = [];
  const http = s.http;
  // Authenticate from the headers before a body is read (no credential at all: decided at once).
  http.signedIn = (req) => (req.headers['authorization'] || req.cookie(http.security.sessionCookie) ? principalOf(s, req).then((p) => p !== null) : false);

  const add: AddRoute = (r) => {
    routes.push(r);
    const h: Handler = async (req) => {
      if (r.auth === false) return r.handler(req as Authed);
      const p = await principalOf(s, req);
      if (!p) throw new HttpError(authProblem(req)?.status ?? 401, authProblem(req)?.message ?? 'sign in first: send "Authorization: Bearer <API token>" or use the portal');
      if (!OPEN_WHEN_LOCKED.has(`${r.method} ${r.path}`)) {
        const lock = await s.locks.identityLock(p.sub);
        if (lock) {
          await s.audit.append(p.sub, 'api.refused', lock.id, { code: 'locked', method: r.method, path: r.path, via: p.via });
          throw new HttpError(403, lockedMessage(p.sub, lock), { code: 'locked' });
        }
      }
      // A browser sends the session cookie wherever the request comes from: a change made with it
      // must come from the gateway's own pages, as JSON (CSRF). API tokens are not sent by browsers.
      if (p.via === 'web' && isUnsafeMethod(req.method)) {
        http.security.requireSameOrigin(req);
        http.security.requireJson(req);
      }
      if (r.auth === 'soc' && !s.roles.isSoc(p)) throw new HttpError(403, `${p.sub} is not in a SOC group (${s.config.gateway.socGroups.join(', ')})`);
      return r.handler(Object.assign(req, { principal: p }));
    };
    http.route(r.method, r.path.replace(/\{(\w+)\}/g, ':$1'), h);
  };

  mountHealthRoutes(add, s, () => openApiDocument(routes));
  mountTokenRoutes(add, s);
  mountKeyRoutes(add, s);
  mountTargetRoutes(add, s);
  mountCredentialRoutes(add, s);
  mountRequestRoutes(add, s);
  mountGrantRoutes(add, s);
  mountCheckoutRoutes(add, s);
  mountDelegationRoutes(add, s);
  mountAccessReviewRoutes(add, s);
  mountSessionRoutes(add, s);
  mountLeaseRoutes(add, s);
  mountLockRoutes(add, s);
  mountAuditRoutes(add, s);
  mountNotificationRoutes(add, s);
  mountAuthRoutes(add, s);
  mountLive(s);

  http.onError = (e, req) => errorReply(e, req, s.log);
}
