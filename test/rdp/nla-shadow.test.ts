/**
 * Upstream NLA against a real CredSSP/NTLMv2 server: FreeRDP's shadow server (`/sec:nla +auth`,
 * accounts in a winpr SAM file) as the stand-in for a Windows target. The gateway mints the
 * session's password into the SAM file ('sam-file' credentials), does CredSSP upstream while the
 * person's xfreerdp talks TLS to the gateway, the screen is recorded, and afterwards the SAM line
 * is replaced so the minted password no longer opens the server.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManualClock } from '../../policies/clock.js';
import { encodePng, ScreenReplay } from '../../recorder/screen/index.js';
import { ntHash } from '../../protocols/rdp/nlmp.js';
import { samLine } from '../../protocols/rdp/samfile.js';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { bannerHeight, bannerOff, below } from '../support/banner.js';
import { haveShadowTools, probe, startShadow, startXvfbSized, type Shadow } from './shadow.js';
import { clientWindow, pixelDiff, screenshot, sleep, waitFor, xfreerdp, type Display } from './support.js';

const missing = haveShadowTools();
if (missing) throw new Error(`RDP NLA tests need real parts: ${missing} (run node proxy/bin/ensure-deps.js test)`);

const artifacts = join(import.meta.dirname, '..', 'artifacts', 'rdp');
mkdirSync(artifacts, { recursive: true });

const USER = 'tgshadow';
const clock = new ManualClock(Date.now());
const dir = mkdtempSync(join(tmpdir(), 'tg-rdp-nla-'));
const sam = join(dir, 'SAM');
let shadow: Shadow;
let tg: TestGateway;
let viewer: Display;
const logLines: string[] = [];
/** Every connection secret, minted hash and password this file handles: none may reach logs or recordings. */
const secrets = new Set<string>(['initial-pw']);

function samHash(user: string): string | null {
  for (const l of readFileSync(sam, 'utf8').split('\n')) {
    const f = l.split(':');
    if (f[0] === user) return f[3] ?? null;
  }
  return null;
}

t.before(async () => {
  const winprLine = spawnSync('winpr-hash', ['-u', USER, '-p', 'initial-pw', '-f', 'sam'], { encoding: 'utf8' }).stdout.trim();
  const other = spawnSync('winpr-hash', ['-u', 'someone', '-p', 'other-pw', '-f', 'sam'], { encoding: 'utf8' }).stdout.trim();
  writeFileSync(sam, `${other}\n${winprLine}\n`, { mode: 0o600 });
  shadow = await startShadow(sam);
  viewer = await startXvfbSized('1024x768x24');
  tg = await startTestGateway({
    clock,
    logSink: (l) => logLines.push(l),
    listeners: ['rdp'],
    targets: [{
      name: 'shadow', protocol: 'rdp', address: `${shadow.host}:${shadow.port}`,
      roles: [{ name: 'user', channels: [] }],
      credentials: { mode: 'sam-file', path: sam, user: USER },
    }],
  });
});

t.teardown(async () => {
  await tg?.close().catch(() => {});
  await shadow?.stop();
  viewer?.stop();
  rmSync(dir, { recursive: true, force: true });
});

t.test('our SAM lines are what winpr-hash prints', async (t) => {
  const winprLine = spawnSync('winpr-hash', ['-u', 'bob', '-p', 'Pässword 1', '-f', 'sam'], { encoding: 'utf8' }).stdout.trim();
  t.equal(samLine('bob', '', ntHash('Pässword 1')), winprLine);
});

t.test('the shadow server really checks NLA credentials', async (t) => {
  const wrong = await probe(viewer.display, [`/v:${shadow.host}:${shadow.port}`, '/sec:nla', `/u:${USER}`, '/p:not-the-password']);
  t.equal(wrong.result, 'refused', 'a wrong password is refused');
  const right = await probe(viewer.display, [`/v:${shadow.host}:${shadow.port}`, '/sec:nla', `/u:${USER}`, '/p:initial-pw']);
  t.equal(right.result, 'connected', 'the SAM file\'s password connects');
  const tlsOnly = await probe(viewer.display, [`/v:${shadow.host}:${shadow.port}`, '/sec:tls', `/u:${USER}`, '/p:initial-pw']);
  t.equal(tlsOnly.result, 'refused', 'TLS-only security is refused: the target demands NLA');
});

