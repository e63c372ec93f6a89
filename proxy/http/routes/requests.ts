import { z } from 'zod';
import { HttpError } from '../server.js';
import type { ApiServices } from '../services.js';
import { grantView } from './grants.js';
import { ok, parse, str, type AddRoute } from './route.js';

/** A request with its approvals, as the API shows it. */
export async function requestView(s: Pick<ApiServices, 'store'>, id: string) {
  const r = await s.store.getRequest(id);
  if (!r) return null;
  const approvals = await s.store.listApprovals(id);
  return { ...r, approvals };
}

/** A role that elevates the person's own directory account: refused (409) when they have none, before anything is filed. */
async function refuseWithoutDirectoryAccount(s: Pick<ApiServices, 'grantLeases'>, p: { sub: string; email: string | null }, body: unknown): Promise<void> {
  const b = body as { target?: unknown; role?: unknown } | null;
  if (!s.grantLeases || !b || typeof b.target !== 'string') return;
  const why = await s.grantLeases.refusal(p, b.target, typeof b.role === 'string' ? b.role : undefined);
  if (why) throw new HttpError(409, `Tollgate: ${why}`, { field: 'role' });
}

/** Requests and their decisions; break-glass and its reviews. The policy engine decides; these routes ask it. */
export function mountRequestRoutes(add: AddRoute, s: Pick<ApiServices, 'store' | 'engine' | 'roles' | 'clock' | 'config' | 'grantLeases'>): void {
  add({ method: 'POST', path: '/api/v1/requests', summary: 'Request access to a target', body: { target: 'string', role: 'string', duration: 'duration (e.g. 2h) or seconds', reason: 'string' }, handler: async (req) => {
    const body = req.json();
    await refuseWithoutDirectoryAccount(s, req.principal, body);
    const r = await s.engine.createRequest(req.principal, body);
    return ok(await requestView(s, r.id), 201);
  } });
  add({ method: 'GET', path: '/api/v1/requests', summary: 'Requests: mine (default), ?scope=approvable (I can act on, with decidingFor: the delegator I decide for), ?scope=all (SOC)', handler: async (req) => {
    const scope = req.query.get('scope') ?? 'mine';
    const state = req.query.get('state') as never ?? undefined;
    let list;
    if (scope === 'approvable') {
      // Each with whom I would decide it for (a delegator's name when I decide as their delegate).
      const mine = await s.engine.pendingFor(req.principal);
      return ok(await Promise.all(mine.map(async (r) => ({ ...(await requestView(s, r.id)), decidingFor: (await s.engine.decidesFor(req.principal, r)) ?? null }))));
    }
    else if (scope === 'all') {
      if (!s.roles.isSoc(req.principal) && !s.roles.isApprover(req.principal)) throw new HttpError(403, 'only approvers and the SOC see all requests');
      list = await s.store.listRequests({ state, limit: 500 });
    } else list = await s.store.listRequests({ requester: req.principal.sub, state, limit: 500 });
    return ok(await Promise.all(list.map((r) => requestView(s, r.id))));
  } });
  add({ method: 'GET', path: '/api/v1/requests/{id}', summary: 'One request with its approvals', handler: async (req) => {
    const v = await requestView(s, req.params['id']!);
    if (!v) throw new HttpError(404, 'no such request');
    if (v.requester !== req.principal.sub && !s.roles.isSoc(req.principal) && !s.roles.isApprover(req.principal)) throw new HttpError(403, 'not your request');
    return ok(v);
  } });
  for (const action of ['approve', 'deny', 'cancel'] as const) {
    add({ method: 'POST', path: `/api/v1/requests/{id}/${action}`, summary: `${action[0]!.toUpperCase()}${action.slice(1)} a request`, body: action === 'cancel' ? undefined : { comment: 'string (optional)' }, handler: async (req) => {
      const b = parse(z.object({ comment: z.string().max(2000).optional() }), req);
      const id = req.params['id']!;
      if (action === 'approve') await s.engine.approve(req.principal, id, b.comment);
      else if (action === 'deny') await s.engine.deny(req.principal, id, b.comment);
      else await s.engine.cancel(req.principal, id);
      return ok(await requestView(s, id));
    } });
  }

  // ---- break-glass
  add({ method: 'POST', path: '/api/v1/breakglass', summary: 'Emergency access: immediate grant, alert, mandatory review', body: { target: 'string', role: 'string', duration: 'duration', reason: 'string' }, handler: async (req) => {
    const body = req.json();
    await refuseWithoutDirectoryAccount(s, req.principal, body);
    return ok(grantView(s, await s.engine.breakGlass(req.principal, body)), 201);
  } });
  add({ method: 'GET', path: '/api/v1/reviews', summary: 'Break-glass reviews (?state=open|closed)', handler: async (req) => {
    const st = req.query.get('state');
    const all = await s.store.listReviews(st === 'open' || st === 'closed' ? { state: st } : {});
    const p = req.principal;
    const list = s.roles.isSoc(p) || s.roles.isApprover(p) || s.engine.isReviewer(p) ? all : all.filter((r) => r.identity === p.sub);
    // Who may close it is the engine's rule; the portal shows why not.
    return ok(list.map((r) => ({ ...r, closeRefusal: r.state === 'open' ? s.engine.reviewRefusal(p, r)?.message ?? null : null })));
  } });
  add({ method: 'POST', path: '/api/v1/reviews/{id}/close', summary: 'Close a break-glass review (not by the person who used it)', body: { comment: 'string' }, handler: async (req) => {
    const b = parse(z.object({ comment: str(2000) }), req);
    return ok(await s.engine.closeReview(req.principal, req.params['id']!, b.comment));
  } });
}
