/**
 * CSRF and cross-origin WebSockets on the gateway's own origin. Raw HTTP first: every
 * cookie-authenticated change from a foreign Origin, without Origin, from another site, or not
 * as JSON is refused and changes nothing; API tokens are unaffected; forms need the session's CSRF
 * token; WebSocket upgrades (live watch, VNC viewer) from a foreign Origin are refused. Then the
 * real attack in headless Chromium: the gateway at gw.localhost and an app at echo.gw.localhost are
 * the same site, so SameSite cookies do not stop a page of the app; the Origin gate does, while the
 * portal's own calls keep working.
 */
import t from 'tap';
import { setGlobalDispatcher, WebSocket } from 'undici';
import { chromium } from 'playwright-core';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { FakeTarget, fakeModule, fakeConnect } from '../support/fake-module.js';
import { vncModule } from '../../protocols/vnc/index.js';
import { httpModule } from '../../protocols/http/index.js';
import { freePort } from '../../protocols/net.js';
import { loopback, raw, rawBytes, setCookies, startUpstream, type Upstream } from './support.js';

const UPGRADE = (path: string, host: string, extra: string) => `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`;

t.test('cookie-authenticated changes and WebSockets only from the gateway origin', async (t) => {
  const ft = new FakeTarget();
  const mod = fakeModule(ft);
  const tg = await startTestGateway({
    modules: new Map([['fake', mod], ['vnc', vncModule]]), listeners: ['fake'],
    targets: [{ name: 'box', protocol: 'fake', address: 'x', risk: 'medium', roles: [{ name: 'user' }] }],
  });
  t.teardown(() => tg.close());
  const port = Number(new URL(tg.url).port);
  const own = tg.url;
  const cookieOf = async (user: string) => `tg_session=${encodeURIComponent((await tg.gw.webSessions.create(user, null, 3_600_000)).cookie.reveal())}`;
  const bob = await cookieOf('bob');
  const carol = await cookieOf('carol');
  const post = (cookie: string, path: string, headers: Record<string, string>, body = '{}') => raw(port, { method: 'POST', path, headers: { cookie, ...headers }, body });
  const json = { 'content-type': 'application/json' };

  await t.test('approve: foreign Origin, an app origin, no Origin, another site, text/plain are refused; the portal\'s call works', async (t) => {
    const r = await tg.api('alice', 'POST', '/api/v1/requests', { target: 'box', role: 'user', duration: '1h', reason: 'csrf test' });
    t.equal(r.status, 201);
    const path = `/api/v1/requests/${r.body.id}/approve`;
    const refusals: [string, Record<string, string>, number][] = [
      ['foreign Origin', { origin: 'https://evil.example', ...json }, 403],
      ['an app\'s origin (same site)', { origin: `http://box.localhost:${port}`, ...json }, 403],
      ['Origin null', { origin: 'null', ...json }, 403],
      ['no Origin, no Sec-Fetch-Site', { ...json }, 403],
      ['Sec-Fetch-Site: cross-site', { 'sec-fetch-site': 'cross-site', ...json }, 403],
      ['Sec-Fetch-Site: same-site', { origin: own, 'sec-fetch-site': 'same-site', ...json }, 403],
      ['text/plain', { origin: own, 'content-type': 'text/plain' }, 415],
      ['a form encoding', { origin: own, 'content-type': 'application/x-www-form-urlencoded' }, 415],
      ['multipart', { origin: own, 'content-type': 'multipart/form-data; boundary=x' }, 415],
      ['no content type', { origin: own }, 415],
    ];
    for (const [what, headers, status] of refusals) {
      const a = await post(bob, path, headers);
      t.equal(a.status, status, `${what}: ${status}`);
      if (status === 403) t.match(JSON.parse(a.body.toString()), { error: 'cross_origin', message: /cross-origin request refused/ });
      else t.match(JSON.parse(a.body.toString()), { error: 'unsupported_media_type', message: /Content-Type: application\/json/ });
    }
    t.equal((await tg.store.getRequest(r.body.id))?.state, 'pending', 'nothing was approved');
    t.equal((await tg.store.listApprovals(r.body.id)).length, 0);
    const okSite = await post(bob, path, { origin: own, 'sec-fetch-site': 'same-origin', 'content-type': 'application/json; charset=utf-8' }, '{"comment":"from the portal"}');
    t.equal(okSite.status, 200, okSite.body.toString());
    t.equal(JSON.parse(okSite.body.toString()).approvals.length, 1, 'the portal\'s own call (same origin, JSON) works');
  });

  await t.test('every cookie-authenticated state-changing API route refuses a foreign Origin', async (t) => {
    const doc = (await tg.api(null, 'GET', '/api/v1/openapi.json')).body as { paths: Record<string, Record<string, { security: unknown[] }>> };
    let n = 0;
    const keysBefore = (await tg.store.listPublicKeys({ identity: 'carol' })).length;
    const tokensBefore = (await tg.gw.tokens.list('carol')).length;
    for (const [p, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        if (!['post', 'put', 'patch', 'delete'].includes(method) || !op.security.length) continue;
        const path = p.replace(/\{\w+\}/g, 'x');
        const body = JSON.stringify({ publicKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x', name: 'k', scope: 'identity', value: 'alice', reason: 'r', target: 'box', role: 'user', duration: '1h' });
        const r = await raw(port, { method: method.toUpperCase(), path, headers: { cookie: carol, origin: 'https://evil.example', ...json }, body });
        t.equal(r.status, 403, `${method.toUpperCase()} ${p}: 403`);
        n++;
      }
    }
    t.ok(n >= 15, `${n} routes checked`);
    t.equal((await tg.store.listPublicKeys({ identity: 'carol' })).length, keysBefore, 'no key registered');
    t.equal((await tg.gw.tokens.list('carol')).length, tokensBefore, 'no token minted');
    t.equal((await tg.store.listLocks({})).length, 0, 'no lock created');
  });

  await t.test('API tokens are unaffected (no Origin, any content type); reads with the cookie still work', async (t) => {
    const r = await raw(port, { method: 'POST', path: '/api/v1/tokens', headers: { authorization: `Bearer ${tg.token('carol')}`, origin: 'https://evil.example', 'content-type': 'text/plain' }, body: '{"name":"ci"}' });
    t.equal(r.status, 201, r.status === 201 ? 'the token is created' : r.body.toString()); // the body holds the token: printed only on failure
    const me = await raw(port, { path: '/api/v1/me', headers: { cookie: bob, origin: 'https://evil.example' } });
    t.equal(me.status, 200, 'GET is not a change (and cross-origin reads are the browser\'s same-origin policy)');
  });

  await t.test('sign-out form: needs the session\'s CSRF token and the gateway origin', async (t) => {
    const c = await cookieOf('erin');
    const value = decodeURIComponent(c.slice('tg_session='.length));
    const token = tg.gw.http.security.csrfToken(value);
    const form = (csrf: string) => `csrf=${encodeURIComponent(csrf)}`;
    const logout = (headers: Record<string, string>, body: string) => raw(port, { method: 'POST', path: '/auth/logout', headers: { cookie: c, 'content-type': 'application/x-www-form-urlencoded', ...headers }, body });
    t.equal((await logout({ origin: own }, '')).status, 403, 'no token');
    t.equal((await logout({ origin: own }, form(tg.gw.http.security.csrfToken('another session')))).status, 403, 'another session\'s token');
    t.equal((await logout({ origin: 'https://evil.example' }, form(token))).status, 403, 'foreign Origin');
    t.equal((await raw(port, { path: '/api/v1/me', headers: { cookie: c } })).status, 200, 'still signed in');
    const out = await logout({ origin: own }, form(token));
    t.equal(out.status, 303);
    t.match(setCookies(out.headers)[0], /^tg_session=; Path=\/; HttpOnly; SameSite=Strict; Max-Age=0$/);
    t.equal((await raw(port, { path: '/api/v1/me', headers: { cookie: c } })).status, 401, 'signed out');
  });

  await t.test('native sign-in approval page: the form carries the CSRF token, a forged post is refused', async (t) => {
    const g = await tg.grant('alice', 'box', 'user');
    void g;
    const alice = await cookieOf('alice');
    const pending = tg.gw.approvals.begin({ protocol: 'fake', username: 'box', clientAddr: '192.0.2.7' });
    const path = new URL(pending.url).pathname;
    const page = await raw(port, { path, headers: { cookie: alice } });
    t.equal(page.status, 200);
    const token = /name="csrf" value="([^"]+)"/.exec(page.body.toString())?.[1];
    t.ok(token, 'the approval form has a CSRF token');
    const decide = (headers: Record<string, string>, body: string) => raw(port, { method: 'POST', path, headers: { cookie: alice, 'content-type': 'application/x-www-form-urlencoded', ...headers }, body });
    t.equal((await decide({ origin: own }, 'decision=approve')).status, 403, 'no token: refused');
    t.equal((await decide({ origin: 'https://evil.example' }, `decision=approve&confirm=yes&csrf=${token}`)).status, 403, 'foreign Origin: refused');
    t.equal(tg.gw.approvals.open(path.split('/').pop()!, 'alice').ok, true, 'still pending');
    const ok = await decide({ origin: own }, `decision=approve&confirm=yes&csrf=${token}`);
    t.equal(ok.status, 200);
    t.match(ok.body.toString(), /Approved/);
    const outcome = await pending.wait(1000);
    t.equal(outcome.ok, true, 'the native sign-in went ahead');
  });

  await t.test('WebSocket upgrades: live watch and the VNC viewer refuse a foreign Origin', async (t) => {
    const g = await tg.grant('alice', 'box', 'user');
    const s = await tg.secret('alice', g.id);
    const c = await fakeConnect(mod.ctx!, ft, 'box', s.secret);
    if (!c.ok) throw new Error(c.reason);
    t.teardown(() => c.session.end({ code: 'client_exit', message: 'done' }));
    const live = `/api/v1/sessions/${c.session.id}/live`;
    const host = `127.0.0.1:${port}`;
    for (const origin of ['https://evil.example', `http://box.localhost:${port}`, 'null']) {
      const r = await rawBytes(port, UPGRADE(live, host, `Origin: ${origin}\r\nCookie: ${carol}\r\n`), 1000);
      t.match(r, /^HTTP\/1\.1 403/, `live watch from ${origin}: 403`);
      t.match(r, /WebSocket refused/);
    }
    t.match(await rawBytes(port, UPGRADE(live, host, `Origin: ${own}\r\nSec-Fetch-Site: cross-site\r\nCookie: ${carol}\r\n`), 1000), /^HTTP\/1\.1 403/, 'Sec-Fetch-Site cross-site: 403');
    t.match(await rawBytes(port, UPGRADE(live, host, `Origin: https://evil.example\r\nAuthorization: Bearer ${tg.token('carol')}\r\n`), 1000), /^HTTP\/1\.1 403/, 'a token does not make a foreign Origin acceptable');
    t.match(await rawBytes(port, UPGRADE(live, host, `Origin: ${own}\r\nCookie: ${carol}\r\n`), 1000), /^HTTP\/1\.1 101/, 'from the gateway origin: opens');
    t.match(await rawBytes(port, UPGRADE(live, host, `Cookie: ${carol}\r\n`), 1000), /^HTTP\/1\.1 101/, 'a program without Origin: opens');
    const ws = new WebSocket(`${own.replace(/^http/, 'ws')}${live}`, { headers: { authorization: `Bearer ${tg.token('carol')}` } } as never);
    const first = await new Promise<string>((resolve, reject) => { ws.onmessage = (e) => resolve(String(e.data)); ws.onerror = () => reject(new Error('ws failed')); });
    t.match(JSON.parse(first), { type: 'snapshot' }, 'the CLI\'s bearer WebSocket still works');
    ws.close();
    const vnc = await rawBytes(port, UPGRADE('/vnc/ws?target=box', host, `Origin: https://evil.example\r\nCookie: ${carol}\r\n`), 1000);
    t.match(vnc, /^HTTP\/1\.1 403/);
    t.match(vnc, /WebSocket refused: it comes from https:\/\/evil\.example/, 'VNC viewer from a foreign Origin: refused before any sign-in check');
    const vncOwn = await rawBytes(port, UPGRADE('/vnc/ws?target=box', host, `Origin: ${own}\r\nCookie: ${carol}\r\n`), 1000);
    t.notMatch(vncOwn, /WebSocket refused/, 'from the gateway origin the viewer goes on to the grant check');
  });
});

