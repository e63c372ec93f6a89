/**
 * Header rewriting between the browser and the app (pure functions):
 *   - hop-by-hop headers (RFC 9110 §7.6.1) are dropped both ways, with every header Connection names;
 *   - the person's gateway cookie and the app sign-in cookie never reach the app;
 *   - X-Forwarded-* and Forwarded (RFC 7239) are set by the gateway, never taken from the client, nor
 *     are client-address and path-override headers (X-Real-IP, X-Original-URL, ...);
 *   - headers the gateway injects (identity assertion, Authorization) cannot be spoofed by the client,
 *     not even spelt with underscores (X_Tollgate_Assertion, which CGI-style servers read as the same);
 *   - method-override headers never reach the app (the rules see them as the method instead);
 *   - an app's Set-Cookie for a gateway cookie name, or with a Domain wider than the app's own host
 *     (so covering the gateway or other apps), never reaches the browser.
 * Header maps are null-prototype objects: a header named `constructor` or `__proto__` is just a header.
 */

export const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'te', 'transfer-encoding', 'upgrade', 'trailer',
  'proxy-authenticate', 'proxy-authorization',
]);

/** Headers the gateway sets itself, that undici/uWS frame themselves, or that would let the client speak for the gateway. */
const REQUEST_OWNED = new Set([
  'host', 'forwarded', 'expect', 'content-length',
  'x-real-ip', 'x-client-ip', 'client-ip', 'true-client-ip', 'x-cluster-client-ip',
  'x-original-url', 'x-original-uri', 'x-rewrite-url',
]);

/** Headers frameworks read as "the real method" (Express method-override, Symfony, Google APIs). */
export const METHOD_OVERRIDE = ['x-http-method-override', 'x-http-method', 'x-method-override'];
const METHOD_OVERRIDE_SET = new Set(METHOD_OVERRIDE);

/** Whether a request header (lower case) is the gateway's to set, never the client's. */
function ownedByGateway(k: string, injected: Set<string>): boolean {
  return REQUEST_OWNED.has(k) || k.startsWith('x-forwarded-') || METHOD_OVERRIDE_SET.has(k) || injected.has(k);
}

/** The method-override values a request carries (upper case, comma lists split). */
export function overrideMethods(incoming: [string, string][]): string[] {
  const out: string[] = [];
  for (const [k, v] of incoming) {
    if (!METHOD_OVERRIDE_SET.has(k.toLowerCase().replace(/_/g, '-'))) continue;
    for (const m of v.split(',')) { const t = m.trim().toUpperCase(); if (t) out.push(t); }
  }
  return out;
}

/** WebSocket handshake headers the upstream client builds itself. */
export const WS_HANDSHAKE = new Set(['sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-protocol', 'sec-websocket-accept']);

export function connectionTokens(value: string | undefined): Set<string> {
  const out = new Set<string>();
  if (!value) return out;
  for (const t of value.split(',')) {
    const v = t.trim().toLowerCase();
    if (v) out.add(v);
  }
  return out;
}

/** Remove cookies by name from a Cookie header; null when nothing is left. */
export function stripCookies(header: string | undefined, drop: (name: string) => boolean): string | null {
  if (!header) return null;
  const kept = header.split(';').map((p) => p.trim()).filter((p) => {
    if (!p) return false;
    const i = p.indexOf('=');
    const name = (i < 0 ? p : p.slice(0, i)).trim();
    return !drop(name);
  });
  return kept.length ? kept.join('; ') : null;
}

export { cookieValue } from '../web.js';

/** RFC 7239 node: IPv6 in brackets and quoted. */
export function forwardedNode(addr: string): string {
  return addr.includes(':') ? `"[${addr}]"` : addr;
}

function quoteIfNeeded(v: string): string {
  return /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(v) ? v : `"${v.replace(/["\\]/g, '\\$&')}"`;
}

export interface ForwardInfo {
  clientAddr: string;
  /** Host the browser asked for (Host header). */
  host: string;
  proto: 'http' | 'https';
}

export interface RequestHeaderOptions {
  forward: ForwardInfo;
  /** Cookie names that never reach the app. */
  dropCookie: (name: string) => boolean;
  /** Lower-case header names the gateway injects (client values are removed). */
  injected: Set<string>;
  /** Keep Upgrade/Connection for a WebSocket handshake (the WS client adds its own). */
  websocket?: boolean;
}

