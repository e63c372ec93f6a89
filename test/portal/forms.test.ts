/**
 * Portal forms and error paths in a real Chromium against a real gateway (dev IdP sign-in,
 * in-memory protocol module): hostile text, break-glass from My access and its review, MFA
 * step-up from a refused request, audit paging, sign-out, unknown ids, an unreachable gateway and
 * server errors.
 */
import t from 'tap';
import { startFakePortal, signIn, password, ALICE_TOTP, noPageErrors } from './helpers.js';
import { totp } from '../../auth/totp.js';
import { Secret } from '../../auth/secret.js';
import { fromModule } from '../../proxy/audit-events.js';

t.test('portal forms and errors', async (t) => {
  const { tg, browser } = await startFakePortal(t);

  t.test('hostile text stays text; break-glass used from My access, its review closed on the approvals page', async (t) => {
    const hostile = 'INC-9 <img src=x id=pwned onerror="document.title=1">';
    const r = await tg.api('alice', 'POST', '/api/v1/requests', { target: 'box', role: 'admin', duration: '10m', reason: hostile });
    t.equal(r.status, 201);
    t.equal(r.body.state, 'pending', 'medium risk waits for an approver');
    // alice (oncall) uses break-glass from her page
    const alice = await signIn(browser, tg, 'alice');
    const a = alice.page;
    const openBreakGlass = async (duration: string) => {
      await a.waitForSelector('#bg-section:not([hidden])');
      await a.click('#bg-section summary');
      await a.selectOption('#bg-target', 'vault');
      await a.fill('#bg-duration', duration);
      await a.fill('#bg-reason', 'prod down, <b>nobody</b> reachable');
    };
    await openBreakGlass('2h');
    await a.click('#bg-form button[type=submit]');
    t.match(await a.textContent('#bg-error'), /Confirm/, 'the warning must be acknowledged');
    await a.check('#bg-ack');
    await a.click('#bg-form button[type=submit]');
    await a.waitForFunction(() => (document.getElementById('bg-error')?.textContent ?? '') !== '');
    t.match(await a.textContent('#bg-error'), /duration: break-glass access lasts at most 1h/, 'the limit is explained');
    await a.fill('#bg-duration', '15m');
    await a.click('#bg-form button[type=submit]');
    // No approver stands in the way of break-glass, so a fresh second factor must: step up and back.
    await a.waitForSelector('#bg-error a.mfa');
    t.match(await a.textContent('#bg-error'), /break-glass access needs a fresh MFA sign-in/, 'the refusal says a fresh MFA is needed');
    t.equal((await tg.store.listReviews()).length, 0, 'nothing granted without it');
    await a.click('#bg-error a.mfa');
    await a.waitForSelector('#otp');
    await a.fill('#login', 'alice');
    await a.fill('#password', password('alice'));
    // The previous time step's code (still accepted): the current one stays unused for the step-up test below.
    await a.fill('#otp', totp(new Secret(ALICE_TOTP), Date.now() - 30_000));
    await a.click('button:has-text("Sign in")');
    await a.waitForURL(`${tg.url}/portal/access`);
    await openBreakGlass('15m');
    await a.check('#bg-ack');
    await a.click('#bg-form button[type=submit]');
    await a.waitForFunction(() => /Break-glass access to vault/.test(document.getElementById('flash')?.textContent ?? ''));
    await a.waitForSelector('#grants [data-target="vault"]');
    t.match(await a.textContent('#grants [data-target="vault"]'), /break-glass/, 'the grant is marked break-glass');
    await noPageErrors(t, alice.errors);
    await alice.ctx.close();
    const bob = await signIn(browser, tg, 'bob', '/portal/approvals');
    const b = bob.page;
    await b.waitForSelector('#pending [data-request]');
    t.match(await b.textContent('#pending'), hostile, 'the reason is shown literally');
    t.equal(await b.locator('#pwned').count(), 0, 'no element injected');
    await b.waitForSelector('#reviews [data-review]');
    t.match(await b.textContent('#reviews'), /alice used break-glass/);
    t.match(await b.textContent('#reviews'), /<b>nobody<\/b>/);
    t.equal(await b.locator('#reviews button:has-text("Close review")').isDisabled(), true, 'an approver outside the reviewer groups cannot close it');
    t.match(await b.textContent('#reviews'), /You cannot close this review: only members of security, soc can close a break-glass review/);
    // deny with a comment
    await b.fill('#pending textarea', 'use the read replica instead');
    await b.click('#pending button:has-text("Deny")');
    await b.waitForSelector('#pending .empty');
    t.equal((await tg.store.getRequest(r.body.id))?.state, 'denied');
    await noPageErrors(t, bob.errors);
    await bob.ctx.close();
    // dave (security) reviews it.
    const dave = await signIn(browser, tg, 'dave', '/portal/approvals');
    const d = dave.page;
    await d.waitForSelector('#reviews [data-review]');
    await d.click('#reviews button:has-text("Close review")');
    t.match(await d.textContent('#reviews .err'), /Write a comment/, 'a comment is required');
    await d.fill('#reviews textarea', 'checked with alice: outage INC-10, justified');
    await d.click('#reviews button:has-text("Close review")');
    await d.waitForSelector('#reviews .empty');
    t.match(await d.textContent('#flash'), /Review closed/);
    const reviews = await tg.store.listReviews({ state: 'closed' });
    t.equal(reviews[0]?.closedBy, 'dave');
    await noPageErrors(t, dave.errors);
    await dave.ctx.close();
    const dash = await tg.api('carol', 'GET', '/api/v1/portal/dashboard');
    t.equal(dash.body.breakGlassThisMonth, 1, 'the dashboard counts the break-glass use');
  });

  t.test('a critical target asks for MFA: the page links to a step-up sign-in and back', async (t) => {
    const alice = await signIn(browser, tg, 'alice', '/portal/access?request=crown');
    const a = alice.page;
    await a.waitForSelector('#targets table');
    await a.fill('#rq-reason', 'CHG-7 schema migration');
    await a.click('#request-form button[type=submit]');
    await a.waitForSelector('#rq-error a.mfa');
    t.match(await a.textContent('#rq-error'), /MFA|authenticator|multi-factor/i, 'the refusal says MFA is needed');
    await a.click('#rq-error a.mfa');
    await a.waitForSelector('#otp');
    await a.fill('#login', 'alice');
    await a.fill('#password', password('alice'));
    await a.fill('#otp', totp(new Secret(ALICE_TOTP), Date.now()));
    await a.click('button:has-text("Sign in")');
    await a.waitForURL(`${tg.url}/portal/access?request=crown`);
    await a.waitForSelector('#targets table');
    t.equal(await a.inputValue('#rq-target'), 'crown', 'back on the form with the target chosen');
    t.equal(await a.inputValue('#rq-reason'), 'CHG-7 schema migration', 'and what she had typed');
    await a.click('#request-form button[type=submit]');
    await a.waitForFunction(() => /waiting for approval/.test(document.getElementById('flash')?.textContent ?? ''));
    const mine = await tg.store.listRequests({ requester: 'alice', target: 'crown' });
    t.equal(mine.length, 1);
    t.equal(mine[0]!.state, 'pending', 'filed after the step-up');
    const card = `#requests [data-request="${mine[0]!.id}"]`;
    await a.waitForSelector(card);
    t.equal(await a.locator(`${card} .stages li`).count(), mine[0]!.stages.length, 'every approval stage is listed');
    t.match(await a.textContent(`${card} .progress`), `stage 1 of ${mine[0]!.stages.length}`);
    t.match(await a.textContent(card), /MFA required/);
    await tg.api('alice', 'POST', `/api/v1/requests/${mine[0]!.id}/cancel`, {});
    await noPageErrors(t, alice.errors);
    await alice.ctx.close();
  });

  t.test('audit: pages of 200 with "Load more", chain still verified', async (t) => {
    for (let i = 0; i < 250; i++) await tg.gw.audit.append('tester', fromModule('test.bulk'), `bulk-${i}`, { i });
    const { ctx, page, errors } = await signIn(browser, tg, 'carol', '/portal/audit?action=test.bulk');
    await page.waitForSelector('#events table');
    t.equal(await page.locator('#events tbody tr').count(), 200, 'first page');
    await page.click('#more');
    await page.waitForFunction(() => document.querySelectorAll('#events tbody tr').length === 250);
    t.equal(await page.locator('#more').isVisible(), false, 'no more pages');
    t.match(await page.textContent('#events tbody tr:last-child'), /bulk-249/);
    await page.waitForFunction(() => /chain verified/.test(document.getElementById('chain')?.textContent ?? ''));
    await noPageErrors(t, errors);
    await ctx.close();
  });

  t.test('sign out ends the web session', async (t) => {
    const { ctx, page } = await signIn(browser, tg, 'erin');
    await page.waitForSelector('#targets table');
    t.equal(await page.locator('#bg-section').isHidden(), true, 'no break-glass form for people outside the break-glass groups');
    const before = (await ctx.cookies(tg.url)).find((c) => c.name === 'tg_session')!.value;
    const logout = page.waitForResponse((r) => r.url() === `${tg.url}/auth/logout`);
    await page.click('header button:has-text("Sign out")');
    t.equal((await logout).status(), 303);
    const me = await fetch(`${tg.url}/api/v1/me`, { headers: { cookie: `tg_session=${encodeURIComponent(before)}` } });
    t.equal(me.status, 401, 'the old session cookie no longer works');
    await ctx.close();
  });

  t.test('unknown ids, an unreachable gateway and server errors show a message, not a blank page', async (t) => {
    const { ctx, page, errors } = await signIn(browser, tg, 'carol', '/portal/sessions/not-a-session');
    await page.waitForFunction(() => /not found|no such/i.test(document.getElementById('state')?.textContent ?? ''));
    t.match(await page.textContent('#state'), /no such session/i);
    await page.goto(`${tg.url}/portal/recordings/not-a-session`);
    await page.waitForSelector('#recs .err');
    t.match(await page.textContent('#recs'), /no such session/i);
    // the gateway unreachable from the page, then answering 500: every section says so
    await page.route('**/api/v1/**', (r) => r.abort('connectionrefused'));
    await page.goto(`${tg.url}/portal/access`);
    await page.waitForSelector('#grants .err');
    for (const sec of ['#grants', '#targets', '#requests', '#mysessions']) t.match(await page.textContent(sec), /cannot be reached/, `${sec}: unreachable is explained`);
    await page.unroute('**/api/v1/**');
    await page.route('**/api/v1/portal/dashboard', (r) => r.fulfill({ status: 500, contentType: 'application/json', body: JSON.stringify({ error: 'internal', message: 'internal error; see the gateway log' }) }));
    await page.goto(`${tg.url}/portal/dashboard`);
    await page.waitForSelector('#figures .err');
    t.match(await page.textContent('#figures'), /internal error; see the gateway log/);
    t.same(errors.filter((e) => !/favicon|404|Failed to load resource|ERR_CONNECTION_REFUSED/.test(e)), []);
    await ctx.close();
  });
});