t.test('in Chromium: an app on the same site cannot act as the person on the gateway', async (t) => {
  setGlobalDispatcher(loopback);
  const port = await freePort();
  const gwUrl = `http://gw.localhost:${port}`;
  const ft = new FakeTarget();
  const mod = fakeModule(ft);
  let tg!: TestGateway;
  const up: Upstream = await startUpstream({ jwksUrl: () => `${tg.url}/.well-known/jwks.json`, issuer: () => tg.url, audience: 'echo' });
  t.teardown(() => up.close());
  tg = await startTestGateway({
    modules: new Map([['http', httpModule], ['fake', mod]]), listeners: ['fake'], http: { port }, gateway: { publicUrl: gwUrl },
    targets: [
      { name: 'echo', protocol: 'http', address: up.url, risk: 'low', roles: [{ name: 'user' }], credentials: { mode: 'jwt' } },
      { name: 'box', protocol: 'fake', address: 'x', risk: 'medium', roles: [{ name: 'user' }] },
    ],
    policies: [{ name: 'p', targets: ['*'], roles: ['*'], requesters: ['engineers'], approvers: ['approvers'], onTimeout: 'deny', rules: [] }],
    extra: { idp: { dev: { users: [{ name: 'vic', email: 'vic@test', password: { value: 'vic-pw' }, groups: ['engineers', 'approvers', 'soc'] }] } } },
  });
  t.teardown(() => tg.close());
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
  t.teardown(() => browser.close());
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(`${gwUrl}/portal/access`);
  await page.fill('#login', 'vic');
  await page.fill('#password', 'vic-pw');
  await page.click('button:has-text("Sign in")');
  await page.waitForURL(`${gwUrl}/portal/access`);
  const session = (await ctx.cookies(gwUrl)).find((c) => c.name === 'tg_session');
  t.equal(session?.sameSite, 'Strict', 'the session cookie is SameSite=Strict');
  t.equal(session?.domain, 'gw.localhost', 'host-only');

  // vic asks for the app from the portal (a low-risk grant, approved at once) and is then on its pages.
  const g = await page.evaluate(async () => {
    const r = await fetch('/api/v1/requests', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ target: 'echo', role: 'user', duration: '1h', reason: 'use the app' }) });
    return r.json() as Promise<{ state: string }>;
  });
  t.equal(g.state, 'approved', `the portal's own JSON call works: ${JSON.stringify(g)}`);
  const appUrl = `http://echo.gw.localhost:${port}`;
  await page.goto(`${appUrl}/whoami`);
  await page.waitForURL(`${appUrl}/whoami`);
  t.equal((await page.goto(`${appUrl}/whoami`))?.status(), 200, 'on the app');

  // A request waiting for vic's approval, and a live session vic (SOC) could watch.
  const pending = await tg.api('alice', 'POST', '/api/v1/requests', { target: 'box', role: 'user', duration: '1h', reason: 'attack target' });
  const bg = await tg.grant('erin', 'box', 'user');
  const secret = await tg.secret('erin', bg.id);
  const c = await fakeConnect(mod.ctx!, ft, 'box', secret.secret);
  if (!c.ok) throw new Error(c.reason);
  t.teardown(() => c.session.end({ code: 'client_exit', message: 'done' }));

  // The "stored XSS" in the app: script on the app's origin, one site with the gateway.
  const attack = await page.evaluate(async ({ gw, id, sid }) => {
    const out: Record<string, unknown> = {};
    await fetch(`${gw}/api/v1/requests/${id}/approve`, { method: 'POST', mode: 'no-cors', credentials: 'include', headers: { 'content-type': 'text/plain' }, body: '{"comment":"xss"}' }).catch(() => undefined);
    try {
      await fetch(`${gw}/api/v1/requests/${id}/approve`, { method: 'POST', credentials: 'include', headers: { 'content-type': 'application/json' }, body: '{}' });
      out['json'] = 'sent';
    } catch { out['json'] = 'blocked'; }
    out['ws'] = await new Promise((resolve) => {
      const ws = new WebSocket(`${gw.replace(/^http/, 'ws')}/api/v1/sessions/${sid}/live`);
      ws.onopen = () => { ws.close(); resolve('open'); };
      ws.onerror = () => resolve('refused');
    });
    return out;
  }, { gw: gwUrl, id: pending.body.id as string, sid: c.session.id });
  t.equal(attack['json'], 'blocked', 'a JSON call needs a CORS preflight the gateway never grants');
  t.equal(attack['ws'], 'refused', 'the live watch WebSocket is refused to the app page');
  t.equal((await tg.store.getRequest(pending.body.id))?.state, 'pending', 'the text/plain post approved nothing');
  // A form posted from the app page (a top-level navigation that carries the Strict cookie, same site).
  const formRes = page.waitForResponse((r) => r.url().endsWith('/approve'));
  await page.evaluate(({ gw, id }) => {
    const f = document.createElement('form');
    f.method = 'POST';
    f.action = `${gw}/api/v1/requests/${id}/approve`;
    f.enctype = 'text/plain';
    const i = document.createElement('input');
    i.name = '{"comment":"x","y":"';
    i.value = '"}';
    f.append(i);
    document.body.append(f);
    f.submit();
  }, { gw: gwUrl, id: pending.body.id as string });
  const fr = await formRes;
  t.equal(fr.status(), 403, 'the form post is refused');
  t.match(await fr.text(), /cross_origin/);
  t.equal((await tg.store.getRequest(pending.body.id))?.state, 'pending', 'still pending after the form');
  t.equal((await tg.store.listApprovals(pending.body.id)).length, 0);

  // The portal's own calls still work: approve from the Approvals page, and the live WebSocket opens there.
  await page.goto(`${gwUrl}/portal/approvals`);
  await page.waitForSelector(`text=attack target`);
  const mine = await page.evaluate(async ({ id, sid }) => {
    const r = await fetch(`/api/v1/requests/${id}/approve`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"comment":"ok from the portal"}' });
    const ws = await new Promise((resolve) => {
      const w = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/api/v1/sessions/${sid}/live`);
      w.onopen = () => { w.close(); resolve('open'); };
      w.onerror = () => resolve('refused');
    });
    return { status: r.status, ws };
  }, { id: pending.body.id as string, sid: c.session.id });
  t.same(mine, { status: 200, ws: 'open' }, 'the gateway\'s own page may approve and watch');
  t.equal((await tg.store.getRequest(pending.body.id))?.state, 'approved');
});
