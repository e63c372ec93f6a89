/**
 * The HTTP app proxy through a real gateway (uWS front, SQLite store, real sessions) to a real
 * upstream node:http app that verifies the gateway's identity assertion against its JWKS.
 * Sign-in hand-off, grant checks, rules, revoke, WebSockets, streaming, hostile input, dead and
 * slow upstreams, slow clients.
 */
import t from 'tap';
import net from 'node:net';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { waitFor } from '../support/pg.js';
import { startUpstream, raw, rawBytes, signInApp, pattern, sha256, setCookies, appWs, type Upstream } from './support.js';
import { onlyHttp } from './support.js';

t.test('HTTP apps through the gateway', async (t) => {
  let tg!: TestGateway;
  const up: Upstream = await startUpstream({ jwksUrl: () => `${tg.url}/.well-known/jwks.json`, issuer: () => tg.url, audience: 'echo' });
  t.teardown(() => up.close());
  // A port with nothing listening: the dead upstream.
  const dead = await new Promise<number>((r) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => r(p)); }); });
  tg = await startTestGateway({
    modules: onlyHttp(),
    targets: [
      { name: 'echo', protocol: 'http', address: up.url, roles: [{ name: 'user' }, { name: 'admin' }], credentials: { mode: 'jwt' }, options: { timeout: '1500ms' } },
      { name: 'deadapp', protocol: 'http', address: `http://127.0.0.1:${dead}`, roles: [{ name: 'user' }], credentials: { mode: 'none' } },
    ],
    policies: [{
      name: 'test', targets: ['*'], roles: ['*'], requesters: ['engineers'], approvers: ['approvers'], onTimeout: 'deny',
      rules: [
        { methods: ['DELETE'], path: '/admin/*', action: 'deny', message: 'Tollgate: deleting under /admin is not allowed.', roles: ['user'] },
        { methods: ['PUT'], path: '/Exact/*', caseSensitive: true, action: 'deny', message: 'Tollgate: PUT under /Exact is not allowed.', roles: ['user'] },
      ],
    }],
  });
  t.teardown(() => tg.close());
  const port = Number(new URL(tg.url).port);
  const host = `echo.localhost:${port}`;

  await t.test('not signed in: redirect to the gateway hand-off, which sends to the login', async (t) => {
    const r = await raw(port, { path: '/whoami?x=1', host });
    t.equal(r.status, 302);
    const loc = new URL(String(r.headers.location));
    t.equal(loc.origin, tg.url);
    t.equal(loc.pathname, '/apps/_auth');
    t.equal(loc.searchParams.get('app'), 'echo');
    t.equal(loc.searchParams.get('return'), `http://${host}/whoami?x=1`);
    const a = await raw(port, { path: loc.pathname + loc.search });
    t.equal(a.status, 302, 'no gateway session: to the OIDC login');
    t.match(String(a.headers.location), /^\/auth\/login\?returnTo=%2Fapps%2F_auth%3F/);
    t.equal(up.seen.length, 0, 'nothing reached the app');
  });

  await t.test('hand-off refuses foreign return addresses (no open redirect) and bad tokens', async (t) => {
    const { cookie } = await tg.gw.webSessions.create('alice', null, 3_600_000);
    const gc = `tg_session=${encodeURIComponent(cookie.reveal())}`;
    for (const ret of ['https://evil.example/', `http://other.localhost:${port}/`, `http://echo.localhost:${port + 1}/`, `http://127.0.0.1:${port}/apps/deadapp/`, '/relative', 'javascript:alert(1)']) {
      const r = await raw(port, { path: `/apps/_auth?app=echo&return=${encodeURIComponent(ret)}`, headers: { cookie: gc } });
      t.equal(r.status, 400, `refused: ${ret}`);
    }
    const ok = await raw(port, { path: `/apps/_auth?app=echo&return=${encodeURIComponent(`http://${host}/x`)}`, headers: { cookie: gc } });
    t.equal(ok.status, 302);
    const cb = new URL(String(ok.headers.location));
    t.equal(cb.origin, `http://${host}`);
    t.equal(cb.pathname, '/.tollgate/callback');
    // Tampered token, foreign return on the callback, then a replayed token.
    const tok = cb.searchParams.get('t')!;
    const bad = await raw(port, { path: `/.tollgate/callback?t=${encodeURIComponent(tok.slice(0, -2) + 'AA')}&return=${encodeURIComponent(`http://${host}/`)}`, host });
    t.equal(bad.status, 400, 'tampered hand-off refused');
    const foreign = await raw(port, { path: `/.tollgate/callback?t=${encodeURIComponent(tok)}&return=${encodeURIComponent('https://evil.example/')}`, host });
    t.equal(foreign.status, 400, 'foreign return refused on the callback');
    const other = await raw(port, { path: `/.tollgate/callback?t=${encodeURIComponent(tok)}&return=${encodeURIComponent(`http://${host}/`)}`, host: `deadapp.localhost:${port}` });
    t.equal(other.status, 400, 'a hand-off for echo does not sign in to another app');
    const good = await raw(port, { path: cb.pathname + cb.search, host });
    t.equal(good.status, 302);
    t.equal(good.headers.location, `http://${host}/x`);
    const c = setCookies(good.headers)[0]!;
    t.match(c, /^tg_app_echo=/);
    t.match(c, /HttpOnly/);
    t.match(c, /SameSite=Lax/);
    t.match(c, /Path=\//);
    t.notMatch(c, /Secure/, 'no Secure flag over plain http');
    const replay = await raw(port, { path: cb.pathname + cb.search, host });
    t.equal(replay.status, 400, 'a hand-off works once');
    const asCookie = await raw(port, { path: '/whoami', host, headers: { cookie: `tg_app_echo=${encodeURIComponent(tok)}` } });
    t.equal(asCookie.status, 302, 'a hand-off token is not an app cookie');
    const forged = await raw(port, { path: '/whoami', host, headers: { cookie: `tg_app_echo=${encodeURIComponent(tg.gw.key.seal({ sub: 'alice', app: 'echo', p: { sub: 'alice' } }, 60_000))}` } });
    t.equal(forged.status, 302, 'a sealed value for another purpose is not an app cookie');
    t.equal(statSync(join(tg.dataDir, 'http', 'assertion-key.json')).mode & 0o777, 0o600, 'assertion key file is private');
  });

  const alice = await signInApp(tg, 'alice', 'echo', `http://${host}/whoami`);

  await t.test('signed in without a grant: 403 page with identity, app, reason and a request link', async (t) => {
    const r = await raw(port, { path: '/whoami', host, headers: { cookie: alice.cookie } });
    t.equal(r.status, 403);
    const html = r.body.toString();
    t.match(html, /<dd id="identity">alice<\/dd>/);
    t.match(html, /<dd id="app">echo<\/dd>/);
    t.match(html, /no active grant/);
    t.match(html, new RegExp(`href="${tg.url}/apps/_request\\?app=echo"`));
    t.match(html, new RegExp(`href="${tg.url}/\\?request=echo"`));
    t.equal(up.seen.length, 0, 'nothing reached the app');
  });

  await t.test('the request form files a real request (same-origin POST with the CSRF token only)', async (t) => {
    const form = await raw(port, { path: '/apps/_request?app=echo', headers: { cookie: alice.gatewayCookie } });
    t.equal(form.status, 200);
    t.match(form.body.toString(), /<option value="user">user<\/option>/);
    const token = /name="csrf" value="([^"]+)"/.exec(form.body.toString())?.[1];
    t.ok(token, 'the form carries a CSRF token');
    const fields = { app: 'echo', role: 'user', duration: '30m', reason: 'debug the <echo> app' };
    const body = new URLSearchParams({ ...fields, csrf: token! }).toString();
    const requests = async () => (await tg.store.listRequests({ requester: 'alice', limit: 100 })).length;
    const before = await requests();
    const post = (headers: Record<string, string>, b = body) => raw(port, { method: 'POST', path: '/apps/_request', headers: { cookie: alice.gatewayCookie, 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: b });
    t.equal((await post({ origin: 'https://evil.example' })).status, 403, 'cross-origin POST refused, even with the token');
    t.equal((await post({ origin: `http://echo.localhost:${port}` })).status, 403, 'a POST from an app page (same site) refused');
    t.equal((await post({ origin: tg.url, 'sec-fetch-site': 'same-site' })).status, 403, 'Sec-Fetch-Site other than same-origin refused');
    t.equal((await post({ origin: tg.url }, new URLSearchParams(fields).toString())).status, 403, 'no CSRF token: refused');
    t.equal((await post({ origin: tg.url }, new URLSearchParams({ ...fields, csrf: `${token!.slice(0, -2)}AA` }).toString())).status, 403, 'wrong CSRF token: refused');
    const { cookie: bobCookie } = await tg.gw.webSessions.create('bob', null, 3_600_000);
    t.equal((await post({ origin: tg.url, cookie: `tg_session=${encodeURIComponent(bobCookie.reveal())}` })).status, 403, 'another session\'s token: refused');
    t.equal(await requests(), before, 'no refused form filed a request');
    const sent = await post({ origin: tg.url });
    t.equal(sent.status, 201, sent.body.toString());
    const id = /<code id="request-id">([^<]+)<\/code>/.exec(sent.body.toString())?.[1];
    t.ok(id, 'request id shown');
    const req = await tg.api('alice', 'GET', `/api/v1/requests/${id}`);
    t.equal(req.body.target, 'echo');
    t.equal(req.body.role, 'user');
    t.equal(req.body.reason, 'debug the <echo> app');
    t.equal(req.body.state, 'pending');
    await tg.api('alice', 'POST', `/api/v1/requests/${id}/cancel`, {});
  });

  const grant = await tg.grant('alice', 'echo', 'user');

  await t.test('with a grant: the app works and verifies the JWT against the JWKS', async (t) => {
    const r = await raw(port, {
      path: '/whoami?q=1', host,
      headers: {
        cookie: `${alice.cookie}; theme=dark; ${alice.gatewayCookie}`,
        'x-tollgate-assertion': 'forged', 'x-forwarded-for': '6.6.6.6', forwarded: 'for=6.6.6.6',
        connection: 'keep-alive, x-drop-me', 'x-drop-me': 'secret', 'proxy-authorization': 'Basic Zm9v', te: 'trailers',
      },
    });
    t.equal(r.status, 200, r.body.toString());
    const j = JSON.parse(r.body.toString());
    t.equal(j.assertion.ok, true, `assertion verified: ${j.assertion.error ?? ''}`);
    const p = j.assertion.payload;
    t.equal(p.sub, 'alice');
    t.equal(p.aud, 'echo');
    t.equal(p.iss, tg.url);
    t.equal(p.email, 'alice@test');
    t.same(p.groups, ['engineers', 'oncall']);
    t.equal(p.grant, grant.id);
    t.type(p.sid, 'string');
    t.ok(p.exp - p.iat <= 300, 'at most 5 minutes');
    t.equal(j.query, '?q=1');
    const h = j.headers;
    t.equal(h.cookie, 'theme=dark', 'gateway and app cookies stripped, others kept');
    t.equal(h['x-forwarded-for'], '127.0.0.1', 'client address, not the spoofed one');
    t.equal(h['x-forwarded-host'], host);
    t.equal(h['x-forwarded-proto'], 'http');
    t.equal(h.forwarded, `for=127.0.0.1;host="${host}";proto=http`);
    t.notOk(h['x-drop-me'], 'headers named by Connection dropped');
    t.notOk(h['proxy-authorization'], 'Proxy-Authorization dropped');
    t.notOk(h.te, 'TE dropped');
    t.equal(h.host, `127.0.0.1:${up.port}`, 'upstream Host is the app\'s own');
    // The session is cached: the store is not asked again for the next requests.
    const sessions = (await tg.store.listSessions({ state: 'active' })).filter((s) => s.target === 'echo');
    t.equal(sessions.length, 1, 'one live session');
    for (let i = 0; i < 5; i++) t.equal((await raw(port, { path: '/whoami', host, headers: { cookie: alice.cookie } })).status, 200);
    t.equal((await tg.store.listSessions({ state: 'active' })).filter((s) => s.target === 'echo').length, 1, 'still one session');
  });

  await t.test('an app cookie only works for its own app', async (t) => {
    const value = alice.cookie.slice('tg_app_echo='.length);
    const r = await raw(port, { path: '/', host: `deadapp.localhost:${port}`, headers: { cookie: `tg_app_deadapp=${value}` } });
    t.equal(r.status, 302, 'echo\'s cookie is not a sign-in for deadapp');
  });

  await t.test('no app byte on the gateway origin: /apps/<name>/ points at the app origin, never proxies', async (t) => {
    const before = up.seen.length;
    // Even with a valid app cookie (and the gateway cookie) presented on the gateway's host.
    const cookie = `${alice.cookie}; ${alice.gatewayCookie}`;
    const r = await raw(port, { path: '/apps/echo/whoami?z=2', headers: { cookie } });
    t.equal(r.status, 302, 'GET: a redirect');
    t.equal(r.headers.location, `http://${host}/whoami?z=2`, 'to the same page on the app origin');
    t.equal(r.body.length, 0);
    t.equal((await raw(port, { path: '/apps/echo', headers: { cookie } })).headers.location, `http://${host}/`);
    t.equal((await raw(port, { path: '/apps/echo/a/../b', headers: { cookie } })).headers.location, `http://${host}/b`);
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
      const m = await raw(port, { method, path: '/apps/echo/upload', headers: { cookie }, body: 'x' });
      t.equal(m.status, 404, `${method}: 404`);
      t.match(m.body.toString(), new RegExp(`served at http://${host}/`));
    }
    t.equal((await raw(port, { path: '/apps/nosuch/x', headers: { cookie } })).status, 404, 'unknown app: 404');
    const ws = await rawBytes(port, `GET /apps/echo/ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nCookie: ${cookie}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`, 1000);
    t.match(ws, /^HTTP\/1\.1 404/, 'a WebSocket under /apps/ on the gateway origin: 404');
    t.equal(up.seen.length, before, 'nothing reached the app');
    const hred = await raw(port, { path: '/redirect', host, headers: { cookie: alice.cookie } });
    t.equal(hred.headers.location, `http://${host}/whoami?from=redirect`, 'upstream redirects are rewritten to the app origin');
  });

  await t.test('HEAD keeps the length without a body; OPTIONS and PATCH pass', async (t) => {
    const h = await raw(port, { method: 'HEAD', path: '/download?n=12345', host, headers: { cookie: alice.cookie } });
    t.equal(h.status, 200);
    t.equal(h.headers['content-length'], '12345');
    t.equal(h.body.length, 0);
    const p = await raw(port, { method: 'PATCH', path: '/upload', host, headers: { cookie: alice.cookie }, body: 'abc' });
    t.same(JSON.parse(p.body.toString()).bytes, 3);
    const o = await raw(port, { method: 'OPTIONS', path: '/headers', host, headers: { cookie: alice.cookie } });
    t.equal(JSON.parse(o.body.toString()).method, 'OPTIONS');
  });

  await t.test('response hop-by-hop headers dropped, Set-Cookie kept repeated', async (t) => {
    const r = await raw(port, { path: '/hop', host, headers: { cookie: alice.cookie } });
    t.equal(r.status, 200);
    t.notOk(r.headers['x-secret-hop']);
    t.notOk(r.headers['keep-alive']);
    t.same(setCookies(r.headers), ['a=1; Path=/', 'b=2; Path=/']);
  });

  await t.test('an app cannot set gateway cookies, nor cookies for a domain wider than its own host', async (t) => {
    const r = await raw(port, { path: '/cookies', host, headers: { cookie: alice.cookie } });
    t.equal(r.status, 200);
    t.equal(r.body.toString(), 'cookies');
    t.same(setCookies(r.headers), ['own=1; Domain=echo.localhost; Path=/', 'plain=1; Path=/; HttpOnly'],
      'tg_session, __Host-tg_session, TG_OIDC, tg_app_other and Domain=localhost cookies dropped');
  });

  await t.test('headers named constructor, toString, __proto__ pass as ordinary headers both ways', async (t) => {
    // (uWS itself refuses request header names with "_", so __proto__ is covered upstream-bound in unit.test.ts.)
    const r = await rawBytes(port, `GET /headers HTTP/1.1\r\nHost: ${host}\r\nCookie: ${alice.cookie}\r\nconstructor: a\r\ntoString: c\r\nhasOwnProperty: d\r\nConnection: close\r\n\r\n`, 3000);
    t.match(r, /^HTTP\/1\.1 200/);
    const j = JSON.parse(r.slice(r.indexOf('\r\n\r\n') + 4));
    t.equal(j.headers.constructor, 'a', 'constructor: a, not "function Object() { [native code] }, a"');
    t.equal(j.headers.tostring, 'c');
    t.equal(j.headers.hasownproperty, 'd');
    const down = await raw(port, { path: '/protohdr', host, headers: { cookie: alice.cookie } });
    t.equal(down.status, 200);
    const pairs: [string, string][] = [];
    for (let i = 0; i < down.rawHeaders.length; i += 2) pairs.push([down.rawHeaders[i]!.toLowerCase(), down.rawHeaders[i + 1]!]);
    t.same(pairs.filter(([k]) => ['constructor', '__proto__', 'tostring'].includes(k)), [['constructor', 'a'], ['__proto__', 'b'], ['tostring', 'c']], 'the app\'s response headers reach the browser as they were');
  });

  await t.test('request headers that would speak for the gateway never reach the app', async (t) => {
    const r = await raw(port, {
      path: '/headers', host,
      headers: {
        cookie: alice.cookie,
        'x-forwarded-server': 'evil', 'x-forwarded-port': '1', 'x-original-url': '/admin/users', 'x-original-uri': '/admin',
        'x-rewrite-url': '/admin', 'true-client-ip': '6.6.6.6', 'x-client-ip': '6.6.6.6', 'x-http-method-override': 'GET', 'x-http-method': 'GET', 'x-method-override': 'GET',
      },
    });
    t.equal(r.status, 200);
    const h = JSON.parse(r.body.toString()).headers;
    for (const k of ['x-forwarded-server', 'x-forwarded-port', 'x-original-url', 'x-original-uri', 'x-rewrite-url', 'true-client-ip', 'x-client-ip', 'x-http-method-override', 'x-http-method', 'x-method-override']) {
      t.notOk(h[k], `${k} dropped`);
    }
    t.equal(h['x-forwarded-for'], '127.0.0.1');
    t.match(h['x-tollgate-assertion'], /^ey/, 'the real assertion is the gateway\'s');
  });

  await t.test('rules cannot be sidestepped: case, ;params, /admin itself, encoded dots and slashes, method override', async (t) => {
    const before = up.seen.length;
    const variants: [string, string, Record<string, string>?][] = [
      ['DELETE', '/admin/users'], ['DELETE', '/ADMIN/users'], ['DELETE', '/Admin/Users'], ['DELETE', '/admin;jsessionid=x/users'], ['DELETE', '/admin;x'],
      ['DELETE', '/admin'], ['DELETE', '/admin/'], ['DELETE', '/public/../admin/users'], ['DELETE', '/%2e%2e/admin/x'], ['DELETE', '/x/%2E%2E/admin/y'],
      ['DELETE', '//admin//users'], ['DELETE', '/admin%2Fusers'], ['DELETE', '/x%2f..%2fadmin/users'], ['DELETE', '/%2561dmin/users'], ['DELETE', '/x/..%5cadmin/users'],
      ['POST', '/admin/users', { 'x-http-method-override': 'DELETE' }], ['POST', '/admin/users', { 'x-http-method': 'delete' }],
      ['POST', '/admin/users', { 'x-method-override': 'DELETE' }], ['POST', '/admin/users', { 'x-http-method-override': 'GET, DELETE' }],
      ['POST', '/admin/users?_method=DELETE', {}],
    ];
    for (const [method, path, headers] of variants) {
      const r = await raw(port, { method, path, host, headers: { cookie: alice.cookie, ...headers }, body: method === 'POST' ? 'x' : undefined });
      t.equal(r.status, 403, `denied: ${method} ${path} ${JSON.stringify(headers ?? {})}`);
      t.match(r.body.toString(), /deleting under \/admin is not allowed/);
    }
    t.equal(up.seen.length, before, 'nothing reached the app');
    for (const path of ['/admin/users', '/ADMIN/users', '/administrator']) {
      const g = await raw(port, { method: 'GET', path, host, headers: { cookie: alice.cookie } });
      t.not(g.status, 403, `GET ${path} is allowed`);
    }
    t.equal((await raw(port, { method: 'DELETE', path: '/administrator', host, headers: { cookie: alice.cookie } })).status, 404, '/administrator is not under /admin/*');
    t.equal((await raw(port, { method: 'PUT', path: '/Exact/x', host, headers: { cookie: alice.cookie }, body: 'x' })).status, 403, 'caseSensitive rule: exact case denied');
    t.equal((await raw(port, { method: 'PUT', path: '/exact/x', host, headers: { cookie: alice.cookie }, body: 'x' })).status, 404, 'caseSensitive rule: other case passes');
    // Rule hits are audited without holding up the request: wait for the writes to land.
    const audit = await waitFor(async () => { const l = await tg.store.listAudit({ action: 'session.rule.deny' }); return l.length >= variants.length ? l : null; }, 10_000, 'the denials audited');
    t.ok(audit.length >= variants.length, 'denials audited');
  });

  await t.test('streaming: chunked responses, 20 MiB download and upload intact', async (t) => {
    const s = await raw(port, { path: '/stream', host, headers: { cookie: alice.cookie } });
    t.equal(s.body.toString(), 'tick 0\ntick 1\ntick 2\ntick 3\ntick 4\ndone\n');
    const n = 20 * 1024 * 1024;
    const want = sha256(pattern(n));
    for (const chunked of [false, true]) {
      const d = await raw(port, { path: `/download?n=${n}${chunked ? '&chunked=1' : ''}`, host, headers: { cookie: alice.cookie } });
      t.equal(d.status, 200);
      t.equal(d.body.length, n, `download length (chunked=${chunked})`);
      t.equal(sha256(d.body), want, `download bytes intact (chunked=${chunked})`);
      if (!chunked) t.equal(d.headers['content-length'], String(n));
    }
    const body = pattern(n);
    const u = await raw(port, { method: 'POST', path: '/upload', host, headers: { cookie: alice.cookie, 'content-type': 'application/octet-stream' }, body });
    t.equal(u.status, 200);
    t.same(JSON.parse(u.body.toString()), { bytes: n, sha256: want }, 'upload intact');
    const e = await raw(port, { method: 'PUT', path: '/echo', host, headers: { cookie: alice.cookie }, body: pattern(3 * 1024 * 1024) });
    t.equal(sha256(e.body), sha256(pattern(3 * 1024 * 1024)), 'echo both ways at once');
  });

  await t.test('WebSocket: echo through the gateway with the identity', async (t) => {
    const ws = appWs(host, '/ws', { headers: { cookie: alice.cookie } });
    ws.binaryType = 'arraybuffer';
    const msgs: string[] = [];
    const opened = new Promise<void>((res, rej) => { ws.onopen = () => res(); ws.onerror = () => rej(new Error('ws error')); });
    ws.onmessage = (ev) => { msgs.push(typeof ev.data === 'string' ? ev.data : Buffer.from(ev.data as ArrayBuffer).toString()); };
    await opened;
    ws.send('ping-1');
    ws.send(new Uint8Array(Buffer.from('bin-2')));
    const big = 'x'.repeat(200_000);
    ws.send(big);
    for (let i = 0; i < 100 && msgs.length < 4; i++) await sleep(20);
    t.same(msgs.slice(0, 3), [JSON.stringify({ hello: 'alice' }), 'ping-1', 'bin-2']);
    t.equal(msgs[3]?.length, big.length, 'large message intact');
    const closed = new Promise<number>((r) => { ws.onclose = (ev) => r(ev.code); });
    ws.close(1000, 'bye');
    t.equal(await closed, 1000);
    // The subprotocol the app picked reaches the browser.
    const ws2 = appWs(host, '/ws', { protocols: ['chat.v2', 'chat.v1'], headers: { cookie: alice.cookie } });
    await new Promise<void>((res, rej) => { ws2.onopen = () => res(); ws2.onerror = () => rej(new Error('ws error')); });
    t.equal(ws2.protocol, 'chat.v2', 'subprotocol negotiated end to end');
    const seenUp = up.seen.filter((s) => s.url === '/ws').at(-1)!;
    t.equal(seenUp.headers['sec-websocket-protocol'], 'chat.v2, chat.v1');
    t.notMatch(String(seenUp.headers.cookie ?? ''), /tg_app_/, 'no app cookie on the upgrade either');
    const closed2 = new Promise<void>((r) => { ws2.onclose = () => r(); });
    ws2.close();
    await closed2;
    // Upgrades that are not for an app are refused.
    const r = await rawBytes(port, `GET /nope HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`, 1000);
    t.match(r, /^HTTP\/1\.1 404/, 'non-app upgrade: 404');
    const noCookie = await rawBytes(port, `GET /ws HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`, 1000);
    t.match(noCookie, /^HTTP\/1\.1 401/, 'app upgrade without sign-in: 401');
    const upgrades = up.seen.filter((s) => s.url === '/ws').length;
    for (const origin of [tg.url, `http://deadapp.localhost:${port}`, 'https://evil.example']) {
      const foreign = await rawBytes(port, `GET /ws HTTP/1.1\r\nHost: ${host}\r\nOrigin: ${origin}\r\nCookie: ${alice.cookie}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`, 1000);
      t.match(foreign, /^HTTP\/1\.1 403/, `app upgrade from ${origin}: 403`);
    }
    t.equal(up.seen.filter((s) => s.url === '/ws').length, upgrades, 'no cross-origin upgrade reached the app');
    const own = appWs(host, '/ws', { headers: { cookie: alice.cookie, origin: `http://${host}` } });
    await new Promise<void>((res, rej) => { own.onopen = () => res(); own.onerror = () => rej(new Error('ws error')); });
    t.pass('an upgrade from the app\'s own origin opens');
    const closed3 = new Promise<void>((r) => { own.onclose = () => r(); });
    own.close();
    await closed3;
  });

  await t.test('hostile input: malformed requests, oversized headers', async (t) => {
    const bad = await rawBytes(port, `GET /whoami HTTP/1.1\r\nHost: bad host!\r\n\r\n`, 1000);
    t.match(bad, /^HTTP\/1\.1 400/, 'malformed Host: 400');
    const badPct = await raw(port, { path: '/%E0%A4%A', host, headers: { cookie: alice.cookie } });
    t.equal(badPct.status, 400, 'undecodable path: 400');
    const cl = await rawBytes(port, `POST /upload HTTP/1.1\r\nHost: ${host}\r\nCookie: ${alice.cookie}\r\nContent-Length: abc\r\n\r\n`, 1000);
    // uWS's own parser refuses this before any handler runs: it closes the connection (nothing reaches the app).
    t.ok(cl === '' || /^HTTP\/1\.1 400/.test(cl), `bad Content-Length refused (${JSON.stringify(cl.slice(0, 40))})`);
    const both = await rawBytes(port, `POST /upload HTTP/1.1\r\nHost: ${host}\r\nCookie: ${alice.cookie}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, 1000);
    t.ok(both === '' || /^HTTP\/1\.1 400/.test(both), `Content-Length with Transfer-Encoding refused (${JSON.stringify(both.slice(0, 40))})`);
    t.notOk(up.seen.some((s) => s.url === '/upload' && s.method === 'POST' && s.headers['content-length'] === '5'), 'smuggling attempt never reached the app');
    const garbage = await rawBytes(port, 'HELLO\r\n\r\n', 1000);
    t.ok(garbage === '' || /^HTTP\/1\.1 4\d\d/.test(garbage), `garbage refused (${JSON.stringify(garbage.slice(0, 40))})`);
    const huge = await rawBytes(port, `GET /whoami HTTP/1.1\r\nHost: ${host}\r\nCookie: ${alice.cookie}\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`, 2000);
    t.ok(huge === '' || /^HTTP\/1\.1 4(31|00|13)/.test(huge), `oversized headers refused (${JSON.stringify(huge.slice(0, 40))})`);
    const unknown = await raw(port, { path: '/', host: `nosuch.localhost:${port}` });
    t.equal(unknown.status, 404);
    t.match(unknown.body.toString(), /no app named &quot;nosuch&quot;/);
    // The gateway still serves everyone.
    t.equal((await raw(port, { path: '/whoami', host, headers: { cookie: alice.cookie } })).status, 200);
    t.equal((await fetch(`${tg.url}/healthz`)).status, 200);
  });

  await t.test('dead upstream: 502 page; slow upstream: 504; truncated body: connection cut', async (t) => {
    const da = await signInApp(tg, 'alice', 'deadapp', `http://deadapp.localhost:${port}/`);
    await tg.grant('alice', 'deadapp', 'user');
    const r = await raw(port, { path: '/', host: `deadapp.localhost:${port}`, headers: { cookie: da.cookie } });
    t.equal(r.status, 502);
    t.match(r.body.toString(), /cannot reach deadapp/);
    const s0 = Date.now();
    const slow = await raw(port, { path: '/slow?ms=5000', host, headers: { cookie: alice.cookie } });
    t.equal(slow.status, 504);
    t.ok(Date.now() - s0 < 4500, 'answered at the configured timeout');
    await t.rejects(raw(port, { path: '/truncated', host, headers: { cookie: alice.cookie } }), 'a short body is not passed off as complete');
  });

  await t.test('slow clients do not stall other traffic', async (t) => {
    // A client that asks for 20 MiB and never reads.
    const sock = net.connect(port, '127.0.0.1');
    await new Promise<void>((r) => sock.on('connect', () => r()));
    sock.write(`GET /download?n=${20 * 1024 * 1024} HTTP/1.1\r\nHost: ${host}\r\nCookie: ${alice.cookie}\r\n\r\n`);
    sock.pause();
    // And one that sends headers byte by byte.
    const drip = net.connect(port, '127.0.0.1');
    drip.on('error', () => undefined);
    const line = `GET /whoami HTTP/1.1\r\nHost: ${host}\r\n`;
    let i = 0;
    const dripTimer = setInterval(() => { if (i < line.length) drip.write(line[i++]!); }, 50);
    t.teardown(() => { clearInterval(dripTimer); drip.destroy(); sock.destroy(); });
    await sleep(300);
    const s0 = Date.now();
    for (let k = 0; k < 20; k++) {
      const r = await raw(port, { path: '/whoami', host, headers: { cookie: alice.cookie } });
      t.equal(r.status, 200);
    }
    const d = await raw(port, { path: `/download?n=${1024 * 1024}`, host, headers: { cookie: alice.cookie } });
    t.equal(d.body.length, 1024 * 1024);
    t.ok(Date.now() - s0 < 3000, `other requests served promptly (${Date.now() - s0} ms)`);
  });

  await t.test('clients that vanish mid-download or mid-upload do not hurt the gateway', async (t) => {
    for (let k = 0; k < 3; k++) {
      await new Promise<void>((resolve) => {
        const sock = net.connect(port, '127.0.0.1', () => {
          sock.write(`GET /download?n=${20 * 1024 * 1024} HTTP/1.1\r\nHost: ${host}\r\nCookie: ${alice.cookie}\r\n\r\n`);
        });
        let got = 0;
        sock.on('data', (d) => { got += d.length; if (got > 256 * 1024) { sock.destroy(); resolve(); } });
        sock.on('error', () => resolve());
      });
      await new Promise<void>((resolve) => {
        const sock = net.connect(port, '127.0.0.1', () => {
          sock.write(`POST /upload HTTP/1.1\r\nHost: ${host}\r\nCookie: ${alice.cookie}\r\nContent-Length: 10000000\r\n\r\n`);
          sock.write(Buffer.alloc(300_000, 1), () => { sock.destroy(); resolve(); });
        });
        sock.on('error', () => resolve());
      });
    }
    await sleep(200);
    const d = await raw(port, { path: `/download?n=${1024 * 1024}`, host, headers: { cookie: alice.cookie } });
    t.equal(d.body.length, 1024 * 1024, 'still serving');
    const sess = tg.gw.sessions.list().find((s) => s.target.name === 'echo' && s.principal.sub === 'alice');
    t.ok(sess && !sess.ended, 'the session lives on');
  });

  await t.test('recorded: one http.request event per request, no credentials', async (t) => {
    const sess = (await tg.store.listSessions({ state: 'active' })).find((s) => s.target === 'echo' && s.identity === 'alice')!;
    t.ok(sess);
    const live = tg.gw.sessions.get(sess.id)!;
    t.ok(live, 'live session');
    t.ok(live.bytes().down > 40 * 1024 * 1024, 'bytes counted');
  });

  await t.test('revoke: open WebSocket closed with the reason, next request 403', async (t) => {
    const ws = appWs(host, "/ws", { headers: { cookie: alice.cookie } });
    await new Promise<void>((res, rej) => { ws.onopen = () => res(); ws.onerror = () => rej(new Error('ws error')); });
    const closed = new Promise<{ code: number; reason: string }>((r) => { ws.onclose = (ev) => r({ code: ev.code, reason: ev.reason }); });
    const sess = (await tg.store.listSessions({ state: 'active' })).find((s) => s.target === 'echo' && s.identity === 'alice')!;
    const rv = await tg.api('bob', 'POST', `/api/v1/grants/${grant.id}/revoke`, { reason: 'incident 42' });
    t.equal(rv.status, 200, JSON.stringify(rv.body));
    const c = await closed;
    t.equal(c.code, 4001);
    t.match(c.reason, /revoked/);
    for (let i = 0; i < 100 && up.wsSockets.size; i++) await sleep(20);
    t.equal(up.wsSockets.size, 0, 'upstream WebSocket closed too');
    const r = await raw(port, { path: '/whoami', host, headers: { cookie: alice.cookie } });
    t.equal(r.status, 403);
    t.match(r.body.toString(), /revoked|no active grant/);
    for (let i = 0; i < 100; i++) { if ((await tg.store.getSession(sess.id))?.state === 'ended') break; await sleep(20); }
    const ended = await tg.store.getSession(sess.id);
    t.equal(ended?.state, 'ended');
    t.match(ended?.endReason ?? '', /^revoked/);
    const recs = await tg.api('carol', 'GET', `/api/v1/sessions/${sess.id}`);
    t.equal(recs.status, 200);
    const files = (recs.body.recordings ?? []) as { id: string; kind: string }[];
    const ev = files.find((f) => /event/.test(f.kind));
    t.ok(ev, `events recording listed (${JSON.stringify(files.map((f) => f.kind))})`);
    if (ev) {
      const dl = await fetch(`${tg.url}/api/v1/recordings/${ev.id}`, { headers: { authorization: `Bearer ${tg.token('carol')}` } }).then((x) => x.text());
      t.match(dl, /"http\.request"/);
      t.match(dl, /"path":"\/whoami"/);
      t.match(dl, /"http\.websocket"/);
      t.notMatch(dl, /tg_app_|tg_session|eyJ/, 'no cookies or assertions in the recording');
    }
  });
});
