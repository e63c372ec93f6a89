/**
 * RDP desktops in the browser, with real parts: Debian's xrdp (an xterm as the session) behind the
 * gateway, headless Chromium on /rdp/view. The gateway is the RDP client (licensing with xrdp's
 * License Request, capabilities, finalization, input, cliprdr) with the minted account.
 *
 * - refusals: not signed in, no grant, a WebSocket from another origin;
 * - alice types `id -un > who.txt` into the desktop from the browser: the file holds the minted
 *   account; clicks and keys are recorded; the live bus carries the screen (watchable);
 *   clipboard text both ways through xrdp's channel server (xclip in the session);
 *   axe-core finds no serious issue; carol kills the session: the page says why, its canvas ends on
 *   the reason's banner and equals the recording's last keyframe pixel for pixel; the account is
 *   gone; carol replays the recording on the portal (last frame, a seek back);
 * - the canvas is the window's size at connect; after a resize, Reconnect opens the desktop at
 *   the new size;
 * - expiry: the warning is drawn on the canvas beforehand, then the page closes with the reason;
 * - clipboard rules: a to-server role gets nothing from the desktop (refusal audited), a role
 *   with clipboard none has no clipboard channel at all.
 */
import t from 'tap';
import http from 'node:http';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { ManualClock } from '../../policies/clock.js';
import { parseNdjson } from '../../recorder/index.js';
import { ScreenReplay } from '../../recorder/screen/index.js';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { bannerOff } from '../support/banner.js';
import { axeViolations, canvasPixels, differing, launchChromium, noPageErrors, type Pixels } from '../portal/helpers.js';
import { haveRdpTools, mintedAccounts, sleep, userExists, waitFor, withXrdp } from './support.js';

const PREFIX = 'tgrb-';
const missing = haveRdpTools() ?? (existsSync('/usr/bin/chromium') ? null : 'chromium is not installed') ?? (spawnSync('sh', ['-c', 'command -v xclip']).status === 0 ? null : 'xclip is not installed');
if (missing) throw new Error(`RDP browser tests need real parts: ${missing} (run node proxy/bin/ensure-deps.js test)`);

const ARTIFACTS = join(import.meta.dirname, '..', 'artifacts', 'rdp');
mkdirSync(ARTIFACTS, { recursive: true });
const clock = new ManualClock(Date.now());
const srv = await withXrdp();
let tg: TestGateway;
let browser: Browser;
t.before(async () => {
  tg = await startTestGateway({
    clock,
    listeners: ['rdp'],
    targets: [{
      name: 'desk', protocol: 'rdp', address: `${srv.host}:${srv.port}`,
      roles: [{ name: 'user' }, { name: 'paste', clipboard: 'to-server' }, { name: 'noclip', clipboard: 'none' }],
      credentials: { mode: 'local-account', prefix: PREFIX },
    }],
  });
  browser = await launchChromium();
});
t.teardown(async () => {
  await browser?.close();
  await tg?.close().catch(() => {});
  await srv.stop();
  for (const u of mintedAccounts(PREFIX)) { spawnSync('pkill', ['-KILL', '-u', u]); spawnSync('userdel', ['-r', '-f', u]); }
});

async function signedIn(user: string, viewport = { width: 1000, height: 760 }) {
  const { cookie } = await tg.gw.webSessions.create(user, null, 3_600_000);
  const ctx = await browser.newContext({ viewport });
  await ctx.addCookies([{ name: 'tg_session', value: cookie.reveal(), url: tg.url }]);
  const page = await ctx.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  return { ctx, page, errors, cookie: cookie.reveal() };
}

/** Open the desktop; resolves once it is connected and drawn, with the live session and its account. */
async function openDesktop(page: Page, role: string) {
  const before = new Set((await tg.store.listSessions({})).map((s) => s.id));
  await page.goto(`${tg.url}/rdp/view?target=desk&role=${role}`);
  await page.waitForFunction(() => document.body.dataset.desktop && Number(document.getElementById('screen')?.dataset.frames ?? 0) >= 1, null, { timeout: 20_000 });
  const live = (await tg.store.listSessions({ state: 'active' })).find((s) => !before.has(s.id))!;
  const connect = await waitFor('the rdp.connect audit', async () => (await tg.store.listAudit({ action: 'rdp.connect', subject: live.id }))[0]);
  return { live, account: String(connect.data.account) };
}

