/**
 * `tollgate demo`: a small web app behind the gateway ("wiki") that verifies the gateway's identity
 * assertion against the gateway's JWKS and shows who is signed in. Demo only: it trusts an issuer
 * on loopback (the demo gateway), which a real app would pin in its configuration.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { createRemoteJWKSet, jwtVerify, decodeJwt } from 'jose';
import type { DemoTargets } from '../types.js';
import { esc } from './pages.js';

export async function demo(_dir: string, log: Logger): Promise<DemoTargets | null> {
  const keySets = new Map<string, ReturnType<typeof createRemoteJWKSet>>();
  const identify = async (token: string | undefined) => {
    if (!token) return { ok: false as const, error: 'no X-Tollgate-Assertion header: not reached through Tollgate' };
    try {
      const iss = String(decodeJwt(token).iss ?? '');
      if (!/^http:\/\/(127\.0\.0\.1|localhost)(:\d+)?$/.test(iss)) return { ok: false as const, error: `untrusted issuer ${iss}` };
      let set = keySets.get(iss);
      if (!set) { set = createRemoteJWKSet(new URL(`${iss}/.well-known/jwks.json`)); keySets.set(iss, set); }
      const { payload } = await jwtVerify(token, set, { issuer: iss, audience: 'wiki', algorithms: ['ES256'] });
      return { ok: true as const, payload };
    } catch (e) {
      return { ok: false as const, error: (e as Error).message };
    }
  };
  const server = http.createServer((req, res) => {
    void identify(req.headers['x-tollgate-assertion'] as string | undefined).then((who) => {
      const url = new URL(req.url ?? '/', 'http://wiki');
      if (url.pathname === '/api/whoami') {
        const body = JSON.stringify(who.ok ? { verified: true, ...who.payload } : { verified: false, error: who.error });
        res.writeHead(who.ok ? 200 : 401, { 'content-type': 'application/json' });
        res.end(body);
        return;
      }
      if (!who.ok) {
        res.writeHead(401, { 'content-type': 'text/plain; charset=utf-8' });
        res.end(`The demo wiki only answers through Tollgate: ${who.error}\n`);
        return;
      }
      const p = who.payload;
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Demo wiki</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}code{background:#eee;padding:0 .25rem}</style></head>
<body><h1>Demo wiki</h1><p>Hello <b>${esc(String(p.name ?? p.sub))}</b> (${esc(String(p.email ?? ''))}).</p>
<p>Tollgate signed this request for you: groups <code>${esc(JSON.stringify(p['groups'] ?? []))}</code>, role <code>${esc(String(p['role'] ?? ''))}</code>,
grant <code>${esc(String(p['grant'] ?? ''))}</code>, session <code>${esc(String(p['sid'] ?? ''))}</code>. The signature was checked against the gateway's JWKS.</p>
<p>You are at <code>${esc(url.pathname)}</code>; every request is recorded in your session.</p></body></html>`);
    });
  });
  await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(0, '127.0.0.1', () => resolve()); });
  const port = (server.address() as AddressInfo).port;
  log.info({ port }, 'demo wiki app listening');
  return {
    targets: [{
      name: 'wiki', protocol: 'http', address: `http://127.0.0.1:${port}`, risk: 'low',
      description: 'Demo web app behind the identity-aware proxy, on its own origin: http://wiki.localhost:<gateway port>/',
      roles: [{ name: 'reader' }, { name: 'editor' }],
      credentials: { mode: 'jwt' }, options: {},
    }],
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
