/** Pure parts of the HTTP app proxy: header rewriting, routing, return-URL checks, target validation. */
import t from 'tap';
import {
  connectionTokens, downstreamResponseHeaders, forwardedNode, overrideMethods, refusedSetCookie, stripCookies, upstreamRequestHeaders,
} from '../../protocols/http/headers.js';
import { appOrigin, checkReturn, gatewayOrigin, normalizePath, parseHost, resolveRequest, rulePath, upstreamPath } from '../../protocols/http/routing.js';
import { compileRules } from '../../policies/rules.js';
import { isGatewayCookie } from '../../proxy/http/web-security.js';
import { buildRequest } from '../../proxy/http/server.js';
import { appConfig, validateTarget } from '../../protocols/http/config.js';
import type { TargetConfig } from '../../protocols/types.js';

const target = (over: Partial<TargetConfig> = {}): TargetConfig => ({
  name: 'wiki', protocol: 'http', address: 'http://127.0.0.1:3000', risk: 'medium', roles: [{ name: 'user' }], credentials: { mode: 'jwt' }, options: {}, ...over,
} as TargetConfig);

t.test('upstream request headers', async (t) => {
  const h = upstreamRequestHeaders([
    ['host', 'wiki.gw.example'], ['connection', 'keep-alive, X-Custom-Hop'], ['x-custom-hop', '1'], ['keep-alive', 'timeout=5'],
    ['te', 'trailers'], ['transfer-encoding', 'chunked'], ['upgrade', 'h2c'], ['proxy-authorization', 'Basic x'], ['proxy-connection', 'keep-alive'],
    ['x-forwarded-for', '6.6.6.6'], ['x-forwarded-prefix', '/evil'], ['forwarded', 'for=6.6.6.6'], ['x-real-ip', '6.6.6.6'], ['x-tollgate-assertion', 'forged'],
    ['cookie', 'tg_session=abc; a=1'], ['cookie', 'tg_app_wiki=zzz; b=2'], ['accept', 'text/html'], ['accept', 'application/json'], ['expect', '100-continue'],
  ], {
    forward: { clientAddr: '2001:db8::1', host: 'wiki.gw.example', proto: 'https' },
    dropCookie: (n) => n === 'tg_session' || n.startsWith('tg_app_'),
    injected: new Set(['x-tollgate-assertion']),
  });
  t.same({ ...h }, {
    cookie: 'a=1; b=2',
    accept: 'text/html, application/json',
    'x-forwarded-for': '2001:db8::1',
    'x-forwarded-proto': 'https',
    'x-forwarded-host': 'wiki.gw.example',
    forwarded: 'for="[2001:db8::1]";host=wiki.gw.example;proto=https',
  });
  const ws = upstreamRequestHeaders([['sec-websocket-key', 'k'], ['sec-websocket-protocol', 'chat'], ['upgrade', 'websocket'], ['origin', 'https://x']], {
    forward: { clientAddr: '10.0.0.1', host: 'h:8080', proto: 'http' }, dropCookie: () => false, injected: new Set(), websocket: true,
  });
  t.same({ ...ws }, { origin: 'https://x', 'x-forwarded-for': '10.0.0.1', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'h:8080', forwarded: 'for=10.0.0.1;host="h:8080";proto=http' });
  t.equal(stripCookies('tg_session=1', (n) => n === 'tg_session'), null);
  t.same([...connectionTokens(' Close , X-A ')], ['close', 'x-a']);
  t.equal(forwardedNode('1.2.3.4'), '1.2.3.4');
});

