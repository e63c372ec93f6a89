/**
 * End to end with real parts: Debian's xrdp 0.9 (security_layer=tls) + xorgxrdp with an xterm as
 * the session, xfreerdp under Xvfb through the gateway with a connection secret from the API.
 * Checks the minted account runs the desktop, keystrokes and the screen are recorded (last frame
 * vs a screenshot of the client's window), kill and expiry close xfreerdp, the account is gone,
 * and wrong or reused secrets leave nothing behind.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ManualClock } from '../../policies/clock.js';
import { encodePng, ScreenReplay } from '../../recorder/screen/index.js';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { bannerHeight, bannerOff, below } from '../support/banner.js';
import {
  clientWindow, haveRdpTools, key, mintedAccounts, pixelDiff, screenshot, sleep, startXvfb, typeText, userExists, waitFor, withXrdp,
  xfreerdp, type Display,
} from './support.js';

const PREFIX = 'tgre-';
const missing = haveRdpTools();
if (missing) throw new Error(`RDP end-to-end tests need real parts: ${missing} (run node proxy/bin/ensure-deps.js test)`);

const artifacts = join(import.meta.dirname, '..', 'artifacts', 'rdp');
mkdirSync(artifacts, { recursive: true });

const clock = new ManualClock(Date.now());
let tg: TestGateway;
let xvfb: Display;
let stopXrdp: () => Promise<void>;

t.before(async () => {
  const srv = await withXrdp();
  stopXrdp = srv.stop;
  xvfb = await startXvfb();
  tg = await startTestGateway({
    clock,
    listeners: ['rdp'],
    targets: [{
      name: 'desk', protocol: 'rdp', address: `${srv.host}:${srv.port}`,
      roles: [{ name: 'user', channels: ['cliprdr'] }, { name: 'admin', groups: ['adm'], channels: ['cliprdr', 'rdpdr'] }],
      credentials: { mode: 'local-account', prefix: PREFIX },
    }],
  });
});

t.teardown(async () => {
  const t0 = Date.now();
  await tg?.close().catch(() => {});
  if (process.env.RDP_TEST_TIMING) console.error('gateway closed', Date.now() - t0);
  xvfb?.stop();
  await stopXrdp?.();
  if (process.env.RDP_TEST_TIMING) console.error('xrdp stopped', Date.now() - t0);
  for (const u of mintedAccounts(PREFIX)) {
    // Only reached when a test failed half-way: leave the host clean.
    await import('node:child_process').then((cp) => { cp.spawnSync('pkill', ['-KILL', '-u', u]); cp.spawnSync('userdel', ['-r', '-f', u]); });
  }
});

async function liveSession(): Promise<any> {
  return waitFor('a live rdp session', async () => {
    const r = await tg.api('carol', 'GET', '/api/v1/sessions');
    return (r.body as any[]).find((s) => s.protocol === 'rdp' && s.state === 'active');
  });
}

async function sessionEnded(id: string): Promise<any> {
  return waitFor('the session to end', async () => {
    const s = await tg.store.getSession(id);
    return s && s.state === 'ended' ? s : null;
  }, 15_000);
}

/** The account the session's upstream connection used (audited once the target answered). */
async function accountOf(sessionId: string): Promise<string> {
  const a = await waitFor('the rdp.connect audit event', async () => (await tg.store.listAudit({ action: 'rdp.connect', subject: sessionId }))[0]);
  return String(a.data.account ?? '');
}

