import { z } from 'zod';
import { HttpError } from '../server.js';
import type { ApiServices } from '../services.js';
import { ok, parse, type AddRoute, type Authed } from './route.js';

/** Access reviews (recertification): start one (SOC), see and decide its lines (its reviewers), export the results; exclusions. */
export function mountAccessReviewRoutes(add: AddRoute, s: Pick<ApiServices, 'engine' | 'roles' | 'config'>): void {
  /** A review the caller may see: its reviewers (and, once escalated, its escalation groups) and the SOC. */
  const visible = async (req: Authed) => {
    const v = await s.engine.reviewView(req.params['id']!);
    if (!v || (!s.roles.isSoc(req.principal) && !s.engine.isReviewerOf(req.principal, v))) throw new HttpError(404, 'no such access review');
    return v;
  };
  add({ method: 'GET', path: '/api/v1/access-reviews', summary: 'Access reviews I decide (SOC: all); ?state=open|completed', handler: async (req) => {
    const st = req.query.get('state');
    const list = await s.engine.reviewsFor(req.principal, { all: s.roles.isSoc(req.principal), state: st === 'open' || st === 'completed' ? st : undefined });
    const out = [];
    for (const rv of list) {
      const v = await s.engine.reviewView(rv.id);
      if (v) out.push({ ...rv, counts: v.counts, mayDecide: s.engine.isReviewerOf(req.principal, rv) });
    }
    return ok(out);
  } });
  add({
    method: 'POST', path: '/api/v1/access-reviews', summary: 'Start an access review of a policy now (SOC)', auth: 'soc',
    body: { policy: 'policy name', reviewers: 'reviewer groups (optional: the schedule\'s, else the policy\'s approvers)', dueIn: 'duration (optional, default 14d)' },
    handler: async (req) => ok(await s.engine.startReview(req.principal, req.json()), 201),
  });
  add({ method: 'GET', path: '/api/v1/access-reviews/policies', summary: 'Policies a review can be started for, with their schedules (SOC)', auth: 'soc', handler: () => ok(s.config.policies.map((p) => {
    const sch = s.config.reviews.find((r) => r.policy === p.name);
    return { name: p.name, approvers: p.approvers ?? [], schedule: sch ? { every: sch.every, reviewers: sch.reviewers, dueIn: sch.dueIn, escalateTo: sch.escalateTo } : null };
  })) });
  add({ method: 'GET', path: '/api/v1/access-reviews/{id}', summary: 'An access review with its lines', handler: async (req) => {
    const v = await visible(req);
    return ok({ ...v, mayDecide: s.engine.isReviewerOf(req.principal, v) });
  } });
  add({
    method: 'POST', path: '/api/v1/access-reviews/{id}/lines/{line}/decide', summary: 'Confirm or revoke one line (a revoked eligibility becomes an exclusion; its live grants end)',
    body: { decision: '"confirm" or "revoke"', comment: 'string (required to revoke)' },
    handler: async (req) => ok(await s.engine.decideLine(req.principal, req.params['id']!, req.params['line']!, req.json())),
  });
  add({ method: 'GET', path: '/api/v1/access-reviews/{id}/export', summary: 'The results as ?format=csv (default) or json', handler: async (req) => {
    const v = await visible(req);
    const format = req.query.get('format') ?? 'csv';
    if (format !== 'csv' && format !== 'json') throw new HttpError(400, 'format: "csv" or "json"', { field: 'format' });
    const e = (await s.engine.exportReview(v.id, format))!;
    const file = `access-review-${v.policy.replace(/[^A-Za-z0-9_.-]+/g, '_')}-${new Date(v.createdAt).toISOString().slice(0, 10)}.${format}`;
    return { status: 200, headers: { 'content-type': e.contentType, 'content-disposition': `attachment; filename="${file}"`, 'x-content-type-options': 'nosniff' }, body: e.body };
  } });
  add({ method: 'GET', path: '/api/v1/exclusions', summary: 'Exclusions access reviews made (SOC); ?active=1', auth: 'soc', handler: async (req) => (
    ok(await s.engine.exclusions({ active: req.query.get('active') === '1' }))
  ) });
  add({ method: 'POST', path: '/api/v1/exclusions/{id}/lift', summary: 'Give an excluded eligibility back (SOC; not one\'s own)', auth: 'soc', body: { reason: 'string' }, handler: async (req) => {
    const b = parse(z.object({ reason: z.string().max(2000).default('') }), req);
    return ok(await s.engine.liftExclusion(req.principal, req.params['id']!, b.reason));
  } });
}
