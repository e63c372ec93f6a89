/**
 * HTTP apps: an identity-aware reverse proxy on the gateway's HTTP front. Browsers reach an app at
 * `<app>.<gateway host>` (or `/apps/<app>/` on the gateway host); the gateway signs them in, checks
 * the grant, injects a credential (signed identity assertion, bearer or basic), records every
 * request and enforces the session's rules. Registered in protocols/index.ts.
 */
import { request } from 'undici';
import type { ProtocolModule } from '../types.js';
import { appConfig, validateTarget } from './config.js';
import { revokeTokenLease } from './credentials.js';
import { demo } from './demo.js';
import { mountHttpApps } from './proxy.js';

export const httpModule: ProtocolModule = {
  name: 'http',
  defaultPort: 0,
  validateTarget,

  mountHttp(ctx, front) {
    mountHttpApps(ctx, front);
  },

  async checkTarget(_ctx, target) {
    const app = appConfig(target);
    try {
      const r = await request(app.upstream.href, { method: 'GET', headersTimeout: 5000, bodyTimeout: 5000 });
      await r.body.dump();
      return { ok: r.statusCode < 500, detail: `reachable: GET ${app.upstream.href} answered ${r.statusCode}` };
    } catch (e) {
      return { ok: false, detail: `cannot reach ${app.upstream.href}: ${(e as Error & { code?: string }).code ?? (e as Error).message}` };
    }
  },

  revokeLease: revokeTokenLease,

  demo,
};

export default httpModule;
