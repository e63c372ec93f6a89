import { timingSafeEqual } from 'node:crypto';
import { resolveSecret } from '../../config.js';
import type { HttpReply } from '../server.js';
import type { ApiServices } from '../services.js';
import { ok, type AddRoute } from './route.js';

/** Liveness, Prometheus metrics, the OpenAPI document and the gateway's CA certificate: no sign-in. */
export function mountHealthRoutes(add: AddRoute, s: Pick<ApiServices, 'store' | 'config' | 'metrics' | 'tls' | 'readiness'>, openApi: () => object): void {
  // /healthz is unauthenticated: it says the gateway answers and its store works, nothing else
  // (no gateway id, targets or session counts; those are in /metrics and the API).
  add({ method: 'GET', path: '/healthz', summary: 'Liveness: the gateway answers and its store works (nothing else)', auth: false, handler: async () => {
    await s.store.getKv('health');
    return ok({ ok: true });
  } });
  // /readyz is a load balancer's health check: 200 only when this node should get traffic.
  add({ method: 'GET', path: '/readyz', summary: 'Readiness: the store, the IdP and every listener are up and the gateway is not draining (503 otherwise)', auth: false, handler: async () => {
    const r = await s.readiness();
    return { status: r.ready ? 200 : 503, body: r };
  } });
  const metricsToken = s.config.gateway.metricsToken ? Buffer.from(resolveSecret(s.config.gateway.metricsToken, s.config, 'gateway.metricsToken').reveal()) : null;
  add({ method: 'GET', path: '/metrics', summary: 'Prometheus metrics (with gateway.metricsToken: "Authorization: Bearer <token>")', auth: false, handler: async (req): Promise<HttpReply> => {
    if (metricsToken) {
      const m = /^Bearer\s+(\S+)$/i.exec(req.headers['authorization'] ?? '');
      const got = Buffer.from(m?.[1] ?? '');
      if (got.length !== metricsToken.length || !timingSafeEqual(got, metricsToken)) {
        return { status: 401, headers: { 'www-authenticate': 'Bearer realm="tollgate-metrics"' }, body: { error: 'unauthenticated', message: 'send "Authorization: Bearer <gateway.metricsToken>"' } };
      }
    }
    return { status: 200, headers: { 'content-type': s.metrics.contentType }, body: await s.metrics.metrics() };
  } });
  add({ method: 'GET', path: '/api/v1/openapi.json', summary: 'This document', auth: false, handler: () => ok(openApi()) });
  add({ method: 'GET', path: '/api/v1/ca.pem', summary: "The gateway's CA certificate (PEM), for clients that pin it", auth: false, handler: () => ({
    status: 200, headers: { 'content-type': 'application/x-pem-file' }, body: s.tls.ca || s.tls.cert,
  }) });
}
