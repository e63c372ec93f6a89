/**
 * Issue 20's portal pages in a real Chromium against a real gateway (people sign in through the
 * dev IdP): delegations (give one, the delegate's approval card and the requester's view show both
 * names), access reviews (start one as the SOC, a reviewer revokes a line with a reason and the
 * live grant ends, confirms the rest, downloads the CSV), My access (extend a grant, the
 * authenticator code for a target with MFA at connect, check a checked-out account in), the
 * dashboard's open reviews and check-out holders; axe-core and labels on every new page.
 */
import t, { type Test } from 'tap';
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import type { Page } from 'playwright-core';
import { totp } from '../../auth/totp.js';
import { Secret } from '../../auth/secret.js';
import { moduleMap } from '../../protocols/index.js';
import { FakeTarget, fakeConnect, fakeModule } from '../support/fake-module.js';
import { ALICE_TOTP, launchChromium, noPageErrors, shot, signIn, startPortalGateway } from './helpers.js';

const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js');

async function a11y(t: Test, page: Page, what: string): Promise<void> {
  await page.waitForFunction(() => !document.querySelector('[aria-busy="true"]'), null, { timeout: 15_000 }).catch((e: Error) => { throw new Error(`${what}: still loading (${e.message})`); });
  const unlabeled = await page.evaluate(() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')].filter((e) => {
    const id = e.getAttribute('id');
    return !(id && document.querySelector(`label[for="${id}"]`)) && !e.getAttribute('aria-label') && !e.closest('label');
  }).map((e) => e.outerHTML.slice(0, 80)));
  t.same(unlabeled, [], `${what}: every field has a label`);
  await page.addScriptTag({ path: AXE });
  const axe = await page.evaluate(async () => {
    const r = await (window as unknown as { axe: { run(ctx: Document, o: object): Promise<{ violations: { id: string; nodes: { target: string[] }[] }[] }> } }).axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } });
    return r.violations.map((v) => `${v.id}: ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
  });
  t.same(axe, [], `${what}: no axe-core violations`);
}

t.test('governance pages', async (t) => {
  const ft = new FakeTarget();
  const mod = fakeModule(ft);
  mod.checkoutAccount = (x) => (x.credentials['mode'] === 'checkout' ? { key: `fake:${String(x.credentials['account'])}`, whenHeld: 'refuse' } : null);
  const modules = moduleMap();
  modules.set('fake', mod);
  const fake = (name: string, risk: string, extra: Record<string, unknown> = {}) => ({ name, protocol: 'fake', address: 'in-memory', risk, roles: [{ name: 'user' }], ...extra });
  const tg = await startPortalGateway({
    modules, listeners: ['fake'],
    targets: [fake('box', 'medium'), fake('shared', 'low', { credentials: { mode: 'checkout', account: 'dba' } }), fake('guarded', 'low', { options: { mfaAtConnect: true } }), fake('easy', 'low')],
    policies: [
      // box needs security (only dave); bob approves elsewhere, so he may be dave's delegate.
      { name: 'eng', targets: ['box'], requesters: ['engineers'], approvers: ['security'] },
      { name: 'open', targets: ['shared', 'guarded', 'easy'], requesters: ['engineers'], approvers: ['approvers'] },
    ],
  });
  t.teardown(() => tg.close());
  const browser = await launchChromium();
  t.teardown(() => browser.close());

  t.test('delegation: dave delegates to bob in the portal; bob decides for dave; alice sees both names', async (t) => {
    const alice = await signIn(browser, tg, 'alice', '/portal/delegations');
    t.equal((await alice.page.goto(`${tg.url}/portal/delegations`))?.status(), 403, 'not for non-approvers');
    await alice.ctx.close();

    const dave = await signIn(browser, tg, 'dave', '/portal/delegations');
    const d = dave.page;
    await d.waitForSelector('#delegations .empty');
    t.ok((await d.locator('nav[aria-label=Portal] a').allTextContents()).includes('Delegations'), 'in the approver\'s navigation');
    await d.fill('#dl-delegate', 'carol');
    await d.fill('#dl-until', '2099-01-01T08:00');
    await d.fill('#dl-reason', 'holiday');
    await d.click('#delegate-form button[type=submit]');
    await d.waitForFunction(() => /not an approver/.test(document.getElementById('dl-error')?.textContent ?? ''));
    t.equal(await d.getAttribute('#dl-delegate', 'aria-invalid'), 'true', 'the field at fault is marked');
    await d.fill('#dl-delegate', 'bob');
    const until = new Date(Date.now() + 7 * 86_400_000);
    const local = new Date(until.getTime() - until.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
    await d.fill('#dl-until', local);
    await d.click('#delegate-form button[type=submit]');
    await d.waitForSelector('#delegations tr[data-delegation]');
    t.match(await d.textContent('#flash'), /bob decides for you from/);
    t.match(await d.textContent('#delegations'), /you\s*bob/);
    await shot(d, 'delegations');
    await noPageErrors(t, dave.errors);
    await dave.ctx.close();

    const r = await tg.api('alice', 'POST', '/api/v1/requests', { target: 'box', role: 'user', duration: '1h', reason: 'INC-9' });
    const bob = await signIn(browser, tg, 'bob', `/portal/approvals?request=${r.body.id}`);
    const b = bob.page;
    await b.waitForSelector(`#pending [data-request="${r.body.id}"].linked`);
    t.match(await b.textContent(`#pending [data-request="${r.body.id}"]`), /You decide this for dave \(their delegation to you\)/, 'the card says for whom');
    t.equal(await b.getAttribute(`#pending [data-request="${r.body.id}"]`, 'aria-current'), 'true', 'the link marks the request (it decides nothing itself)');
    t.equal((await tg.store.getRequest(r.body.id))?.state, 'pending');
    await b.click(`#pending [data-request="${r.body.id}"] button:has-text("Approve")`);
    await b.waitForSelector('#pending .empty');
    await noPageErrors(t, bob.errors);
    await bob.ctx.close();

    const again = await signIn(browser, tg, 'alice');
    await again.page.waitForSelector(`#requests [data-request="${r.body.id}"] .approvals`);
    t.match(await again.page.textContent(`#requests [data-request="${r.body.id}"] .approvals`), /Approved by bob for dave \(delegated\)/);
    await noPageErrors(t, again.errors);
    await again.ctx.close();
  });

  t.test('My access: extend a grant, the authenticator code at connect, check in a checked-out account', async (t) => {
    const easy = await tg.grant('alice', 'easy', 'user', '30m');
    const guarded = await tg.grant('alice', 'guarded', 'user', '30m');
    const shared = await tg.grant('alice', 'shared', 'user', '30m');
    const alice = await signIn(browser, tg, 'alice');
    const a = alice.page;
    await a.waitForSelector(`#grants [data-grant="${easy.id}"]`);
    // Extend
    await a.click(`#grants [data-grant="${easy.id}"] details.extend summary`);
    await a.fill(`#ext-d-${easy.id}`, '45m');
    await a.click(`#grants [data-grant="${easy.id}"] details.extend button[type=submit]`);
    await a.waitForFunction((id) => /reason/i.test(document.querySelector(`[data-grant="${id}"] details.extend .err`)?.textContent ?? ''), easy.id);
    await a.fill(`#ext-r-${easy.id}`, 'the migration runs long');
    await a.click(`#grants [data-grant="${easy.id}"] details.extend button[type=submit]`);
    await a.waitForFunction(() => /Extended: easy is yours until/.test(document.getElementById('flash')?.textContent ?? ''));
    t.equal((await tg.store.getGrant(easy.id))?.expiresAt, easy.expiresAt + 45 * 60_000, 'the same grant, 45 minutes longer');
    // MFA at connect: the web session has no MFA, so the page asks for the authenticator code.
    await a.click(`#grants [data-grant="${guarded.id}"] button:has-text("Get connection command")`);
    await a.waitForSelector(`#mfa-${guarded.id}`);
    t.match(await a.textContent(`#grants [data-grant="${guarded.id}"] .secret-box`), /guarded needs MFA to connect/);
    t.equal(await a.locator(`#grants [data-grant="${guarded.id}"] a.mfa`).count(), 1, 'or a step-up sign-in');
    await a.fill(`#mfa-${guarded.id}`, totp(new Secret(ALICE_TOTP), Date.now()));
    await a.click(`#grants [data-grant="${guarded.id}"] .mfa-code button`);
    await a.waitForSelector(`#grants [data-grant="${guarded.id}"] .secret-value`);
    t.ok(await a.textContent(`#grants [data-grant="${guarded.id}"] pre.cmd`), 'the commands, after the code');
    // Check-out: the badge, who holds it below, check in.
    await a.waitForSelector('#checkouts-section:not([hidden]) tr[data-checkout]');
    t.match(await a.textContent('#checkouts'), /shared\s*alice/);
    t.match(await a.textContent(`#grants [data-grant="${shared.id}"]`), /checked out to you/);
    await a.click(`#grants [data-grant="${shared.id}"] button:has-text("Check in shared")`);
    await a.waitForFunction(() => /shared is checked in; its password was rotated/.test(document.getElementById('flash')?.textContent ?? ''));
    await a.waitForFunction(() => /free/.test(document.querySelector('#checkouts tr[data-checkout]')?.textContent ?? ''));
    t.match(await tg.store.getGrant(shared.id), { state: 'revoked', endReason: 'checked in by alice' });
    await noPageErrors(t, alice.errors);
    await alice.ctx.close();
  });

  t.test('access reviews: the SOC starts one; a reviewer revokes with a reason (the live grant ends), confirms, downloads the CSV; the dashboard shows it', async (t) => {
    const g = await tg.grant('erin', 'easy', 'user', '2h');
    const live = await fakeConnect(mod.ctx!, ft, 'easy', (await tg.secret('erin', g.id)).secret);
    if (!live.ok) { t.fail(live.reason); return; }
    const holder = await tg.grant('alice', 'shared', 'user', '1h');
    const carol = await signIn(browser, tg, 'carol', '/portal/access-reviews');
    const c = carol.page;
    await c.waitForSelector('#start-section:not([hidden])');
    await c.selectOption('#st-policy', 'open');
    await c.click('#start-form button[type=submit]');
    await c.waitForSelector('#review tr[data-line]');
    t.match(await c.textContent('#flash'), /Review of open started/);
    t.match(await c.textContent('#review'), /waiting for a reviewer/, 'the SOC starts it; the policy\'s approvers decide it');
    const id = new URL(c.url()).searchParams.get('review')!;
    t.ok(id, 'the page links to the review');
    // The dashboard lists it as open, and who holds the checked-out account.
    await c.goto(`${tg.url}/portal/dashboard`);
    await c.waitForSelector(`#open-reviews tr[data-review="${id}"]`);
    await c.waitForSelector('#checkouts tr[data-checkout]');
    t.match(await c.textContent('#checkouts'), /shared\s*alice/);
    await noPageErrors(t, carol.errors);
    await carol.ctx.close();

    const bob = await signIn(browser, tg, 'bob', `/portal/access-reviews?review=${id}`);
    const b = bob.page;
    const erinRow = '#review tr[data-identity="erin"][data-kind="eligibility"]';
    await b.waitForSelector(erinRow);
    await b.click(`${erinRow} button:has-text("Revoke erin")`);
    t.match(await b.textContent(`${erinRow} .err`), /Say why the access goes/);
    await shot(b, 'access-reviews');
    await b.fill(`${erinRow} input`, 'moved to another team');
    await b.click(`${erinRow} button:has-text("Revoke erin")`);
    await b.waitForFunction(() => /revoked by bob/.test(document.querySelector('#review tr[data-identity="erin"][data-kind="eligibility"]')?.textContent ?? ''));
    await (live.session as unknown as { done: Promise<void> }).done;
    t.match(live.ended, [{ code: 'revoked' }], 'erin\'s live session ended with her grant');
    for (;;) {
      const next = b.locator('#review tr[data-line] button:has-text("Confirm")').first();
      if (!(await next.count())) break;
      await next.click();
      await b.waitForFunction(() => !document.querySelector('#review button[disabled]'));
    }
    await b.waitForFunction(() => /completed/.test(document.getElementById('review')?.textContent ?? ''));
    const [download] = await Promise.all([b.waitForEvent('download'), b.click('#review a:has-text("Download CSV")')]);
    const csv = readFileSync((await download.path())!, 'utf8');
    t.match(download.suggestedFilename(), /^access-review-open-\d{4}-\d\d-\d\d\.csv$/);
    t.match(csv, /^review,policy,line,kind,identity,grant,detail,decision,decided_by,decided_at,comment\r\n/);
    t.match(csv, /,eligibility,erin,,.*,revoke,bob,[^,]+,moved to another team\r\n/);
    await noPageErrors(t, bob.errors);
    await bob.ctx.close();
    const erin = await tg.api('erin', 'POST', '/api/v1/requests', { target: 'easy', role: 'user', duration: '1h', reason: 'again' });
    t.equal(erin.status, 403, 'erin is no longer eligible under the reviewed policy');
    await tg.api('alice', 'POST', `/api/v1/grants/${holder.id}/checkin`, {});
  });

  t.test('labels, axe-core WCAG 2 A/AA rules and a phone-sized screen on the new pages and forms', async (t) => {
    // axe-core is injected as a script: these contexts bypass the CSP (the ones above did not, and saw no violation).
    const phone = { width: 390, height: 844 };
    const v = (await tg.api('carol', 'POST', '/api/v1/access-reviews', { policy: 'open' })).body;
    const guarded = await tg.grant('alice', 'guarded', 'user', '30m');
    await tg.grant('alice', 'shared', 'user', '30m');
    const pages: [string, string, (p: Page) => Promise<void>][] = [
      ['dave', '/portal/delegations', async () => undefined],
      ['bob', `/portal/access-reviews?review=${v.id}`, async (p) => { await p.waitForSelector('#review tr[data-line] button'); }],
      ['carol', '/portal/access-reviews', async (p) => { await p.waitForSelector('#start-section:not([hidden])'); }],
      ['carol', '/portal/dashboard', async (p) => { await p.waitForSelector('#checkouts tr[data-checkout]'); }],
      ['alice', '/portal/access', async (p) => {
        await p.waitForSelector('#grants details.extend');
        for (const d of await p.locator('#grants details.extend summary').all()) await d.click();
        const guardedCard = p.locator(`#grants [data-grant="${guarded.id}"]`);
        await guardedCard.locator('button:has-text("Get connection command")').click();
        await guardedCard.locator('.mfa-code input').waitFor();
      }],
    ];
    for (const [user, path, prepare] of pages) {
      const s = await signIn(browser, tg, user, path, phone, { bypassCSP: true });
      await prepare(s.page);
      await a11y(t, s.page, `${path} as ${user}`);
      const overflow = await s.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      t.ok(overflow <= 0, `${path}: no sideways scrolling on a phone (${overflow}px)`);
      await noPageErrors(t, s.errors);
      await s.ctx.close();
    }
  });
});