/** Type like a person on a US keyboard: shifted characters with Shift held (the page sends key codes). */
async function typeKeys(page: Page, text: string): Promise<void> {
  const shifted: Record<string, string> = { '>': 'Period', '|': 'Backslash', '_': 'Minus', ':': 'Semicolon', '"': 'Quote' };
  for (const ch of text) {
    if (shifted[ch]) {
      await page.keyboard.down('Shift');
      await page.keyboard.press(shifted[ch]!);
      await page.keyboard.up('Shift');
    } else {
      await page.keyboard.type(ch);
    }
    await sleep(25);
  }
}

/**
 * Run a command in the account's X session (xrdp's Xorg display for it). Asynchronously: the
 * gateway runs in this process and must answer xrdp's clipboard requests while xclip waits.
 */
function inSession(account: string, cmd: string[], input?: string): Promise<{ out: string; code: number | null }> {
  const ps = spawnSync('ps', ['-u', account, '-o', 'args='], { encoding: 'utf8' }).stdout;
  const display = /Xorg (:\d+)/.exec(ps)?.[1];
  if (!display) throw new Error(`no X session for ${account}: ${ps}`);
  return new Promise((resolve) => {
    const p = spawn('runuser', ['-u', account, '--', 'env', `DISPLAY=${display}`, `XAUTHORITY=/home/${account}/.Xauthority`, ...cmd], { stdio: ['pipe', 'pipe', 'ignore'] });
    let out = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    const timer = setTimeout(() => p.kill('SIGKILL'), 5000);
    p.on('close', (code) => { clearTimeout(timer); resolve({ out, code }); });
    p.stdin.on('error', () => undefined); // the command may exit before reading its stdin
    p.stdin.end(input ?? '');
  });
}

/** The desktop's X clipboard as the session sees it. */
async function sessionClipboard(account: string): Promise<string> {
  return (await inSession(account, ['xclip', '-o', '-selection', 'clipboard'])).out;
}

/** Copy text on the desktop (xclip reads it, then serves the selection from the background). */
async function copyOnDesktop(account: string, text: string): Promise<void> {
  await inSession(account, ['sh', '-c', 'xclip -i -selection clipboard >/dev/null 2>&1'], text);
}

async function eventsOf(sessionId: string) {
  const rec = await waitFor('the events recording', async () => (await tg.store.listRecordings({ sessionId })).find((r) => r.kind === 'events'));
  return parseNdjson(readFileSync(rec.path, 'utf8'));
}

async function ended(id: string) {
  return waitFor('the session to end', async () => { const s = await tg.store.getSession(id); return s?.state === 'ended' ? s : null; }, 20_000);
}

t.test('refused: not signed in, no grant, a WebSocket from another origin', async (t) => {
  const anon = await browser.newContext();
  const p = await anon.newPage();
  await p.goto(`${tg.url}/rdp/view?target=desk&role=user`);
  await p.waitForFunction(() => document.body.dataset.ended === 'true', null, { timeout: 10_000 });
  t.match(await p.textContent('#status'), /refused|disconnected/, `not signed in: ${await p.textContent('#status')}`);
  await anon.close();
  const erin = await signedIn('erin');
  await erin.page.goto(`${tg.url}/rdp/view?target=desk&role=user`);
  await erin.page.waitForFunction(() => document.body.dataset.ended === 'true', null, { timeout: 10_000 });
  t.same(await tg.store.listSessions({}), [], 'no session without a grant');
  await erin.ctx.close();
  await tg.grant('alice', 'desk', 'user');
  const { cookie } = await tg.gw.webSessions.create('alice', null, 60_000);
  const status = (origin: string) => new Promise<number>((resolve, reject) => {
    const u = new URL(tg.url);
    const req = http.request({
      host: u.hostname, port: u.port, path: '/rdp/ws?target=desk&role=user&width=800&height=600',
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', origin, cookie: `tg_session=${encodeURIComponent(cookie.reveal())}` },
    });
    req.on('upgrade', (res, sock) => { sock.destroy(); resolve(res.statusCode ?? 101); });
    req.on('response', (res) => { res.resume(); resolve(res.statusCode ?? 0); });
    req.on('error', reject);
    req.end();
  });
  t.equal(await status('https://evil.example'), 403, 'another origin is refused with alice\'s cookie');
  t.same((await tg.store.listSessions({})).filter((s) => s.state === 'active'), [], 'and opens nothing');
  t.equal(await status(tg.url), 101, 'the gateway\'s own origin is let through');
  await waitFor('that session to end', async () => (await tg.store.listSessions({ state: 'active' })).length === 0, 20_000);
});

