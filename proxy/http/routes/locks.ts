import { z } from 'zod';
import type { ApiServices } from '../services.js';
import { durationField, ok, parse, str, type AddRoute } from './route.js';

/** Locks (SOC): proxy/locks.ts applies them. */
export function mountLockRoutes(add: AddRoute, s: Pick<ApiServices, 'locks'>): void {
  add({ method: 'POST', path: '/api/v1/locks', summary: 'Lock an identity, target or grant: ends live sessions, refuses new ones (SOC)', auth: 'soc', body: { scope: 'identity|target|grant', value: 'string', reason: 'string', ttl: 'duration (optional)' }, handler: async (req) => {
    const b = parse(z.object({ scope: z.enum(['identity', 'target', 'grant']), value: str(300), reason: str(2000), ttl: durationField() }), req);
    const { lock, sessionsEnded } = await s.locks.create(req.principal.sub, b);
    return ok({ ...lock, sessionsEnded }, 201);
  } });
  add({ method: 'GET', path: '/api/v1/locks', summary: 'Locks (?active=1)', auth: 'soc', handler: async (req) => ok(await s.locks.list({ active: req.query.get('active') === '1' })) });
  add({ method: 'DELETE', path: '/api/v1/locks/{id}', summary: 'Remove a lock (SOC)', auth: 'soc', handler: async (req) => ok(await s.locks.remove(req.params['id']!, req.principal.sub)) });
}
