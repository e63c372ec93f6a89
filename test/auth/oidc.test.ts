// The real OIDC flows: the dev IdP (oidc-provider) and the gateway's relying party (openid-client),
// driven by headless Chromium through the IdP's own HTML pages.
import t from 'tap';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { chromium, type Browser, type Page } from 'playwright-core';
import { Secret } from '../../auth/secret.js';
import { startDevIdp, DEVICE_GRANT, type DevIdp } from '../../auth/devidp.js';
import { createOidc, safeReturnTo, type Oidc } from '../../auth/oidc.js';
import { totp, newTotpSecret } from '../../auth/totp.js';
import { ManualClock } from '../../policies/clock.js';

const logLines: string[] = [];
const log = pino({ level: 'debug' }, new Writable({ write(chunk, _enc, cb) { logLines.push(String(chunk)); cb(); } }));

const alicePw = 'correct horse alice 1';
const bobPw = 'bob-battery-staple-2';
const aliceTotp = newTotpSecret();
// The IdP checks TOTP codes against this clock, so each step-up can use a fresh time step.
const idpClock = new ManualClock(Date.now());
const usedCodes: string[] = [];
function nextCode(): string {
  idpClock.advance(30_000);
  const c = totp(aliceTotp, idpClock.now());
  usedCodes.push(c);
  return c;
}

let rp: Server;
let rpBase: string;
let idp: DevIdp;
let oidc: Oidc;
let browser: Browser;
const rpErrors: string[] = [];

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

