/**
 * The HTTP front itself: /healthz says nothing but "up", /metrics behind gateway.metricsToken, and
 * TLS terminated by the front (listeners.http.tls): an https publicUrl, verified by a real HTTPS
 * client with the gateway's CA, `__Host-` Secure cookies, and the portal, an app and a WebSocket
 * in Chromium over TLS. Bad TLS configuration fails at start-up with the key path.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request, setGlobalDispatcher } from 'undici';
import { startTestGateway } from '../support/gateway.js';
import { FakeTarget, fakeModule, fakeConnect } from '../support/fake-module.js';
import { launchChromium } from '../portal/helpers.js';
import { httpModule } from '../../protocols/http/index.js';
import { moduleMap } from '../../protocols/index.js';
import { validateConfig, ConfigError } from '../../proxy/config.js';
import { raw, startUpstream, type Upstream } from './support.js';

t.test('/healthz, /metrics, and apps under gateway.appsDomain', async (t) => {
  const tg = await startTestGateway({
    modules: new Map([['http', httpModule]]),
    targets: [{ name: 'secret-app', protocol: 'http', address: 'http://127.0.0.1:9', roles: [{ name: 'user' }] }],
    gateway: { metricsToken: { value: 'm3trics-t0ken' }, appsDomain: 'apps.test' },
  });
  t.teardown(() => tg.close());
  const port = Number(new URL(tg.url).port);
  const moved = await raw(port, { path: '/apps/secret-app/x?y=1' });
  t.equal(moved.status, 302);
  t.equal(moved.headers.location, `http://secret-app.apps.test:${port}/x?y=1`, '/apps/<name>/ points at <name>.<appsDomain>');
  const app = await raw(port, { path: '/', host: `secret-app.apps.test:${port}` });
  t.equal(app.status, 302);
  t.match(String(app.headers.location), new RegExp(`^${tg.url}/apps/_auth\\?app=secret-app&return=${encodeURIComponent(`http://secret-app.apps.test:${port}/`)}`), 'the app host is the app (sign-in first)');
  const notApp = await raw(port, { path: '/', host: `secret-app.localhost:${port}` });
  t.equal(notApp.headers.location, '/portal/access', 'with appsDomain, <name>.localhost is not an app host');
  const h = await fetch(`${tg.url}/healthz`);
  t.equal(h.status, 200);
  t.same(await h.json(), { ok: true }, 'only "up": no gateway id, no session counts, no targets');
  t.equal((await fetch(`${tg.url}/metrics`)).status, 401, 'no token: 401');
  const wrong = await fetch(`${tg.url}/metrics`, { headers: { authorization: 'Bearer m3trics-t0keX' } });
  t.equal(wrong.status, 401, 'wrong token: 401');
  t.match(wrong.headers.get('www-authenticate'), /^Bearer/);
  t.notMatch(await wrong.text(), /tollgate_/, 'no metrics in the refusal');
  t.equal((await fetch(`${tg.url}/metrics`, { headers: { authorization: `Bearer ${tg.token('carol')}` } })).status, 401, 'an API token is not the metrics token');
  const ok = await fetch(`${tg.url}/metrics`, { headers: { authorization: 'Bearer m3trics-t0ken' } });
  t.equal(ok.status, 200);
  t.match(await ok.text(), /tollgate_sessions_active/);
  t.notMatch(JSON.stringify(await tg.store.listAudit({})), /m3trics-t0ken/, 'the token is in no audit event');
});

t.test('listeners.http.tls: true — the front terminates TLS with the gateway\'s own material', async (t) => {
  const ft = new FakeTarget();
  const mod = fakeModule(ft);
  let tgUrl = '';
  const up: Upstream = await startUpstream({ jwksUrl: () => `${tgUrl}/.well-known/jwks.json`, issuer: () => tgUrl, audience: 'echo' });
  t.teardown(() => up.close());
  const tg = await startTestGateway({
    modules: new Map([['http', httpModule], ['fake', mod]]), listeners: ['fake'], http: { tls: true },
    targets: [
      { name: 'echo', protocol: 'http', address: up.url, risk: 'low', roles: [{ name: 'user' }], credentials: { mode: 'jwt' } },
      { name: 'box', protocol: 'fake', address: 'x', risk: 'low', roles: [{ name: 'user' }] },
    ],
    policies: [{ name: 'p', targets: ['*'], roles: ['*'], requesters: ['engineers'], approvers: ['approvers'], onTimeout: 'deny', rules: [] }],
    extra: { idp: { dev: { users: [{ name: 'vic', email: 'vic@test', password: { value: 'vic-pw' }, groups: ['engineers', 'soc'] }] } } },
  });
  t.teardown(() => tg.close());
  tgUrl = tg.url;
  const port = Number(new URL(tg.url).port);
  t.match(tg.url, /^https:\/\/127\.0\.0\.1:\d+$/, 'the public URL is https');
  const ca = tg.gw.tls.ca;
  const verified = new Agent({ connect: { ca } });
  // The test helpers' fetch (tg.api) trusts the gateway CA too.
  setGlobalDispatcher(verified);

  await t.test('a real HTTPS client verifies the certificate against the gateway CA', async (t) => {
    const r = await request(`${tg.url}/healthz`, { dispatcher: verified });
    t.equal(r.statusCode, 200);
    t.same(await r.body.json(), { ok: true });
    const caPem = await request(`${tg.url}/api/v1/ca.pem`, { dispatcher: verified });
    t.equal((await caPem.body.text()).trim(), ca.trim(), 'the CA it serves is the one that verifies it');
    const strict = new Agent({ connect: { ca: readFileSync('/etc/ssl/certs/ca-certificates.crt', 'utf8') } });
    await t.rejects(request(`${tg.url}/healthz`, { dispatcher: strict }), /self[- ]signed|unable to (get|verify)|certificate/i, 'not trusted without the gateway CA');
    await strict.close();
    await t.rejects(fetch(`http://127.0.0.1:${port}/healthz`), 'plain HTTP on the TLS port gets nowhere');
    const me = await request(`${tg.url}/api/v1/me`, { dispatcher: verified, headers: { authorization: `Bearer ${tg.token('alice')}` } });
    t.equal((await me.body.json() as { sub: string }).sub, 'alice', 'the API over TLS');
  });

  await t.test('cookies: __Host- prefixed, Secure, host-only; the plain name is not a session', async (t) => {
    const login = await request(`${tg.url}/auth/login?returnTo=%2F`, { dispatcher: verified });
    await login.body.dump();
    const state = String(login.headers['set-cookie']);
    t.match(state, /^__Host-tg_oidc=[^;]+; Path=\/; HttpOnly; SameSite=Lax; Max-Age=600; Secure$/);
    t.notMatch(state, /Domain/i);
    const { cookie } = await tg.gw.webSessions.create('alice', null, 3_600_000);
    const v = encodeURIComponent(cookie.reveal());
    const as = async (c: string) => (await request(`${tg.url}/api/v1/me`, { dispatcher: verified, headers: { cookie: c } })).statusCode;
    t.equal(await as(`__Host-tg_session=${v}`), 200);
    t.equal(await as(`tg_session=${v}`), 401, 'over TLS only the __Host- cookie (which no other host can set) signs in');
  });

  await t.test('in Chromium over TLS: sign-in, the portal\'s calls, an app on its own https origin, WebSockets', async (t) => {
    const browser = await launchChromium();
    t.teardown(() => browser.close());
    const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await ctx.newPage();
    await page.goto(`${tg.url}/portal/access`);
    await page.fill('#login', 'vic');
    await page.fill('#password', 'vic-pw');
    await page.click('button:has-text("Sign in")');
    await page.waitForURL(`${tg.url}/portal/access`);
    const c = (await ctx.cookies(tg.url)).find((x) => x.name === '__Host-tg_session');
    t.ok(c, '__Host-tg_session set');
    t.equal(c?.secure, true);
    t.equal(c?.sameSite, 'Strict');
    t.equal(c?.path, '/');
    await page.waitForSelector('#targets table');
    const g = await tg.grant('erin', 'box', 'user');
    const s = await tg.secret('erin', g.id);
    const live = await fakeConnect(mod.ctx!, ft, 'box', s.secret);
    if (!live.ok) throw new Error(live.reason);
    t.teardown(() => live.session.end({ code: 'client_exit', message: 'done' }));
    const portal = await page.evaluate(async (sid) => {
      const r = await fetch('/api/v1/requests', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ target: 'echo', role: 'user', duration: '1h', reason: 'tls' }) });
      const ws = await new Promise((resolve) => {
        const w = new WebSocket(`wss://${location.host}/api/v1/sessions/${sid}/live`);
        w.onmessage = (e) => { w.close(); resolve(JSON.parse(String(e.data)).type); };
        w.onerror = () => resolve('refused');
      });
      return { status: r.status, state: (await r.json()).state, ws };
    }, live.session.id);
    t.same(portal, { status: 201, state: 'approved', ws: 'snapshot' }, 'portal JSON call and the wss live view work');
    const app = `https://echo.localhost:${port}`;
    const res = await page.goto(`${app}/whoami`);
    await page.waitForURL(`${app}/whoami`);
    t.equal(res?.status(), 200);
    const j = JSON.parse(await page.textContent('body') ?? '{}');
    t.equal(j.assertion.payload?.sub, 'vic', 'the app verified vic\'s assertion');
    t.equal(j.headers['x-forwarded-proto'], 'https');
    const appCookie = (await ctx.cookies(app)).find((x) => x.name === '__Host-tg_app_echo');
    t.ok(appCookie, '__Host-tg_app_echo on the app host');
    t.equal(appCookie?.secure, true);
    const echoed = await page.evaluate(() => new Promise<string>((resolve) => {
      const w = new WebSocket(`wss://${location.host}/ws`);
      w.onopen = () => w.send('over tls');
      const got: string[] = [];
      w.onmessage = (e) => { got.push(String(e.data)); if (got.length === 2) { w.close(); resolve(got[1]!); } };
      w.onerror = () => resolve('refused');
    }));
    t.equal(echoed, 'over tls', 'the app WebSocket over wss');
    await ctx.close();
  });
});

t.test('listeners.http.tls with cert and key references; bad TLS configuration is a clear start-up error', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-front-tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'),
    '-days', '2', '-subj', '/CN=gw.test', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:gw.test'], { stdio: 'ignore' });
  process.env['TG_TEST_FRONT_KEY'] = readFileSync(join(dir, 'k.pem'), 'utf8');
  t.teardown(() => { delete process.env['TG_TEST_FRONT_KEY']; });
  const tg = await startTestGateway({ modules: new Map([['http', httpModule]]), targets: [], http: { tls: { cert: { file: join(dir, 'c.pem') }, key: { env: 'TG_TEST_FRONT_KEY' } } } });
  t.teardown(() => tg.close());
  const agent = new Agent({ connect: { ca: readFileSync(join(dir, 'c.pem'), 'utf8') } });
  t.teardown(() => agent.close());
  const r = await request(`${tg.url}/healthz`, { dispatcher: agent });
  t.equal(r.statusCode, 200, 'served with the configured certificate');
  await r.body.dump();
  t.same((await import('node:fs')).readdirSync(tg.dataDir).filter((f) => f.startsWith('.front-tls-')), [], 'the key written for uWS was removed once loaded');

  writeFileSync(join(dir, 'bad.pem'), 'not a key');
  await t.rejects(startTestGateway({ modules: new Map([['http', httpModule]]), targets: [], http: { tls: { cert: { file: join(dir, 'c.pem') }, key: { file: join(dir, 'bad.pem') } } } }),
    /listeners\.http\.tls: cannot start TLS/);
  await t.rejects(startTestGateway({ modules: new Map([['http', httpModule]]), targets: [], http: { tls: { cert: { file: join(dir, 'c.pem') }, key: { env: 'TG_NOT_SET' } } } }),
    /listeners\.http\.tls\.key: environment variable TG_NOT_SET/);
  t.throws(() => validateConfig({ listeners: { ssh: { port: 0, tls: true } } }, 'gw.yaml', moduleMap()), new ConfigError('gw.yaml', 'listeners.ssh.tls', 'nothing: only the http listener terminates TLS this way (protocol listeners use gateway.tls)'));
  t.throws(() => validateConfig({ listeners: { http: { port: 0, tls: { cert: { file: 'x' } } } } }, 'gw.yaml', moduleMap()), /gw\.yaml: listeners\.http\.tls/);
});
