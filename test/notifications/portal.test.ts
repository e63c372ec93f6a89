/**
 * The portal side of notifications, in headless Chromium: the dashboard shows a failing webhook
 * and a SIEM sink that is behind (SOC only), its Retry button sends the notification again once the
 * receiver works; an approval link from a notification leads through sign-in to the approvals
 * page with that request marked, and nothing is decided until the approver presses the button.
 */
import t from 'tap';
import { moduleMap } from '../../protocols/index.js';
import { fakeModule, FakeTarget } from '../support/fake-module.js';
import { startTestGateway, TEST_USERS } from '../support/gateway.js';
import { startReceiver } from '../support/receivers.js';
import { launchChromium, noPageErrors, password, shot, signIn } from '../portal/helpers.js';

const hook = await startReceiver();
t.teardown(() => hook.close());
hook.answer = (r) => (r.path.startsWith('/siem') ? 503 : 500);
const modules = moduleMap();
modules.set('fake', fakeModule(new FakeTarget()));
const tg = await startTestGateway({
  targets: [{ name: 'box', protocol: 'fake', address: 'mem', risk: 'medium', roles: [{ name: 'user' }] }],
  modules, listeners: ['fake'],
  extra: {
    idp: { dev: { users: Object.entries(TEST_USERS).map(([name, groups]) => ({ name, email: `${name}@example.test`, password: { value: password(name) }, groups })) } },
    notifications: { webhooks: [{ name: 'ops-hook', url: hook.url, secret: { value: 'k'.repeat(32) } }], retry: { attempts: 2, initialDelay: '200ms', maxDelay: '1s' } },
    siem: { webhooks: [{ name: 'siem-hook', url: `http://127.0.0.1:${hook.port}/siem`, secret: { value: 's'.repeat(32) } }], retry: { initialDelay: '200ms', maxDelay: '1s' } },
  },
});
t.teardown(() => tg.close());
const browser = await launchChromium();
t.teardown(() => browser.close());

async function until(fn: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

t.test('the dashboard shows a failing webhook and a SIEM sink behind; Retry sends it again', async (t) => {
  const r = await tg.api('alice', 'POST', '/api/v1/requests', { target: 'box', role: 'user', duration: '1h', reason: 'dashboard test' });
  t.equal(r.status, 201);
  await until(async () => (await tg.store.listDeliveries({ state: ['failed'] })).length === 1, 'the delivery to give up');
  await until(async () => ((await tg.gw.siem.status())[0]?.failures ?? 0) >= 1, 'the SIEM sink to fail');

  const carol = await signIn(browser, tg, 'carol', '/portal/dashboard', { width: 1100, height: 900 });
  const c = carol.page;
  await c.waitForSelector('#deliveries table');
  const row = c.locator('#deliveries tbody tr');
  t.equal(await row.count(), 1);
  const text = (await row.textContent()) ?? '';
  t.match(text, 'webhook:ops-hook');
  t.match(text, 'alice asks for box as user');
  t.match(text, 'failed');
  t.match(text, /answered 500: receiver says no/);
  await c.waitForSelector('#siem table');
  const siem = (await c.textContent('#siem tbody')) ?? '';
  t.match(siem, 'webhook:siem-hook');
  t.match(siem, `http://127.0.0.1:${hook.port}`);
  t.match(siem, /seq 0 of \d+/);
  t.match(siem, /answered 503/);
  t.notMatch(await c.content(), /s3cr3t-path|kkkkkkkk/, 'no URL path, no key on the page');
  await shot(c, 'notifications', { fullPage: true });

  hook.answer = () => 200;
  await c.click('#deliveries button:has-text("Retry now")');
  await c.waitForSelector('.flash:has-text("Queued again.")');
  await until(async () => (await tg.store.listDeliveries({ state: ['delivered'] })).length === 1, 'the retried delivery');
  t.ok(await tg.gw.siem.caughtUp(undefined, 15_000), 'the SIEM sink catches up once it answers');
  await c.reload();
  await c.waitForSelector('#deliveries .empty');
  t.match(await c.textContent('#deliveries'), /Every notification was delivered/);
  await c.waitForSelector('#siem td:has-text("up to date")');
  await noPageErrors(t, carol.errors);
  await carol.ctx.close();

  const bob = await signIn(browser, tg, 'bob', '/portal/dashboard');
  await bob.page.waitForSelector('.figure');
  t.equal(await bob.page.isHidden('#delivery-section'), true, 'an approver who is not SOC does not see it');
  await bob.ctx.close();
});

t.test('an approval link opens the request through sign-in; nothing is decided until the button is pressed', async (t) => {
  const r = await tg.api('erin', 'POST', '/api/v1/requests', { target: 'box', role: 'user', duration: '1h', reason: 'via the link' });
  const other = await tg.api('alice', 'POST', '/api/v1/requests', { target: 'box', role: 'user', duration: '1h', reason: 'another one' });
  const notice = () => hook.requests.find((x) => x.headers['x-tollgate-event'] === 'request.pending' && x.body.includes(r.body.id));
  await until(async () => !!notice(), 'the notification');
  const link = JSON.parse(notice()!.body).links[0].url as string;
  t.equal(link, `${tg.url}/portal/approvals?request=${r.body.id}`);

  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(link);
  t.notOk(page.url().startsWith(tg.url), 'signed out: the IdP asks for a sign-in first');
  await page.fill('#login', 'dave');
  await page.fill('#password', password('dave'));
  await page.click('button:has-text("Sign in")');
  await page.waitForURL((u) => u.toString() === link);
  const card = page.locator(`[data-request="${r.body.id}"]`);
  await card.waitFor();
  t.equal(await card.getAttribute('class'), 'card linked', 'the linked request is marked');
  t.equal(await page.locator(`[data-request="${other.body.id}"]`).getAttribute('class'), 'card', 'the others are not');
  t.equal(await page.evaluate(() => document.activeElement?.closest('[data-request]')?.getAttribute('data-request')), r.body.id, 'focus is on it');
  t.equal((await tg.api('dave', 'GET', `/api/v1/requests/${r.body.id}`)).body.state, 'pending', 'opening it decided nothing');
  await card.locator('button:has-text("Approve")').click();
  await page.waitForSelector('.flash:has-text("Approved")');
  t.equal((await tg.api('dave', 'GET', `/api/v1/requests/${r.body.id}`)).body.state, 'approved', 'the press did');

  await page.goto(link);
  await page.waitForSelector('.flash.warn');
  t.match(await page.textContent('.flash'), /no longer waits for you/, 'a decided request says so');
  await ctx.close();
});
