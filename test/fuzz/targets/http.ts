/**
 * HTTP apps: request routing (Host header, /apps/<name>/…), path normalisation for the upstream
 * (normalizePath) and for the rules (rulePath), the rule check with method overrides
 * (checkRules, policies/rules.ts), request and response header rewriting, Set-Cookie refusal and
 * return-URL checks. Every function is total: nothing may throw; the invariants are the security
 * properties (a rule for /admin/* sees every spelling of /admin, no client X-Forwarded-* or gateway
 * cookie reaches the app, no cookie for a wider domain reaches the browser, no open redirect).
 */
import { compileRules, statementKeywords, statementKind, pathGlobToRegExp, RuleCompileError } from '../../../policies/rules.js';
import type { CommandRuleConfig } from '../../../policies/config.js';
import { appConfig } from '../../../protocols/http/config.js';
import { checkRules } from '../../../protocols/http/data-path.js';
import { downstreamResponseHeaders, parseSetCookie, refusedSetCookie, upstreamRequestHeaders } from '../../../protocols/http/headers.js';
import { checkReturn, gatewayOrigin, normalizePath, parseHost, resolveRequest, rulePath } from '../../../protocols/http/routing.js';
import type { TargetConfig } from '../../../protocols/types.js';
import { invariant, type FuzzTarget } from '../engine.js';

const app = appConfig({ name: 'wiki', protocol: 'http', address: 'http://127.0.0.1:3000/base', risk: 'low', roles: [{ name: 'viewer' }], credentials: {}, options: {} } as unknown as TargetConfig);
const g = gatewayOrigin('http://gw.example:8080');
const byLabel = new Map([['wiki', app]]);
const byName = new Map([['wiki', app]]);
const RULES: CommandRuleConfig[] = [
  { methods: ['DELETE'], path: '/admin/*', action: 'deny' },
  { path: '/Secret', caseSensitive: true, action: 'kill' },
] as CommandRuleConfig[];
const rules = compileRules(RULES, 'viewer');
const gatewayCookie = (n: string) => n.startsWith('tg_') || n.startsWith('__Host-tg_');

/** Input lines: method, Host, request target, then headers "name: value" (a set-cookie: line is a response header). */
function routing(input: Buffer): void {
  const lines = input.toString('utf8').split('\n');
  const method = (lines[0] ?? 'GET').trim().toUpperCase().slice(0, 20) || 'GET';
  const host = lines[1] ?? '';
  const target = lines[2] ?? '/';
  const q = target.indexOf('?');
  const url = q < 0 ? target : target.slice(0, q);
  const query = q < 0 ? '' : target.slice(q + 1);
  const headers: [string, string][] = [];
  const setCookies: string[] = [];
  for (const l of lines.slice(3, 40)) {
    const i = l.indexOf(':');
    if (i <= 0) continue;
    const k = l.slice(0, i).trim().toLowerCase();
    const v = l.slice(i + 1).trim();
    if (k === 'set-cookie') setCookies.push(v); else headers.push([k, v]);
  }

  parseHost(host);
  const res = resolveRequest({ host, url, query, gateway: g, byLabel, byName });
  if (res.kind === 'app') invariant(res.route.rest.startsWith('/'), `route to ${res.route.rest}`);
  const n = normalizePath(url);
  if (n !== null) {
    invariant(n.startsWith('/'), `normalizePath gave ${n}`);
    invariant(normalizePath(n) === n, `normalizePath is not idempotent on ${JSON.stringify(url)}`);
  }
  for (const p of [url, n]) {
    if (p === null) continue;
    const rp = rulePath(p);
    if (rp === null) continue;
    invariant(rp.startsWith('/') && !/\/\/|\\|;|[\0-\x1f\x7f]/.test(rp), `rulePath gave ${JSON.stringify(rp)}`);
    invariant(!rp.split('/').some((s) => s === '.' || s === '..'), `rulePath left a dot segment: ${JSON.stringify(rp)}`);
    invariant(rulePath(rp) === rp, `rulePath is not idempotent on ${JSON.stringify(p)}`);
    // The rule sees the request as every method it may be read as (overrides in headers and ?_method=).
    const route = { app, base: 'http://wiki.gw.example:8080', rest: `${p}${query ? `?${query}` : ''}` };
    const d = checkRules({ session: { check: (text: string, o?: { method?: string; path?: string }) => rules.check(text, o) } } as never,
      { method, url: p, query, host, headers, remote: '127.0.0.1' }, method, rp, route);
    const admin = rp.toLowerCase() === '/admin' || rp.toLowerCase().startsWith('/admin/');
    const secret = rp === '/Secret';
    const deleteAsked = method === 'DELETE' || d.method === 'DELETE'
      || headers.some(([k, v]) => ['x-http-method-override', 'x-http-method', 'x-method-override'].includes(k.replace(/_/g, '-')) && v.split(',').some((m) => m.trim().toUpperCase() === 'DELETE'))
      || new URLSearchParams(query).getAll('_method').some((m) => m.trim().toUpperCase() === 'DELETE');
    if (secret) invariant(d.action === 'kill', `a request for ${rp} was not killed (${d.action})`);
    else if (admin && deleteAsked) invariant(d.action === 'deny', `a DELETE of ${rp} (${JSON.stringify(p)}) was ${d.action}`);
    else invariant(d.action === 'allow', `${method} ${rp} was ${d.action} by ${JSON.stringify(d.rule)}`);
  }

  const up = upstreamRequestHeaders(headers, { forward: { clientAddr: '10.0.0.9', host: 'wiki.gw.example', proto: 'https' }, dropCookie: gatewayCookie, injected: new Set(['x-tollgate-assertion', 'authorization']) });
  invariant(up['x-forwarded-for'] === '10.0.0.9', 'the client set X-Forwarded-For');
  for (const k of Object.keys(up)) {
    invariant(k === k.toLowerCase(), `header ${k} is not lower case`);
    invariant(!['x-real-ip', 'x-original-url', 'x-http-method-override', 'x-tollgate-assertion', 'authorization', 'host', 'transfer-encoding'].includes(k.replace(/_/g, '-')), `the client's ${k} reached the app`);
  }
  for (const c of (up['cookie'] ?? '').split(';')) {
    const name = c.split('=')[0]!.trim();
    invariant(!gatewayCookie(name), `gateway cookie ${name} reached the app`);
  }
  downstreamResponseHeaders(Object.fromEntries(headers));
  for (const sc of setCookies) {
    const refused = refusedSetCookie(sc, { appHost: 'wiki.gw.example', isGatewayCookie: gatewayCookie });
    if (refused === null) {
      const c = parseSetCookie(sc);
      invariant(!gatewayCookie(c.name) && c.domains.every((d) => d === 'wiki.gw.example'), `Set-Cookie ${JSON.stringify(sc)} was let through`);
    }
  }
  const ret = checkReturn(target, ['http://wiki.gw.example:8080', 'https://wiki.gw.example']);
  if (ret) invariant(['http://wiki.gw.example:8080', 'https://wiki.gw.example'].includes(new URL(ret.url).origin), `open redirect to ${ret.url}`);
}

