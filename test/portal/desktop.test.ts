/**
 * The SOC console on a desktop session: x11vnc on Xvfb with an xterm behind the real gateway, a
 * small RFB client (test/vnc/client.ts) as alice's viewer typing into the xterm, carol (signed in
 * through the dev IdP) watching on the portal's watch page. The canvas is compared with a
 * screenshot taken on the server, first from the snapshot alone, then after live updates; carol
 * terminates from the page and the client's connection closes; the replay page plays, pauses and
 * seeks the screen recording, and its frames are compared with the recorder's own replay.
 * Then the same for RDP, more briefly: xrdp with an xterm session behind the gateway, xfreerdp
 * under Xvfb typing, the canvas compared with xfreerdp's window, Terminate closing xfreerdp.
 * alice opens her VNC grant and her RDP grant with Open in My access (a new tab) and types into
 * each desktop from the browser: the commands run on the desktop (the RDP one as the minted account).
 */
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { parseNdjson } from '../../recorder/index.js';
import { Framebuffer, ScreenReplay, decodePng, encodePng } from '../../recorder/screen/index.js';
import { startDesktop, type VncDesktop } from '../../protocols/vnc/demo.js';
import { encodeKeyEvent, encodePointerEvent, encodeSetEncodings, encodeUpdateRequest } from '../../protocols/vnc/client-messages.js';
import { have, rfbLogin, run, sleep, waitFor } from '../vnc/client.js';
import { clientWindow, haveRdpTools, key, mintedAccounts, pixelDiff, screenshot, startXvfb, typeText, withXrdp, xfreerdp } from '../rdp/support.js';
import { bannerHeight, bannerOff, below } from '../support/banner.js';
import { ARTIFACTS, axeViolations, canvasPixels, differing, launchChromium, noPageErrors, shot, signIn, startPortalGateway, type Pixels } from './helpers.js';

/** Whether the page fits a phone's width (390 px) without sideways scrolling; the viewport is put back. */
async function phoneFits(page: Page): Promise<boolean> {
  const before = page.viewportSize()!;
  await page.setViewportSize({ width: 390, height: 844 });
  await sleep(100);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await page.setViewportSize(before);
  return overflow <= 0;
}

