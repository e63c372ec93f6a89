/**
 * The browser side in headless Chromium against x11vnc on Xvfb through the real gateway: the
 * canvas viewer types into the remote xterm (keystroke log), the SOC watches the same session live
 * from the current frame and terminates it, and the recording replays with seeking.
 * (Web sessions are created directly in the store; the OIDC sign-in itself is tested in test/auth.)
 */
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext } from 'playwright-core';
import { ManualClock } from '../../policies/clock.js';
import { parseNdjson } from '../../recorder/index.js';
import { startDesktop, type VncDesktop } from '../../protocols/vnc/demo.js';
import { startTestGateway } from '../support/gateway.js';
import { have, sleep, waitFor } from './client.js';

const ARTIFACTS = join(import.meta.dirname, '..', 'artifacts', 'vnc');
if (!have('Xvfb') || !have('x11vnc') || !existsSync('/usr/bin/chromium')) {
  t.fail('Xvfb, x11vnc and chromium are required');
} else {
  mkdirSync(ARTIFACTS, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), 'tg-vncb-'));
  const desktop = (await startDesktop(join(dir, 'server'), { size: '800x600x24' })) as VncDesktop;
  t.teardown(async () => { await desktop.stop(); rmSync(dir, { recursive: true, force: true }); });
  const target = {
    name: 'desk', protocol: 'vnc', address: `127.0.0.1:${desktop.port}`,
    roles: [{ name: 'operator' }, { name: 'viewer', viewOnly: true }], credentials: { passwordFile: desktop.passwordFile },
  };
  const tg = await startTestGateway({ targets: [target], listeners: ['vnc'], clock: new ManualClock(Date.now()) });
  t.teardown(() => tg.close());
  const browser: Browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
  t.teardown(() => browser.close());
  const contextFor = async (user: string): Promise<BrowserContext> => {
    const { cookie } = await tg.gw.webSessions.create(user, null, 3_600_000);
    const ctx = await browser.newContext({ viewport: { width: 1000, height: 800 } });
    await ctx.addCookies([{ name: 'tg_session', value: cookie.reveal(), url: tg.url }]);
    return ctx;
  };
  const settle = () => waitFor(async () => (await tg.store.listSessions({ state: 'active' })).length === 0, 10_000, 'sessions to end');

  t.test('no grant or no sign-in: the viewer WebSocket is refused', async (t) => {
    const anon = await browser.newContext();
    const p = await anon.newPage();
    await p.goto(`${tg.url}/vnc/view?target=desk&role=operator`);
    await p.waitForSelector('#status.bad', { timeout: 5000 });
    t.match(await p.textContent('#status'), /refused|disconnected/);
    const bob = await contextFor('erin');
    const p2 = await bob.newPage();
    await p2.goto(`${tg.url}/vnc/view?target=desk&role=operator`);
    await p2.waitForSelector('#status.bad', { timeout: 5000 });
    t.same(await tg.store.listSessions({}), [], 'no session without a grant');
    await anon.close();
    await bob.close();
  });

  t.test('browser viewer types into the xterm; the SOC watches live and terminates; replay seeks', async (t) => {
    await tg.grant('alice', 'desk', 'operator');
    const alice = await contextFor('alice');
    const page = await alice.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${tg.url}/vnc/view?target=desk&role=operator`);
    await page.waitForFunction(() => Number(document.body.dataset.frames ?? 0) >= 1, null, { timeout: 15_000 });
    const live = (await tg.store.listSessions({ state: 'active' }))[0]!;
    t.ok(live, 'a live session');
    const box = (await page.locator('#screen').boundingBox())!;
    await page.mouse.click(box.x + 200, box.y + 150);
    const marker = `browser${Date.now() % 100000}`;
    await page.keyboard.type(`echo ${marker} > ${marker}.txt`, { delay: 20 });
    await page.keyboard.press('Enter');
    await waitFor(() => existsSync(join(desktop.display ? join(dir, 'server') : dir, `${marker}.txt`)), 10_000, 'the command typed in the browser to run');
    t.pass('text typed in the browser ran in the remote xterm');
    await sleep(800);
    await page.locator('#screen').screenshot({ path: join(ARTIFACTS, 'browser-viewer.png') });

    // The SOC watches from the current frame.
    const carol = await contextFor('carol');
    const watch = await carol.newPage();
    await watch.goto(`${tg.url}/vnc/watch?session=${live.id}`);
    await watch.waitForFunction(() => Number(document.body.dataset.frames ?? 0) >= 1, null, { timeout: 10_000 });
    t.pass('the live view starts from the current frame (keyframe in the snapshot)');
    await watch.locator('#screen').screenshot({ path: join(ARTIFACTS, 'browser-watch.png') });
    await watch.click('#kill');
    await page.waitForFunction(() => document.body.dataset.ended === 'true', null, { timeout: 5000 });
    t.pass('terminate from the live view closes the viewer');
    await settle();
    t.match((await tg.store.getSession(live.id))!.endReason, /^killed/);
    const events = (await tg.store.listRecordings()).find((r) => r.sessionId === live.id && r.kind === 'events')!;
    const keys = parseNdjson(readFileSync(events.path, 'utf8')).filter((e) => e.type === 'vnc.keys').map((e) => e.text).join('');
    t.match(keys, `echo ${marker} > ${marker}.txt\n`, 'keystroke log from the browser');

    // Replay with seek.
    const screen = (await tg.store.listRecordings()).find((r) => r.sessionId === live.id && r.kind === 'screen')!;
    const rp = await carol.newPage();
    rp.on('pageerror', (e) => errors.push(e.message));
    await rp.goto(`${tg.url}/vnc/replay?recording=${screen.id}`);
    await rp.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 10_000 });
    const max = Number(await rp.getAttribute('#seek', 'max'));
    await rp.locator('#seek').fill(String(max));
    await rp.waitForFunction((m) => Number(document.body.dataset.position) === m, max, { timeout: 10_000 });
    const lit = await rp.evaluate(() => {
      const c = document.getElementById('screen') as HTMLCanvasElement;
      const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i]! + d[i + 1]! + d[i + 2]! > 300) n++;
      return { n, w: c.width, h: c.height };
    });
    t.equal(lit.w, 800);
    t.ok(lit.n > 500, `the replayed last frame shows text (${lit.n} bright pixels)`);
    await rp.locator('#screen').screenshot({ path: join(ARTIFACTS, 'browser-replay.png') });
    t.same(errors, [], 'no page errors');
    await alice.close();
    await carol.close();
  });
}
