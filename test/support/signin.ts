/**
 * Sign in through the gateway's real OIDC flows against the dev IdP with plain HTTP (fetch, a
 * small cookie jar, the IdP's own HTML forms) instead of a browser: the authorization code flow
 * (returns the gateway's session cookie) and the device flow (returns the API token the CLI gets).
 * Chromium-driven versions of the same flows are in test/proxy/signin.test.ts.
 */
import { recordSecret } from './secret-registry.js';

interface Cookie { name: string; value: string; path: string; origin: string }

export class CookieJar {
  private cookies: Cookie[] = [];

  absorb(url: URL, res: Response): void {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      let path = '/';
      let expired = false;
      for (const a of attrs) {
        const [k, v = ''] = a.split('=').map((x) => x.trim());
        if (k!.toLowerCase() === 'path') path = v || '/';
        if (k!.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
        if (k!.toLowerCase() === 'expires' && Date.parse(v) < Date.now() - 86_400_000 * 365) expired = true;
      }
      this.cookies = this.cookies.filter((c) => !(c.name === name && c.path === path && c.origin === url.origin));
      if (!expired && value !== '') this.cookies.push({ name, value, path, origin: url.origin });
    }
  }

  header(url: URL): string {
    return this.cookies
      .filter((c) => c.origin === url.origin && (url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`) || c.path === '/'))
      .map((c) => `${c.name}=${c.value}`).join('; ');
  }

  get(name: string, origin: string): string | undefined {
    return this.cookies.find((c) => c.name === name && c.origin === origin)?.value;
  }
}

const decode = (s: string) => s.replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');

/** The first form of a page: where it posts and its inputs with their values. */
export function firstForm(html: string, base: URL): { action: URL; fields: URLSearchParams } | null {
  const m = /<form\b([^>]*)>([\s\S]*?)<\/form>/i.exec(html);
  if (!m) return null;
  const action = /\baction="([^"]*)"/i.exec(m[1]!)?.[1];
  const fields = new URLSearchParams();
  for (const input of m[2]!.matchAll(/<input\b([^>]*)>/gi)) {
    const name = /\bname="([^"]*)"/i.exec(input[1]!)?.[1];
    if (!name) continue;
    fields.set(decode(name), decode(/\bvalue="([^"]*)"/i.exec(input[1]!)?.[1] ?? ''));
  }
  return { action: new URL(decode(action ?? base.href), base), fields };
}

export interface Hop { url: URL; status: number; body: string; res: Response }

/**
 * Follow redirects and fill each IdP form with `fill` (fields it has) until `done` says stop or a
 * page has no form. Returns the last response.
 */
export async function browse(jar: CookieJar, start: URL, fill: Record<string, string>, done: (h: Hop) => boolean, maxHops = 25): Promise<Hop> {
  let url = start;
  let init: RequestInit = { method: 'GET' };
  for (let i = 0; i < maxHops; i++) {
    const headers: Record<string, string> = { ...(init.headers as Record<string, string> ?? {}) };
    const cookie = jar.header(url);
    if (cookie) headers['cookie'] = cookie;
    const res = await fetch(url, { ...init, headers, redirect: 'manual' });
    jar.absorb(url, res);
    const body = res.status >= 300 && res.status < 400 ? '' : await res.text();
    const hop = { url, status: res.status, body, res };
    if (done(hop)) return hop;
    if (res.status >= 300 && res.status < 400) {
      url = new URL(res.headers.get('location')!, url);
      init = { method: 'GET' };
      continue;
    }
    const form = firstForm(body, url);
    if (!form || res.status >= 400) return hop;
    for (const [k, v] of Object.entries(fill)) if (form.fields.has(k)) form.fields.set(k, v);
    form.fields.delete('abort');
    url = form.action;
    init = { method: 'POST', body: form.fields.toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } };
  }
  throw new Error(`sign-in did not finish after ${maxHops} hops (at ${url.href})`);
}

/** The code flow through the gateway: returns the tg_session cookie value (throws with the page on failure). */
export async function browserSignIn(gatewayUrl: string, user: string, password: string, opts: { otp?: string; mfa?: boolean } = {}): Promise<{ cookie: string; jar: CookieJar }> {
  const jar = new CookieJar();
  const gw = new URL(gatewayUrl);
  const start = new URL(`/auth/login?returnTo=${encodeURIComponent('/api/v1/me')}${opts.mfa ? '&mfa=1' : ''}`, gw);
  const last = await browse(jar, start, { login: user, password, otp: opts.otp ?? '' }, (h) => h.url.origin === gw.origin && h.url.pathname === '/api/v1/me');
  const cookie = jar.get('tg_session', gw.origin);
  if (cookie) recordSecret('session_cookie', cookie);
  if (!cookie) throw new Error(`browser sign-in of ${user} failed: ${last.status} ${last.body.replace(/<head>[\s\S]*?<\/head>/i, '').replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').slice(0, 300)}`);
  return { cookie, jar };
}

/** The device flow as `tollgate login` runs it: returns the API token (or the gateway's refusal). */
export async function deviceSignIn(gatewayUrl: string, user: string, password: string): Promise<{ status: number; body: any }> {
  const start = await fetch(`${gatewayUrl}/api/v1/auth/device`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  const d = await start.json() as { handle: string; verificationUriComplete: string };
  const jar = new CookieJar();
  await browse(jar, new URL(d.verificationUriComplete), { login: user, password, otp: '' }, (h) => /Sign-in complete/.test(h.body));
  for (let i = 0; i < 40; i++) {
    const r = await fetch(`${gatewayUrl}/api/v1/auth/device/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ handle: d.handle }) });
    const body = await r.json();
    if (r.status !== 202) {
      if (body && typeof body.token === 'string') recordSecret('api_token', body.token);
      return { status: r.status, body };
    }
    await new Promise((res) => setTimeout(res, 250));
  }
  throw new Error('the device sign-in stayed pending');
}

/**
 * Decide a browser approval of a native sign-in (/approve-login/<id>) the way a person does on the
 * page: open it (which binds it to this identity), then post the form with its CSRF token, the
 * confirmation box ticked (for approve) and the chosen button.
 */
export async function decideApproval(url: string, headers: Record<string, string>, decision: 'approve' | 'deny'): Promise<{ status: number; page: string; opened: string }> {
  const opened = await fetch(url, { headers, redirect: 'manual' });
  const openedText = await opened.text();
  const csrf = /name="csrf" value="([^"]+)"/.exec(openedText)?.[1] ?? '';
  const body = new URLSearchParams({ csrf, decision, ...(decision === 'approve' ? { confirm: 'yes' } : {}) });
  const res = await fetch(url, { method: 'POST', headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded' }, body: body.toString(), redirect: 'manual' });
  return { status: res.status, page: await res.text(), opened: openedText };
}
