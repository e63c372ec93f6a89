/**
 * VNC through the real gateway: x11vnc on Xvfb with an xterm, TigerVNC's vncviewer (VeNCrypt
 * X509Plain) on a second Xvfb driven with xdotool, vncsnapshot (classic auth), and a small RFB
 * client for refusals, kill and expiry. Checks the keystroke log, the recording's last frame
 * against a screenshot taken on the server, and that the minted password is dead afterwards.
 */
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { ManualClock } from '../../policies/clock.js';
import { Secret } from '../../auth/secret.js';
import { parseNdjson } from '../../recorder/index.js';
import { ScreenReplay, decodePng, encodePng } from '../../recorder/screen/index.js';
import { startDesktop, startXvfb, type VncDesktop } from '../../protocols/vnc/demo.js';
import { readVncPasswdFile, vncPasswdFile } from '../../protocols/vnc/des.js';
import { dialUpstream } from '../../protocols/vnc/upstream.js';
import { encodeSetEncodings, encodeUpdateRequest } from '../../protocols/vnc/client-messages.js';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { have, rfbLogin, run, sleep, waitFor } from './client.js';
import { bannerHeight, bannerOff, below } from '../support/banner.js';

const ARTIFACTS = join(import.meta.dirname, '..', 'artifacts', 'vnc');
// A fresh clone has no artifacts folder (it is not tracked): make it here, not in some other test file.
mkdirSync(ARTIFACTS, { recursive: true });
const needed = ['Xvfb', 'x11vnc', 'xterm', 'vncviewer', 'xdotool', 'import', 'vncsnapshot'];
const missing = needed.filter((c) => !have(c));
if (missing.length) {
  t.fail(`missing: ${missing.join(' ')} (apt-get install xvfb x11vnc xterm tigervnc-viewer xdotool imagemagick vncsnapshot)`);
} else {
  const clock = new ManualClock(Date.now());
  const dir = mkdtempSync(join(tmpdir(), 'tg-vnc-'));
  const desktop = (await startDesktop(join(dir, 'server'), { size: '800x600x24' })) as VncDesktop;
  t.teardown(async () => { await desktop.stop(); rmSync(dir, { recursive: true, force: true }); });
  const shellDir = join(dir, 'server');
  const target = {
    name: 'desk', protocol: 'vnc', address: `127.0.0.1:${desktop.port}`,
    roles: [{ name: 'operator', clipboard: 'both' }, { name: 'viewer', viewOnly: true, clipboard: 'none' }, { name: 'noclip', clipboard: 'none' }],
    credentials: { passwordFile: desktop.passwordFile }, options: { classicAuth: true },
  };
  const tg: TestGateway = await startTestGateway({ targets: [target], listeners: ['vnc'], clock, expiryWarning: '2s' });
  t.teardown(() => tg.close());
  const { host, port } = tg.listener('vnc');
  const caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, tg.gw.tls.ca);
  const ca = tg.gw.tls.ca;
  const settle = () => waitFor(async () => (await tg.store.listSessions({ state: 'active' })).length === 0
    && (await tg.store.listLeases({ state: ['pending', 'active', 'revoking'] })).length === 0, 10_000, 'sessions to end and leases to be revoked');
  const secretFor = async (role = 'operator', duration = '1h') => {
    const g = await tg.grant('alice', 'desk', role, duration);
    return { grant: g, ...(await tg.secret('alice', g.id)) };
  };
  const recordingLines = async (sessionId: string, kind: string) => {
    const recs = (await tg.store.listRecordings()).filter((r) => r.sessionId === sessionId && r.kind === kind);
    if (!recs.length) return [];
    return parseNdjson(readFileSync(recs[0]!.path, 'utf8'));
  };
  const serverShot = async (name: string) => {
    const file = join(ARTIFACTS, name);
    const r = await run('import', ['-window', 'root', file], { DISPLAY: desktop.display });
    if (r.code !== 0) throw new Error(`import failed: ${r.err}`);
    return decodePng(readFileSync(file));
  };

  t.test('refusals end the handshake with a reason; nothing changes on the target', async (t) => {
    const before = readFileSync(desktop.passwordFile);
    const a = await rfbLogin({ host, port, ca, username: 'desk', password: 'wrong-secret' });
    t.notOk(a.ok);
    t.match(a.reason, /secret/i, `wrong secret: ${a.reason}`);
    const b = await rfbLogin({ host, port, ca, username: 'nosuch', password: 'x' });
    t.notOk(b.ok);
    t.match(b.reason, /nosuch|unknown|target/i, `unknown target: ${b.reason}`);
    const s = await secretFor();
    const c = await rfbLogin({ host, port, ca, username: 'desk', password: s.secret });
    t.ok(c.ok, 'the right secret works');
    c.sock.destroy();
    await settle();
    const d = await rfbLogin({ host, port, ca, username: 'desk', password: s.secret });
    t.notOk(d.ok);
    t.match(d.reason, /used/i, `reused secret: ${d.reason}`);
    t.same(readFileSync(desktop.passwordFile).equals(before), false, 'the password was rotated by the one real session');
    const failed = (await tg.store.listSessions({})).filter((x) => x.state === 'active');
    t.same(failed, []);
  });

  t.test('vncviewer (VeNCrypt X509Plain) types into the remote xterm; keystrokes, frame and password checks', async (t) => {
    const s = await secretFor();
    t.equal(s.secret.length, 8, 'classic auth enabled on the target: 8-character secrets');
    t.match(s.commands['vncviewer'], /VNC_USERNAME=desk VNC_PASSWORD=.* vncviewer -SecurityTypes X509Plain -X509CA/);
    const viewerX = await startXvfb('1024x768x24');
    const home = join(dir, 'viewer-home');
    mkdirSync(home, { recursive: true });
    let viewer: ChildProcess | null = null;
    t.teardown(async () => { viewer?.kill('SIGKILL'); viewerX.proc.kill('SIGTERM'); });
    const env = { DISPLAY: viewerX.display, HOME: home, VNC_USERNAME: 'desk', VNC_PASSWORD: s.secret };
    let viewerErr = '';
    viewer = spawn('vncviewer', ['-SecurityTypes', 'X509Plain', '-X509CA', caFile, '-geometry', '+0+0', `127.0.0.1::${port}`],
      { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    viewer.stderr!.on('data', (d: Buffer) => { viewerErr += d.toString(); });
    const live = await waitFor(async () => (await tg.store.listSessions({ state: 'active' }))[0], 15_000, `a live session (viewer said: ${viewerErr})`);
    t.equal(live.protocol, 'vnc');
    // The session is live before its password is minted and installed: wait for the active lease.
    await waitFor(async () => (await tg.store.listLeases({ sessionId: live.id, state: ['active'] }))[0], 15_000, 'the session password lease');
    // The minted password is what the server's password file holds now, and it opens the server.
    const minted = new Secret(readVncPasswdFile(readFileSync(desktop.passwordFile)));
    const probe = await dialUpstream({ host: '127.0.0.1', port: desktop.port, password: minted, timeoutMs: 5000, clock: new ManualClock(0) });
    probe.socket.destroy();
    t.pass('the minted password opens the server during the session');
    const win = (await waitFor(async () => {
      const r = await run('xdotool', ['search', '--name', 'via Tollgate'], { DISPLAY: viewerX.display });
      return r.out.trim().split('\n')[0];
    }, 15_000, 'the viewer window'))!;
    await run('xdotool', ['windowfocus', '--sync', win], { DISPLAY: viewerX.display });
    // Point at the remote xterm (the viewer window sits at 0,0) and click into it.
    await run('xdotool', ['mousemove', '--window', win, '200', '150'], { DISPLAY: viewerX.display });
    await run('xdotool', ['click', '1'], { DISPLAY: viewerX.display });
    await sleep(300);
    const marker = `tollgate${Date.now() % 100000}`;
    await run('xdotool', ['type', '--delay', '30', `echo ${marker} > ${marker}.txt`], { DISPLAY: viewerX.display });
    await run('xdotool', ['key', 'Return'], { DISPLAY: viewerX.display });
    await waitFor(() => existsSync(join(shellDir, `${marker}.txt`)), 10_000, 'the typed command to run on the remote xterm');
    t.equal(readFileSync(join(shellDir, `${marker}.txt`), 'utf8').trim(), marker, 'typed text reached the remote shell');
    await sleep(1500);
    const shot = await serverShot('server-screenshot.png');
    await sleep(300);
    viewer.kill('SIGTERM');
    await settle();
    const keys = (await recordingLines(live.id, 'events')).filter((e) => e.type === 'vnc.keys').map((e) => e.text).join('');
    t.match(keys, `echo ${marker} > ${marker}.txt\n`, 'keystroke log has the typed line');
    const clicks = (await recordingLines(live.id, 'events')).filter((e) => e.type === 'vnc.click');
    t.ok(clicks.length >= 1, 'the click is logged');
    const lines = await recordingLines(live.id, 'screen');
    t.ok(lines.some((l) => l.type === 'keyframe'), 'keyframes recorded');
    const replay = new ScreenReplay(lines);
    const fb = replay.frameAt()!;
    t.ok(fb, 'a frame at the end');
    writeFileSync(join(ARTIFACTS, 'recording-last-frame.png'), encodePng(fb.width, fb.height, fb.data, { fast: false }));
    t.equal(fb.width, shot.width);
    t.equal(fb.height, shot.height);
    let differing = 0;
    for (let i = 0; i < fb.data.length; i += 4) {
      const d = Math.abs(fb.data[i]! - shot.rgba[i]!) + Math.abs(fb.data[i + 1]! - shot.rgba[i + 1]!) + Math.abs(fb.data[i + 2]! - shot.rgba[i + 2]!);
      if (d > 24) differing++;
    }
    const ratio = differing / (fb.width * fb.height);
    t.ok(ratio < 0.005, `recording's last frame matches the server screenshot (${(ratio * 100).toFixed(3)}% pixels differ)`);
    const verify = await tg.api('carol', 'GET', `/api/v1/recordings/${(await tg.store.listRecordings()).find((r) => r.sessionId === live.id && r.kind === 'screen')!.id}/verify`);
    t.equal(verify.body.ok, true, 'screen recording sealed');
    // After the session the minted password is dead.
    const after = await dialUpstream({ host: '127.0.0.1', port: desktop.port, password: minted, timeoutMs: 5000, clock: new ManualClock(0) }).then(
      (u) => { u.socket.destroy(); return 'opened'; }, (e: Error) => e.message);
    t.match(after, /refused/, `the minted password no longer opens the server: ${after}`);
  });

  t.test('TigerVNC\'s vncviewer: a warning banner on its screen and in the recording before expiry, the reason as the last frame', async (t) => {
    const s = await secretFor('operator', '10m');
    const viewerX = await startXvfb('1024x768x24');
    const home = join(dir, 'banner-home');
    mkdirSync(home, { recursive: true });
    const viewer = spawn('vncviewer', ['-SecurityTypes', 'X509Plain', '-X509CA', caFile, '-geometry', '+0+0', `127.0.0.1::${port}`],
      { env: { ...process.env, DISPLAY: viewerX.display, HOME: home, VNC_USERNAME: 'desk', VNC_PASSWORD: s.secret }, stdio: 'ignore' });
    t.teardown(() => { viewer.kill('SIGKILL'); viewerX.proc.kill('SIGTERM'); });
    const live = await waitFor(async () => (await tg.store.listSessions({ state: 'active' }))[0], 15_000, 'a live session');
    const win = (await waitFor(async () => (await run('xdotool', ['search', '--name', 'via Tollgate'], { DISPLAY: viewerX.display })).out.trim().split('\n')[0], 15_000, 'the viewer window'))!;
    const viewerShot = async (name: string) => {
      const file = join(ARTIFACTS, name);
      const r = await run('import', ['-window', win, file], { DISPLAY: viewerX.display });
      if (r.code !== 0) throw new Error(`import failed: ${r.err}`);
      return decodePng(readFileSync(file));
    };
    await sleep(1500); // the first full update is in
    // expiryWarning is 2 s on this gateway.
    clock.advance(10 * 60_000 - 1500);
    const warned = await waitFor(async () => (await tg.store.listAudit({ action: 'session.warned', subject: live.id }))[0], 5000, 'the warning');
    const warning = `Tollgate: your access to desk ends in ${Math.max(1, Math.round(Number(warned.data.msLeft) / 1000))} seconds (grant ${s.grant.id}).`;
    let off = 1;
    for (const until = Date.now() + 10_000; Date.now() < until && off > 0.005; await sleep(250)) {
      off = bannerOff(await viewerShot('vncviewer-warning.png'), warning, 'warning', { width: 800, height: 600 });
    }
    t.ok(off <= 0.005, `vncviewer shows the warning banner across the top of the desktop (${(off * 100).toFixed(2)}% of its pixels off)`);
    // Below it, the desktop as the server has it.
    const cut = bannerHeight(800, 600, warning);
    let rest = 1;
    for (const until = Date.now() + 10_000; Date.now() < until && rest > 0.005; await sleep(300)) {
      const a = below(await viewerShot('vncviewer-warning.png'), cut);
      const b = below(await serverShot('server-warning.png'), cut);
      let n = 0;
      for (let y = 0; y < Math.min(a.height, b.height); y++) {
        for (let x = 0; x < 800; x++) {
          const i = (y * a.width + x) * 4, j = (y * b.width + x) * 4;
          if (Math.abs(a.rgba[i]! - b.rgba[j]!) + Math.abs(a.rgba[i + 1]! - b.rgba[j + 1]!) + Math.abs(a.rgba[i + 2]! - b.rgba[j + 2]!) > 24) n++;
        }
      }
      rest = n / (800 * (600 - cut));
    }
    t.ok(rest <= 0.005, `below the banner the viewer shows the server's screen (${(rest * 100).toFixed(2)}% pixels differ)`);
    clock.advance(10_000);
    await settle();
    t.match((await tg.store.getSession(live.id))!.endReason, /^expired/);
    const lines = await recordingLines(live.id, 'screen');
    const replay = new ScreenReplay(lines);
    const endT = lines[lines.length - 1]!.t as number;
    const before = replay.frameAt(Math.max(...lines.filter((l) => (l.t as number) < endT).map((l) => l.t as number)))!;
    t.equal(bannerOff(before, warning, 'warning'), 0, 'the recording shows the warning before expiry, pixel for pixel');
    t.equal(bannerOff(replay.frameAt()!, 'Tollgate: your grant for desk expired; the session is closed.', 'ended'), 0, 'and its last frame the reason');
    const banners = (await recordingLines(live.id, 'events')).filter((e) => e.type === 'vnc.banner').map((e) => e.kind);
    t.same(banners, ['warning', 'ended'], 'both banners are in the event log');
  });

  t.test('vncsnapshot with classic VNC auth (8-character secret)', async (t) => {
    const s = await secretFor();
    const pw = join(dir, 'snap.passwd');
    writeFileSync(pw, vncPasswdFile(s.secret), { mode: 0o600 });
    const out = join(ARTIFACTS, 'vncsnapshot.jpg');
    const r = await run('vncsnapshot', ['-passwd', pw, '-allowblank', `127.0.0.1::${port}`, out], {}, 30_000);
    t.equal(r.code, 0, `vncsnapshot exits 0 (${r.err.trim().split('\n').slice(-2).join(' | ')})`);
    t.ok(existsSync(out) && readFileSync(out).length > 1000, 'a JPEG came back');
    await settle();
    const bad = join(dir, 'bad.passwd');
    writeFileSync(bad, vncPasswdFile('wrongpw1'), { mode: 0o600 });
    const r2 = await run('vncsnapshot', ['-passwd', bad, `127.0.0.1::${port}`, join(dir, 'x.jpg')], {}, 30_000);
    t.not(r2.code, 0, 'a wrong classic password is refused');
  });

  t.test('kill, lock and expiry close the viewer; a locked grant is refused', async (t) => {
    const s = await secretFor();
    const c = await rfbLogin({ host, port, ca, username: 'desk', password: s.secret });
    t.ok(c.ok);
    c.sock.write(Buffer.concat([encodeSetEncodings([16, 0, 1, -223]), encodeUpdateRequest(false, 0, 0, c.init!.width, c.init!.height)]));
    const live = await waitFor(async () => (await tg.store.listSessions({ state: 'active' }))[0], 5000, 'live session');
    await sleep(300);
    const t0 = Date.now();
    const k = await tg.api('carol', 'POST', `/api/v1/sessions/${live.id}/kill`, { reason: 'test kill' });
    t.equal(k.status, 200);
    const closedAt = await c.closed;
    t.ok(closedAt - t0 < 1000, `viewer connection closed ${closedAt - t0} ms after the kill request`);
    await settle();
    const ended = await tg.store.getSession(live.id);
    t.match(ended!.endReason, /^killed/, 'the audit/session says why');

    // A lock on the grant ends the session and refuses a new login with the reason.
    const s3 = await secretFor();
    const c3 = await rfbLogin({ host, port, ca, username: 'desk', password: s3.secret });
    t.ok(c3.ok);
    // A secret issued before the lock (a locked grant gets no new one from the API) is refused at login.
    const s4 = await tg.secret('alice', s3.grant.id);
    const l0 = Date.now();
    const lock = await tg.api('carol', 'POST', '/api/v1/locks', { scope: 'grant', value: s3.grant.id, reason: 'test lock' });
    t.equal(lock.status, 201, JSON.stringify(lock.body));
    const closed3 = await c3.closed;
    t.ok(closed3 - l0 < 1000, `lock closed the viewer (${closed3 - l0} ms)`);
    await settle();
    t.equal((await tg.api('alice', 'POST', `/api/v1/grants/${s3.grant.id}/secret`, {})).status, 403, 'no new secret for a locked grant');
    const c4 = await rfbLogin({ host, port, ca, username: 'desk', password: s4.secret });
    t.notOk(c4.ok);
    t.match(c4.reason, /lock/i, `locked grant refused with a reason: ${c4.reason}`);

    const s2 = await secretFor('operator', '30m');
    const c2 = await rfbLogin({ host, port, ca, username: 'desk', password: s2.secret });
    t.ok(c2.ok);
    clock.advance(30 * 60_000 + 1000);
    const e0 = Date.now();
    const closed2 = await c2.closed;
    t.ok(closed2 - e0 < 1000, `expiry closed the viewer (${closed2 - e0} ms)`);
    await settle();
  });
}