t.before(async () => {
  // A tiny relying party that uses createOidc the way the gateway's HTTP front will.
  rp = createServer((req, res) => {
    const url = new URL(req.url ?? '/', rpBase);
    if (url.pathname === '/login') {
      try {
        const { url: to, state } = oidc.beginLogin({
          returnTo: url.searchParams.get('returnTo') ?? undefined,
          mfa: url.searchParams.get('mfa') === '1',
          ...(url.searchParams.has('force') ? { forceLogin: url.searchParams.get('force') === '1' } : {}),
          ...(url.searchParams.has('maxAge') ? { maxAgeSec: Number(url.searchParams.get('maxAge')) } : {}),
        });
        res.writeHead(302, { location: to, 'set-cookie': `tg_state=${state}; Path=/; HttpOnly; SameSite=Lax; Max-Age=600` });
        res.end();
      } catch (e) {
        res.writeHead(400, { 'content-type': 'text/plain' });
        res.end(`ERROR ${(e as Error).message}`);
      }
      return;
    }
    if (url.pathname === '/callback') {
      const cookie = /(?:^|;\s*)tg_state=([^;]+)/.exec(req.headers.cookie ?? '')?.[1] ?? '';
      oidc.finishLogin(url, cookie).then(
        (claims) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end(JSON.stringify(claims)); },
        (e: Error) => { rpErrors.push(e.message); res.writeHead(400, { 'content-type': 'text/plain' }); res.end(`ERROR ${e.message}`); },
      );
      return;
    }
    res.writeHead(404);
    res.end();
  });
  const rpPort = await listen(rp);
  rpBase = `http://127.0.0.1:${rpPort}`;
  idp = await startDevIdp({
    host: '127.0.0.1',
    port: 0,
    log,
    clock: idpClock,
    users: [
      { name: 'alice', email: 'alice@example.test', password: new Secret(alicePw), groups: ['dev', 'ops'], totp: aliceTotp },
      { name: 'bob', password: new Secret(bobPw), groups: ['dev'] },
    ],
    clients: [{
      client_id: 'tollgate',
      client_secret: 'rp-client-secret-xyz',
      redirect_uris: [`${rpBase}/callback`],
      grant_types: ['authorization_code', DEVICE_GRANT],
    }],
  });
  oidc = await createOidc({
    issuer: idp.issuer,
    clientId: 'tollgate',
    clientSecret: new Secret('rp-client-secret-xyz'),
    redirectUri: `${rpBase}/callback`,
    scopes: ['openid', 'email', 'profile', 'groups'],
    groupsClaim: 'groups',
    mfaAcr: 'mfa',
    log,
  });
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

t.teardown(async () => {
  await browser?.close();
  await idp?.close();
  await new Promise<void>((resolve) => (rp ? rp.close(() => resolve()) : resolve()));
});

async function signIn(page: Page, user: string, password: string, otp?: string): Promise<void> {
  await page.getByLabel('User name').fill(user);
  await page.getByLabel('Password').fill(password);
  if (otp !== undefined) await page.getByLabel(/Authenticator code/).fill(otp);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

async function claimsOn(page: Page): Promise<Record<string, unknown>> {
  await page.waitForURL((u) => u.pathname === '/callback');
  const text = await page.locator('body').innerText();
  if (text.startsWith('ERROR')) throw new Error(text);
  return JSON.parse(text) as Record<string, unknown>;
}

t.test('code flow + PKCE in Chromium: alice signs in, claims carry groups', async (t) => {
  const ctx = await browser.newContext();
  t.teardown(() => ctx.close());
  const page = await ctx.newPage();
  const before = Date.now();
  await page.goto(`${rpBase}/login?returnTo=/requests/7`);
  t.ok(page.url().startsWith(idp.issuer + '/interaction/'), 'redirected to the dev IdP sign-in page');
  t.match(await page.locator('h1').innerText(), /Sign in/);
  await signIn(page, 'alice', alicePw);
  const c = await claimsOn(page);
  t.equal(c.sub, 'alice');
  t.equal(c.email, 'alice@example.test');
  t.equal(c.name, 'alice');
  t.same(c.groups, ['dev', 'ops']);
  t.equal(c.mfa, false, 'password only: no MFA');
  t.equal(c.acr, 'pwd');
  t.same(c.amr, ['pwd']);
  t.equal(c.returnTo, '/requests/7');
  t.ok(typeof c.authTime === 'number' && (c.authTime as number) >= before - 2000 && (c.authTime as number) <= Date.now() + 1000, 'authTime is the sign-in time (ms)');

  // A second sign-in reuses the IdP session (no form) ...
  await page.goto(`${rpBase}/login`);
  const again = await claimsOn(page);
  t.equal(again.sub, 'alice', 'IdP session reused without a form');
  // ... unless prompt=login forces a fresh one.
  await page.goto(`${rpBase}/login?force=1`);
  await page.waitForURL((u) => u.pathname.startsWith('/interaction/'));
  t.ok(await page.getByLabel('Password').isVisible(), 'prompt=login shows the sign-in form again');
  await signIn(page, 'alice', alicePw);
  const forced = await claimsOn(page);
  t.equal(forced.sub, 'alice');

  // max_age: a generous one reuses the session, an exceeded one asks again (step-up by age).
  await page.goto(`${rpBase}/login?maxAge=3600`);
  t.equal((await claimsOn(page)).authTime, forced.authTime, 'max_age=3600 satisfied by the existing sign-in');
  await new Promise((r) => setTimeout(r, 1100));
  await page.goto(`${rpBase}/login?maxAge=0`);
  await page.waitForURL((u) => u.pathname.startsWith('/interaction/'));
  t.ok(await page.getByLabel('Password').isVisible(), 'max_age=0 shows the sign-in form again');
  await signIn(page, 'alice', alicePw);
  const fresh = await claimsOn(page);
  t.ok((fresh.authTime as number) > (forced.authTime as number), 'a newer auth_time');
});

t.test('wrong password: a clear error on the page, then success', async (t) => {
  const ctx = await browser.newContext();
  t.teardown(() => ctx.close());
  const page = await ctx.newPage();
  await page.goto(`${rpBase}/login`);
  await signIn(page, 'alice', 'not-the-password');
  t.equal(await page.getByRole('alert').innerText(), 'Wrong user name or password.');
  t.ok(page.url().startsWith(idp.issuer), 'still on the IdP');
  await signIn(page, 'nobody', 'whatever');
  t.equal(await page.getByRole('alert').innerText(), 'Wrong user name or password.', 'unknown user gets the same message');
  await signIn(page, 'bob', bobPw);
  const c = await claimsOn(page);
  t.equal(c.sub, 'bob');
  t.equal(c.email, null);
  t.same(c.groups, ['dev']);
});

t.test('step-up: mfa requested -> authenticator code required, amr/acr give mfa', async (t) => {
  const ctx = await browser.newContext();
  t.teardown(() => ctx.close());
  const page = await ctx.newPage();
  // A normal sign-in first: the IdP session has acr "pwd".
  await page.goto(`${rpBase}/login`);
  await signIn(page, 'alice', alicePw);
  t.equal((await claimsOn(page)).mfa, false);

  // Step-up: the IdP must ask again, and this time insists on a code.
  await page.goto(`${rpBase}/login?mfa=1&returnTo=/approve`);
  await page.waitForURL((u) => u.pathname.startsWith('/interaction/'));
  t.ok(await page.getByText('This sign-in needs an authenticator code.').isVisible(), 'the page says a code is needed');
  t.equal(await page.getByLabel(/Authenticator code/).getAttribute('required'), '', 'the code field is required');
  // Password alone is refused (bypass the browser's required check by sending a blank-ish code).
  await signIn(page, 'alice', alicePw, ' ');
  t.equal(await page.getByRole('alert').innerText(), 'This sign-in needs an authenticator code.');
  await signIn(page, 'alice', alicePw, '000000' === totp(aliceTotp, idpClock.now()) ? '111111' : '000000');
  t.equal(await page.getByRole('alert').innerText(), 'Wrong authenticator code.');
  const code = nextCode();
  await signIn(page, 'alice', alicePw, code);
  const c = await claimsOn(page);
  t.equal(c.sub, 'alice');
  t.equal(c.mfa, true, 'MFA proved');
  t.equal(c.acr, 'mfa');
  t.same(c.amr, ['pwd', 'otp', 'mfa']);
  t.equal(c.returnTo, '/approve');

  // Another step-up asks again even though the IdP session already has MFA (a fresh proof),
  // and the same code cannot be used twice.
  await page.goto(`${rpBase}/login?mfa=1`);
  await page.waitForURL((u) => u.pathname.startsWith('/interaction/'));
  t.ok(await page.getByLabel('Password').isVisible(), 'step-up signs in again');
  await signIn(page, 'alice', alicePw, code);
  t.match(await page.getByRole('alert').innerText(), /already used/);
});

t.test('optional code on a plain sign-in also yields mfa', async (t) => {
  const ctx = await browser.newContext();
  t.teardown(() => ctx.close());
  const page = await ctx.newPage();
  await page.goto(`${rpBase}/login`);
  await signIn(page, 'alice', alicePw, nextCode());
  t.equal((await claimsOn(page)).mfa, true);
});

t.test('mfa requested for a user without an authenticator: refused with a reason', async (t) => {
  const ctx = await browser.newContext();
  t.teardown(() => ctx.close());
  const page = await ctx.newPage();
  await page.goto(`${rpBase}/login?mfa=1`);
  await page.getByLabel('User name').fill('bob');
  await page.getByLabel('Password').fill(bobPw);
  await page.getByLabel(/Authenticator code/).evaluate((el) => el.removeAttribute('required'));
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL((u) => u.pathname === '/callback');
  const text = await page.locator('body').innerText();
  t.match(text, /^ERROR sign-in was refused: .*no authenticator/);
});

t.test('state: forged or missing state and hostile returnTo are refused', async (t) => {
  await t.rejects(oidc.finishLogin(new URL(`${rpBase}/callback?code=abc&state=xyz`), 'v1.AAAA'), /sign in again/);
  await t.rejects(oidc.finishLogin(new URL(`${rpBase}/callback?code=abc&state=xyz`), ''), /sign in again/);
  const { state } = oidc.beginLogin();
  await t.rejects(oidc.finishLogin(new URL(`${rpBase}/callback?code=abc&state=wrong`), state), /sign-in failed/);
  for (const bad of ['https://evil.test/', '//evil.test/x', '/\\evil', 'javascript:alert(1)']) {
    t.throws(() => oidc.beginLogin({ returnTo: bad }), /returnTo must be a path/, bad);
  }
  t.equal(safeReturnTo('/ok?x=1'), '/ok?x=1');
  await t.rejects(createOidc({ issuer: 'http://idp.example.test', clientId: 'x', redirectUri: 'http://x/cb', scopes: ['openid'], groupsClaim: 'groups', mfaAcr: 'mfa', log }), /must use https/);
});

t.test('device flow: Chromium enters the user code, signs in with MFA, pollDevice returns claims', async (t) => {
  const clock = new ManualClock(Date.now());
  const dev = await createOidc({
    issuer: idp.issuer, clientId: 'tollgate', clientSecret: new Secret('rp-client-secret-xyz'),
    redirectUri: `${rpBase}/callback`, scopes: ['openid', 'email', 'profile', 'groups'], groupsClaim: 'groups', mfaAcr: 'mfa', log, clock,
  });
  const start = await dev.startDevice({ mfa: true });
  t.match(start.userCode, /^[A-Z]{4}-[A-Z]{4}$/);
  t.ok(start.verificationUri.startsWith(idp.issuer));
  t.ok(start.interval >= 1 && start.expiresIn > 60);
  t.same(await dev.pollDevice(start.handle), { status: 'pending' }, 'pending before the person signs in');
  t.same(await dev.pollDevice(start.handle), { status: 'pending' }, 'a call inside the interval does not hit the IdP');

  const ctx = await browser.newContext();
  t.teardown(() => ctx.close());
  const page = await ctx.newPage();
  await page.goto(start.verificationUri);
  await page.getByLabel('Device code').fill(start.userCode.toLowerCase().replace('-', ''));
  await page.getByRole('button', { name: 'Continue' }).click();
  t.ok(await page.getByText(start.userCode).isVisible(), 'confirm page shows the code');
  await page.getByRole('button', { name: 'Confirm' }).click();
  await page.waitForURL((u) => u.pathname.startsWith('/interaction/'));
  t.ok(await page.getByText('This sign-in needs an authenticator code.').isVisible(), 'mfa requested by the device sign-in');
  await signIn(page, 'alice', alicePw, nextCode());
  t.equal(await page.getByRole('status').innerText(), 'Sign-in complete. You can return to your device and close this page.');

  // The polling interval is real time (the IdP's rate limit): poll as a CLI would, about once a second.
  let result = await dev.pollDevice(start.handle);
  let calls = 1;
  const t0 = Date.now();
  while (result.status === 'pending' && Date.now() - t0 < (start.interval + 5) * 1000) {
    await new Promise((r) => setTimeout(r, 500));
    result = await dev.pollDevice(start.handle);
    calls++;
  }
  t.ok(calls > 1, 'pending until the interval passed');
  t.equal(result.status, 'done');
  if (result.status === 'done') {
    t.equal(result.claims.sub, 'alice');
    t.same(result.claims.groups, ['dev', 'ops']);
    t.equal(result.claims.mfa, true);
    t.equal(result.claims.email, 'alice@example.test');
  }
  t.equal((await dev.pollDevice(start.handle)).status, 'expired', 'a finished handle is gone');
  t.equal((await dev.pollDevice('no-such-handle')).status, 'expired');
});

t.test('device flow: abort -> denied; unused code -> expired; bad user code -> error on page', async (t) => {
  const clock = new ManualClock(Date.now());
  const dev = await createOidc({
    issuer: idp.issuer, clientId: 'tollgate', clientSecret: new Secret('rp-client-secret-xyz'),
    redirectUri: `${rpBase}/callback`, scopes: ['openid', 'groups'], groupsClaim: 'groups', mfaAcr: 'mfa', log, clock,
  });
  const ctx = await browser.newContext();
  t.teardown(() => ctx.close());
  const page = await ctx.newPage();

  await page.goto((await dev.startDevice()).verificationUri);
  await page.getByLabel('Device code').fill('ZZZZ-ZZZZ');
  await page.getByRole('button', { name: 'Continue' }).click();
  t.equal(await page.getByRole('alert').innerText(), 'That code is not valid. Check it and try again.');

  const s = await dev.startDevice();
  t.ok(s.verificationUriComplete, 'a complete verification URI is offered');
  await page.goto(s.verificationUriComplete!);
  await page.getByRole('button', { name: 'Abort' }).click();
  const denied = await dev.pollDevice(s.handle);
  t.equal(denied.status, 'denied');
  if (denied.status === 'denied') t.match(denied.message, /refused/);

  const s2 = await dev.startDevice();
  clock.advance(s2.expiresIn * 1000);
  const expired = await dev.pollDevice(s2.handle);
  t.equal(expired.status, 'expired');
});

t.test('dev IdP: discovery, and hostile requests get clear errors without hurting it', async (t) => {
  const meta = await (await fetch(`${idp.issuer}/.well-known/openid-configuration`)).json() as Record<string, unknown>;
  t.equal(meta.issuer, idp.issuer);
  t.ok(meta.device_authorization_endpoint, 'device flow advertised');
  t.same(meta.code_challenge_methods_supported, ['S256']);
  t.same(meta.acr_values_supported, ['pwd', 'mfa']);
  t.ok((meta.claims_supported as string[]).includes('groups'));
  const jwks = await (await fetch(`${idp.issuer}/jwks`)).json() as { keys: { alg: string; d?: string }[] };
  t.same(jwks.keys.map((k) => k.alg).sort(), ['ES256', 'RS256']);
  t.ok(jwks.keys.every((k) => k.d === undefined), 'no private key material published');

  const noCookie = await fetch(`${idp.issuer}/interaction/abcdef`);
  t.equal(noCookie.status, 400);
  t.match(await noCookie.text(), /expired or was started in another browser/);
  t.equal((await fetch(`${idp.issuer}/interaction/${'%2e%2e%2f'.repeat(3)}x`)).status, 404);
  t.equal((await fetch(`${idp.issuer}/interaction/abc/login`, { method: 'POST', body: 'login=alice' })).status, 400);

  // A real interaction, driven without a browser.
  const { url } = oidc.beginLogin();
  const auth = await fetch(url, { redirect: 'manual' });
  t.equal(auth.status, 303);
  const loc = new URL(auth.headers.get('location')!, idp.issuer);
  const cookie = auth.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  const big = await fetch(`${loc.href}/login`, { method: 'POST', headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' }, body: `login=${'a'.repeat(100_000)}` });
  t.equal(big.status, 413, 'oversized form refused');
  const hostile = await fetch(`${loc.href}/login`, {
    method: 'POST', headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ login: '<script>alert(1)</script>', password: 'x', otp: '12' }).toString(),
  });
  t.equal(hostile.status, 401);
  const html = await hostile.text();
  t.notOk(html.includes('<script>alert(1)</script>'), 'user input is escaped');
  t.ok(html.includes('&lt;script&gt;'), 'shown escaped');
  t.match(html, /Wrong user name or password/);
  const ok = await fetch(`${loc.href}/login`, {
    method: 'POST', redirect: 'manual', headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ login: 'bob', password: bobPw }).toString(),
  });
  t.equal(ok.status, 303, 'the same interaction still completes');
  // Unregistered redirect targets and unknown clients get the IdP's own error page, never a redirect.
  const evil = new URL(url);
  evil.searchParams.set('redirect_uri', 'http://evil.test/cb');
  const refused = await fetch(evil, { redirect: 'manual' });
  t.equal(refused.status, 400);
  t.match(await refused.text(), /redirect_uri/);
  const unknown = new URL(url);
  unknown.searchParams.set('client_id', 'intruder');
  const refused2 = await fetch(unknown, { redirect: 'manual' });
  t.equal(refused2.status, 400);
  t.match(await refused2.text(), /invalid_client/);
  t.equal((await fetch(`${idp.issuer}/.well-known/openid-configuration`)).status, 200, 'IdP still serving');
});

t.test('no password, code, state or client secret reached the logs', async (t) => {
  const all = logLines.join('');
  t.ok(all.length > 0, 'something was logged');
  for (const s of [alicePw, bobPw, 'rp-client-secret-xyz', aliceTotp.reveal(), ...usedCodes]) {
    t.notOk(all.includes(s), 'secret value absent from logs');
  }
  t.match(all, /dev IdP: wrong user name or password/);
  t.same(rpErrors.filter((e) => /secret|password/i.test(e)), [], 'errors mention no secrets');
});
