/** Pure parts of the HTTP app proxy: header rewriting, routing, return-URL checks, target validation. */
import t from 'tap';
import { connectionTokens, downstreamResponseHeaders, forwardedNode, stripCookies, upstreamRequestHeaders } from '../../protocols/http/headers.js';
import { appBases, checkReturn, gatewayOrigin, normalizePath, parseHost, resolveRequest, rulePath, upstreamPath } from '../../protocols/http/routing.js';
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
  t.same(h, {
    cookie: 'a=1; b=2',
    accept: 'text/html, application/json',
    'x-forwarded-for': '2001:db8::1',
    'x-forwarded-proto': 'https',
    'x-forwarded-host': 'wiki.gw.example',
    forwarded: 'for="[2001:db8::1]";host=wiki.gw.example;proto=https',
  });
  const ws = upstreamRequestHeaders([['sec-websocket-key', 'k'], ['sec-websocket-protocol', 'chat'], ['upgrade', 'websocket'], ['origin', 'https://x']], {
    forward: { clientAddr: '10.0.0.1', host: 'h:8080', proto: 'http', prefix: '/apps/wiki' }, dropCookie: () => false, injected: new Set(), websocket: true,
  });
  t.same(ws, { origin: 'https://x', 'x-forwarded-for': '10.0.0.1', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'h:8080', 'x-forwarded-prefix': '/apps/wiki', forwarded: 'for=10.0.0.1;host="h:8080";proto=http' });
  t.equal(stripCookies('tg_session=1', (n) => n === 'tg_session'), null);
  t.same([...connectionTokens(' Close , X-A ')], ['close', 'x-a']);
  t.equal(forwardedNode('1.2.3.4'), '1.2.3.4');
});

t.test('downstream response headers', async (t) => {
  t.same(downstreamResponseHeaders({
    connection: 'x-hop', 'x-hop': '1', 'keep-alive': 'timeout=5', 'transfer-encoding': 'chunked', 'content-length': '5', date: 'x',
    'set-cookie': ['a=1', 'b=2'], 'content-type': 'text/plain', 'proxy-authenticate': 'Basic',
  }), [['set-cookie', 'a=1'], ['set-cookie', 'b=2'], ['content-type', 'text/plain']]);
});

t.test('routing', async (t) => {
  const g = gatewayOrigin('https://gw.example:8443');
  const wiki = appConfig(target());
  const other = appConfig(target({ name: 'Other_App', options: { host: 'other' } }));
  const byLabel = new Map([[wiki.label, wiki], [other.label, other]]);
  const byName = new Map([[wiki.target.name, wiki], [other.target.name, other]]);
  const r = (host: string, url: string, query = '') => resolveRequest({ host, url, query, gateway: g, byLabel, byName });
  t.match(r('wiki.gw.example:8443', '/a/b', 'x=1'), { kind: 'app', route: { mode: 'host', base: 'https://wiki.gw.example:8443', prefix: '', rest: '/a/b?x=1' } });
  t.match(r('WIKI.localhost:8443', '/'), { kind: 'app', route: { mode: 'host', base: 'https://WIKI.localhost:8443' } });
  t.match(r('other.gw.example', '/'), { kind: 'app', route: { app: { target: { name: 'Other_App' } } } });
  t.same(r('nope.gw.example', '/'), { kind: 'unknown_app', name: 'nope' });
  t.same(r('gw.example:8443', '/api/v1/me'), { kind: 'gateway' });
  t.same(r('gw.example:8443', '/apps/_auth'), { kind: 'gateway' });
  t.same(r('a.b.gw.example', '/'), { kind: 'gateway' }, 'only one label');
  t.match(r('gw.example:8443', '/apps/wiki/x/../y', 'q'), { kind: 'app', route: { mode: 'path', base: 'https://gw.example:8443/apps/wiki', prefix: '/apps/wiki', rest: '/y?q' } });
  t.match(r('gw.example:8443', '/apps/wiki'), { kind: 'app', route: { rest: '/' } });
  t.match(r('gw.example:8443', '/apps/Other_App/z'), { kind: 'app', route: { prefix: '/apps/Other_App' } });
  t.same(r('gw.example:8443', '/apps/none/'), { kind: 'unknown_app', name: 'none' });
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
  t.same(parseHost('[::1]:80'), { hostname: '[::1]', port: '80' });
  t.equal(parseHost('a b'), null);
  t.equal(upstreamPath(new URL('http://u:1/base/'), '/x?y'), '/base/x?y');
  t.equal(upstreamPath(new URL('http://u:1'), '/x'), '/x');
});

t.test('return URLs: same app only', async (t) => {
  const g = gatewayOrigin('https://gw.example:8443');
  const wiki = appConfig(target());
  const bases = appBases(wiki, g);
  t.same(bases, ['https://wiki.gw.example:8443', 'https://wiki.localhost:8443', 'https://gw.example:8443/apps/wiki']);
  t.match(checkReturn('https://wiki.gw.example:8443/page?x=1', bases), { url: 'https://wiki.gw.example:8443/page?x=1', base: 'https://wiki.gw.example:8443' });
  t.match(checkReturn('https://gw.example:8443/apps/wiki/p', bases), { base: 'https://gw.example:8443/apps/wiki' });
  for (const bad of [
    'https://gw.example:8443/apps/wikix/p', 'https://gw.example:8443/api/v1/me', 'http://wiki.gw.example:8443/', 'https://wiki.gw.example/',
    'https://evil.example/', '//wiki.gw.example:8443/', '/x', 'javascript:alert(1)', 'https://user:pw@wiki.gw.example:8443/', 'https://wiki.gw.example:8443/\\evil', null,
  ]) t.equal(checkReturn(bad, bases), null, `refused: ${bad}`);
  t.same(appBases(wiki, gatewayOrigin('http://127.0.0.1:8080')), ['http://wiki.localhost:8080', 'http://127.0.0.1:8080/apps/wiki'], 'no app host under an IP');
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
  const a = appConfig(target({ options: { idleTimeout: '2m', timeout: 5 } }));
  t.equal(a.idleMs, 120_000);
  t.equal(a.timeoutMs, 5000);
  t.equal(a.label, 'wiki');
});
