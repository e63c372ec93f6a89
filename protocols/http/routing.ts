/**
 * Which app a request is for, and where apps live. Every app has its own origin,
 * `<label>.<apps parent>`: the parent is `gateway.appsDomain` when configured, else the gateway's
 * host name, or `localhost` when the gateway is reached by IP address (browsers resolve
 * `*.localhost` to loopback). No app byte is served on the gateway's origin: `/apps/<name>/...`
 * there only points at the app's origin. Pure functions.
 */
import { isIP } from 'node:net';
import type { TargetConfig } from '../types.js';
import { appConfig, type AppConfig } from './config.js';

export const APPS_PREFIX = '/apps/';
export const CALLBACK_PATH = '/.tollgate/callback';

export interface GatewayOrigin {
  proto: 'http' | 'https';
  /** Host name of the public URL (no port), lower case. */
  hostname: string;
  /** Port of the public URL as written in URLs ('' for the default). */
  port: string;
  /** The domain app hosts are one label under. */
  appsParent: string;
}

export function gatewayOrigin(publicUrl: string, appsDomain?: string | null): GatewayOrigin {
  const u = new URL(publicUrl);
  const hostname = u.hostname.toLowerCase();
  const bare = hostname.replace(/^\[|\]$/g, '');
  const appsParent = appsDomain ? appsDomain.toLowerCase().replace(/^\.|\.$/g, '') : isIP(bare) ? 'localhost' : hostname;
  return { proto: u.protocol === 'https:' ? 'https' : 'http', hostname, port: u.port, appsParent };
}

/** The host name of an app (no port). */
export function appHost(app: Pick<AppConfig, 'label'>, g: GatewayOrigin): string {
  return `${app.label}.${g.appsParent}`;
}

/** The app's origin, e.g. https://wiki.tollgate.example.com or http://wiki.localhost:8080. */
export function appOrigin(app: Pick<AppConfig, 'label'>, g: GatewayOrigin): string {
  return `${g.proto}://${appHost(app, g)}${g.port ? `:${g.port}` : ''}`;
}

/** Each HTTP app target's URL (for the demo's output): [name, origin]. */
export function appUrls(targets: TargetConfig[], publicUrl: string, appsDomain?: string | null): [string, string][] {
  const g = gatewayOrigin(publicUrl, appsDomain);
  return targets.filter((t) => t.protocol === 'http').map((t) => [t.name, appOrigin(appConfig(t), g)]);
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
  /** The app's origin as the browser addressed it (scheme and Host header). */
  base: string;
  /** Path (percent-encoded, dot segments resolved) and query to send upstream, relative to the upstream base. */
  rest: string;
}

export type Resolution =
  | { kind: 'gateway' }
  | { kind: 'app'; route: AppRoute }
  /** `/apps/<name>/...` on the gateway's origin: the same page on the app's own origin. */
  | { kind: 'elsewhere'; app: AppConfig; location: string }
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

const MAX_DECODE_ROUNDS = 3;

/**
 * The path rules are matched on, normalized the way the most lenient app server would read it:
 * percent-decoded (repeatedly, so %252e is a dot too), backslashes as slashes, `;` parameters cut
 * from every segment (`/admin;jsessionid=x/users` is /admin/users), empty segments dropped
 * (`//admin//users`), `.` and `..` resolved after decoding (`/x%2f..%2fadmin`). Case is kept (the
 * rule decides). Null when undecodable or when decoding yields control characters.
 */
export function rulePath(pathname: string): string | null {
  let p = pathname;
  for (let i = 0; /%[0-9a-fA-F]{2}/.test(p); i++) {
    if (i === MAX_DECODE_ROUNDS) return null;
    try { p = decodeURIComponent(p); } catch { return null; }
  }
  if (/[\0-\x1f\x7f]/.test(p)) return null;
  const out: string[] = [];
  for (const raw of p.replace(/\\/g, '/').split('/')) {
    const semi = raw.indexOf(';');
    const seg = semi < 0 ? raw : raw.slice(0, semi);
    if (seg === '' || seg === '.') continue;
    if (seg === '..') { out.pop(); continue; }
    out.push(seg);
  }
  return `/${out.join('/')}`;
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
  const suffix = `.${g.appsParent}`;
  if (h.hostname !== g.hostname && h.hostname.endsWith(suffix)) {
    const label = h.hostname.slice(0, -suffix.length);
    if (label && !label.includes('.')) {
      const app = opts.byLabel.get(label);
      if (!app) return { kind: 'unknown_app', name: label };
      const path = normalizePath(opts.url);
      if (path === null) return { kind: 'bad_request', reason: 'the request path is malformed' };
      return { kind: 'app', route: { app, base: `${g.proto}://${opts.host}`, rest: path + q } };
    }
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
  const path = normalizePath(slash < 0 ? '/' : after.slice(slash));
  if (path === null) return { kind: 'bad_request', reason: 'the request path is malformed' };
  return { kind: 'elsewhere', app, location: appOrigin(app, g) + path + q };
}

/**
 * A return URL is accepted only when it is an absolute http(s) URL on the app's own origin: no open
 * redirect. Returns the origin it matched.
 */
export function checkReturn(ret: string | null, bases: string[]): { url: string; base: string } | null {
  if (!ret || ret.length > 4096 || /[\s\0\\]/.test(ret)) return null;
  let u: URL;
  try { u = new URL(ret); } catch { return null; }
  if (u.username || u.password) return null;
  for (const base of bases) {
    let b: URL;
    try { b = new URL(base); } catch { continue; }
    if (u.origin === b.origin) return { url: u.href, base: b.origin };
  }
  return null;
}

/** Join the upstream base URL's path with the request path. */
export function upstreamPath(upstream: URL, rest: string): string {
  const base = upstream.pathname.replace(/\/+$/, '');
  return base + rest;
}