t.test('alice works on the desktop in the browser; carol kills it; the page says why; the recording replays', async (t) => {
  const alice = await signedIn('alice');
  const page = alice.page;
  const { live, account } = await openDesktop(page, 'user');
  t.match(account, new RegExp(`^${PREFIX}alice-[a-z0-9]{4}$`), 'a per-session account was minted');
  const browserAudit = (await tg.store.listAudit({ action: 'rdp.browser', subject: live.id }))[0]!;
  const wanted = await page.evaluate(() => {
    const header = document.querySelector('header')!.getBoundingClientRect().height;
    return `${Math.floor((innerWidth - 24) / 4) * 4}x${Math.floor(innerHeight - header - 20)}`;
  });
  t.equal(`${browserAudit.data.width}x${browserAudit.data.height}`, wanted, `the desktop was asked at the window's size (${wanted})`);
  t.equal(await page.getAttribute('body', 'data-desktop'), wanted, 'and the target gave that size');
  t.equal(await page.evaluate(() => { const c = document.getElementById('screen') as HTMLCanvasElement; return `${c.width}x${c.height}`; }), wanted, 'the canvas has it');
  const frames: { type: string; data: any }[] = [];
  const sub = tg.gw.recorder.live.subscribe(live.id, (f) => frames.push(f as never));
  t.ok(sub.snapshot.some((f) => f.type === 'screen' && (f.data as any).type === 'keyframe'), 'a watcher starts from the current screen (the session is watchable)');

  await sleep(3000); // the xterm starts inside the session
  clock.advance(1000); // the gateway's clock (the recording's timeline) moves on: the replay has a before and after
  await page.click('#screen', { position: { x: 150, y: 120 } });
  await typeKeys(page, 'id -un > who.txt');
  await page.keyboard.press('Enter');
  // The shell creates who.txt before `id` writes its line: wait for the line, not only the file.
  await waitFor('who.txt with its line in the account\'s home', () => existsSync(`/home/${account}/who.txt`) && readFileSync(`/home/${account}/who.txt`, 'utf8').includes('\n'), 10_000);
  clock.advance(1000);
  t.equal(readFileSync(`/home/${account}/who.txt`, 'utf8').trim(), account, '`id -un` typed in the browser ran as the minted account');
  await typeKeys(page, 'id -un');
  await page.keyboard.press('Enter');
  await sleep(1500);
  clock.advance(1000);
  t.ok(frames.some((f) => f.type === 'screen' && f.data.type === 'input' && f.data.kind === 'key'), 'watchers see the keys live');
  sub.unsubscribe();

  // Clipboard both ways (the role's default): the browser's text lands in the desktop's X clipboard, and back.
  await page.fill('#clip', 'from the browser: tollgate');
  await page.click('#clip-send');
  const got = await waitFor('the desktop clipboard', async () => (await sessionClipboard(account)) === 'from the browser: tollgate', 10_000).catch(() => false);
  t.ok(got, `the desktop can paste the browser's text (xclip in the session: ${JSON.stringify(await sessionClipboard(account))})`);
  await page.fill('#clip', '');
  await copyOnDesktop(account, 'copied on the desktop');
  await page.waitForFunction(() => document.body.dataset.clipboard === 'copied on the desktop', null, { timeout: 10_000 });
  t.equal(await page.inputValue('#clip'), 'copied on the desktop', 'the desktop\'s copy reaches the clipboard box');

  t.same(await axeViolations(page, 'serious'), [], 'axe-core: no serious or critical issue on the desktop page');

  // carol ends it: the page says why, and its last picture is the recording's last keyframe.
  const reason = 'browser demo over';
  const k = await tg.api('carol', 'POST', `/api/v1/sessions/${live.id}/kill`, { reason });
  t.equal(k.status, 200);
  await page.waitForFunction(() => document.body.dataset.ended === 'true', null, { timeout: 10_000 });
  const message = `Tollgate: session terminated by carol: ${reason}.`;
  t.equal(await page.getAttribute('body', 'data-end-message'), message, 'the page closes with the reason');
  t.equal(await page.textContent('#status'), message, 'and shows it');
  const s = await ended(live.id);
  t.match(s.endReason, /^killed/);
  t.notOk(userExists(account), 'the account is gone');
  const rec = await waitFor('the sealed screen recording', async () => (await tg.store.listRecordings({ sessionId: live.id })).find((r) => r.kind === 'screen' && r.state === 'sealed'));
  const lines = parseNdjson(readFileSync(rec.path, 'utf8'));
  const replay = new ScreenReplay(lines);
  const lastKey = lines.filter((l) => l.type === 'keyframe').at(-1)!;
  t.equal(lastKey.t, replay.duration, 'the recording ends on a keyframe');
  const asRecorded = (time: number): Pixels => { const fb = replay.frameAt(time)!; return { width: fb.width, height: fb.height, rgba: fb.data }; };
  const last = asRecorded(replay.duration);
  const canvas = await canvasPixels(page, '#screen');
  t.equal(differing(canvas, last, 0), 0, 'the page\'s canvas is the recording\'s last keyframe, pixel for pixel');
  t.equal(bannerOff(canvas, message, 'ended'), 0, 'which carries the reason as a banner');
  const ev = await eventsOf(live.id);
  t.match(ev.filter((e) => e.type === 'rdp.keys').map((e) => e.text).join(''), /id -un > who\.txt<Enter>id -un<Enter>/, 'keystrokes from the browser are in the recording');
  t.ok(ev.some((e) => e.type === 'rdp.click'), 'clicks too');
  t.ok(ev.some((e) => e.type === 'rdp.clipboard' && e.direction === 'client_to_target' && e.text === 'from the browser: tollgate'), 'the clipboard text sent to the desktop is logged');
  t.ok(ev.some((e) => e.type === 'rdp.clipboard' && e.direction === 'target_to_client' && e.text === 'copied on the desktop'), 'and the one that came back');
  noPageErrors(t, alice.errors);
  await alice.ctx.close();

  // carol replays it on the portal: the last frame, then a seek back to before the typing.
  const carol = await signedIn('carol', { width: 1100, height: 900 });
  const rp = carol.page;
  await rp.goto(`${tg.url}/portal/recordings/${live.id}`);
  const sec = '.rec[data-kind=screen]';
  await rp.waitForSelector(`${sec}[data-ready=true]`, { timeout: 15_000 });
  const range = rp.locator(`${sec} input[type=range]`);
  const max = Number(await range.getAttribute('max'));
  t.ok(Math.abs(max - replay.duration) < 1e-6, `the seek bar spans the recording (${max} s)`);
  const at = async (time: number) => {
    await range.fill(String(time));
    await rp.waitForFunction(([q, v]) => Math.abs(Number(document.querySelector<HTMLElement>(q as string)?.dataset.position) - (v as number)) < 0.006, [sec, time] as const, { timeout: 10_000 });
    return canvasPixels(rp, `${sec} canvas`);
  };
  const end = await at(max);
  t.equal(differing(end, last, 0), 0, 'the replayed last frame is the recording\'s, pixel for pixel');
  const firstKey = replay.inputs().find((l) => l.kind === 'key')!.t;
  const mid = Math.max(replay.index[0]!.t, firstKey - 0.001);
  const middle = await at(mid);
  t.equal(differing(middle, asRecorded(mid), 0), 0, `seeking back to ${mid} s shows the frame as it was then`);
  t.ok(differing(middle, end, 0) > 0, 'which is not the last frame');
  t.ok(bannerOff(middle, message, 'ended') > 0.5, 'and has no end banner');
  noPageErrors(t, carol.errors);
  await carol.ctx.close();
});

