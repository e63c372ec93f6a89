/**
 * Which app a request is for: host-based (`<label>.<gateway host>` or `<label>.localhost`) or
 * path-based on the gateway host (`/apps/<name>/...`, prefix stripped upstream). Pure functions.
 */
import type { AppConfig } from './config.js';

export const APPS_PREFIX = '/apps/';
export const CALLBACK_PATH = '/.tollgate/callback';

export interface GatewayOrigin {
  proto: 'http' | 'https';
  /** Host name of the public URL (no port), lower case. */
  hostname: string;
  /** Port of the public URL as written in URLs ('' for the default). */
  port: string;
}

export function gatewayOrigin(publicUrl: string): GatewayOrigin {
  const u = new URL(publicUrl);
  return { proto: u.protocol === 'https:' ? 'https' : 'http', hostname: u.hostname.toLowerCase(), port: u.port };
}

/** Split a Host header into host name and port; null when malformed. */
export function parseHost(host: string): { hostname: string; port: string } | null {
  if (!host || host.length > 255) return null;
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$/.exec(host);
  if (!m) return null;
  return { hostname: m[1]!.toLowerCase(), port: m[2] ?? '' };
}

export interface AppRoute {
  app: AppConfig;
  /** Host-based or path-based. */
  mode: 'host' | 'path';
  /** The app's base URL as the browser sees it: origin (host mode) or origin + /apps/<name> (path mode). */
  base: string;
  /** The stripped prefix ('' in host mode). */
  prefix: string;
  /** Path (percent-encoded, dot segments resolved) and query to send upstream, relative to the upstream base. */
  rest: string;
}

export type Resolution =
  | { kind: 'gateway' }
  | { kind: 'app'; route: AppRoute }
  | { kind: 'unknown_app'; name: string }
  | { kind: 'bad_request'; reason: string };

/** Resolve dot segments (also %2e forms) and reject what is not an origin-form path. */
export function normalizePath(raw: string): string | null {
  if (!raw.startsWith('/')) return null;
  if (/[\s\0\\#]/.test(raw) || raw.length > 8192) return null;
  try {
    const u = new URL(`http://x${raw}`);
    if (u.host !== 'x') return null;
    return u.pathname;
  } catch { return null; }
}

/** The decoded path used for rule checks: percent-decoded, repeated slashes collapsed. Null when undecodable. */
export function rulePath(pathname: string): string | null {
  try { return decodeURIComponent(pathname).replace(/\/{2,}/g, '/'); } catch { return null; }
}

export function resolveRequest(opts: {
  host: string;
  url: string;
  query: string;
  gateway: GatewayOrigin;
  byLabel: Map<string, AppConfig>;
  byName: Map<string, AppConfig>;
}): Resolution {
  const h = parseHost(opts.host);
  if (!h) return { kind: 'bad_request', reason: 'the Host header is missing or malformed' };
  const g = opts.gateway;
  const q = opts.query ? `?${opts.query}` : '';
  for (const parent of new Set([g.hostname, 'localhost'])) {
    const suffix = `.${parent}`;
    if (!h.hostname.endsWith(suffix)) continue;
    const label = h.hostname.slice(0, -suffix.length);
    if (!label || label.includes('.')) continue;
    const app = opts.byLabel.get(label);
    if (!app) return { kind: 'unknown_app', name: label };
    const path = normalizePath(opts.url);
    if (path === null) return { kind: 'bad_request', reason: 'the request path is malformed' };
    return { kind: 'app', route: { app, mode: 'host', base: `${g.proto}://${opts.host}`, prefix: '', rest: path + q } };
  }
  if (!opts.url.startsWith(APPS_PREFIX)) return { kind: 'gateway' };
  const after = opts.url.slice(APPS_PREFIX.length);
  const slash = after.indexOf('/');
  const name = slash < 0 ? after : after.slice(0, slash);
  if (!name || name.startsWith('_')) return { kind: 'gateway' };
  let decodedName: string;
  try { decodedName = decodeURIComponent(name); } catch { return { kind: 'bad_request', reason: 'the app name is malformed' }; }
  const app = opts.byName.get(decodedName);
  if (!app) return { kind: 'unknown_app', name: decodedName };
  const restRaw = slash < 0 ? '/' : after.slice(slash);
  const path = normalizePath(restRaw);
  if (path === null) return { kind: 'bad_request', reason: 'the request path is malformed' };
  const prefix = `${APPS_PREFIX}${encodeURIComponent(app.target.name)}`;
  return { kind: 'app', route: { app, mode: 'path', base: `${g.proto}://${opts.host}${prefix}`, prefix, rest: path + q } };
}

/** The origins (and base URLs) an app may be reached at, for validating return URLs. */
export function appBases(app: AppConfig, g: GatewayOrigin): string[] {
  const port = g.port ? `:${g.port}` : '';
  const ip = /^[\d.]+$|^\[/.test(g.hostname);
  const out = new Set<string>([
    ...(ip ? [] : [`${g.proto}://${app.label}.${g.hostname}${port}`]),
    `${g.proto}://${app.label}.localhost${port}`,
    `${g.proto}://${g.hostname}${port}${APPS_PREFIX}${encodeURIComponent(app.target.name)}`,
  ]);
  return [...out];
}

/**
 * A return URL is accepted only when it is an absolute http(s) URL under one of the app's bases
 * (same origin, and under /apps/<name>/ in path mode): no open redirect. Returns the base it matched.
 */
export function checkReturn(ret: string | null, bases: string[]): { url: string; base: string } | null {
  if (!ret || ret.length > 4096 || /[\s\0\\]/.test(ret)) return null;
  let u: URL;
  try { u = new URL(ret); } catch { return null; }
  if (u.username || u.password) return null;
  for (const base of bases) {
    let b: URL;
    try { b = new URL(base); } catch { continue; }
    if (u.origin !== b.origin) continue;
    const bp = b.pathname === '/' ? '' : b.pathname;
    if (bp && u.pathname !== bp && !u.pathname.startsWith(`${bp}/`)) continue;
    return { url: u.href, base };
  }
  return null;
}

/** Join the upstream base URL's path with the request path. */
export function upstreamPath(upstream: URL, rest: string): string {
  const base = upstream.pathname.replace(/\/+$/, '');
  return base + rest;
}
