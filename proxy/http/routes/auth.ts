import { createHmac, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import { z } from 'zod';
import type { Principal } from '../../../auth/types.js';
import { SignInError } from '../../../auth/oidc.js';
import { parseDuration } from '../../../policies/config.js';
import { sourceOf } from '../../../protocols/net.js';
import { lockedMessage } from '../../locks.js';
import { principalOf } from '../callers.js';
import { escapeHtml, page } from '../html.js';
import { HttpError, type HttpReply, type HttpRequest } from '../server.js';
import type { ApiServices } from '../services.js';
import { continuePage, strictCookieBounce } from '../web-security.js';
import type { AddRoute } from './route.js';

/**
 * Browser sign-in (OIDC code flow), the CLI's device flow, sign-out, and the approval page of a
 * native sign-in. Cookies: the web session is SameSite=Strict; the OIDC state cookie is Lax because
 * the IdP sends the browser back with a cross-site top-level redirect, which must carry it. After
 * the callback the browser moves on from a gateway page (not a redirect) so that the Strict cookie
 * is sent on the first page too. Forms carry the web session's CSRF token.
 */

/** Only same-origin paths are allowed as return targets (no open redirect). */
function safeReturn(v: string | null | undefined): string {
  if (!v || !v.startsWith('/') || v.startsWith('//') || v.includes('\\')) return '/';
  return v;
}

type AuthDeps = Pick<ApiServices, 'oidc' | 'http' | 'callers' | 'publicUrl' | 'log' | 'audit' | 'store' | 'clock' | 'locks' | 'config'
  | 'links' | 'webSessions' | 'tokens' | 'key' | 'approvals' | 'engine'>;

export function mountAuthRoutes(add: AddRoute, s: AuthDeps): void {
  const needOidc = () => {
    if (!s.oidc) throw new HttpError(503, 'no identity provider is configured on this gateway');
    return s.oidc;
  };

  add({ method: 'GET', path: '/auth/login', summary: 'Browser sign-in: redirect to the IdP (?returnTo=/path&mfa=1 for step-up)', auth: false, handler: async (req) => {
    const { url, state } = await needOidc().beginLogin({ returnTo: safeReturn(req.query.get('returnTo')), mfa: req.query.get('mfa') === '1' });
    const sec = s.http.security;
    return { status: 302, headers: { location: url, 'set-cookie': sec.setCookie(sec.stateCookie, state, 600, 'Lax'), 'cache-control': 'no-store' } };
  } });

  add({ method: 'GET', path: '/auth/callback', summary: 'OIDC redirect target', auth: false, handler: async (req) => {
    const sec = s.http.security;
    const state = req.cookie(sec.stateCookie);
    if (!state) return page('Sign-in failed', '<h1>Sign-in failed</h1><p class="err">The sign-in took too long or cookies are blocked. <a href="/auth/login">Try again</a>.</p>', 400);
    const url = new URL(`${s.publicUrl}${req.path}?${req.query.toString()}`);
    let claims;
    try {
      claims = await needOidc().finishLogin(url, state);
    } catch (e) {
      s.log.warn({ err: (e as Error).message }, 'OIDC callback refused');
      await s.audit.append('anonymous', 'signin.failed', null, { reason: (e as Error).message.slice(0, 300), clientAddr: req.remote });
      return page('Sign-in failed', `<h1>Sign-in failed</h1><p class="err">${escapeHtml((e as Error).message)}</p><p><a href="/auth/login">Try again</a></p>`, 400);
    }
    const now = s.clock.now();
    const prev = await s.store.getIdentity(claims.sub);
    await s.store.upsertIdentity({ sub: claims.sub, email: claims.email ?? null, name: claims.name ?? null, groups: claims.groups, firstSeen: prev?.firstSeen ?? now, lastSeen: now });
    const lock = await s.locks.identityLock(claims.sub);
    if (lock) {
      await s.audit.append(claims.sub, 'signin.refused', lock.id, { via: 'oidc', code: 'locked', clientAddr: req.remote });
      return page('Sign-in refused', `<h1>Sign-in refused</h1><p class="err">${escapeHtml(lockedMessage(claims.sub, lock))}.</p>`, 403);
    }
    const ttl = parseDuration(s.config.gateway.webSessionTtl);
    // The IdP's tokens from this sign-in re-validate the session (and tokens made from it) later.
    const link = await s.links.create(claims.sub, claims.idp, now + ttl);
    const { cookie: value, record } = await s.webSessions.create(claims.sub, claims.mfa ? claims.authTime : null, ttl, link?.id ?? null);
    await s.audit.append(claims.sub, 'signin', record.id, { via: 'oidc', mfa: claims.mfa, groups: claims.groups, clientAddr: req.remote, link: link?.id ?? null });
    // Not a redirect: a redirect chain that started on the IdP is cross-site, and the browser would
    // not send the new Strict cookie to the page. A gateway page moving on is same-origin.
    const next = continuePage(safeReturn(claims.returnTo));
    return {
      ...next,
      headers: { ...next.headers, 'set-cookie': [sec.setCookie(sec.sessionCookie, value.reveal(), Math.floor(ttl / 1000), 'Strict'), sec.setCookie(sec.stateCookie, '', 0, 'Lax')] },
    };
  } });

  add({ method: 'POST', path: '/auth/logout', summary: 'End the browser session (the portal\'s form, with its CSRF token)', auth: false, handler: async (req) => {
    const sec = s.http.security;
    const c = req.cookie(sec.sessionCookie);
    if (c) {
      sec.requireForm(req, c, new URLSearchParams(req.body.toString('utf8')));
      await s.webSessions.revoke(c);
    }
    return { status: 303, headers: { location: '/', 'set-cookie': sec.setCookie(sec.sessionCookie, '', 0, 'Strict') } };
  } });

  // ---- device flow for the CLI: the gateway is the OIDC client; the CLI only talks to the gateway.
  add({ method: 'POST', path: '/api/v1/auth/device', summary: 'CLI sign-in: start the device authorization grant', auth: false, body: { mfa: 'boolean (optional)' }, handler: async (req) => {
    const b = z.object({ mfa: z.boolean().optional() }).safeParse(req.json());
    if (!b.success) throw new HttpError(400, 'mfa: a boolean', { field: 'mfa' });
    try {
      return { status: 200, body: await needOidc().startDevice({ mfa: b.data.mfa, source: sourceOf(req.remote) }) };
    } catch (e) {
      if (e instanceof SignInError && e.code === 'too_many_pending') return { status: 429, headers: { 'retry-after': '60' }, body: { error: 'too_many_pending', message: e.message } };
      throw e;
    }
  } });
  add({ method: 'POST', path: '/api/v1/auth/device/token', summary: 'CLI sign-in: poll; returns an API token when the person approved', auth: false, body: { handle: 'string' }, handler: async (req) => {
    const b = z.object({ handle: z.string().min(1).max(4000), name: z.string().max(100).optional() }).safeParse(req.json());
    if (!b.success) throw new HttpError(400, 'handle: the handle from POST /api/v1/auth/device', { field: 'handle' });
    const r = await needOidc().pollDevice(b.data.handle);
    if (r.status === 'pending') return { status: 202, body: { status: 'pending' } };
    if (r.status !== 'done') return { status: 400, body: { status: r.status, error: r.status, message: r.message } };
    const c = r.claims;
    const now = s.clock.now();
    const prev = await s.store.getIdentity(c.sub);
    await s.store.upsertIdentity({ sub: c.sub, email: c.email ?? null, name: c.name ?? null, groups: c.groups, firstSeen: prev?.firstSeen ?? now, lastSeen: now });
    const lock = await s.locks.identityLock(c.sub);
    if (lock) {
      await s.audit.append(c.sub, 'signin.refused', lock.id, { via: 'device', code: 'locked' });
      return { status: 403, body: { status: 'denied', error: 'forbidden', code: 'locked', message: lockedMessage(c.sub, lock) } };
    }
    const ttl = Math.min(12 * 3_600_000, s.tokens.maxTtlMs);
    // The device sign-in's refresh token re-validates this token (and tokens made with it) later.
    const link = await s.links.create(c.sub, c.idp, now + ttl);
    const { token, record } = await s.tokens.create(c.sub, b.data.name ?? 'tollgate login', ttl, c.mfa ? c.authTime : null, link?.id ?? null);
    await s.audit.append(c.sub, 'signin', record.id, { via: 'device', mfa: c.mfa, groups: c.groups, link: link?.id ?? null });
    return { status: 200, body: { status: 'done', token: token.reveal(), identity: c.sub, groups: c.groups, expiresAt: new Date(record.expiresAt).toISOString() } };
  } });

  // ---- browser approval of a native sign-in (SSH keyboard-interactive)
  // The page says exactly what is approved (client address, target, role, the identity the session
  // will run as); the approval belongs to the first identity that opens it, and only an explicit
  // POST from the gateway's own origin with this page's CSRF token decides it.
  const csrfKey = s.key.deriveKey('approve-login-csrf');
  const csrfFor = (id: string, p: Principal) => createHmac('sha256', csrfKey)
    .update(`${id}\u0000${p.sub}\u0000${p.credential ? `${p.credential.kind}:${p.credential.id}` : p.via}`).digest('base64url');
  const sameOrigin = (req: HttpRequest): boolean => {
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin') return false;
    const origin = req.headers['origin'];
    return origin === undefined || origin === new URL(s.publicUrl).origin;
  };
  const approvalPage = async (req: HttpRequest): Promise<HttpReply> => {
    const sec = s.http.security;
    const cookie = req.cookie(sec.sessionCookie);
    const p = await principalOf(s, req);
    if (!p) return strictCookieBounce(req, !!cookie) ?? { status: 302, headers: { location: `/auth/login?returnTo=${encodeURIComponent(req.path)}`, 'cache-control': 'no-store' } };
    const id = req.params['id']!;
    const notFound = () => page('Sign-in request', '<h1>Sign-in request not found</h1><p>It was already decided or has expired.</p>', 404);
    const other = () => page('Sign-in request', '<h1>Not your sign-in request</h1><p class="err">This sign-in request was opened by another identity first; only that identity can approve or deny it. If someone sent you this link, do not use it.</p>', 403);
    if (req.method === 'POST') {
      const type = String(req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
      const form = new URLSearchParams(type === 'application/x-www-form-urlencoded' ? req.body.toString('utf8') : '');
      const token = Buffer.from(form.get('csrf') ?? '');
      const expected = Buffer.from(csrfFor(id, p));
      if (!sameOrigin(req) || token.length !== expected.length || !timingSafeEqual(token, expected)) {
        await s.audit.append(p.sub, 'approval.refused', null, { code: 'csrf', clientAddr: req.remote, origin: req.headers['origin'] ?? null });
        return page('Sign-in request', '<h1>Not approved</h1><p class="err">This form did not come from the approval page on this gateway. Open the link again and decide there.</p>', 403);
      }
      const decision = form.get('decision');
      if (decision !== 'approve' && decision !== 'deny') return page('Sign-in request', '<h1>Not approved</h1><p class="err">Choose Approve or Deny.</p>', 400);
      if (decision === 'approve' && form.get('confirm') !== 'yes') {
        return page('Sign-in request', '<h1>Not approved</h1><p class="err">Tick the box to confirm that you started this sign-in yourself, or choose Deny.</p>', 400);
      }
      const d = await s.approvals.decide(id, p, decision === 'approve');
      if (!d.ok) return d.code === 'gone' ? notFound() : other();
      const out = d.outcome;
      await s.audit.append(p.sub, decision === 'approve' ? 'approval.approved' : 'approval.denied', null, { ok: out.ok, clientAddr: req.remote });
      const msg = out.ok
        ? `Approved: the client is signing in to ${escapeHtml(out.auth.target.name)} as ${escapeHtml(out.auth.role.name)}, as ${escapeHtml(out.auth.principal.sub)}.`
        : escapeHtml(out.reason);
      return page('Sign-in request', `<h1>${out.ok ? 'Approved' : 'Not approved'}</h1><p>${msg}</p><p>You can close this page.</p>`);
    }
    const o = s.approvals.open(id, p.sub);
    if (!o.ok) return o.code === 'gone' ? notFound() : other();
    const { req: ask, createdAt, expiresAt } = o.pending;
    const at = ask.username.indexOf(':');
    const targetName = at < 0 ? ask.username : ask.username.slice(0, at);
    const askedRole = at < 0 ? '' : ask.username.slice(at + 1);
    const target = s.config.targets.find((t) => t.name === targetName);
    const grant = target ? await s.engine.activeGrant(p.sub, target.name, askedRole || undefined) : null;
    const role = askedRole || grant?.role || '';
    const now = s.clock.now();
    const clientHost = hostOf(ask.clientAddr);
    const browserHost = hostOf(req.remote);
    const elsewhere = clientHost && browserHost && clientHost !== browserHost;
    const who = `${p.sub}${p.name && p.name !== p.sub ? ` (${p.name})` : ''}`;
    return page('Approve sign-in', `<h1>Approve a sign-in as ${escapeHtml(p.sub)}?</h1>
<p>A native client asks to open a session <strong>as you</strong>. It will use your grant and be recorded as yours.</p>
<dl>
<dt>Client</dt><dd><strong>${escapeHtml(ask.protocol)}</strong> client at <code id="client-addr">${escapeHtml(ask.clientAddr)}</code></dd>
<dt>Target</dt><dd><strong id="target">${escapeHtml(targetName)}</strong>${target ? ` (${escapeHtml(target.protocol)}, ${escapeHtml(target.risk)} risk)` : ' — no such target'}</dd>
<dt>Role</dt><dd><strong id="role">${role ? escapeHtml(role) : 'none'}</strong>${grant ? ` (grant ${escapeHtml(grant.id)}, ends ${escapeHtml(new Date(grant.expiresAt).toISOString())})` : ' — you hold no active grant for it, so approving will be refused'}</dd>
<dt>Runs as</dt><dd><strong id="identity">${escapeHtml(who)}</strong></dd>
<dt>Asked</dt><dd>${Math.max(0, Math.round((now - createdAt) / 1000))} s ago; this request expires in ${Math.max(0, Math.round((expiresAt - now) / 1000))} s</dd>
</dl>
${elsewhere ? `<p class="err" id="elsewhere">The client connects from ${escapeHtml(clientHost)}, but this browser from ${escapeHtml(browserHost)}. If you are not sure that is your own machine, deny.</p>` : ''}
<p><strong>Approve only if you typed this command yourself just now.</strong> If someone sent you this link, choose Deny: approving would let their client in as you.</p>
<form method="post">
<input type="hidden" name="csrf" value="${csrfFor(id, p)}">
<p><label><input type="checkbox" name="confirm" value="yes" required> I started this ${escapeHtml(ask.protocol)} sign-in to ${escapeHtml(targetName)} myself</label></p>
<button name="decision" value="approve">Approve as ${escapeHtml(p.sub)}</button><button name="decision" value="deny" formnovalidate>Deny</button>
</form>`);
  };
  s.http.route('GET', '/approve-login/:id', approvalPage);
  s.http.route('POST', '/approve-login/:id', approvalPage);
}

/** The IP part of "ip:port" or a bare IP (IPv4-mapped IPv6 as IPv4); '' when it is neither. */
function hostOf(addr: string): string {
  let a = String(addr ?? '').trim();
  if (!isIP(a)) {
    const m = /^\[?(.+?)\]?:(\d+)$/.exec(a);
    if (m && isIP(m[1]!)) a = m[1]!;
  }
  if (!isIP(a)) return '';
  const mapped = /^(?:0{0,4}:){0,5}(?::|0{0,4}:)?ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
  if (mapped) return mapped[1]!;
  const hexMapped = /^(?:0{1,4}:){5}ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(a);
  if (hexMapped) {
    const hi = parseInt(hexMapped[1]!, 16);
    const lo = parseInt(hexMapped[2]!, 16);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return a.toLowerCase();
}
