/**
 * Portal test helpers: a real gateway with the dev IdP (users sign in through the real OIDC code
 * flow in headless Chromium), a sign-in helper, and screenshots for the README.
 */
import type tap from 'tap';
import { mkdirSync, copyFileSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { decodePng } from '../../recorder/screen/index.js';
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

const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

export interface Pixels { width: number; height: number; rgba: Uint8Array }

/** Share of pixels whose colour differs by more than `tolerance` (sum over R, G, B). */
export function differing(a: Pixels, b: Pixels, tolerance: number): number {
  if (a.width !== b.width || a.height !== b.height) return 1;
  let n = 0;
  for (let i = 0; i < a.rgba.length; i += 4) {
    const d = Math.abs(a.rgba[i]! - b.rgba[i]!) + Math.abs(a.rgba[i + 1]! - b.rgba[i + 1]!) + Math.abs(a.rgba[i + 2]! - b.rgba[i + 2]!);
    if (d > tolerance) n++;
  }
  return n / (a.width * a.height);
}

/** The canvas's own pixels (not the scaled on-screen picture), through a lossless PNG. */
export async function canvasPixels(page: Page, selector: string): Promise<Pixels> {
  const url = await page.evaluate((sel) => (document.querySelector(sel) as HTMLCanvasElement).toDataURL('image/png'), selector);
  const img = decodePng(Buffer.from(url.slice(url.indexOf(',') + 1), 'base64'));
  return { width: img.width, height: img.height, rgba: img.rgba };
}

/** axe-core's WCAG 2.1 A/AA violations on the page (impact at least minImpact). */
export async function axeViolations(page: Page, minImpact: 'minor' | 'moderate' | 'serious' | 'critical' = 'minor'): Promise<string[]> {
  // Evaluated through the DevTools protocol, so the page's CSP (no inline script) stays on.
  await page.evaluate(AXE);
  const order = ['minor', 'moderate', 'serious', 'critical'];
  const found = await page.evaluate(async () => {
    const axe = (window as unknown as { axe: { run(ctx: Document, o: object): Promise<{ violations: { id: string; impact: string; nodes: { target: string[] }[] }[] }> } }).axe;
    const r = await axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } });
    return r.violations.map((v) => ({ impact: v.impact, text: `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}` }));
  });
  return found.filter((v) => order.indexOf(v.impact) >= order.indexOf(minImpact)).map((v) => v.text);
}
