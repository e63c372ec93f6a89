/**
 * The HTTP app proxy in headless Chromium with the real OIDC sign-in against the dev IdP:
 * app host → gateway hand-off → IdP login → back to the app; 403 page without a grant and its
 * request form; the app (which verifies the JWT against the gateway's JWKS) with a grant; a
 * WebSocket in the page; revoke closes the WebSocket with the reason and the next page is 403.
 */
import t from 'tap';
import { chromium, type Browser } from 'playwright-core';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { startUpstream, type Upstream } from './support.js';
import { onlyHttp } from './support.js';

t.test('HTTP app in the browser', async (t) => {
  let tg!: TestGateway;
  const up: Upstream = await startUpstream({ jwksUrl: () => `${tg.url}/.well-known/jwks.json`, issuer: () => tg.url, audience: 'echo' });
  t.teardown(() => up.close());
  tg = await startTestGateway({
    modules: onlyHttp(),
    targets: [{ name: 'echo', protocol: 'http', address: up.url, roles: [{ name: 'user' }], credentials: { mode: 'jwt' } }],
    extra: { idp: { dev: { users: [{ name: 'alice', email: 'alice@test', password: { value: 'alice-pw' }, groups: ['engineers', 'oncall'] }] } } },
  });
  t.teardown(() => tg.close());
  const port = Number(new URL(tg.url).port);
  const app = `http://echo.localhost:${port}`;
  const browser: Browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.teardown(() => browser.close());
  const ctx = await browser.newContext();
  const page = await ctx.newPage();

  await t.test('sign-in redirect: app host → gateway → IdP → back to the app page', async (t) => {
    await page.goto(`${app}/whoami?from=browser`);
    t.match(page.url(), new RegExp(`^${tg.gw.devIdp!.issuer}`), 'at the IdP login');
    await page.fill('#login', 'alice');
    await page.fill('#password', 'alice-pw');
    await page.click('button:has-text("Sign in")');
    await page.waitForURL(`${app}/whoami?from=browser`);
    t.pass('back on the app URL');
    const cookies = await ctx.cookies(app);
    const c = cookies.find((x) => x.name === 'tg_app_echo');
    t.ok(c, 'app cookie set on the app host');
    t.equal(c?.httpOnly, true);
    t.equal(c?.sameSite, 'Lax');
    t.notOk(cookies.find((x) => x.name === 'tg_session'), 'the gateway cookie stays on the gateway host');
    const gwCookie = (await ctx.cookies(tg.url)).find((x) => x.name === 'tg_session');
    t.equal(gwCookie?.sameSite, 'Strict', 'the gateway session cookie is SameSite=Strict');
  });

  await t.test('no grant: 403 page, and its request form files a request', async (t) => {
    const res = await page.reload();
    t.equal(res?.status(), 403);
    t.equal(await page.textContent('#identity'), 'alice');
    t.equal(await page.textContent('#app'), 'echo');
    t.match(await page.textContent('#reason') ?? '', /no active grant/);
    t.equal(up.seen.length, 0, 'nothing reached the app');
    const signins = async () => (await tg.store.listAudit({ action: 'signin' })).length;
    const before = await signins();
    // From the app (another site: echo.localhost vs 127.0.0.1) the Strict cookie is not sent; the
    // gateway re-opens its page from its own origin instead of a second trip to the IdP.
    await page.click('a:has-text("Open the portal")');
    await page.waitForURL(`${tg.url}/portal/access?request=echo`);
    await page.waitForSelector('#rq-target option[value="echo"]', { state: 'attached' });
    t.equal(await signins(), before, 'the portal link from the app: signed in, no new sign-in');
    await page.goBack();
    await page.waitForURL(`${app}/whoami?from=browser`);
    await page.click('#request');
    await page.waitForURL(`${tg.url}/apps/_request?app=echo`);
    await page.waitForSelector('textarea[name="reason"]');
    t.equal(await signins(), before, 'no new sign-in for the request form');
    t.match(await page.textContent('main'), /Signed in as alice/);
    await page.fill('textarea[name="reason"]', 'browser test');
    await page.click('#submit');
    await page.waitForSelector('#request-id');
    const id = (await page.textContent('#request-id'))!;
    const r = await tg.api('bob', 'POST', `/api/v1/requests/${id}/approve`, { comment: 'ok' });
    t.equal(r.status, 200, JSON.stringify(r.body));
    t.equal(r.body.state, 'approved');
  });

  await t.test('with the grant: the app works, identity verified by the app against the JWKS', async (t) => {
    const res = await page.goto(`${app}/whoami?from=browser`);
    t.equal(res?.status(), 200);
    const j = JSON.parse(await page.textContent('body') ?? '{}');
    t.equal(j.assertion.ok, true, j.assertion.error ?? '');
    t.equal(j.assertion.payload.sub, 'alice');
    t.equal(j.assertion.payload.aud, 'echo');
    t.notMatch(String(j.headers.cookie ?? ''), /tg_app_|tg_session/, 'no gateway cookies upstream');
  });

  await t.test('WebSocket in the page; revoke closes it with the reason; next request is 403', async (t) => {
    await page.goto(`${app}/whoami`);
    await page.evaluate(() => new Promise<void>((resolve, reject) => {
      const w = window as unknown as { msgs: string[]; wsClosed: { code: number; reason: string } | null; ws: WebSocket };
      w.msgs = [];
      w.wsClosed = null;
      const ws = new WebSocket(`ws://${location.host}/ws`);
      w.ws = ws;
      ws.onmessage = (ev) => { w.msgs.push(String(ev.data)); };
      ws.onclose = (ev) => { w.wsClosed = { code: ev.code, reason: ev.reason }; };
      ws.onopen = () => { ws.send('from the browser'); resolve(); };
      ws.onerror = () => reject(new Error('websocket failed'));
    }));
    await page.waitForFunction(() => (window as unknown as { msgs: string[] }).msgs.length >= 2);
    const msgs = await page.evaluate(() => (window as unknown as { msgs: string[] }).msgs);
    t.same(msgs, [JSON.stringify({ hello: 'alice' }), 'from the browser']);
    const grant = (await tg.store.listGrants({ identity: 'alice', state: 'active' }))[0]!;
    const rv = await tg.api('bob', 'POST', `/api/v1/grants/${grant.id}/revoke`, { reason: 'browser test over' });
    t.equal(rv.status, 200);
    await page.waitForFunction(() => (window as unknown as { wsClosed: unknown }).wsClosed !== null, undefined, { timeout: 10_000 });
    const closed = await page.evaluate(() => (window as unknown as { wsClosed: { code: number; reason: string } }).wsClosed);
    t.equal(closed.code, 4001);
    t.match(closed.reason, /revoked/);
    const res = await page.reload();
    t.equal(res?.status(), 403);
    t.match(await page.textContent('#reason') ?? '', /no active grant|revoked/);
  });
});