t.test('the desktop fits the window; after a resize, Reconnect opens it at the new size', async (t) => {
  const alice = await signedIn('alice', { width: 900, height: 700 });
  const page = alice.page;
  const first = await openDesktop(page, 'user');
  const size1 = await page.getAttribute('body', 'data-desktop');
  t.notOk(await page.isVisible('#reconnect'), 'no Reconnect while the window fits');
  await page.setViewportSize({ width: 1200, height: 800 });
  await page.waitForSelector('#reconnect:visible', { timeout: 5000 });
  const label = (await page.textContent('#reconnect'))!;
  const m = /Reconnect at (\d+)x(\d+)/.exec(label);
  t.ok(m, `the page offers to reconnect at the new size (${label})`);
  await page.click('#reconnect');
  await page.waitForFunction((old) => document.body.dataset.desktop && document.body.dataset.desktop !== old && Number(document.getElementById('screen')?.dataset.frames ?? 0) >= 1, size1, { timeout: 20_000 });
  t.equal(await page.getAttribute('body', 'data-desktop'), `${m![1]}x${m![2]}`, 'the new desktop has the window\'s size');
  t.match((await ended(first.live.id)).endReason, /^client_exit/, 'the first session ended when the page left it');
  const second = (await tg.store.listSessions({ state: 'active' }))[0]!;
  await alice.ctx.close();
  await ended(second.id);
  const rec = await waitFor('the second screen recording', async () => (await tg.store.listRecordings({ sessionId: second.id })).find((r) => r.kind === 'screen' && r.state === 'sealed'));
  const header = parseNdjson(readFileSync(rec.path, 'utf8'))[0]!;
  t.equal(`${header.width}x${header.height}`, `${m![1]}x${m![2]}`, 'and is recorded at that size');
});

