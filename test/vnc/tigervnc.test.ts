/**
 * TigerVNC's Xvnc as the target, its password installed by an admin command (`vncpasswd -f` into
 * the server's PasswordFile, reading the minted password on stdin): login through the gateway,
 * ZRLE updates recorded, the recording's last frame against a screenshot of the server, and the
 * minted password dead after the session.
 */
import t from 'tap';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { ManualClock } from '../../policies/clock.js';
import { Secret } from '../../auth/secret.js';
import { parseNdjson } from '../../recorder/index.js';
import { ScreenReplay, decodePng, encodePng } from '../../recorder/screen/index.js';
import { freePort, waitPort } from '../../protocols/net.js';
import { readVncPasswdFile, vncPasswdFile } from '../../protocols/vnc/des.js';
import { dialUpstream } from '../../protocols/vnc/upstream.js';
import { encodeSetEncodings, encodeUpdateRequest, encodeKeyEvent } from '../../protocols/vnc/client-messages.js';
import { startTestGateway } from '../support/gateway.js';
import { have, rfbLogin, run, sleep, waitFor } from './client.js';

const ARTIFACTS = join(import.meta.dirname, '..', 'artifacts', 'vnc');
// A fresh clone has no artifacts folder (it is not tracked): make it here, not in some other test file.
mkdirSync(ARTIFACTS, { recursive: true });
if (!have('Xvnc') || !have('vncpasswd') || !have('import')) {
  t.fail('TigerVNC Xvnc and vncpasswd (tigervnc-standalone-server, tigervnc-tools) and imagemagick are required');
} else {
  const dir = mkdtempSync(join(tmpdir(), 'tg-xvnc-'));
  const pwFile = join(dir, 'passwd');
  writeFileSync(pwFile, vncPasswdFile('startpw1'), { mode: 0o600 });
  const port = await freePort();
  const procs: ChildProcess[] = [];
  t.teardown(async () => {
    for (const p of procs.reverse()) p.kill('SIGTERM');
    await sleep(300);
    rmSync(dir, { recursive: true, force: true });
  });
  const display = await new Promise<string>((resolve, reject) => {
    const x = spawn('Xvnc', ['-displayfd', '3', '-rfbport', String(port), '-localhost', '-SecurityTypes', 'VncAuth', '-PasswordFile', pwFile,
      '-geometry', '640x480', '-depth', '24', '-AlwaysShared', '-nolisten', 'tcp'], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
    procs.push(x);
    let out = '';
    (x.stdio[3] as NodeJS.ReadableStream).on('data', (d: Buffer) => { out += d.toString(); const m = /^(\d+)\n/.exec(out); if (m) resolve(`:${m[1]}`); });
    x.on('exit', (c) => reject(new Error(`Xvnc exited ${c}`)));
  });
  await waitPort('127.0.0.1', port);
  procs.push(spawn('xterm', ['-geometry', '60x10+20+20', '-bg', 'navy', '-fg', 'yellow'], { env: { ...process.env, DISPLAY: display }, stdio: 'ignore', cwd: dir }));
  await sleep(800);
  const target = {
    name: 'xvnc', protocol: 'vnc', address: `127.0.0.1:${port}`, roles: [{ name: 'operator' }],
    credentials: { installCommand: ['sh', '-c', `umask 077; vncpasswd -f > '${pwFile}'`] },
  };
  const tg = await startTestGateway({ targets: [target], listeners: ['vnc'], clock: new ManualClock(Date.now()) });
  t.teardown(() => tg.close());

  t.test('Xvnc with a password installed by vncpasswd -f: ZRLE session recorded, frame matches, minted password dead after', async (t) => {
    const g = await tg.grant('alice', 'xvnc', 'operator');
    const s = await tg.secret('alice', g.id);
    const gw = tg.listener('vnc');
    const c = await rfbLogin({ host: gw.host, port: gw.port, ca: tg.gw.tls.ca, username: 'xvnc', password: s.secret });
    t.ok(c.ok, `login through the gateway (${c.reason ?? 'ok'})`);
    t.equal(c.init!.width, 640);
    const minted = new Secret(readVncPasswdFile(readFileSync(pwFile)));
    c.reader.detach();
    c.sock.resume();
    c.sock.write(Buffer.concat([encodeSetEncodings([16, 1, 0, -223]), encodeUpdateRequest(false, 0, 0, 640, 480)]));
    // Type "x" into the xterm through the gateway, then keep asking for updates.
    c.sock.write(Buffer.concat([encodeKeyEvent(true, 0x78), encodeKeyEvent(false, 0x78)]));
    for (let i = 0; i < 15; i++) { c.sock.write(encodeUpdateRequest(true, 0, 0, 640, 480)); await sleep(100); }
    await sleep(500);
    c.sock.write(encodeUpdateRequest(true, 0, 0, 640, 480));
    await sleep(500);
    const shotFile = join(ARTIFACTS, 'xvnc-server-screenshot.png');
    const r = await run('import', ['-window', 'root', shotFile], { DISPLAY: display });
    t.equal(r.code, 0, 'screenshot of the Xvnc display');
    c.sock.write(encodeUpdateRequest(true, 0, 0, 640, 480));
    await sleep(500);
    const live = (await tg.store.listSessions({ state: 'active' }))[0]!;
    c.sock.destroy();
    await waitFor(async () => (await tg.store.listLeases({ state: ['pending', 'active', 'revoking'] })).length === 0
      && (await tg.store.listSessions({ state: 'active' })).length === 0, 10_000, 'session end');
    const rec = (await tg.store.listRecordings()).find((x) => x.sessionId === live.id && x.kind === 'screen')!;
    const fb = new ScreenReplay(parseNdjson(readFileSync(rec.path, 'utf8'))).frameAt()!;
    writeFileSync(join(ARTIFACTS, 'xvnc-recording-last-frame.png'), encodePng(fb.width, fb.height, fb.data, { fast: false }));
    const shot = decodePng(readFileSync(shotFile));
    t.equal(fb.width, shot.width);
    let differing = 0;
    let nonBlack = 0;
    for (let i = 0; i < fb.data.length; i += 4) {
      const d = Math.abs(fb.data[i]! - shot.rgba[i]!) + Math.abs(fb.data[i + 1]! - shot.rgba[i + 1]!) + Math.abs(fb.data[i + 2]! - shot.rgba[i + 2]!);
      if (d > 24) differing++;
      if (fb.data[i]! + fb.data[i + 1]! + fb.data[i + 2]! > 30) nonBlack++;
    }
    t.ok(nonBlack > 1000, `the recorded frame has content (${nonBlack} non-black pixels)`);
    t.ok(differing / (fb.width * fb.height) < 0.005, `recording's last frame matches the Xvnc screenshot (${differing} pixels differ)`);
    const after = await dialUpstream({ host: '127.0.0.1', port, password: minted, timeoutMs: 5000, clock: new ManualClock(0) }).then(
      (u) => { u.socket.destroy(); return 'opened'; }, (e: Error) => e.message);
    t.match(after, /refused|failed/i, `the minted password no longer opens Xvnc: ${after}`);
  });
}
