import type { ApiServices } from '../services.js';
import { HttpError } from '../server.js';
import { ok, type AddRoute } from './route.js';

/** Delivery visibility (SOC): notifications that failed or are being retried, and how far each SIEM sink has acknowledged the audit stream. */
export function mountNotificationRoutes(add: AddRoute, s: Pick<ApiServices, 'notifications' | 'siem'>): void {
  add({ method: 'GET', path: '/api/v1/notifications', summary: 'Notification channels, deliveries by state, and the ones that failed or are being retried (SOC)', auth: 'soc', handler: async () => ok(await s.notifications.status()) });
  add({ method: 'POST', path: '/api/v1/notifications/deliveries/{id}/retry', summary: 'Try a failed or waiting notification again now, with a fresh set of attempts (SOC; audited)', auth: 'soc', handler: async (req) => {
    const out = await s.notifications.retry(req.params['id']!, req.principal.sub);
    if (!out) throw new HttpError(404, 'no failed or waiting notification with this id (delivered ones are not sent again)');
    return ok(out);
  } });
  add({ method: 'GET', path: '/api/v1/siem', summary: 'SIEM sinks: the last audit seq each acknowledged, the head, how far behind, the last error (SOC)', auth: 'soc', handler: async () => ok(await s.siem.status()) });
}