const needed = ['Xvfb', 'x11vnc', 'xterm', 'import'];
const missing = needed.filter((c) => !have(c));
if (missing.length || !existsSync('/usr/bin/chromium')) {
  t.fail(`missing: ${[...missing, ...(existsSync('/usr/bin/chromium') ? [] : ['chromium'])].join(' ')} (apt-get install xvfb x11vnc xterm imagemagick chromium)`);
} else {
  const shots = join(ARTIFACTS, '..', 'vnc');
  mkdirSync(shots, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), 'tg-portal-desk-'));
  const shellDir = join(dir, 'server');
  const desktop = (await startDesktop(shellDir, { size: '800x600x24' })) as VncDesktop;
  t.teardown(async () => { await desktop.stop(); rmSync(dir, { recursive: true, force: true }); });
  const target = {
    name: 'desk', protocol: 'vnc', address: `127.0.0.1:${desktop.port}`,
    roles: [{ name: 'operator', clipboard: 'both' }], credentials: { passwordFile: desktop.passwordFile },
  };
  const tg = await startPortalGateway({ targets: [target], listeners: ['vnc'] });
  t.teardown(() => tg.close());
  const browser = await launchChromium();
  t.teardown(() => browser.close());
  const serverShot = async (name: string): Promise<Pixels> => {
    const file = join(shots, name);
    const r = await run('import', ['-window', 'root', file], { DISPLAY: desktop.display });
    if (r.code !== 0) throw new Error(`import failed: ${r.err}`);
    return decodePng(readFileSync(file));
  };
  /** Wait until the canvas matches a fresh server screenshot (updates take a moment to arrive). */
  const matchesServer = async (page: Page, name: string): Promise<number> => {
    let ratio = 1;
    const until = Date.now() + 15_000;
    while (Date.now() < until) {
      const server = await serverShot(name);
      ratio = differing(await canvasPixels(page, '#screen'), server, 24);
      if (ratio < 0.005) break;
      await sleep(300);
    }
    return ratio;
  };

  t.test('carol watches a VNC session live on the portal, terminates it, and replays the recording', async (t) => {
    const grant = await tg.grant('alice', 'desk', 'operator');
    const s = await tg.secret('alice', grant.id);
    const { host, port } = tg.listener('vnc');
    const c = await rfbLogin({ host, port, ca: tg.gw.tls.ca, username: 'desk', password: s.secret });
    t.ok(c.ok, `alice's RFB client logs in (${c.reason ?? 'ok'})`);
    const { width, height } = c.init!;
    // A viewer that keeps asking for updates and reads (discards) what comes back.
    c.reader.detach();
    c.sock.on('data', () => {});
    c.sock.resume();
    c.sock.write(Buffer.concat([encodeSetEncodings([16, 0, 1, -223]), encodeUpdateRequest(false, 0, 0, width, height)]));
    const ask = setInterval(() => { if (!c.sock.destroyed) c.sock.write(encodeUpdateRequest(true, 0, 0, width, height)); }, 100);
    t.teardown(() => { clearInterval(ask); c.sock.destroy(); });
    const live = await waitFor(async () => (await tg.store.listSessions({ state: 'active', target: 'desk' }))[0], 10_000, 'live session');
    await waitFor(async () => (await tg.store.listRecordings()).some((r) => r.sessionId === live.id && r.kind === 'screen'), 10_000, 'the screen recording');
    await sleep(1000); // the first full update is in and recorded as a keyframe

    const carol = await signIn(browser, tg, 'carol', `/portal/sessions/${live.id}`);
    const page = carol.page;
    const warnings: string[] = [];
    page.on('console', (m) => { if (m.type() === 'warning' && m.text().startsWith('screen:')) warnings.push(m.text()); });
    await page.waitForFunction(() => Number(document.querySelector<HTMLCanvasElement>('#screen')?.dataset.frames ?? 0) >= 1, null, { timeout: 15_000 });
    t.equal(await page.locator('#term-section').isHidden(), true, 'no terminal for a desktop session');
    t.match(await page.getAttribute('#screen', 'aria-label'), /Live screen of desk \(alice\)/, 'the canvas is labelled');
    const first = await matchesServer(page, 'portal-watch-server-1.png');
    t.ok(first < 0.005, `from the snapshot, the canvas matches the server's screen (${(first * 100).toFixed(3)}% pixels differ)`);

    // Broken lines on the live stream (as from a damaged recorder) are skipped, not fatal.
    const tNow = (tg.gw.clock.now() - live.startedAt) / 1000;
    for (const data of [{ type: 'rect', x: 5, y: 5, png: '%%% not base64 %%%' }, { type: 'rect', x: 5, y: 5, png: Buffer.from('not a png').toString('base64') },
      { type: 'keyframe', w: 800, h: 600, png: Buffer.from('torn').toString('base64') }, { type: 'resize', w: 1e9, h: -1 }, { type: 'copy', sx: -5, sy: 0, x: 0, y: 0, w: 1e9, h: 3 }, { type: 'rect', x: 'x', png: 5 }, { type: '<script>' }, null]) {
      tg.gw.recorder.live.publish(live.id, { t: tNow, type: 'screen', data });
    }
    await waitFor(() => warnings.length >= 3, 5000, 'the view to report the undecodable pictures');
    t.equal(warnings.length, 3, `the three undecodable PNGs (two rectangles, a keyframe) are reported and skipped (${warnings.join(' | ').slice(0, 300)})`);
    // Alice clicks into the xterm and types a command; carol sees it live.
    c.sock.write(Buffer.concat([encodePointerEvent(0, 200, 150), encodePointerEvent(1, 200, 150), encodePointerEvent(0, 200, 150)]));
    await sleep(200);
    const marker = `portal${Date.now() % 100000}`;
    for (const ch of `echo ${marker} > ${marker}.txt`) {
      const k = ch.charCodeAt(0);
      c.sock.write(Buffer.concat([encodeKeyEvent(true, k), encodeKeyEvent(false, k)]));
      await sleep(15);
    }
    c.sock.write(Buffer.concat([encodeKeyEvent(true, 0xff0d), encodeKeyEvent(false, 0xff0d)]));
    await waitFor(() => existsSync(join(shellDir, `${marker}.txt`)), 10_000, 'the typed command to run in the xterm');
    await page.waitForFunction((m) => (document.getElementById('events')?.textContent ?? '').includes(m), `echo ${marker}`, { timeout: 10_000 });
    const events = await page.textContent('#events');
    t.match(events, /vnc\.keys/, 'the keystroke log shows in the events list');
    t.match(events, /vnc\.click/, 'the click shows in the events list');
    await sleep(500);
    const second = await matchesServer(page, 'portal-watch-server-2.png');
    t.ok(second < 0.005, `after live updates the canvas still matches the server (${(second * 100).toFixed(3)}% pixels differ)`);
    t.equal(await page.evaluate(() => { const c = document.querySelector<HTMLCanvasElement>('#screen')!; return `${c.width}x${c.height}`; }), '800x600', 'broken lines did not change the canvas size');
    const framesLive = Number(await page.getAttribute('#screen', 'data-frames'));
    t.ok(framesLive > 1, `live frames were drawn after the snapshot (${framesLive})`);
    t.same(await axeViolations(page), [], 'watch page: no axe-core violations with the canvas');
    t.ok(await phoneFits(page), 'watch page: no sideways scrolling on a phone');
    await shot(page, 'watch-desktop');

    // Terminate from the page: alice's connection closes.
    const t0 = Date.now();
    await page.fill('#kill-reason', 'desktop demo over');
    await page.click('#kill-form button');
    const closedAt = await Promise.race([c.closed, sleep(10_000).then(() => 0)]);
    t.ok(closedAt > 0, `the RFB client's connection closed ${closedAt - t0} ms after Terminate`);
    await page.waitForFunction(() => /has ended|not live/.test(document.getElementById('state')?.textContent ?? ''), null, { timeout: 10_000 });
    await waitFor(async () => (await tg.store.getSession(live.id))?.state === 'ended', 10_000, 'session ended');
    t.match((await tg.store.getSession(live.id))!.endReason, /^killed/, 'the session ended as killed');
    const rec = await waitFor(async () => (await tg.store.listRecordings()).find((r) => r.sessionId === live.id && r.kind === 'screen' && r.state === 'sealed'), 10_000, 'the sealed screen recording');
    const replay = new ScreenReplay(parseNdjson(readFileSync(rec.path, 'utf8')));
    t.ok(replay.index.length >= 2, `keyframes in the recording (${replay.index.length})`);
    const asRecorded = (time: number): Pixels => { const fb = replay.frameAt(time)!; return { width: fb.width, height: fb.height, rgba: fb.data }; };
    const endFrame = asRecorded(replay.duration);
    let liveEnd = 1;
    for (const until = Date.now() + 5000; Date.now() < until && liveEnd > 0; await sleep(200)) liveEnd = differing(await canvasPixels(page, '#screen'), endFrame, 0);
    t.equal(liveEnd, 0, 'the live canvas ends on the recording\'s last frame, pixel for pixel');

    // Replay: the last frame, a seek back into the middle (from the keyframe index), play and pause.
    await page.goto(`${tg.url}/portal/recordings/${live.id}`);
    const sec = '.rec[data-kind=screen]';
    await page.waitForSelector(`${sec}[data-ready=true]`, { timeout: 15_000 });
    const range = page.locator(`${sec} input[type=range]`);
    const max = Number(await range.getAttribute('max'));
    t.ok(Math.abs(max - replay.duration) < 1e-6, `the seek bar spans the recording (${max} s)`);
    const at = async (time: number) => {
      await range.fill(String(time));
      await page.waitForFunction(([s, v]) => Math.abs(Number(document.querySelector<HTMLElement>(s as string)?.dataset.position) - (v as number)) < 0.006, [sec, time] as const, { timeout: 10_000 });
      return canvasPixels(page, `${sec} canvas`);
    };
    const last = await at(max);
    const lastDiff = differing(last, asRecorded(max), 0);
    t.equal(lastDiff, 0, 'the replayed last frame is the recording\'s last frame, pixel for pixel');
    // The gateway drew the kill's reason across the top as the last frame; below it, the server's screen.
    const endMessage = 'Tollgate: session terminated by carol: desktop demo over.';
    t.equal(bannerOff(last, endMessage, 'ended'), 0, 'the last frame carries the reason as a banner');
    const cut = bannerHeight(last.width, last.height, endMessage);
    const vsServer = differing(below(last, cut), below(await serverShot('portal-replay-server.png'), cut), 24);
    t.ok(vsServer < 0.005, `and below it the server's screen (${(vsServer * 100).toFixed(3)}% pixels differ)`);
    // Just before alice typed: after the first keyframe, before the command's output.
    const firstKey = replay.inputs().find((l) => l.kind === 'key')!.t;
    const mid = Math.max(replay.index[0]!.t, firstKey - 0.05);
    const middle = await at(mid);
    t.equal(differing(middle, asRecorded(mid), 0), 0, `seeking back to ${mid} s shows the frame as it was then`);
    t.ok(differing(middle, last, 0) > 0, 'which is not the last frame');
    await shot(page, 'replay-desktop');
    const playBtn = page.locator(`${sec} button:has-text("Play")`);
    await range.fill('0');
    await page.waitForFunction((s) => Number(document.querySelector<HTMLElement>(s)?.dataset.position) === 0, sec, { timeout: 10_000 });
    await playBtn.click();
    await page.waitForFunction((s) => Number(document.querySelector<HTMLElement>(s)?.dataset.position) > 0.3, sec, { timeout: 10_000 });
    t.equal(await page.locator(`${sec} button`).first().textContent(), 'Pause', 'playing: the button says Pause');
    await page.locator(`${sec} button:has-text("Pause")`).click();
    const paused = Number(await page.getAttribute(sec, 'data-position'));
    await sleep(500);
    t.equal(Number(await page.getAttribute(sec, 'data-position')), paused, 'paused: the position stays');
    t.ok(paused < max, `paused before the end (${paused} s of ${max} s)`);
    t.match(await page.textContent(`${sec} .keys`), new RegExp(`echo ${marker}`.split('').join('[\\s\\S]*')), 'the typed keys are listed beside the screen');
    await page.waitForFunction(() => { const v = [...document.querySelectorAll('.rec .verify')]; return v.length > 0 && v.every((e) => /seal verified/.test(e.textContent ?? '')); }, null, { timeout: 15_000 });
    t.same(await axeViolations(page), [], 'replay page: no axe-core violations with the canvas and controls');
    t.ok(await phoneFits(page), 'replay page: no sideways scrolling on a phone');
    noPageErrors(t, carol.errors);
    await carol.ctx.close();
  });

  t.test('the canvas renderer draws every kind of line as the recorder replays it; a seek from the keyframe index', async (t) => {
    // Synthetic lines (keyframe, rect, overlapping copy, resize, a second keyframe) drawn in the
    // browser by screen-view.js and compared with recorder/screen's ScreenReplay, pixel for pixel.
    const pattern = (w: number, h: number, seed: number): Uint8Array => {
      const px = new Uint8Array(w * h * 4);
      for (let i = 0; i < w * h; i++) { px[i * 4] = (i * seed) & 255; px[i * 4 + 1] = (i * 7 + seed * 31) & 255; px[i * 4 + 2] = ((i >> 3) * seed) & 255; px[i * 4 + 3] = 255; }
      return px;
    };
    const png = (w: number, h: number, seed: number) => encodePng(w, h, pattern(w, h, seed)).toString('base64');
    const lines = [
      { t: 0, type: 'header', version: 1, width: 40, height: 30, timestamp: 0 },
      { t: 1, type: 'keyframe', w: 40, h: 30, png: png(40, 30, 3) },
      { t: 2, type: 'rect', x: 5, y: 4, w: 10, h: 6, png: png(10, 6, 11) },
      { t: 2.5, type: 'input', kind: 'key', text: 'a' },
      { t: 3, type: 'copy', sx: 0, sy: 0, x: 4, y: 3, w: 20, h: 15 },
      { t: 4, type: 'resize', w: 50, h: 20 },
      { t: 4.5, type: 'rect', x: 38, y: 10, w: 12, h: 10, png: png(12, 10, 5) },
      { t: 6, type: 'keyframe', w: 50, h: 20, png: png(50, 20, 9) },
      { t: 7, type: 'copy', sx: 10, sy: 5, x: 5, y: 2, w: 30, h: 12 },
    ];
    const reference = new ScreenReplay(lines);
    const carol = await signIn(browser, tg, 'carol', '/portal/recordings');
    const page = carol.page;
    await page.evaluate(async (ls) => {
      const { ScreenView, ScreenPlayer } = await import('/portal/assets/screen-view.js' as string);
      const canvas = document.createElement('canvas');
      canvas.id = 'synthetic';
      canvas.setAttribute('role', 'img');
      canvas.setAttribute('aria-label', 'synthetic screen');
      document.getElementById('main')!.append(canvas);
      const w = window as unknown as Record<string, unknown>;
      w['tgView'] = new ScreenView(canvas);
      w['tgPlayer'] = new ScreenPlayer(w['tgView'], ls);
    }, lines);
    const frameAt = async (time: number): Promise<Pixels> => {
      await page.evaluate((x) => (window as unknown as { tgPlayer: { seek(t: number): Promise<void> } }).tgPlayer.seek(x), time);
      return canvasPixels(page, '#synthetic');
    };
    const expected = (time: number): Pixels => {
      const fb = reference.frameAt(time) ?? new Framebuffer(40, 30);
      return { width: fb.width, height: fb.height, rgba: fb.data };
    };
    // Forward, then backward (each backward seek restarts from the keyframe before it), then forward again.
    for (const time of [0.5, 1, 2, 3, 4, 4.5, 5, 6, 7, 3, 1.5, 4.5, 0, 7, 6.5]) {
      const got = await frameAt(time);
      const want = expected(time);
      t.equal(`${got.width}x${got.height}`, `${want.width}x${want.height}`, `size at ${time} s`);
      t.equal(differing(got, want, 0), 0, `the frame at ${time} s is the recorder's frame, pixel for pixel`);
    }
    t.same(await page.evaluate(() => (window as unknown as { tgPlayer: { index: unknown } }).tgPlayer.index), [{ t: 1, line: 1 }, { t: 6, line: 7 }], 'the keyframe index');

    // The live queue: a keyframe waiting behind other lines supersedes them once it has decoded;
    // a keyframe that does not decode is dropped and the lines before it are still drawn.
    const queued = async (ls: object[]): Promise<Pixels> => {
      await page.evaluate(async (xs) => {
        const v = (window as unknown as { tgView: { push(l: object): void; idle(): Promise<void> } }).tgView;
        for (const l of xs) v.push(l);
        await v.idle();
      }, ls);
      return canvasPixels(page, '#synthetic');
    };
    const kfA = { t: 0, type: 'keyframe', w: 40, h: 30, png: png(40, 30, 13) };
    const rect = { t: 0, type: 'rect', x: 1, y: 1, w: 10, h: 6, png: png(10, 6, 17) };
    const kfB = { t: 0, type: 'keyframe', w: 30, h: 20, png: png(30, 20, 19) };
    const torn = { t: 0, type: 'keyframe', w: 40, h: 30, png: Buffer.from('torn keyframe').toString('base64') };
    const onlyB = await queued([kfA, rect, kfB]);
    t.equal(differing(onlyB, { width: 30, height: 20, rgba: pattern(30, 20, 19) }, 0), 0, 'a queued keyframe supersedes the lines before it');
    const aAndRect = await queued([kfA, rect, torn]);
    const ref = new ScreenReplay([kfA, rect]).frameAt()!;
    t.equal(differing(aAndRect, { width: ref.width, height: ref.height, rgba: ref.data }, 0), 0, 'a keyframe that does not decode leaves the lines before it drawn');
    noPageErrors(t, carol.errors);
    await carol.ctx.close();
  });

  t.test('alice clicks Open on her VNC grant in My access and works in the desktop in a new tab', async (t) => {
    const grant = (await tg.store.listGrants({ identity: 'alice', state: 'active' })).find((g) => g.target === 'desk') ?? await tg.grant('alice', 'desk', 'operator');
    const alice = await signIn(browser, tg, 'alice', '/portal/access', { width: 1000, height: 800 });
    const card = alice.page.locator(`article[data-grant="${grant.id}"]`);
    const open = card.locator('a:has-text("Open")');
    await open.waitFor({ timeout: 10_000 });
    t.equal(await open.getAttribute('target'), '_blank', 'Open starts the desktop in a new tab');
    t.ok(await card.locator('button:has-text("Get connection command")').isVisible(), 'next to the native-client command');
    const [tab] = await Promise.all([alice.ctx.waitForEvent('page'), open.click()]);
    const tabErrors: string[] = [];
    tab.on('pageerror', (e) => tabErrors.push(`pageerror: ${e.message}`));
    await tab.waitForFunction(() => document.body.dataset.session && Number(document.body.dataset.frames ?? 0) >= 1, null, { timeout: 15_000 });
    t.match(tab.url(), /\/vnc\/view\?target=desk&role=operator$/, `the tab is the VNC viewer for the grant (${tab.url()})`);
    const live = (await tg.store.getSession(String(await tab.getAttribute('body', 'data-session'))))!;
    t.equal(live.identity, 'alice', 'the session is alice\'s');
    t.equal(live.grantId, grant.id, 'on that grant');
    await tab.click('#screen', { position: { x: 200, y: 150 } });
    const marker = `open${Date.now() % 100000}`;
    await tab.keyboard.type(`echo ${marker} > ${marker}.txt`, { delay: 20 });
    await tab.keyboard.press('Enter');
    await waitFor(() => existsSync(join(shellDir, `${marker}.txt`)), 10_000, 'the command typed in the browser to run in the xterm');
    t.equal(readFileSync(join(shellDir, `${marker}.txt`), 'utf8').trim(), marker, 'keys typed in the tab ran on the desktop');
    noPageErrors(t, tabErrors);
    await tab.close();
    await waitFor(async () => (await tg.store.getSession(live.id))?.state === 'ended', 10_000, 'the session to end with the tab');
    t.match((await tg.store.getSession(live.id))!.endReason, /^client_exit/, 'closing the tab ends the session');
    noPageErrors(t, alice.errors);
    await alice.ctx.close();
  });

  t.test('carol watches an RDP session (xrdp, xfreerdp) live on the portal and terminates it', async (t) => {
    const rdpMissing = haveRdpTools();
    if (rdpMissing) { t.fail(`RDP parts missing: ${rdpMissing} (node proxy/bin/ensure-deps.js test)`); return; }
    const PREFIX = 'tgpd-';
    const srv = await withXrdp();
    const xvfb = await startXvfb();
    const rtg = await startPortalGateway({
      targets: [{ name: 'rdesk', protocol: 'rdp', address: `${srv.host}:${srv.port}`, roles: [{ name: 'user' }], credentials: { mode: 'local-account', prefix: PREFIX } }],
      listeners: ['rdp'],
    });
    let client: ReturnType<typeof xfreerdp> | null = null;
    t.teardown(async () => {
      client?.stop();
      await rtg.close().catch(() => {});
      xvfb.stop();
      await srv.stop();
      for (const u of mintedAccounts(PREFIX)) {
        // Only reached when the test failed half-way: leave the host clean.
        const cp = await import('node:child_process');
        cp.spawnSync('pkill', ['-KILL', '-u', u]);
        cp.spawnSync('userdel', ['-r', '-f', u]);
      }
    });
    const grant = await rtg.grant('alice', 'rdesk', 'user');
    const s = await rtg.secret('alice', grant.id);
    client = xfreerdp(xvfb.display, [`/v:${s.host}:${s.port}`, '/sec:tls', `/u:${s.username}`, `/p:${s.secret}`, '/bpp:32', '/network:lan']);
    const c = client;
    const live = await waitFor(async () => (await rtg.store.listSessions({ state: 'active', target: 'rdesk' }))[0], 20_000, `a live RDP session (xfreerdp: ${c.output().slice(-300)})`);
    const win = await waitFor(() => clientWindow(xvfb.display), 20_000, 'the xfreerdp window');

    const carol = await signIn(browser, rtg, 'carol', `/portal/sessions/${live.id}`);
    const page = carol.page;
    await page.waitForFunction(() => Number(document.querySelector<HTMLCanvasElement>('#screen')?.dataset.frames ?? 0) >= 1, null, { timeout: 20_000 });
    t.pass('the RDP desktop shows on the watch page');
    await sleep(3000); // the xterm starts inside the session
    const marker = `rdpportal${Date.now() % 100000}`;
    typeText(xvfb.display, `echo ${marker}`);
    key(xvfb.display, 'Return');
    await page.waitForFunction((m) => /rdp\.keys/.test(document.getElementById('events')?.textContent ?? '') && (document.getElementById('events')?.textContent ?? '').includes(m), `echo ${marker}`, { timeout: 15_000 });
    t.pass('the keystroke log (rdp.keys) shows in the events list');
    let diff = { mean: 255, bad: 1 };
    for (const until = Date.now() + 15_000; Date.now() < until; await sleep(300)) {
      const shotFile = join(shots, 'portal-rdp-client.png');
      diff = pixelDiff(screenshot(xvfb.display, win, shotFile), await canvasPixels(page, '#screen'));
      if (diff.mean < 4 && diff.bad < 0.01) break;
    }
    t.ok(diff.mean < 4 && diff.bad < 0.01, `the canvas shows what xfreerdp shows (mean diff ${diff.mean.toFixed(2)}, ${(diff.bad * 100).toFixed(2)}% pixels off)`);
    const dims = await page.evaluate(() => { const el = document.querySelector<HTMLCanvasElement>('#screen')!; return `${el.width}x${el.height}`; });
    t.equal(dims, '800x600', 'the canvas has the desktop\'s size');
    await shot(page, 'watch-rdp', { commit: false });

    const t0 = Date.now();
    await page.fill('#kill-reason', 'rdp demo over');
    await page.click('#kill-form button');
    const code = await Promise.race([c.exited, sleep(10_000).then(() => 'still running' as const)]);
    t.not(code, 'still running', `xfreerdp exits ${Date.now() - t0} ms after Terminate`);
    await page.waitForFunction(() => /has ended|not live/.test(document.getElementById('state')?.textContent ?? ''), null, { timeout: 10_000 });
    await waitFor(async () => (await rtg.store.getSession(live.id))?.state === 'ended', 15_000, 'the RDP session to end');
    t.match((await rtg.store.getSession(live.id))!.endReason, /^killed/, 'the session ended as killed');
    const rec = await waitFor(async () => (await rtg.store.listRecordings()).find((r) => r.sessionId === live.id && r.kind === 'screen' && r.state === 'sealed'), 10_000, 'the sealed RDP screen recording');
    const fb = new ScreenReplay(parseNdjson(readFileSync(rec.path, 'utf8'))).frameAt()!;
    let liveEnd = 1;
    for (const until = Date.now() + 5000; Date.now() < until && liveEnd > 0; await sleep(200)) liveEnd = differing(await canvasPixels(page, '#screen'), { width: fb.width, height: fb.height, rgba: fb.data }, 0);
    t.equal(liveEnd, 0, 'the live canvas ends on the RDP recording\'s last frame, pixel for pixel');
    noPageErrors(t, carol.errors);
    await carol.ctx.close();

    // alice opens the same grant from My access: the desktop in the browser, in a new tab.
    const alice = await signIn(browser, rtg, 'alice', '/portal/access', { width: 1000, height: 800 });
    const open = alice.page.locator(`article[data-grant="${grant.id}"] a:has-text("Open")`);
    await open.waitFor({ timeout: 10_000 });
    const [tab] = await Promise.all([alice.ctx.waitForEvent('page'), open.click()]);
    const tabErrors: string[] = [];
    tab.on('pageerror', (e) => tabErrors.push(`pageerror: ${e.message}`));
    t.match(tab.url(), /\/rdp\/view\?target=rdesk&role=user$/, `the tab is the RDP desktop for the grant (${tab.url()})`);
    await tab.waitForFunction(() => document.body.dataset.desktop && Number(document.getElementById('screen')?.dataset.frames ?? 0) >= 1, null, { timeout: 20_000 });
    const mine = (await rtg.store.getSession(String(await tab.getAttribute('body', 'data-session'))))!;
    t.equal(mine.grantId, grant.id, 'a session on alice\'s grant');
    const account = String((await waitFor(async () => (await rtg.store.listAudit({ action: 'rdp.connect', subject: mine.id }))[0], 10_000, 'rdp.connect')).data.account);
    await sleep(3000); // the xterm starts inside the session
    // Typed until the xterm has it (under load it may map a moment later and miss the first keys).
    const typed = () => existsSync(`/home/${account}/open.txt`) && readFileSync(`/home/${account}/open.txt`, 'utf8').trim() !== '';
    for (let attempt = 0; attempt < 3 && !typed(); attempt++) {
      await tab.click('#screen', { position: { x: 150, y: 120 } });
      for (const k of ['i', 'd', ' ', '-', 'u', 'n', ' ']) await tab.keyboard.press(k === ' ' ? 'Space' : k === '-' ? 'Minus' : `Key${k.toUpperCase()}`);
      await tab.keyboard.down('Shift'); await tab.keyboard.press('Period'); await tab.keyboard.up('Shift');
      for (const k of ' open.txt') await tab.keyboard.press(k === ' ' ? 'Space' : k === '.' ? 'Period' : `Key${k.toUpperCase()}`);
      await tab.keyboard.press('Enter');
      await waitFor(typed, 8_000, 'open.txt in the minted account\'s home').catch(() => false);
    }
    t.equal(readFileSync(`/home/${account}/open.txt`, 'utf8').trim(), account, '`id -un` typed in the tab ran as the minted account');
    noPageErrors(t, tabErrors);
    await tab.close();
    await waitFor(async () => (await rtg.store.getSession(mine.id))?.state === 'ended', 15_000, 'the browser RDP session to end with the tab');
    noPageErrors(t, alice.errors);
    await alice.ctx.close();
  });
}