t.test('xfreerdp (TLS) → gateway → NLA target with a minted password; recorded; rotated afterwards', async (t) => {
  const initial = samHash(USER);
  const grant = await tg.grant('alice', 'shadow', 'user');
  const s = await tg.secret('alice', grant.id);
  secrets.add(s.secret);
  const c = xfreerdp(viewer.display, [`/v:${s.host}:${s.port}`, '/sec:tls', `/u:${s.username}`, `/p:${s.secret}`, '/bpp:32', '/network:lan']);
  t.teardown(() => c.stop());
  const live = await waitFor('a live rdp session', async () => {
    const r = await tg.api('carol', 'GET', '/api/v1/sessions');
    return (r.body as any[]).find((x) => x.protocol === 'rdp' && x.state === 'active');
  }).catch((e) => { t.comment(c.output().slice(-3000)); throw e; });
  const connect = await waitFor('the rdp.connect audit event', async () => (await tg.store.listAudit({ action: 'rdp.connect', subject: live.id }))[0], 20_000)
    .catch((e) => { t.comment(shadow.output().slice(-3000)); throw e; });
  t.equal(connect.data.security, 'nla', 'the gateway logged in to the target with NLA (CredSSP/NTLMv2)');
  t.equal(connect.data.account, USER, 'as the SAM account');
  const minted = samHash(USER);
  t.ok(minted && minted !== initial, 'a new password hash was written for the session');
  secrets.add(minted!);
  t.equal(samHash('someone'), ntHash('other-pw').toString('hex'), 'other SAM lines are kept');
  t.equal(statSync(sam).mode & 0o777, 0o600, 'the SAM file stays 0600');
  const leases = await tg.store.listLeases({ sessionId: live.id, state: ['active'] });
  t.ok(leases.some((l) => l.kind === 'rdp-sam-password'), 'the password is held in a session lease');
  t.notMatch(JSON.stringify(leases.map((l) => l.data)), new RegExp(minted!), 'the lease data holds no hash or password');

  const win = await waitFor('the xfreerdp window', () => clientWindow(viewer.display));
  await sleep(3000);
  // The minted password (its hash, pass-the-hash) opens the target directly while the session runs.
  const during = await probe(shadow.display.display, [`/v:${shadow.host}:${shadow.port}`, '/sec:nla', `/u:${USER}`, `/pth:${minted}`]);
  t.equal(during.result, 'connected', 'the minted credential opens the target during the session');
  await sleep(1500);
  const shot = screenshot(viewer.display, win, join(artifacts, 'nla-client-window.png'));

  const k = await tg.api('carol', 'POST', `/api/v1/sessions/${live.id}/kill`, { reason: 'test' });
  t.equal(k.status, 200, 'SOC kills the session');
  const code = await Promise.race([c.exited, sleep(5000).then(() => 'still running')]);
  t.not(code, 'still running', 'xfreerdp exits after the kill');
  await waitFor('the session to end', async () => { const x = await tg.store.getSession(live.id); return x?.state === 'ended' ? x : null; }, 15_000);
  await waitFor('the lease to be revoked', async () => (await tg.store.listLeases({ sessionId: live.id, state: ['active'] })).length === 0, 15_000);

  const after = samHash(USER);
  t.ok(after && after !== minted && after !== initial, 'the SAM line was replaced with an unknown password');
  t.equal(samHash('someone'), ntHash('other-pw').toString('hex'), 'other SAM lines are still kept');
  const dead = await probe(shadow.display.display, [`/v:${shadow.host}:${shadow.port}`, '/sec:nla', `/u:${USER}`, `/pth:${minted}`]);
  t.equal(dead.result, 'refused', 'the minted credential no longer opens the target');
  const oldPw = await probe(shadow.display.display, [`/v:${shadow.host}:${shadow.port}`, '/sec:nla', `/u:${USER}`, '/p:initial-pw']);
  t.equal(oldPw.result, 'refused', 'nor does the password from before');

  const rec = (await tg.store.listRecordings({ sessionId: live.id })).find((r) => r.kind === 'screen');
  t.ok(rec, 'a screen recording exists');
  const lines = readFileSync(rec!.path.startsWith('/') ? rec!.path : join(tg.dataDir, rec!.path), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const last = new ScreenReplay(lines).frameAt();
  t.ok(last, 'the recording replays to a last frame');
  writeFileSync(join(artifacts, 'nla-recording-last-frame.png'), encodePng(last!.width, last!.height, last!.data, { fast: false }));
  let navy = 0;
  for (let i = 0; i < last!.data.length; i += 4) if (last!.data[i]! < 16 && last!.data[i + 1]! < 16 && last!.data[i + 2]! > 100) navy++;
  t.ok(navy > 100_000, `the recording shows the target's navy xterm (${navy} pixels)`);
  // The kill's reason is the last frame's banner (drawn by the gateway); below it, what the client showed.
  const reason = 'Tollgate: session terminated by carol: test.';
  t.equal(bannerOff(last!, reason, 'ended'), 0, 'the last recorded frame carries the reason as a banner');
  const cut = bannerHeight(last!.width, last!.height, reason);
  const diff = pixelDiff(below(shot, cut), below(last!, cut));
  t.ok(diff.mean < 4 && diff.bad < 0.01, `below it, the last recorded frame matches the client window (mean diff ${diff.mean.toFixed(2)}, ${(diff.bad * 100).toFixed(2)}% pixels off)`);
});

t.test('a wrong connection secret never touches the SAM file', async (t) => {
  const before = readFileSync(sam, 'utf8');
  const sessions = (await tg.store.listSessions({})).length;
  const grant = await tg.grant('alice', 'shadow', 'user');
  const s = await tg.secret('alice', grant.id);
  const c = xfreerdp(viewer.display, [`/v:${s.host}:${s.port}`, '/sec:tls', `/u:${s.username}`, '/p:not-the-secret']);
  t.teardown(() => c.stop());
  const code = await Promise.race([c.exited, sleep(15_000).then(() => 'still running')]);
  t.not(code, 'still running', 'xfreerdp gives up');
  t.equal(readFileSync(sam, 'utf8'), before, 'the SAM file is unchanged');
  t.equal((await tg.store.listSessions({})).length, sessions, 'no session was opened');
});

t.test('client-side NLA: xfreerdp /sec:nla → gateway (CredSSP server, NTLMv2 against the one-time secret) → NLA target', async (t) => {
  const grant = await tg.grant('alice', 'shadow', 'user');
  const s = await tg.secret('alice', grant.id);
  t.match(s.commands['xfreerdp (NLA)'], /\/sec:nla/, 'the API prints an NLA command line too');
  secrets.add(s.secret);
  const before = readFileSync(sam, 'utf8');
  const sessions = (await tg.store.listSessions({})).length;

  const refusals = async () => (await tg.store.listAudit({ action: 'access.refused' })).filter((a) => a.data.protocol === 'rdp' && a.data.code === 'bad_secret').length;
  const refused0 = await refusals();
  // A wrong secret: CredSSP fails, nothing is opened, the audit says why.
  const wrong = await probe(viewer.display, [`/v:${s.host}:${s.port}`, '/sec:nla', `/u:${s.username}`, '/p:not-the-secret']);
  t.equal(wrong.result, 'refused', 'a wrong secret is refused during NLA');
  t.equal(readFileSync(sam, 'utf8'), before, 'the SAM file is untouched');
  t.equal((await tg.store.listSessions({})).length, sessions, 'no session was opened');
  t.equal(await refusals(), refused0 + 1, 'the audit says the secret was wrong (bad_secret)');

  // The right secret: connected through NLA on both legs.
  const c = xfreerdp(viewer.display, [`/v:${s.host}:${s.port}`, '/sec:nla', `/u:${s.username}`, `/p:${s.secret}`, '/bpp:32', '/network:lan']);
  t.teardown(() => c.stop());
  const live = await waitFor('a live rdp session', async () => {
    const r = await tg.api('carol', 'GET', '/api/v1/sessions');
    return (r.body as any[]).find((x) => x.protocol === 'rdp' && x.state === 'active');
  }).catch((e) => { t.comment(c.output().slice(-3000)); throw e; });
  const connect = await waitFor('the rdp.connect audit event', async () => (await tg.store.listAudit({ action: 'rdp.connect', subject: live.id }))[0], 20_000);
  t.equal(connect.data.security, 'nla', 'the target leg is NLA too');
  const allowed = (await tg.store.listAudit({ action: 'access.allowed' })).filter((a) => a.data.protocol === 'rdp').pop();
  t.equal(allowed?.data.via, 'secret-proof', 'the secret was proven by NTLMv2, not typed');
  await waitFor('the xfreerdp window', () => clientWindow(viewer.display));

  // The same secret again: already used.
  const again = await probe(viewer.display, [`/v:${s.host}:${s.port}`, '/sec:nla', `/u:${s.username}`, `/p:${s.secret}`]);
  t.equal(again.result, 'refused', 'a reused secret is refused');
  // With NTLM the gateway only holds verifiers of unused secrets, so a reused one reads as "wrong".
  t.equal(await refusals(), refused0 + 2, 'the reuse is audited as a refused (no longer valid) secret');
  t.equal((await tg.store.listSessions({})).length, sessions + 1, 'only the good connection opened a session');

  const k = await tg.api('carol', 'POST', `/api/v1/sessions/${live.id}/kill`, { reason: 'test' });
  t.equal(k.status, 200, 'SOC kills the session');
  const code = await Promise.race([c.exited, sleep(5000).then(() => 'still running')]);
  t.not(code, 'still running', 'xfreerdp exits after the kill');
  await waitFor('the lease to be revoked', async () => (await tg.store.listLeases({ sessionId: live.id, state: ['active'] })).length === 0, 15_000);
  t.not(samHash(USER), null, 'the SAM account is still there (rotated, not removed)');
});

t.test('no connection secret, minted hash or password in the logs, the store or the recordings', async (t) => {
  t.ok(secrets.size >= 4, `${secrets.size} secrets to look for`);
  const logs = logLines.join('\n');
  t.match(logs, /rdp: session password installed in the SAM file/, 'the logs cover the sessions (not vacuous)');
  t.match(logs, /rdp: SAM password rotated after the session/, 'and the rotations');
  const files: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p); else if (e.isFile()) files.push(p);
    }
  };
  walk(tg.dataDir);
  t.ok(files.some((f) => f.endsWith('.ndjson') || /record/i.test(f)), `recordings are among the ${files.length} data files`);
  for (const x of secrets) {
    t.notOk(logs.includes(x), `secret ${x.slice(0, 3)}… is not in the logs`);
    const hit = files.find((f) => readFileSync(f).includes(Buffer.from(x)));
    t.notOk(hit, `secret ${x.slice(0, 3)}… is not in any data file${hit ? ` (found in ${hit})` : ''}`);
  }
});
