/**
 * Sign-in through the gateway with the real OIDC flows against the built-in dev IdP:
 * the authorization code flow (+PKCE) in headless Chromium, and the device flow from the CLI
 * (`tollgate login`), whose saved API token then works for the API. No bypass anywhere.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { startTestGateway } from '../support/gateway.js';
import { totp } from '../../auth/totp.js';
import { Secret } from '../../auth/secret.js';

const bin = join(import.meta.dirname, '..', '..', 'proxy', 'bin', 'tollgate.js');
const TOTP = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP';

export async function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

t.test('browser and CLI sign-in through the dev IdP', async (t) => {
  const tg = await startTestGateway({
    targets: [],
    extra: {
      idp: {
        dev: {
          users: [
            { name: 'alice', email: 'alice@example.test', password: { value: 'alice-pw' }, groups: ['engineers'], totp: { value: TOTP } },
            { name: 'bob', password: { value: 'bob-pw' }, groups: ['approvers'] },
          ],
        },
      },
    },
  });
  t.teardown(() => tg.close());
  const browser = await launchChromium();
  t.teardown(() => browser.close());

  t.test('code flow: redirect to the IdP, back with a session cookie', async (t) => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    const before = await page.goto(`${tg.url}/api/v1/me`);
    t.equal(before?.status(), 401, 'API without a session is 401');
    await page.goto(`${tg.url}/auth/login?returnTo=${encodeURIComponent('/api/v1/me')}`);
    t.match(page.url(), new RegExp(`^${tg.gw.devIdp!.issuer}`), 'redirected to the IdP');
    await page.fill('#login', 'alice');
    await page.fill('#password', 'wrong');
    await page.click('button:has-text("Sign in")');
    t.match(await page.textContent('body'), /invalid|wrong|incorrect/i, 'a wrong password is refused on the page');
    await page.fill('#login', 'alice');
    await page.fill('#password', 'alice-pw');
    await page.click('button:has-text("Sign in")');
    await page.waitForURL(`${tg.url}/api/v1/me`);
    const me = JSON.parse(await page.textContent('body') ?? '{}');
    t.equal(me.sub, 'alice');
    t.same(me.groups, ['engineers'], 'groups from the ID token claim');
    t.equal(me.mfaAt, null, 'no MFA without the code');
    const cookies = await ctx.cookies(tg.url);
    const c = cookies.find((x) => x.name === 'tg_session');
    t.ok(c, 'gateway session cookie set');
    t.equal(c!.httpOnly, true);
    t.equal(c!.sameSite, 'Strict', 'the web session cookie is SameSite=Strict (the OIDC state cookie stays Lax for the IdP\'s redirect)');
    t.ok(c!.expires > Date.now() / 1000, 'expiring cookie');
    const audit = await tg.store.listAudit({ action: 'signin' });
    t.equal(audit.at(-1)?.actor, 'alice');
    await ctx.close();
  });

  t.test('step-up: mfa=1 asks for the authenticator code and records MFA', async (t) => {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(`${tg.url}/auth/login?mfa=1&returnTo=${encodeURIComponent('/api/v1/me')}`);
    await page.fill('#login', 'alice');
    await page.fill('#password', 'alice-pw');
    await page.fill('#otp', totp(new Secret(TOTP), Date.now()));
    await page.click('button:has-text("Sign in")');
    await page.waitForURL(`${tg.url}/api/v1/me`);
    const me = JSON.parse(await page.textContent('body') ?? '{}');
    t.equal(me.sub, 'alice');
    t.type(me.mfaAt, 'number', 'MFA time recorded from amr/acr');
    await ctx.close();
  });

  t.test('device flow from `tollgate login`', async (t) => {
    const home = mkdtempSync(join(tmpdir(), 'tg-cli-'));
    t.teardown(() => rmSync(home, { recursive: true, force: true }));
    const conf = join(home, 'cli.json');
    const child = spawn(process.execPath, [bin, 'login', '--url', tg.url], { env: { ...process.env, TOLLGATE_CLI_CONFIG: conf }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    child.stdout.on('data', (d) => { stdout += d; });
    const prompt = await new Promise<{ url: string; code: string }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no prompt: ${stderr}`)), 60_000);
      child.stderr.on('data', (d) => {
        stderr += d;
        const m = /open (\S+)\s+and enter the code: (\S+)/.exec(stderr);
        if (m) { clearTimeout(timer); resolve({ url: m[1]!, code: m[2]! }); }
      });
    });
    const exited = new Promise<number>((r) => child.on('close', (c) => r(c ?? 1)));
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(prompt.url);
    // The device pages (code entry or confirmation, then the IdP's sign-in) in whatever order the IdP shows them.
    let signedIn = false;
    for (let step = 0; step < 8 && !signedIn; step++) {
      await page.waitForLoadState();
      if (await page.locator('#login').count()) {
        await page.fill('#login', 'bob');
        await page.fill('#password', 'bob-pw');
        await page.click('button:has-text("Sign in")');
      } else if (await page.locator('input[name="user_code"]:not([type=hidden])').count()) {
        await page.fill('input[name="user_code"]:not([type=hidden])', prompt.code);
        await page.click('button:has-text("Continue")');
      } else if (await page.locator('button:has-text("Confirm")').count()) {
        await page.click('button:has-text("Confirm")');
      } else {
        signedIn = true;
      }
    }
    t.match(await page.textContent('body'), /sign|done|success|close/i, 'the IdP says the device is signed in');
    const code = await exited;
    t.equal(code, 0, `login exits 0 (${stderr})`);
    t.match(stdout, /Signed in as bob \(approvers\)/);
    t.equal(statSync(conf).mode & 0o777, 0o600, 'token file is private');
    const saved = JSON.parse(readFileSync(conf, 'utf8'));
    const me = await fetch(`${tg.url}/api/v1/me`, { headers: { authorization: `Bearer ${saved.token}` } }).then((r) => r.json()) as { sub: string };
    t.equal(me.sub, 'bob', 'the saved API token works');
    await ctx.close();
  });

  t.test('API credentials: 401 wrong/missing, 403 not permitted', async (t) => {
    t.equal((await fetch(`${tg.url}/api/v1/grants`)).status, 401);
    t.equal((await fetch(`${tg.url}/api/v1/grants`, { headers: { authorization: 'Bearer tg_pat_nope' } })).status, 401);
    t.equal((await tg.api('alice', 'GET', '/api/v1/audit')).status, 403);
    t.equal((await tg.api('carol', 'GET', '/api/v1/audit')).status, 200);
    const doc = await tg.api(null, 'GET', '/api/v1/openapi.json');
    t.equal(doc.body.openapi, '3.1.0');
    for (const p of ['/api/v1/requests', '/api/v1/requests/{id}/approve', '/api/v1/grants/{id}/secret', '/api/v1/locks', '/api/v1/sessions/{id}/kill', '/healthz', '/metrics']) {
      t.ok(doc.body.paths[p], `documented: ${p}`);
    }
    const metrics = await fetch(`${tg.url}/metrics`).then((r) => r.text());
    t.match(metrics, /tollgate_sessions_active/);
    const bad = await tg.api('alice', 'POST', '/api/v1/requests', { target: 'x', role: 'y', duration: '1h' });
    t.equal(bad.status, 400);
    t.ok(bad.body.field, 'names the field');
  });
});