/** Rules from untrusted-looking config text: a glob or regex per line, and statements to classify. */
function ruleText(input: Buffer): void {
  const text = input.toString('utf8');
  const [a = '', b = '', ...rest] = text.split('\n');
  try {
    const r = compileRules([{ pattern: a, action: 'deny' }, { path: b || '/x', action: 'kill' }, { kinds: [a.slice(0, 30) || 'DROP'], action: 'alert' }] as CommandRuleConfig[], 'viewer');
    for (const s of rest.slice(0, 8)) r.check(s, { kind: statementKind(s) ?? undefined, method: 'GET', path: s });
  } catch (e) {
    if (!(e instanceof RuleCompileError)) throw e;
  }
  pathGlobToRegExp(b, false).test(a);
  statementKeywords(text);
  statementKind(text);
}

const HOSTILE_PATHS = ['/admin', '/ADMIN/x', '/admin;x/y', '//admin//users', '/x/..%2fadmin', '/%61dmin', '/%2561dmin', '/admin%2f', '/a/%2e%2e/admin', '/.%2e/admin',
  '\\admin', '/admin\\x', '/%252e%252e/admin', '/admin/../Secret', '/Secret;x', '/sec%72et', '/apps/wiki/admin', '/apps/wiki%2f..%2fadmin', '/%00admin', '/admin%00'];

export const targets: FuzzTarget[] = [
  {
    name: 'http.routing',
    covers: 'Host routing, /apps/ redirects, normalizePath and rulePath, checkRules with method overrides, upstream and downstream header rewriting, Set-Cookie refusal, return URLs',
    expected: () => false,
    run: routing,
    arbitrary: (fcl) => fcl.tuple(
      fcl.constantFrom('GET', 'POST', 'DELETE', 'PUT', 'delete'),
      fcl.constantFrom('wiki.gw.example:8080', 'gw.example:8080', 'WIKI.gw.example', 'evil.gw.example', 'wiki.gw.example.evil', '[::1]:8080', ''),
      fcl.array(fcl.oneof(fcl.constantFrom('/', 'admin', 'Secret', '..', '.', '%2e', '%2f', '%252e', ';', '\\', '%00', '//', 'apps', 'wiki', '?_method=DELETE', '?'), fcl.string({ maxLength: 4 })), { maxLength: 10 }),
      fcl.array(fcl.tuple(fcl.constantFrom('x-http-method-override', 'X_HTTP_Method_Override', 'x-forwarded-for', 'x_forwarded_for', 'cookie', 'connection', 'x-real-ip', 'authorization', 'set-cookie', 'x-tollgate-assertion'), fcl.string({ maxLength: 30 })), { maxLength: 6 }),
    ).map(([m, h, segs, hs]) => new Uint8Array(Buffer.from([m, h, `/${segs.join('')}`, ...hs.map(([k, v]) => `${k}: ${v}`)].join('\n')))),
    seeds: () => HOSTILE_PATHS.flatMap((p) => [
      Buffer.from(`DELETE\nwiki.gw.example:8080\n${p}\ncookie: tg_session=x; a=b\nx-forwarded-for: 1.2.3.4\nset-cookie: tg_session=y; Domain=.gw.example`),
      Buffer.from(`POST\nwiki.gw.example:8080\n${p}?_method=DELETE\nx-http-method-override: delete\nx_http_method_override: DELETE`),
    ]),
  },
  {
    name: 'http.rules',
    covers: 'command/path rule compilation from arbitrary patterns and globs, rule checks, SQL statement classification (statementKind / statementKeywords)',
    expected: () => false,
    run: ruleText,
    arbitrary: (fcl) => fcl.array(fcl.oneof(fcl.constantFrom('*', '/admin/*', '(', '[', '\\', 'DROP', 'select', "'", '--', '/*', '$$', ';', '\n', 'ALTER SYSTEM', 'rm\\s+-rf'), fcl.string({ maxLength: 5 })), { maxLength: 30 })
      .map((p) => new Uint8Array(Buffer.from(p.join(''), 'utf8'))),
    seeds: () => [Buffer.from('rm\\s+-rf\n/admin/*\nDROP TABLE x; select 1\n$$ DROP $$\nCOPY x FROM PROGRAM \'id\'')],
  },
];
