import { z } from 'zod';
import type { Gateway } from '../gateway.js';
import type { ApiRoute } from './openapi.js';
import { HttpError, type HttpReply, type HttpRequest } from './server.js';
import { parseDuration } from '../config.js';
import type { Authed } from './api.js';
import { continuePage, strictCookieBounce } from './web-security.js';

/**
 * Browser sign-in (OIDC code flow), the CLI's device flow, sign-out, and the approval page of a
 * native sign-in. Cookies: the web session is SameSite=Strict; the OIDC state cookie is Lax because
 * the IdP sends the browser back with a cross-site top-level redirect, which must carry it. After
 * the callback the browser moves on from a gateway page (not a redirect) so that the Strict cookie
 * is sent on the first page too. Forms carry the web session's CSRF token.
 */

type Add = (r: ApiRoute & { handler: (req: Authed) => Promise<HttpReply> | HttpReply }) => void;

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

export function page(title: string, body: string, status = 200): HttpReply {
  return {
    status,
    headers: {
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'",
      'cache-control': 'no-store',
    },
    body: `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${escapeHtml(title)} · Tollgate</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#1b1f24}h1{font-size:1.4rem}button{font-size:1rem;padding:.5rem 1rem;margin-right:.5rem}.err{color:#a40000}</style></head>
<body><main>${body}</main></body></html>`,
  };
}


/** Only same-origin paths are allowed as return targets (no open redirect). */
function safeReturn(v: string | null | undefined): string {
  if (!v || !v.startsWith('/') || v.startsWith('//') || v.includes('\\')) return '/';
  return v;
}