t.test('expiry: the warning is drawn on the canvas first, then the page closes with the reason', async (t) => {
  for (const g of await tg.store.listGrants({ identity: 'alice', state: 'active' })) await tg.api('alice', 'POST', `/api/v1/grants/${g.id}/revoke`, { reason: 'next test' });
  const grant = await tg.grant('alice', 'desk', 'user', '10m');
  const alice = await signedIn('alice', { width: 900, height: 700 });
  const page = alice.page;
  const { live, account } = await openDesktop(page, 'user');
  t.equal(live.grantId, grant.id);
  await sleep(4000); // the xterm has started (its window would cover the banner)
  clock.advance(9 * 60_000 + 5_000);
  const warned = await waitFor('the warning', async () => (await tg.store.listAudit({ action: 'session.warned', subject: live.id }))[0]);
  const warning = `Tollgate: your access to desk ends in ${Math.max(1, Math.round(Number(warned.data.msLeft) / 1000))} seconds (grant ${grant.id}).`;
  await page.waitForFunction((w) => document.getElementById('status')?.textContent === w, warning, { timeout: 10_000 });
  t.pass('the page shows the warning');
  let off = 1;
  for (const until = Date.now() + 10_000; Date.now() < until && off > 0; await sleep(200)) off = bannerOff(await canvasPixels(page, '#screen'), warning, 'warning');
  t.equal(off, 0, 'and the gateway drew it into the desktop\'s picture');
  clock.advance(2 * 60_000);
  await page.waitForFunction(() => document.body.dataset.ended === 'true', null, { timeout: 10_000 });
  const reason = 'Tollgate: your grant for desk expired; the session is closed.';
  t.equal(await page.getAttribute('body', 'data-end-message'), reason, 'expiry closes the page with the reason');
  t.equal(bannerOff(await canvasPixels(page, '#screen'), reason, 'ended'), 0, 'drawn as its last picture');
  t.match((await ended(live.id)).endReason, /^expired/);
  t.notOk(userExists(account), 'the account is gone');
  await alice.ctx.close();
});

t.test('clipboard rules: to-server gets nothing back from the desktop; none has no clipboard channel', async (t) => {
  await tg.grant('alice', 'desk', 'paste');
  const alice = await signedIn('alice', { width: 900, height: 700 });
  const page = alice.page;
  const { live, account } = await openDesktop(page, 'paste');
  await sleep(2500); // xrdp's channel server comes up with the session
  await page.fill('#clip', 'to the desktop only');
  await page.click('#clip-send');
  t.ok(await waitFor('the desktop clipboard', async () => (await sessionClipboard(account)) === 'to the desktop only', 10_000).catch(() => false), 'to-server: the browser\'s text reaches the desktop');
  await copyOnDesktop(account, 'must stay on the desktop');
  const refused = await waitFor('the refusal audit', async () => (await tg.store.listAudit({ action: 'rdp.clipboard_refused', subject: live.id })).find((a) => a.data.direction === 'target_to_client'), 10_000);
  t.equal(refused.data.message, 'format_list', 'the desktop\'s offer was refused and audited');
  await sleep(1500);
  t.not(await page.getAttribute('body', 'data-clipboard'), 'must stay on the desktop', 'nothing reached the browser');
  t.not(await page.inputValue('#clip'), 'must stay on the desktop');
  await alice.ctx.close();
  await ended(live.id);

  await tg.grant('alice', 'desk', 'noclip');
  const again = await signedIn('alice', { width: 900, height: 700 });
  const second = await openDesktop(again.page, 'noclip');
  t.equal(await again.page.isDisabled('#clip-send'), true, 'none: the page cannot send');
  const connect = (await tg.store.listAudit({ action: 'rdp.connect', subject: second.live.id }))[0]!;
  t.same(connect.data.channels, [], 'and the gateway asked the desktop for no clipboard channel');
  t.equal((await tg.store.listAudit({ action: 'rdp.browser', subject: second.live.id }))[0]!.data.clipboard, false);
  await again.ctx.close();
  await ended(second.live.id);
});
