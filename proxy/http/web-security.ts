import { createHmac, timingSafeEqual } from 'node:crypto';
import { HttpError, type HttpReply, type HttpRequest } from './messages.js';

/**
 * What keeps other origins out of the gateway's own origin (portal, API, sign-in pages):
 *   - cookie names and attributes: host-only (never a Domain), `__Host-` prefixed and Secure when the
 *     front is TLS, the session cookie SameSite=Strict;
 *   - the Origin gate: a cookie-authenticated state change and every WebSocket upgrade must come from
 *     the origin of `gateway.publicUrl` (Origin, and Sec-Fetch-Site where the browser sends it);
 *   - JSON bodies of cookie-authenticated calls must say `Content-Type: application/json` (a form
 *     or `text/plain` post from another page cannot pass as JSON);
 *   - HTML forms the gateway serves carry a CSRF token bound to the web session.
 * Bearer-token calls are programs, not browsers: none of this applies to them.
 */

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export function isUnsafeMethod(method: string): boolean { return UNSAFE.has(method.toUpperCase()); }

/** Cookie names the gateway owns (tg_session, tg_oidc, tg_app_<app>, with or without a prefix). */
export function isGatewayCookie(name: string): boolean {
  return /^(__host-|__secure-)?tg_/i.test(name.trim());
}

export class WebSecurity {
  constructor(private publicUrl: () => string, private secureCookies: boolean, private csrfKey: Buffer) {}

  /** The gateway's own origin, e.g. https://tollgate.example.com. */
  get origin(): string { return new URL(this.publicUrl()).origin; }

  /** Cookies carry Secure (and the __Host- prefix) when the front is TLS or secureCookies says so. */
  get secure(): boolean { return this.secureCookies || this.publicUrl().startsWith('https:'); }

  cookieName(base: string): string { return this.secure ? `__Host-${base}` : base; }

  get sessionCookie(): string { return this.cookieName('tg_session'); }
  get stateCookie(): string { return this.cookieName('tg_oidc'); }

  /** A host-only cookie (no Domain, Path=/). */
  setCookie(name: string, value: string, maxAgeSec: number, sameSite: 'Strict' | 'Lax'): string {
    return `${name}=${encodeURIComponent(value)}; Path=/; HttpOnly; SameSite=${sameSite}; Max-Age=${maxAgeSec}${this.secure ? '; Secure' : ''}`;
  }

  /**
   * Null when the request comes from the gateway's own origin; otherwise why not. A WebSocket
   * without Origin and Sec-Fetch-Site is a program (browsers always send Origin there); a state
   * change without either is refused.
   */
  foreignOrigin(header: (name: string) => string | undefined, websocket = false): string | null {
    const own = this.origin;
    const origin = header('origin');
    const site = header('sec-fetch-site');
    if (origin !== undefined && origin !== own) return `it comes from ${origin.slice(0, 120)}, not from the gateway's own origin ${own}`;
    if (site !== undefined && site !== 'same-origin') return `the browser says it comes from another site (Sec-Fetch-Site: ${site.slice(0, 40)})`;
    if (origin === undefined && site === undefined && !websocket) return `it carries no Origin header; send "Origin: ${own}" or use an API token`;
    return null;
  }

  /** Refuse (403) a cookie-authenticated change from anywhere but the gateway's own pages. */
  requireSameOrigin(req: Pick<HttpRequest, 'headers'>): void {
    const why = this.foreignOrigin((h) => req.headers[h]);
    if (why) throw new HttpError(403, `cross-origin request refused: ${why}`, { error: 'cross_origin' });
  }

  /** Refuse (415) a cookie-authenticated body that does not say it is JSON. */
  requireJson(req: Pick<HttpRequest, 'headers' | 'method' | 'body'>): void {
    if (!req.body.length && (req.method === 'DELETE')) return;
    if (!/^application\/json\s*(;|$)/i.test(req.headers['content-type'] ?? '')) {
      throw new HttpError(415, 'send the body as JSON with "Content-Type: application/json"', { field: 'content-type' });
    }
  }

  /** The CSRF token for HTML forms of this web session (bound to the session cookie value). */
  csrfToken(sessionCookie: string): string {
    return createHmac('sha256', this.csrfKey).update(sessionCookie).digest('base64url');
  }

  checkCsrf(sessionCookie: string, token: string | null | undefined): boolean {
    if (!token) return false;
    const want = Buffer.from(this.csrfToken(sessionCookie));
    const got = Buffer.from(token);
    return got.length === want.length && timingSafeEqual(got, want);
  }

  /** A cookie-authenticated HTML form post: same origin (when the browser says) and the session's token. */
  requireForm(req: Pick<HttpRequest, 'headers'>, sessionCookie: string, form: URLSearchParams): void {
    const why = this.foreignOrigin((h) => req.headers[h]);
    if (why && (req.headers['origin'] !== undefined || req.headers['sec-fetch-site'] !== undefined)) {
      throw new HttpError(403, `cross-origin form refused: ${why}`, { error: 'cross_origin' });
    }
    if (!this.checkCsrf(sessionCookie, form.get('csrf'))) throw new HttpError(403, 'the form is stale or was not sent from the gateway\'s page (CSRF token missing or wrong); reload the page and try again', { error: 'csrf' });
  }
}

/**
 * A top-level navigation from another site carries no SameSite=Strict cookie. Instead of sending a
 * signed-in person back to the IdP, answer a page that re-opens the same address: that navigation
 * starts on the gateway's own origin, so the browser sends the session cookie. Null when not needed
 * (the second load says Sec-Fetch-Site: same-origin, so this never loops).
 */
export function strictCookieBounce(req: Pick<HttpRequest, 'method' | 'headers' | 'path' | 'query'>, hasSession: boolean): HttpReply | null {
  if (hasSession || (req.method !== 'GET' && req.method !== 'HEAD')) return null;
  if (req.headers['sec-fetch-site'] !== 'cross-site' || req.headers['sec-fetch-mode'] !== 'navigate') return null;
  const q = req.query.toString();
  return continuePage(`${encodeURI(req.path)}${q ? `?${q}` : ''}`);
}

/** A page that moves on to a same-origin path at once (no script: a Refresh header and a link). */
export function continuePage(location: string): HttpReply {
  const safe = location.startsWith('/') && !location.startsWith('//') && !/[\s"'<>\\]/.test(location) ? location : '/';
  return {
    status: 200,
    headers: {
      'content-type': 'text/html; charset=utf-8',
      'cache-control': 'no-store',
      refresh: `0; url=${safe}`,
      'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
      'referrer-policy': 'same-origin',
    },
    body: `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Continuing · Tollgate</title></head><body><p><a href="${safe.replace(/&/g, '&amp;')}">Continue to Tollgate</a></p></body></html>`,
  };
}