t.test('upstream request headers: prototype names, owned headers, underscores, method overrides', async (t) => {
  const opts = { forward: { clientAddr: '10.0.0.1', host: 'wiki.gw.example', proto: 'https' as const }, dropCookie: () => false, injected: new Set(['x-tollgate-assertion']) };
  const h = upstreamRequestHeaders([
    ['constructor', 'a'], ['__proto__', 'b'], ['toString', 'c'], ['constructor', 'a2'], ['hasOwnProperty', 'd'],
    ['x-forwarded-server', 'evil'], ['x-forwarded-ssl', 'on'], ['x-original-url', '/admin'], ['x-rewrite-url', '/admin'], ['x-client-ip', '6.6.6.6'], ['true-client-ip', '6.6.6.6'],
    ['x_forwarded_for', '6.6.6.6'], ['X_Forwarded_Proto', 'http'], ['x_tollgate_assertion', 'forged'], ['X_Real_IP', '6.6.6.6'], ['x_http_method_override', 'DELETE'],
    ['x-http-method-override', 'DELETE'], ['x-http-method', 'DELETE'], ['x-method-override', 'DELETE'], ['transfer_encoding', 'chunked'],
    ['x_custom', 'kept'], ['accept', 'text/html'],
  ], opts);
  t.equal(Object.getPrototypeOf(h), null, 'a null-prototype map');
  t.equal(h['constructor'], 'a, a2', 'constructor is an ordinary header, repeated values joined');
  t.equal(Object.getOwnPropertyDescriptor(h, '__proto__')?.value, 'b', '__proto__ kept as a header, not a prototype');
  t.equal(h['tostring'], 'c');
  t.equal(h['hasownproperty'], 'd');
  t.same(Object.keys(h).sort(), ['__proto__', 'accept', 'constructor', 'forwarded', 'hasownproperty', 'tostring', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x_custom'].sort(),
    'forwarding, client-address, path-override and method-override headers dropped, also spelt with underscores');
  t.equal(h['x-forwarded-for'], '10.0.0.1');
  t.same(overrideMethods([['x-http-method-override', 'delete'], ['X-HTTP-Method', ' PUT, patch '], ['x_method_override', 'TRACE'], ['accept', 'x']]), ['DELETE', 'PUT', 'PATCH', 'TRACE']);
  t.same(overrideMethods([['accept', 'x']]), []);
});

t.test('HTTP front: cookies and headers are null-prototype maps, duplicates are ambiguous', async (t) => {
  const headers = JSON.parse('{"__proto__":"b","constructor":"a","cookie":"tg_session=one; constructor=c; __proto__=p; x=1; tg_session=two"}') as Record<string, string>;
  const req = buildRequest({ method: 'GET', path: '/', query: new URLSearchParams(), headers, remote: '' }, Buffer.alloc(0), {});
  t.equal(req.cookie('constructor'), 'c', 'a cookie named constructor');
  t.equal(req.cookie('__proto__'), 'p', 'a cookie named __proto__');
  t.equal(req.cookie('x'), '1');
  t.equal(req.cookie('toString'), undefined, 'no inherited names');
  t.equal(req.cookie('tg_session'), undefined, 'a cookie name sent twice (one tossed in from a parent domain) reads as absent');
  for (const n of ['tg_session', '__Host-tg_session', '__Secure-tg_session', 'TG_SESSION', 'tg_oidc', 'tg_app_wiki', ' tg_x']) t.ok(isGatewayCookie(n), `gateway cookie: ${n}`);
  for (const n of ['session', 'xtg_session', '__Host-session', 'tg-session']) t.notOk(isGatewayCookie(n), `app cookie: ${n}`);
});

t.test('app Set-Cookie: never a gateway cookie, never a Domain wider than the app host', async (t) => {
  const o = { appHost: 'wiki.gw.example', isGatewayCookie };
  for (const ok of ['a=1', 'a=1; Path=/; HttpOnly; Secure', 'a=1; Domain=wiki.gw.example', 'a=1; domain=.WIKI.gw.example', '__Host-a=1; Path=/; Secure', 'sid=tg_session']) {
    t.equal(refusedSetCookie(ok, o), null, `kept: ${ok}`);
  }
  for (const bad of ['tg_session=x', '__Host-tg_session=x; Path=/; Secure', 'TG_SESSION=x', ' tg_oidc=x', 'tg_app_other=x', 'a=1; Domain=gw.example', 'a=1; Domain=.gw.example',
    'a=1; domain=GW.EXAMPLE', 'a=1; Domain=example', 'a=1; Domain=other.gw.example', 'a=1; Domain=wiki.gw.example; Domain=gw.example', 'a=1;Domain=gw.example']) {
    t.match(refusedSetCookie(bad, o), /reserved for the gateway|reaches beyond/, `dropped: ${bad}`);
  }
});

t.test('downstream response headers', async (t) => {
  t.same(downstreamResponseHeaders({
    connection: 'x-hop', 'x-hop': '1', 'keep-alive': 'timeout=5', 'transfer-encoding': 'chunked', 'content-length': '5', date: 'x',
    'set-cookie': ['a=1', 'b=2'], 'content-type': 'text/plain', 'proxy-authenticate': 'Basic',
  }), [['set-cookie', 'a=1'], ['set-cookie', 'b=2'], ['content-type', 'text/plain']]);
});

t.test('routing: apps only on their own origin', async (t) => {
  const g = gatewayOrigin('https://gw.example:8443');
  const wiki = appConfig(target());
  const other = appConfig(target({ name: 'Other_App', options: { host: 'other' } }));
  const byLabel = new Map([[wiki.label, wiki], [other.label, other]]);
  const byName = new Map([[wiki.target.name, wiki], [other.target.name, other]]);
  const r = (host: string, url: string, query = '', gw = g) => resolveRequest({ host, url, query, gateway: gw, byLabel, byName });
  t.match(r('wiki.gw.example:8443', '/a/b', 'x=1'), { kind: 'app', route: { base: 'https://wiki.gw.example:8443', rest: '/a/b?x=1' } });
  t.match(r('WIKI.gw.example:8443', '/'), { kind: 'app', route: { base: 'https://WIKI.gw.example:8443' } });
  t.same(r('wiki.localhost:8443', '/'), { kind: 'gateway' }, 'a named gateway does not serve apps under localhost');
  t.match(r('other.gw.example', '/'), { kind: 'app', route: { app: { target: { name: 'Other_App' } } } });
  t.same(r('nope.gw.example', '/'), { kind: 'unknown_app', name: 'nope' });
  t.same(r('gw.example:8443', '/api/v1/me'), { kind: 'gateway' });
  t.same(r('gw.example:8443', '/apps/_auth'), { kind: 'gateway' });
  t.same(r('a.b.gw.example', '/'), { kind: 'gateway' }, 'only one label');
  // /apps/<name>/ on the gateway's origin: only a pointer to the app's origin.
  t.match(r('gw.example:8443', '/apps/wiki/x/../y', 'q'), { kind: 'elsewhere', location: 'https://wiki.gw.example:8443/y?q' });
  t.match(r('gw.example:8443', '/apps/wiki'), { kind: 'elsewhere', location: 'https://wiki.gw.example:8443/' });
  t.match(r('gw.example:8443', '/apps/Other_App/z'), { kind: 'elsewhere', location: 'https://other.gw.example:8443/z' });
  t.match(r('gw.example:8443', '/apps/wiki//evil.example/x'), { kind: 'elsewhere', location: 'https://wiki.gw.example:8443//evil.example/x' }, 'never a protocol-relative Location');
  t.same(r('gw.example:8443', '/apps/none/'), { kind: 'unknown_app', name: 'none' });
  // By IP: apps under localhost; with appsDomain: under it, and the gateway host wins a clash.
  const ip = gatewayOrigin('http://127.0.0.1:8080');
  t.equal(appOrigin(wiki, ip), 'http://wiki.localhost:8080');
  t.match(r('wiki.localhost:8080', '/', '', ip), { kind: 'app' });
  t.equal(appOrigin(wiki, gatewayOrigin('http://[::1]:8080')), 'http://wiki.localhost:8080');
  const ad = gatewayOrigin('https://tollgate.example.com', 'apps.example.com');
  t.equal(appOrigin(wiki, ad), 'https://wiki.apps.example.com');
  t.match(r('wiki.apps.example.com', '/', '', ad), { kind: 'app' });
  t.same(r('wiki.tollgate.example.com', '/', '', ad), { kind: 'gateway' });
  t.match(r('tollgate.example.com', '/apps/wiki/p', '', ad), { kind: 'elsewhere', location: 'https://wiki.apps.example.com/p' });
  const clash = gatewayOrigin('https://wiki.example.com', 'example.com');
  t.same(r('wiki.example.com', '/', '', clash), { kind: 'gateway' }, 'an app label equal to the gateway host never shadows the gateway');
  t.match(r('bad host', '/'), { kind: 'bad_request' });
  t.match(r('', '/'), { kind: 'bad_request' });
  t.match(r('wiki.gw.example', 'http://evil/'), { kind: 'bad_request' });
  t.equal(normalizePath('/a/%2e%2e/b'), '/b');
  t.equal(normalizePath('/a/./b/../c'), '/a/c');
  t.equal(normalizePath('//x/y'), '//x/y');
  t.equal(normalizePath('/a b'), null);
  t.equal(rulePath('/admin%2Fusers'), '/admin/users');
  t.equal(rulePath('//admin///x'), '/admin/x');
  t.equal(rulePath('/%E0%A4%A'), null);
  t.equal(rulePath('/admin;jsessionid=x/users'), '/admin/users', '; parameters cut');
  t.equal(rulePath('/admin;x'), '/admin');
  t.equal(rulePath('/x%2f..%2fadmin/users'), '/admin/users', 'dot segments resolved after decoding');
  t.equal(rulePath('/x/..%5cadmin'), '/admin', 'backslashes as slashes');
  t.equal(rulePath('/%252e%252e/admin'), '/admin', 'double encoding decoded');
  t.equal(rulePath('/%25252525252e'), null, 'endless encoding refused');
  t.equal(rulePath('/a%00b'), null, 'control characters refused');
  t.equal(rulePath('/../../admin'), '/admin', 'no climbing above the root');
  t.equal(rulePath('/Admin/'), '/Admin', 'case kept, trailing slash gone');
  t.equal(rulePath('/100%'), '/100%', 'a lone % is a character');
  t.same(parseHost('[::1]:80'), { hostname: '[::1]', port: '80' });
  t.equal(parseHost('a b'), null);
  t.equal(upstreamPath(new URL('http://u:1/base/'), '/x?y'), '/base/x?y');
  t.equal(upstreamPath(new URL('http://u:1'), '/x'), '/x');
});

t.test('return URLs: the app origin only', async (t) => {
  const g = gatewayOrigin('https://gw.example:8443');
  const wiki = appConfig(target());
  const bases = [appOrigin(wiki, g)];
  t.match(checkReturn('https://wiki.gw.example:8443/page?x=1', bases), { url: 'https://wiki.gw.example:8443/page?x=1', base: 'https://wiki.gw.example:8443' });
  for (const bad of [
    'https://gw.example:8443/apps/wiki/p', 'https://gw.example:8443/api/v1/me', 'http://wiki.gw.example:8443/', 'https://wiki.gw.example/', 'https://wiki.localhost:8443/',
    'https://evil.example/', '//wiki.gw.example:8443/', '/x', 'javascript:alert(1)', 'https://user:pw@wiki.gw.example:8443/', 'https://wiki.gw.example:8443/\\evil', null,
  ]) t.equal(checkReturn(bad, bases), null, `refused: ${bad}`);
});

t.test('HTTP rules on the normalized path: case, /x/* matches /x, caseSensitive', async (t) => {
  const rules = compileRules([
    { methods: ['DELETE'], path: '/admin/*', action: 'deny' },
    { methods: ['PUT'], path: '/Exact/*', caseSensitive: true, action: 'deny' },
    { path: '/metrics/', action: 'alert' },
  ], 'user');
  const d = (method: string, raw: string) => rules.check(`${method} ${raw}`, { method, path: rulePath(raw) ?? raw }).action;
  for (const p of ['/admin', '/admin/', '/admin/users', '/ADMIN/users', '/Admin', '/admin;jsessionid=x/users', '//admin//users', '/x/%2e%2e/admin', '/%61dmin/x']) t.equal(d('DELETE', p), 'deny', `DELETE ${p}`);
  for (const p of ['/administrator', '/adminx/y', '/x/admin', '/']) t.equal(d('DELETE', p), 'allow', `DELETE ${p}`);
  t.equal(d('delete', '/admin'), 'deny', 'method case-insensitive');
  t.equal(d('PUT', '/Exact/a'), 'deny');
  t.equal(d('PUT', '/Exact'), 'deny');
  t.equal(d('PUT', '/exact/a'), 'allow', 'caseSensitive: true');
  t.equal(d('GET', '/metrics'), 'alert', 'a trailing slash on the rule is ignored');
  t.equal(d('GET', '/METRICS/'), 'alert');
});

t.test('target validation', async (t) => {
  t.equal(validateTarget(target()), null);
  t.equal(validateTarget(target({ credentials: {} })), null, 'no credentials: mode none');
  t.match(validateTarget(target({ address: 'ftp://x' })), { path: 'address' });
  t.match(validateTarget(target({ address: 'http://u:p@x' })), { path: 'address' });
  t.match(validateTarget(target({ credentials: { mode: 'magic' } })), { path: 'credentials.mode' });
  t.match(validateTarget(target({ credentials: { mode: 'bearer' } })), { path: 'credentials' });
  t.match(validateTarget(target({ credentials: { mode: 'basic', username: 'u' } })), { path: 'credentials' });
  t.match(validateTarget(target({ credentials: { mode: 'jwt', ttl: '10m' } })), { path: 'credentials.ttl' });
  t.match(validateTarget(target({ credentials: { mode: 'jwt', header: 'Bad Header' } })), { path: 'credentials.header' });
  t.match(validateTarget(target({ options: { host: 'UPPER' } })), { path: 'options.host' });
  t.match(validateTarget(target({ name: 'a_b' })), { path: 'options.host' });
  t.equal(validateTarget(target({ name: 'a_b', options: { host: 'ab' } })), null);
  t.match(validateTarget(target({ options: { idleTimeout: 'soon' } })), { path: 'options.idleTimeout' });
  t.match(validateTarget(target({ options: { unknown: 1 } })), { path: 'options' });
  // Secret references are the gateway's one kind (auth/secret.ts), {command} included.
  t.equal(validateTarget(target({ credentials: { mode: 'bearer', token: { command: ['/usr/local/bin/print-token'] } } })), null, 'a {command} token');
  t.match(validateTarget(target({ credentials: { mode: 'bearer', token: { command: [] } } })), { path: 'credentials.token' }, 'an empty argv is refused');
  t.equal(appConfig(target({ options: { cookieTtl: '1d' } })).cookieTtlMs, 86_400_000, 'durations in days');
  const a = appConfig(target({ options: { idleTimeout: '2m', timeout: 5 } }));
  t.equal(a.idleMs, 120_000);
  t.equal(a.timeoutMs, 5000);
  t.equal(a.label, 'wiki');
});