t.test('xfreerdp through the gateway: minted account, keystrokes and screen recorded, kill closes the client', async (t) => {
  const grant = await tg.grant('alice', 'desk', 'user');
  const s = await tg.secret('alice', grant.id);
  t.match(s.commands.xfreerdp, /xfreerdp \/v:.* \/sec:tls \/u:desk(:user)? \/p:\S+ \/cert:deny,fingerprint:sha256:[0-9a-f:]{95}$/, 'the API prints an xfreerdp command line');
  const c = xfreerdp(xvfb.display, [`/v:${s.host}:${s.port}`, '/sec:tls', `/u:${s.username}`, `/p:${s.secret}`, '/bpp:16']);
  t.teardown(() => c.stop());
  const live = await liveSession();
  const account = await accountOf(live.id);
  t.match(account, new RegExp(`^${PREFIX}alice-[a-z0-9]{4}$`), 'a per-session account was minted');
  t.ok(userExists(account), 'the account exists while the session runs');
  const frames: { type: string; data: any }[] = [];
  const sub = tg.gw.recorder.live.subscribe(live.id, (f) => frames.push(f as never));
  t.teardown(() => sub.unsubscribe());
  const win = await waitFor('the xfreerdp window', () => clientWindow(xvfb.display));
  await sleep(4000); // the xterm starts inside the session
  typeText(xvfb.display, 'id -un');
  key(xvfb.display, 'Return');
  await sleep(2500);
  const ps = (await import('node:child_process')).spawnSync('pgrep', ['-u', account, '-l']).stdout.toString();
  t.match(ps, /xterm/, 'the remote xterm runs as the minted account');
  const shot = screenshot(xvfb.display, win, join(artifacts, 'client-window.png'));
  t.ok(frames.some((f) => f.type === 'screen' && (f.data.type === 'rect' || f.data.type === 'keyframe')), 'a live watcher receives screen updates');
  t.ok(frames.some((f) => f.type === 'screen' && f.data.type === 'input' && f.data.kind === 'key'), 'and keystrokes on the screen timeline');
  const late = tg.gw.recorder.live.subscribe(live.id, () => {});
  t.ok(late.snapshot.some((f) => f.type === 'screen' && (f.data as any).type === 'keyframe'), 'a late watcher starts from a keyframe (the current screen)');
  late.unsubscribe();

  const killed = Date.now();
  const k = await tg.api('carol', 'POST', `/api/v1/sessions/${live.id}/kill`, { reason: 'test' });
  t.equal(k.status, 200, 'SOC kills the session');
  const code = await Promise.race([c.exited, sleep(5000).then(() => 'still running')]);
  t.not(code, 'still running', 'xfreerdp exits after the kill');
  t.ok(Date.now() - killed < 3000, `client closed ${Date.now() - killed} ms after the kill`);
  const ended = await sessionEnded(live.id);
  t.match(ended.endReason, /^killed/, 'session ended as killed');
  t.notOk(userExists(account), 'the account is gone afterwards');

  const recs = await tg.store.listRecordings({ sessionId: live.id });
  const events = recs.find((r) => r.kind === 'events');
  t.ok(events, 'an events recording exists');
  const evText = readFileSync(events!.path.startsWith('/') ? events!.path : join(tg.dataDir, events!.path), 'utf8');
  const keys = evText.split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((e) => e.type === 'rdp.keys').map((e) => e.text).join('');
  t.match(keys, /id -un<Enter>/, 'keystrokes appear in the recording as text');
  const screenRec = recs.find((r) => r.kind === 'screen');
  if (!screenRec) t.comment(JSON.stringify(recs.map((r) => r.kind)));
  t.ok(screenRec, 'a screen recording exists');
  t.equal(screenRec!.state, 'sealed', 'the screen recording is sealed');
  const lines = readFileSync(screenRec!.path.startsWith('/') ? screenRec!.path : join(tg.dataDir, screenRec!.path), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const replay = new ScreenReplay(lines);
  const last = replay.frameAt();
  t.ok(last, 'the recording replays to a last frame');
  writeFileSync(join(artifacts, 'recording-last-frame.png'), encodePng(last!.width, last!.height, last!.data, { fast: false }));
  t.equal(`${last!.width}x${last!.height}`, '800x600', 'recorded desktop size');
  t.equal(`${shot.width}x${shot.height}`, '800x600', 'client window size');
  // The kill's reason is the last frame's banner; below it, the desktop as the client showed it.
  const reason = 'Tollgate: session terminated by carol: test.';
  t.equal(bannerOff(last!, reason, 'ended'), 0, 'the last recorded frame carries the reason as a banner');
  const cut = bannerHeight(800, 600, reason);
  const diff = pixelDiff(below(shot, cut), below(last!, cut));
  t.ok(diff.mean < 4 && diff.bad < 0.01, `below it, the last recorded frame matches the client window (mean diff ${diff.mean.toFixed(2)}, ${(diff.bad * 100).toFixed(2)}% pixels off)`);
  const nonWhite = (() => { let n = 0; for (let i = 0; i < last!.data.length; i += 4) if (last!.data[i]! < 128) n++; return n; })();
  t.ok(nonWhite > 200, 'the recorded frame shows text (dark pixels on the xterm)');
});

/** Run a printed command line as pasted (a shell parses it), on the test display. */
function printedClient(cmd: string): { exited: Promise<number | null>; output(): string; stop(): void } {
  const proc = spawn('sh', ['-c', `exec ${cmd} /size:800x600 /auto-reconnect-max-retries:0`], { env: { ...process.env, DISPLAY: xvfb.display }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d) => { out += d; });
  proc.stderr.on('data', (d) => { out += d; });
  const exited = new Promise<number | null>((res) => proc.on('exit', (c) => res(c)));
  return { exited, output: () => out, stop: () => { if (proc.exitCode === null) proc.kill('SIGKILL'); } };
}

t.test('the printed xfreerdp command pins the gateway certificate: it connects; with another fingerprint it refuses', async (t) => {
  const grant = await tg.grant('alice', 'desk', 'user');
  const s = await tg.secret('alice', grant.id);
  const fp = new X509Certificate(tg.gw.tls.cert).fingerprint256.toLowerCase();
  t.equal(s.commands.xfreerdp, `xfreerdp /v:${s.host}:${s.port} /sec:tls /u:desk /p:${s.secret} /cert:deny,fingerprint:sha256:${fp}`, 'pinned to the SHA-256 of the gateway certificate, no prompt, no TOFU');
  t.match(s.commands['xfreerdp (NLA)'], `/cert:deny,fingerprint:sha256:${fp}`);

  const sessionsBefore = (await tg.store.listSessions({})).length;
  const impostor = printedClient(s.commands.xfreerdp!.replace(fp, fp.replace(/[0-9a-f]/g, '0')));
  t.teardown(() => impostor.stop());
  const code = await Promise.race([impostor.exited, sleep(15_000).then(() => 'still running')]);
  t.not(code, 'still running', 'xfreerdp gives up on a certificate that is not the pinned one');
  t.not(code, 0, impostor.output().slice(-500));
  t.equal((await tg.store.listSessions({})).length, sessionsBefore, 'no session was opened');

  const c = printedClient(s.commands.xfreerdp!);
  t.teardown(() => c.stop());
  const live = await liveSession();
  t.match(await accountOf(live.id), new RegExp(`^${PREFIX}alice-[a-z0-9]{4}$`), 'the pinned client got through to the desktop');
  const k = await tg.api('carol', 'POST', `/api/v1/sessions/${live.id}/kill`, { reason: 'test' });
  t.equal(k.status, 200);
  await Promise.race([c.exited, sleep(5000)]);
  await sessionEnded(live.id);
});

t.test('before expiry a warning banner is drawn on xfreerdp\'s screen and recorded; expiry closes xfreerdp with the reason as the last frame and removes the account', async (t) => {
  const grant = await tg.grant('alice', 'desk', 'user', '10m');
  const s = await tg.secret('alice', grant.id);
  const c = xfreerdp(xvfb.display, [`/v:${s.host}:${s.port}`, '/sec:tls', `/u:${s.username}`, `/p:${s.secret}`, '/bpp:32', '/network:lan']);
  t.teardown(() => c.stop());
  const live = await liveSession();
  const account = await accountOf(live.id);
  t.ok(userExists(account), 'account exists');
  const win = await waitFor('the xfreerdp window', () => clientWindow(xvfb.display));
  await sleep(4000);
  typeText(xvfb.display, 'echo 32 bits');
  key(xvfb.display, 'Return');
  await sleep(2000);
  const clean = screenshot(xvfb.display, win, join(artifacts, 'client-window-32bpp-before-warning.png'));
  // The grant's expiryWarning (60 s): the gateway draws the warning into the screen stream itself.
  clock.advance(9 * 60_000 + 5_000);
  const warned = await waitFor('the session.warned audit', async () => (await tg.store.listAudit({ action: 'session.warned', subject: live.id }))[0]);
  const warning = `Tollgate: your access to desk ends in ${Math.max(1, Math.round(Number(warned.data.msLeft) / 1000))} seconds (grant ${grant.id}).`;
  t.ok(bannerOff(clean, warning, 'warning') > 0.5, 'no banner on the screen before the warning');
  let onScreen = 1;
  let shot = clean;
  for (const until = Date.now() + 10_000; Date.now() < until && onScreen > 0.005; await sleep(250)) {
    shot = screenshot(xvfb.display, win, join(artifacts, 'client-window-32bpp.png'));
    onScreen = bannerOff(shot, warning, 'warning');
  }
  t.ok(onScreen <= 0.005, `xfreerdp shows the warning banner (${(onScreen * 100).toFixed(2)}% of its pixels off)`);
  const at = Date.now();
  clock.advance(2 * 60_000);
  const code = await Promise.race([c.exited, sleep(5000).then(() => 'still running')]);
  t.not(code, 'still running', 'xfreerdp exits at expiry');
  t.ok(Date.now() - at < 2000, `closed ${Date.now() - at} ms after expiry`);
  const ended = await sessionEnded(live.id);
  t.match(ended.endReason, /^expired/, 'session ended as expired');
  t.notOk(userExists(account), 'account gone');
  const rec = (await tg.store.listRecordings({ sessionId: live.id })).find((r) => r.kind === 'screen');
  const lines = readFileSync(rec!.path.startsWith('/') ? rec!.path : join(tg.dataDir, rec!.path), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const last = new ScreenReplay(lines).frameAt();
  t.ok(last, 'the 32 bpp session (planar bitmaps) replays');
  writeFileSync(join(artifacts, 'recording-last-frame-32bpp.png'), encodePng(last!.width, last!.height, last!.data, { fast: false }));
  const reason = 'Tollgate: your grant for desk expired; the session is closed.';
  t.equal(bannerOff(last!, reason, 'ended'), 0, 'the last recorded frame says the grant expired');
  const events = (await tg.store.listRecordings({ sessionId: live.id })).find((r) => r.kind === 'events')!;
  const banners = readFileSync(events.path.startsWith('/') ? events.path : join(tg.dataDir, events.path), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((e) => e.type === 'rdp.banner');
  t.same(banners.map((b) => [b.kind, b.text]), [['warning', warning], ['ended', reason]], 'both banners are in the event log');
  // The warning's bitmaps are decoded (and recorded) once the relay runs again: the frame just before expiry.
  const endT = lines[lines.length - 1].t;
  const atWarning = new ScreenReplay(lines).frameAt(Math.max(...lines.filter((l) => l.t < endT).map((l) => l.t)))!;
  writeFileSync(join(artifacts, 'recording-warning-32bpp.png'), encodePng(atWarning.width, atWarning.height, atWarning.data, { fast: false }));
  t.equal(bannerOff(atWarning, warning, 'warning'), 0, 'the recording shows the warning banner before expiry, pixel for pixel');
  const cut = bannerHeight(800, 600, reason);
  const diff = pixelDiff(below(shot, cut), below(last!, cut));
  t.ok(diff.mean < 4 && diff.bad < 0.01, `32 bpp: below the banner, the last recorded frame matches the client window (mean diff ${diff.mean.toFixed(2)}, ${(diff.bad * 100).toFixed(2)}% pixels off)`);
});

t.test('wrong and reused secrets are refused before any account or upstream connection', async (t) => {
  const before = mintedAccounts(PREFIX).length;
  const sessionsBefore = (await tg.store.listSessions({})).length;
  const grant = await tg.grant('alice', 'desk', 'user');
  const s = await tg.secret('alice', grant.id);
  const wrong = xfreerdp(xvfb.display, [`/v:${s.host}:${s.port}`, '/sec:tls', `/u:${s.username}`, '/p:not-the-secret']);
  t.teardown(() => wrong.stop());
  const code = await Promise.race([wrong.exited, sleep(15_000).then(() => 'still running')]);
  t.not(code, 'still running', 'xfreerdp gives up on a wrong secret');
  t.not(code, 0, 'with a failure exit code');
  // Use the right secret once, then again.
  const ok = xfreerdp(xvfb.display, [`/v:${s.host}:${s.port}`, '/sec:tls', `/u:${s.username}`, `/p:${s.secret}`]);
  t.teardown(() => ok.stop());
  const live = await liveSession();
  const again = xfreerdp(xvfb.display, [`/v:${s.host}:${s.port}`, '/sec:tls', `/u:${s.username}`, `/p:${s.secret}`]);
  t.teardown(() => again.stop());
  const code2 = await Promise.race([again.exited, sleep(15_000).then(() => 'still running')]);
  t.not(code2, 'still running', 'a reused secret is refused');
  ok.stop();
  await sessionEnded(live.id);
  t.equal(mintedAccounts(PREFIX).length, before, 'no account left behind');
  t.equal((await tg.store.listSessions({})).length, sessionsBefore + 1, 'only the good connection opened a session');
  const refusals = (await tg.store.listAudit({ action: 'access.refused' })).filter((a) => a.data.protocol === 'rdp');
  t.ok(refusals.some((a) => a.data.code === 'bad_secret'), 'the audit says the secret was wrong');
  t.ok(refusals.some((a) => a.data.code === 'secret_used'), 'the audit says the secret was already used');
});

t.test('a client asking for RemoteFX and GFX still gets plain bitmaps: the gateway strips the codecs', async (t) => {
  const grant = await tg.grant('alice', 'desk', 'user');
  const s = await tg.secret('alice', grant.id);
  const c = xfreerdp(xvfb.display, [`/v:${s.host}:${s.port}`, '/sec:tls', `/u:${s.username}`, `/p:${s.secret}`, '/rfx', '/gfx', '/bpp:32']);
  t.teardown(() => c.stop());
  const live = await liveSession();
  await accountOf(live.id);
  const win = await waitFor('the xfreerdp window', () => clientWindow(xvfb.display));
  await sleep(4000);
  typeText(xvfb.display, 'echo rfx');
  key(xvfb.display, 'Return');
  await sleep(2000);
  const shot = screenshot(xvfb.display, win, join(artifacts, 'client-window-rfx.png'));
  const stripped = await waitFor('the capabilities audit', async () => (await tg.store.listAudit({ action: 'rdp.capabilities_stripped', subject: live.id }))[0]);
  t.ok((stripped.data.stripped as string[]).includes('bitmap codecs'), `codecs stripped (${(stripped.data.stripped as string[]).join(', ')})`);
  const k = await tg.api('carol', 'POST', `/api/v1/sessions/${live.id}/kill`, { reason: 'test' });
  t.equal(k.status, 200);
  await c.exited;
  await sessionEnded(live.id);
  const rec = (await tg.store.listRecordings({ sessionId: live.id })).find((r) => r.kind === 'screen');
  const lines = readFileSync(rec!.path.startsWith('/') ? rec!.path : join(tg.dataDir, rec!.path), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const last = new ScreenReplay(lines).frameAt();
  writeFileSync(join(artifacts, 'recording-last-frame-rfx.png'), encodePng(last!.width, last!.height, last!.data, { fast: false }));
  const cut = bannerHeight(800, 600, 'Tollgate: session terminated by carol: test.');
  const diff = pixelDiff(below(shot, cut), below(last!, cut));
  t.ok(diff.mean < 4 && diff.bad < 0.01, `the recording still matches the client window (mean diff ${diff.mean.toFixed(2)}, ${(diff.bad * 100).toFixed(2)}% pixels off)`);
});
