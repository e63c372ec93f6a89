/**
 * HTTP apps: an identity-aware reverse proxy on the gateway's HTTP front. Browsers reach an app only
 * on its own origin, `<app>.<gateway host>` (`<app>.<appsDomain>`, or `<app>.localhost` for a gateway
 * on an IP); `/apps/<app>/` on the gateway host just redirects there. The gateway signs them in, checks
 * the grant, injects a credential (signed identity assertion, bearer or basic), records every
 * request and enforces the session's rules. Registered in protocols/index.ts.
 *
 * A target:
 *   - name: wiki                      # app host label too: wiki.<gateway host> (options.host overrides)
 *     protocol: http
 *     address: http://10.0.0.5:3000   # upstream base URL (a path prefix is kept)
 *     roles: [{ name: reader }]
 *     credentials:                    # what the gateway injects upstream
 *       mode: jwt                     # jwt | bearer | basic | none
 *       header: X-Tollgate-Assertion  # jwt: ES256, aud = target name, iss = public URL, JWKS at /.well-known/jwks.json
 *       authorization: false          # jwt: also "Authorization: Bearer <jwt>"
 *       # bearer: token: {env: WIKI_TOKEN}, or mintCommand/revokeCommand (argv; one token per session, under a lease)
 *       # basic: username + password: {file: ...}, or mintCommand printing {"username", "password"}
 *     options: { idleTimeout: 15m, cookieTtl: 12h, timeout: 30s, connections: 128 }
 * Rules with methods/path in policies (e.g. {methods: [DELETE], path: "/admin/*", action: deny}) apply per request.
 */
import { request } from 'undici';
import type { ProtocolModule } from '../types.js';
import { checkStageOf } from '../net.js';
import { appConfig, validateTarget } from './config.js';
import { LEASE_KIND, revokeTokenLease } from './credentials.js';
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
      const detail = `reachable: GET ${app.upstream.href} answered ${r.statusCode}`;
      return r.statusCode < 500 ? { ok: true, detail } : { ok: false, stage: 'protocol', detail };
    } catch (e) {
      return { ok: false, stage: checkStageOf(e, 'dial'), detail: `cannot reach ${app.upstream.href}: ${(e as Error & { code?: string }).code ?? (e as Error).message}` };
    }
  },

  leaseKinds: {
    [LEASE_KIND]: { holds: 'an app token minted by mintCommand', revoke: revokeTokenLease },
  },

  demo,
};

export default httpModule;