/** A header map without a prototype, for undici and uWS. */
export type HeaderMap = Record<string, string>;
export function headerMap(): HeaderMap { return Object.create(null) as HeaderMap; }

/**
 * Build the upstream request headers from the browser's headers (lower-case names, repeated headers
 * as arrays or comma-joined). Returns a null-prototype object for undici.
 */
export function upstreamRequestHeaders(incoming: [string, string][], o: RequestHeaderOptions): HeaderMap {
  const named = connectionTokens(incoming.filter(([k]) => k === 'connection').map(([, v]) => v).join(','));
  const out = headerMap();
  const cookies: string[] = [];
  const dropped = (k: string) => HOP_BY_HOP.has(k) || named.has(k) || ownedByGateway(k, o.injected) || (!!o.websocket && WS_HANDSHAKE.has(k));
  for (const [rawK, v] of incoming) {
    const k = rawK.toLowerCase();
    // X_Forwarded_For reaches a CGI/WSGI app as HTTP_X_FORWARDED_FOR, the same as X-Forwarded-For.
    if (dropped(k) || (k.includes('_') && dropped(k.replace(/_/g, '-')))) continue;
    if (k === 'cookie') { cookies.push(v); continue; }
    out[k] = Object.hasOwn(out, k) ? `${out[k]}, ${v}` : v;
  }
  const cookie = stripCookies(cookies.join('; '), o.dropCookie);
  if (cookie) out['cookie'] = cookie;
  const f = o.forward;
  out['x-forwarded-for'] = f.clientAddr;
  out['x-forwarded-proto'] = f.proto;
  out['x-forwarded-host'] = f.host;
  out['forwarded'] = `for=${forwardedNode(f.clientAddr)};host=${quoteIfNeeded(f.host)};proto=${f.proto}`;
  return out;
}

/** Response headers that uWS writes itself (framing) or that must not pass a proxy. */
const RESPONSE_OWNED = new Set(['content-length', 'date']);

/** Filter the app's response headers for the browser: [name, value] pairs (Set-Cookie stays repeated). */
export function downstreamResponseHeaders(headers: Record<string, string | string[] | undefined>): [string, string][] {
  const conn = headers['connection'];
  const named = connectionTokens(Array.isArray(conn) ? conn.join(',') : conn);
  const out: [string, string][] = [];
  for (const [rawK, v] of Object.entries(headers)) {
    if (v === undefined) continue;
    const k = rawK.toLowerCase();
    if (HOP_BY_HOP.has(k) || named.has(k) || RESPONSE_OWNED.has(k)) continue;
    for (const one of Array.isArray(v) ? v : [v]) out.push([k, one]);
  }
  return out;
}

/** Name and Domain attributes of a Set-Cookie value (Domain lower case, leading dot removed). */
export function parseSetCookie(v: string): { name: string; domains: string[] } {
  const parts = v.split(';');
  const first = parts[0] ?? '';
  const eq = first.indexOf('=');
  const name = (eq < 0 ? first : first.slice(0, eq)).trim();
  const domains: string[] = [];
  for (const a of parts.slice(1)) {
    const i = a.indexOf('=');
    if (i < 0 || a.slice(0, i).trim().toLowerCase() !== 'domain') continue;
    domains.push(a.slice(i + 1).trim().replace(/^\./, '').toLowerCase());
  }
  return { name, domains };
}

/**
 * Whether an app's Set-Cookie may reach the browser: never for a gateway cookie name, never with a
 * Domain other than the app's own host (a parent domain covers the gateway host and every other app).
 * Returns the reason when dropped, null when allowed.
 */
export function refusedSetCookie(v: string, o: { appHost: string; isGatewayCookie: (name: string) => boolean }): string | null {
  const c = parseSetCookie(v);
  if (o.isGatewayCookie(c.name)) return `the cookie name ${c.name.slice(0, 64)} is reserved for the gateway`;
  const host = o.appHost.toLowerCase();
  const wide = c.domains.find((d) => d !== host);
  if (wide !== undefined) return `Domain=${wide.slice(0, 64)} reaches beyond the app's own host ${host}`;
  return null;
}

/** Header values must not carry CR/LF/NUL (response splitting). */
export function safeHeaderValue(v: string): boolean {
  return !/[\r\n\0]/.test(v);
}