export function mountAuthRoutes(gw: Gateway, add: Add): void {
  const needOidc = () => {
    if (!gw.oidc) throw new HttpError(503, 'no identity provider is configured on this gateway');
    return gw.oidc;
  };

  add({ method: 'GET', path: '/auth/login', summary: 'Browser sign-in: redirect to the IdP (?returnTo=/path&mfa=1 for step-up)', auth: false, handler: async (req) => {
    const { url, state } = await needOidc().beginLogin({ returnTo: safeReturn(req.query.get('returnTo')), mfa: req.query.get('mfa') === '1' });
    const sec = gw.http.security;
    return { status: 302, headers: { location: url, 'set-cookie': sec.setCookie(sec.stateCookie, state, 600, 'Lax'), 'cache-control': 'no-store' } };
  } });

  add({ method: 'GET', path: '/auth/callback', summary: 'OIDC redirect target', auth: false, handler: async (req) => {
    const sec = gw.http.security;
    const state = req.cookie(sec.stateCookie);
    if (!state) return page('Sign-in failed', '<h1>Sign-in failed</h1><p class="err">The sign-in took too long or cookies are blocked. <a href="/auth/login">Try again</a>.</p>', 400);
    const url = new URL(`${gw.publicUrl}${req.path}?${req.query.toString()}`);
    let claims;
    try {
      claims = await needOidc().finishLogin(url, state);
    } catch (e) {
      gw.log.warn({ err: (e as Error).message }, 'OIDC callback refused');
      await gw.audit.append('anonymous', 'signin.failed', null, { reason: (e as Error).message.slice(0, 300), clientAddr: req.remote });
      return page('Sign-in failed', `<h1>Sign-in failed</h1><p class="err">${escapeHtml((e as Error).message)}</p><p><a href="/auth/login">Try again</a></p>`, 400);
    }
    const now = gw.clock.now();
    const prev = await gw.store.getIdentity(claims.sub);
    await gw.store.upsertIdentity({ sub: claims.sub, email: claims.email ?? null, name: claims.name ?? null, groups: claims.groups, firstSeen: prev?.firstSeen ?? now, lastSeen: now });
    const ttl = parseDuration(gw.config.gateway.webSessionTtl);
    const { cookie: value, record } = await gw.webSessions.create(claims.sub, claims.mfa ? claims.authTime : null, ttl);
    await gw.audit.append(claims.sub, 'signin', record.id, { via: 'oidc', mfa: claims.mfa, groups: claims.groups, clientAddr: req.remote });
    // Not a redirect: a redirect chain that started on the IdP is cross-site, and the browser would
    // not send the new Strict cookie to the page. A gateway page moving on is same-origin.
    const next = continuePage(safeReturn(claims.returnTo));
    return {
      ...next,
      headers: { ...next.headers, 'set-cookie': [sec.setCookie(sec.sessionCookie, value.reveal(), Math.floor(ttl / 1000), 'Strict'), sec.setCookie(sec.stateCookie, '', 0, 'Lax')] },
    };
  } });

  add({ method: 'POST', path: '/auth/logout', summary: 'End the browser session (the portal\'s form, with its CSRF token)', auth: false, handler: async (req) => {
    const sec = gw.http.security;
    const c = req.cookie(sec.sessionCookie);
    if (c) {
      sec.requireForm(req, c, new URLSearchParams(req.body.toString('utf8')));
      await gw.webSessions.revoke(c);
    }
    return { status: 303, headers: { location: '/', 'set-cookie': sec.setCookie(sec.sessionCookie, '', 0, 'Strict') } };
  } });

  // ---- device flow for the CLI: the gateway is the OIDC client; the CLI only talks to the gateway.
  add({ method: 'POST', path: '/api/v1/auth/device', summary: 'CLI sign-in: start the device authorization grant', auth: false, body: { mfa: 'boolean (optional)' }, handler: async (req) => {
    const b = z.object({ mfa: z.boolean().optional() }).safeParse(req.json());
    if (!b.success) throw new HttpError(400, 'mfa: a boolean', { field: 'mfa' });
    const d = await needOidc().startDevice({ mfa: b.data.mfa });
    return { status: 200, body: d };
  } });
  add({ method: 'POST', path: '/api/v1/auth/device/token', summary: 'CLI sign-in: poll; returns an API token when the person approved', auth: false, body: { handle: 'string' }, handler: async (req) => {
    const b = z.object({ handle: z.string().min(1).max(4000), name: z.string().max(100).optional() }).safeParse(req.json());
    if (!b.success) throw new HttpError(400, 'handle: the handle from POST /api/v1/auth/device', { field: 'handle' });
    const r = await needOidc().pollDevice(b.data.handle);
    if (r.status === 'pending') return { status: 202, body: { status: 'pending' } };
    if (r.status !== 'done') return { status: 400, body: { status: r.status, error: r.status, message: r.message } };
    const c = r.claims;
    const now = gw.clock.now();
    const prev = await gw.store.getIdentity(c.sub);
    await gw.store.upsertIdentity({ sub: c.sub, email: c.email ?? null, name: c.name ?? null, groups: c.groups, firstSeen: prev?.firstSeen ?? now, lastSeen: now });
    const { token, record } = await gw.tokens.create(c.sub, b.data.name ?? 'tollgate login', 12 * 3_600_000, c.mfa ? c.authTime : null);
    await gw.audit.append(c.sub, 'signin', record.id, { via: 'device', mfa: c.mfa, groups: c.groups });
    return { status: 200, body: { status: 'done', token: token.reveal(), identity: c.sub, groups: c.groups, expiresAt: new Date(record.expiresAt).toISOString() } };
  } });

  // ---- browser approval of a native sign-in (SSH keyboard-interactive)
  const approvalPage = async (req: HttpRequest): Promise<HttpReply> => {
    const { principalOf } = await import('./api.js');
    const sec = gw.http.security;
    const cookie = req.cookie(sec.sessionCookie);
    const p = await principalOf(gw, req);
    if (!p) return strictCookieBounce(req, !!cookie) ?? { status: 302, headers: { location: `/auth/login?returnTo=${encodeURIComponent(req.path)}` } };
    const id = req.params['id']!;
    const pending = gw.approvals.describe(id);
    if (!pending) return page('Sign-in request', '<h1>Sign-in request not found</h1><p>It was already decided or has expired.</p>', 404);
    if (req.method === 'POST') {
      const form = new URLSearchParams(req.body.toString('utf8'));
      if (p.via === 'web') sec.requireForm(req, cookie ?? '', form);
      const approve = form.get('decision') === 'approve';
      const out = await gw.approvals.decide(id, p, approve);
      const msg = !out ? 'It was already decided.' : out.ok ? `Approved: your ${escapeHtml(pending.protocol)} client is signing in to ${escapeHtml(out.auth.target.name)}.` : escapeHtml(out.reason);
      return page('Sign-in request', `<h1>${out?.ok ? 'Approved' : 'Not approved'}</h1><p>${msg}</p><p>You can close this page.</p>`);
    }
    return page('Approve sign-in', `<h1>Approve a sign-in?</h1>
<p>A <strong>${escapeHtml(pending.protocol)}</strong> client at <code>${escapeHtml(pending.clientAddr)}</code> wants to sign in to
<strong>${escapeHtml(pending.username)}</strong> as <strong>${escapeHtml(p.sub)}</strong>.</p>
<p>Approve only if you started this yourself just now.</p>
<form method="post"><input type="hidden" name="csrf" value="${escapeHtml(cookie ? sec.csrfToken(cookie) : '')}"><button name="decision" value="approve">Approve</button><button name="decision" value="deny">Deny</button></form>`);
  };
  gw.http.route('GET', '/approve-login/:id', approvalPage);
  gw.http.route('POST', '/approve-login/:id', approvalPage);
}
