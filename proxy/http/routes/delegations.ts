import type { ApiServices } from '../services.js';
import { ok, type AddRoute } from './route.js';

/** Delegations of approvals: give one for a time window, list mine, end one. The policy engine decides. */
export function mountDelegationRoutes(add: AddRoute, s: Pick<ApiServices, 'engine' | 'roles'>): void {
  add({ method: 'GET', path: '/api/v1/delegations', summary: 'Delegations I gave or received that are not over (?scope=all: every one, SOC)', handler: async (req) => {
    const all = req.query.get('scope') === 'all' && s.roles.isSoc(req.principal);
    return ok(await s.engine.delegationsFor(req.principal, { all }));
  } });
  add({
    method: 'POST', path: '/api/v1/delegations', summary: 'Delegate my approvals to another approver for a time window',
    body: { delegate: 'identity (an approver)', from: 'start: ISO date-time or epoch ms (optional, default now)', until: 'end: ISO date-time or epoch ms', duration: 'or a duration from the start (e.g. 7d)', reason: 'string' },
    handler: async (req) => ok(await s.engine.delegate(req.principal, req.json()), 201),
  });
  add({ method: 'POST', path: '/api/v1/delegations/{id}/revoke', summary: 'End a delegation early (its delegator, its delegate, or the SOC)', handler: async (req) => (
    ok(await s.engine.revokeDelegation(req.principal, req.params['id']!, { admin: s.roles.isSoc(req.principal) }))
  ) });
}
