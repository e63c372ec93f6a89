import { HttpError } from '../server.js';
import type { ApiServices } from '../services.js';
import { ok, type AddRoute } from './route.js';
import type { LeaseRecord, LeaseState } from '../../store/types.js';

const STATES: LeaseState[] = ['pending', 'active', 'revoking', 'revoked', 'failed'];

/** A lease as the API shows it: never more than the store holds (which is never a password). */
function leaseView(l: LeaseRecord) {
  return {
    id: l.id, sessionId: l.sessionId, grantId: l.grantId, target: l.target, kind: l.kind, state: l.state, data: l.data,
    createdAt: l.createdAt, activatedAt: l.activatedAt, revokedAt: l.revokedAt, error: l.error, attempts: l.attempts ?? 0, retryAt: l.retryAt ?? null,
  };
}

/** Leases (SOC): what was minted on which target, and the standing privileges a failed revoke left. */
export function mountLeaseRoutes(add: AddRoute, s: Pick<ApiServices, 'store' | 'sessions'>): void {
  add({ method: 'GET', path: '/api/v1/leases', summary: 'Leases (SOC): ?standing=1 (not revoked, no live session: failed revokes waiting for their retry), or ?state=&session=&target=', auth: 'soc', handler: async (req) => {
    const q = req.query;
    if (q.get('standing') === '1') return ok((await s.sessions.standing()).map(leaseView));
    const state = q.get('state');
    if (state && !STATES.includes(state as LeaseState)) throw new HttpError(400, `state: one of ${STATES.join(', ')}`, { field: 'state' });
    const rows = await s.store.listLeases({
      state: state ? [state as LeaseState] : undefined, sessionId: q.get('session') ?? undefined, target: q.get('target') ?? undefined,
    });
    return ok(rows.map(leaseView));
  } });
}
