/**
 * Portal test helpers: a real gateway with the dev IdP (users sign in through the real OIDC code
 * flow in headless Chromium), a sign-in helper, and screenshots for the README.
 */
import type tap from 'tap';
import { mkdirSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import type { ProtocolModule } from '../../protocols/types.js';
import { moduleMap } from '../../protocols/index.js';
import { FakeTarget, fakeModule } from '../support/fake-module.js';
import type { Clock } from '../../policies/clock.js';
import { startTestGateway, TEST_USERS, type TestGateway } from '../support/gateway.js';

const root = join(import.meta.dirname, '..', '..');
export const ARTIFACTS = join(root, 'test', 'artifacts', 'screens');
export const COMMITTED = join(root, 'proxy', 'portal', 'screens');

export async function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

export const password = (user: string) => `${user}-portal-pw`;
/** alice has an authenticator (TOTP) for MFA step-up. */
export const ALICE_TOTP = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP';

export async function startPortalGateway(opts: { targets: object[]; modules?: Map<string, ProtocolModule>; listeners?: string[]; clock?: Clock; policies?: object[] }): Promise<TestGateway> {
  return startTestGateway({
    targets: opts.targets as never,
    modules: opts.modules,
    listeners: opts.listeners,
    clock: opts.clock,
    policies: opts.policies as never,
    extra: {
      idp: {
        dev: {
          users: Object.entries(TEST_USERS).map(([name, groups]) => ({ name, email: `${name}@example.test`, password: { value: password(name) }, groups, ...(name === 'alice' ? { totp: { value: ALICE_TOTP } } : {}) })),
        },
      },
    },
  });
}

/** A browser context signed in as `user` through the dev IdP, landing on `path`. */
export async function signIn(browser: Browser, tg: TestGateway, user: string, path = '/portal/access', viewport = { width: 800, height: 900 }, extra: { bypassCSP?: boolean } = {}): Promise<{ ctx: BrowserContext; page: Page; errors: string[] }> {
  const ctx = await browser.newContext({ viewport, ...extra });
  const page = await ctx.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  await page.goto(`${tg.url}${path}`);
  if (!page.url().startsWith(tg.url)) {
    await page.fill('#login', user);
    await page.fill('#password', password(user));
    await page.click('button:has-text("Sign in")');
    await page.waitForURL((u) => u.toString().startsWith(`${tg.url}${path.split('?')[0]}`));
  }
  return { ctx, page, errors };
}

/** Screenshot to test/artifacts/screens/ and the committed copy under proxy/portal/screens/. */
export async function shot(page: Page, name: string, opts: { commit?: boolean; fullPage?: boolean } = {}): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const file = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: opts.fullPage ?? true });
  if (opts.commit !== false) {
    mkdirSync(COMMITTED, { recursive: true });
    copyFileSync(file, join(COMMITTED, `${name}.png`));
  }
}

/** Targets of the in-memory protocol module used by the page tests. */
export const FAKE_TARGETS = [
  { name: 'box', protocol: 'fake', address: 'in-memory', risk: 'medium', description: 'in-memory test box', roles: [{ name: 'user' }, { name: 'admin' }] },
  { name: 'vault', protocol: 'fake', address: 'in-memory', risk: 'low', roles: [{ name: 'reader' }] },
  { name: 'crown', protocol: 'fake', address: 'in-memory', risk: 'critical', roles: [{ name: 'dba' }] },
];

/** Deliberate 4xx answers show up as "Failed to load resource"; script errors and CSP refusals do not. */
export function noPageErrors(t: Pick<typeof tap, 'same'>, errors: string[]): void {
  t.same(errors.filter((e) => !/favicon|Failed to load resource/.test(e)), [], 'no script errors or CSP violations on the page');
}

/** A portal gateway with the in-memory protocol module and FAKE_TARGETS, and a browser; both closed at teardown. */
export async function startFakePortal(t: { teardown(fn: () => unknown): void }) {
  const ft = new FakeTarget();
  const mod = fakeModule(ft);
  const modules = moduleMap();
  modules.set('fake', mod);
  const tg = await startPortalGateway({ targets: FAKE_TARGETS, modules, listeners: ['fake'] });
  t.teardown(() => tg.close());
  const browser = await launchChromium();
  t.teardown(() => browser.close());
  return { ft, mod, tg, browser };
}
