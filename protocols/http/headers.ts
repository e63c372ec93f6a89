/**
 * Header rewriting between the browser and the app (pure functions):
 *   - hop-by-hop headers (RFC 9110 §7.6.1) are dropped both ways, with every header Connection names;
 *   - the person's gateway cookie and the app sign-in cookie never reach the app;
 *   - X-Forwarded-For/-Proto/-Host and Forwarded (RFC 7239) are set by the gateway, never taken from the client;
 *   - headers the gateway injects (identity assertion, Authorization) cannot be spoofed by the client.
 */

export const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'te', 'transfer-encoding', 'upgrade', 'trailer',
  'proxy-authenticate', 'proxy-authorization',
]);

/** Headers the gateway sets itself or that undici/uWS frame themselves. */
const REQUEST_OWNED = new Set(['host', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'x-forwarded-prefix', 'x-real-ip', 'forwarded', 'expect', 'content-length']);

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

/** One cookie's value from a Cookie header (first occurrence). */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i < 0) continue;
    if (part.slice(0, i).trim() === name) {
      const v = part.slice(i + 1).trim();
      try { return decodeURIComponent(v); } catch { return v; }
    }
  }
  return undefined;
}

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
  /** Path prefix the gateway stripped (path-based routing), for X-Forwarded-Prefix. */
  prefix?: string;
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

/**
 * Build the upstream request headers from the browser's headers (lower-case names, repeated headers
 * as arrays or comma-joined). Returns a plain object for undici.
 */
export function upstreamRequestHeaders(incoming: [string, string][], o: RequestHeaderOptions): Record<string, string> {
  const named = connectionTokens(incoming.filter(([k]) => k === 'connection').map(([, v]) => v).join(','));
  const out: Record<string, string> = {};
  const cookies: string[] = [];
  for (const [rawK, v] of incoming) {
    const k = rawK.toLowerCase();
    if (HOP_BY_HOP.has(k) || named.has(k) || REQUEST_OWNED.has(k) || o.injected.has(k)) continue;
    if (o.websocket && WS_HANDSHAKE.has(k)) continue;
    if (k === 'cookie') { cookies.push(v); continue; }
    out[k] = out[k] !== undefined ? `${out[k]}, ${v}` : v;
  }
  const cookie = stripCookies(cookies.join('; '), o.dropCookie);
  if (cookie) out['cookie'] = cookie;
  const f = o.forward;
  out['x-forwarded-for'] = f.clientAddr;
  out['x-forwarded-proto'] = f.proto;
  out['x-forwarded-host'] = f.host;
  if (f.prefix) out['x-forwarded-prefix'] = f.prefix;
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

/** Header values must not carry CR/LF/NUL (response splitting). */
export function safeHeaderValue(v: string): boolean {
  return !/[\r\n\0]/.test(v);
}
