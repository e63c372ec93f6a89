/**
 * Crash recovery for RDP (the other protocols: crash.test.ts): `tollgate serve` as a child
 * process, xfreerdp through it to a real xrdp with a per-session local account; the gateway is
 * killed with SIGKILL mid-session, CRASH_ROUNDS times (TOLLGATE_CRASH_ROUNDS, 2 by default) with
 * different timing, and restarted at once on the same data. Each time: the minted account is gone
 * from the host within 10 s of the SIGKILL (restart included), the session is ended and audited
 * `gateway_crash`, its recordings are sealed, marked cut by a crash and verify, the screen
 * recording replays to a frame of the desktop and the keystrokes typed before the last flush are
 * in the events; the audit chain verifies.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { parseNdjson } from '../../recorder/index.js';
import { ScreenReplay } from '../../recorder/screen/index.js';
import { DEFAULT_POLICIES } from '../support/gateway.js';
import { CRASH_ROUNDS, REVOKE_BOUND_MS, checkCrashed, crashRig, stablePort } from '../support/crash.js';
import { clientWindow, haveRdpTools, mintedAccounts, sleep, startXvfb, typeText, waitFor, withXrdp, xfreerdp } from '../rdp/support.js';

const missing = haveRdpTools();
if (missing) throw new Error(`the RDP crash test needs: ${missing}`);
/** What a crash may lose of a recording: the data not yet flushed (FLUSH_MS 1 s), plus scheduling slack. */
const FLUSH_SLACK_MS = 2000;

t.test('RDP: SIGKILL mid-session, restart: account gone within 10 s, session ended gateway_crash, recordings sealed and marked', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-crash-rdp-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const prefix = `tgcr${randomBytes(2).toString('hex')}-`;
  const srv = await withXrdp();
  t.teardown(() => srv.stop());
  const xvfb = await startXvfb();
  t.teardown(() => xvfb.stop());
  t.teardown(() => {
    for (const u of mintedAccounts(prefix)) { spawnSync('pkill', ['-KILL', '-u', u]); spawnSync('userdel', ['-r', '-f', u]); }
  });
  const [http, rdpPort] = [await stablePort(), await stablePort()];
  const cfg = join(dir, 'gateway.yaml');
  writeFileSync(cfg, JSON.stringify({
    gateway: { dataDir: join(dir, 'data'), id: 'crash-rdp', logLevel: 'error', reaperInterval: '1h' },
    listeners: { http: { host: '127.0.0.1', port: http }, rdp: { host: '127.0.0.1', port: rdpPort } },
    targets: [{ name: 'crash-rdp', protocol: 'rdp', address: `${srv.host}:${srv.port}`, roles: [{ name: 'user' }], credentials: { mode: 'local-account', prefix } }],
    policies: DEFAULT_POLICIES,
  }, null, 2));
  const rig = await crashRig(t, cfg);
  const grant = await rig.grant('crash-rdp', 'user');
  const revokeMs: number[] = [];
  const startMs: number[] = [];
  for (let round = 1; round <= CRASH_ROUNDS; round++) {
    const s = await rig.secret(grant);
    const c = xfreerdp(xvfb.display, [`/v:127.0.0.1:${rdpPort}`, '/sec:tls', `/u:${s.username}`, `/p:${s.secret}`, '/bpp:16']);
    t.teardown(() => c.stop());
    const live = await waitFor(`round ${round}: a live rdp session`, async () => {
      const r = (await rig.api('carol', 'GET', '/api/v1/sessions?state=active')).body as { id: string; protocol: string }[];
      return r.length === 1 && mintedAccounts(prefix).length === 1 ? r : null;
    }, 60_000);
    await waitFor(`round ${round}: the xfreerdp window`, () => clientWindow(xvfb.display), 30_000);
    await sleep(3000); // the desktop starts inside the session
    // Keystrokes typed at known times: those before the last flush must be in the recording.
    const typed: { word: string; at: number }[] = [];
    const until = Date.now() + 2500 + ((round * 397) % 1500);
    for (let n = 1; Date.now() < until; n++) {
      const word = `k${round}x${n}`;
      typeText(xvfb.display, word);
      typed.push({ word, at: Date.now() });
      await sleep(150);
    }

    const killedAt = Date.now();
    await rig.kill();
    t.equal(mintedAccounts(prefix).length, 1, `round ${round}: the crash left the minted account behind`);
    const r = await rig.restartUntilGone(killedAt, () => mintedAccounts(prefix).length === 0);
    revokeMs.push(r.revokedMs);
    startMs.push(r.startMs);
    t.ok(r.gone && r.revokedMs <= REVOKE_BOUND_MS, `round ${round}: the account is gone within 10 s of the SIGKILL (${r.revokedMs} ms; ${r.startMs} ms of it to restart)`);
    c.stop();
    await c.exited;

    const recorded = (await checkCrashed(t, rig, round, live)).get(live[0]!.id)!;
    const frame = new ScreenReplay(parseNdjson(await recorded.file('screen'))).frameAt();
    t.ok(frame && frame.width > 0 && frame.height > 0, `round ${round}: the screen recording replays to a frame (${frame?.width}x${frame?.height})`);
    const keys = parseNdjson(await recorded.file('events')).filter((e) => e['type'] === 'rdp.keys').map((e) => String(e['text'])).join('');
    const due = typed.filter((x) => x.at < killedAt - FLUSH_SLACK_MS);
    t.ok(due.length > 0, `round ${round}: keystrokes were due in the events`);
    t.same(due.filter((x) => !keys.includes(x.word)).map((x) => x.word), [], `round ${round}: the events hold every word typed up to the last flush (${due.length} of ${typed.length})`);
  }
  t.ok(revokeMs.every((ms) => ms <= REVOKE_BOUND_MS), `every crash's account was gone within 10 s of the SIGKILL (ms: ${revokeMs.join(', ')}; of it, restart to listening, ms: ${startMs.join(', ')})`);
  rig.gw.proc.kill('SIGTERM');
  await rig.gw.exit;
});
