/**
 * The whole story in a real Chromium against a real gateway and a real OpenSSH sshd:
 * alice signs in through the dev IdP and requests access, bob approves on his page (on a phone
 * screen too), alice copies the command and a real `ssh` session starts, carol sees it live,
 * watches typed output appear, terminates it, and finds the recording (seal verified, keystrokes)
 * and the audit trail; the dashboard counts it. Screenshots of each page go to
 * test/artifacts/screens/ and proxy/portal/screens/ (README images).
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import type { Browser } from 'playwright-core';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { haveSshd, startTestSshd, Terminal, SSH_OPTS, runClient, until, usersWithPrefix, userExists } from '../support/sshd.js';
import type { TestGateway } from '../support/gateway.js';
import { launchChromium, startPortalGateway, signIn, shot } from './helpers.js';

const PREFIX = 'tgp-';

t.test('alice requests, bob approves, alice connects with ssh, carol watches and terminates', { skip: !haveSshd && 'needs root and /usr/sbin/sshd' }, async (t) => {
  const env = await startTestSshd(t, { eph: 'web07', cert: 'web07-cert', pw: 'web07-pw' });
  const eph = { ...env.targets[0]!, credentials: { ...env.targets[0]!.credentials, prefix: PREFIX } };
  const tg: TestGateway = await startPortalGateway({ targets: [eph], listeners: ['ssh'] });
  let closed = false;
  t.teardown(async () => {
    if (!closed) await tg.close();
    for (const u of usersWithPrefix(PREFIX)) { spawnSync('pkill', ['-KILL', '-u', u]); spawnSync('userdel', ['-r', '-f', u]); }
  });
  const browser: Browser = await launchChromium();
  t.teardown(() => browser.close());
  const allErrors: string[] = [];

  // ---- alice signs in through the dev IdP and requests access
  const alice = await signIn(browser, tg, 'alice', '/portal/access?request=web07');
  const a = alice.page;
  await a.waitForSelector('#targets table');
  t.equal(await a.inputValue('#rq-target'), 'web07');
  await a.selectOption('#rq-role', 'admin');
  await a.fill('#rq-duration', '45m');
  await a.fill('#rq-reason', 'INC-4711: nginx keeps restarting on web07');
  await a.click('#request-form button[type=submit]');
  await a.waitForSelector('#requests [data-request]');
  t.match(await a.textContent('#requests'), /pending/);
  await shot(a, 'access-request');

  // alice may not open the console pages
  const forbidden = await a.goto(`${tg.url}/portal/sessions`);
  t.equal(forbidden?.status(), 403);
  await shot(a, 'forbidden');

  // ---- bob approves on his page (phone-sized screen)
  const bob = await signIn(browser, tg, 'bob', '/portal/approvals', { width: 390, height: 844 });
  const b = bob.page;
  await b.waitForSelector('#pending [data-request]');
  t.match(await b.textContent('#pending'), /alice → web07/);
  t.match(await b.textContent('#pending'), /INC-4711/);
  const overflow = await b.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  t.ok(overflow <= 0, `no horizontal scrolling on a phone (${overflow}px)`);
  await shot(b, 'approvals-phone');
  await b.setViewportSize({ width: 800, height: 900 });
  await shot(b, 'approvals');
  await b.fill('#pending textarea', 'go ahead, INC-4711');
  await b.click('#pending button:has-text("Approve alice")');
  await b.waitForSelector('#pending .empty');
  allErrors.push(...bob.errors);
  await bob.ctx.close();

  // ---- alice copies the command
  await alice.ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: tg.url });
  await a.goto(`${tg.url}/portal/access`);
  await a.waitForSelector('#grants [data-grant="' + (await tg.store.listGrants({ identity: 'alice' }))[0]!.id + '"]');
  t.match(await a.textContent('#requests'), /Approved by bob/);
  await a.click('#grants button:has-text("Get connection command")');
  await a.waitForSelector('#grants pre.cmd[data-client="ssh (sshpass)"]');
  await a.click('#grants button[aria-label="Copy the ssh (sshpass) command"]');
  await a.waitForSelector('#grants button:has-text("Copied")');
  const copied = await a.evaluate(() => navigator.clipboard.readText());
  t.equal(copied, await a.textContent('#grants pre.cmd[data-client="ssh (sshpass)"]'), 'the Copy button puts the command on the clipboard');
  await shot(a, 'access-grant');
  allErrors.push(...alice.errors);
  await alice.ctx.close();

  // ... and runs it: a real ssh under a terminal
  const m = /^curl -fsS (\S+) -o tollgate_known_hosts && sshpass -p (\S+) ssh -p (\d+) -o UserKnownHostsFile=tollgate_known_hosts -o StrictHostKeyChecking=yes (\S+)@(\S+)$/.exec(copied);
  t.ok(m, `the copied command is a complete ssh command line: ${copied.replace(/-p \S+ ssh/, '-p <secret> ssh')}`);
  if (!m) return;
  const secret = m[2]!.replace(/^'(.*)'$/, '$1');
  // Same command, the gateway's host key checked strictly against the known_hosts it names (in a temp file).
  const knownHosts = join(tmpdir(), `tg-story-known-hosts-${process.pid}`);
  writeFileSync(knownHosts, await (await fetch(m[1]!)).text());
  t.teardown(() => rmSync(knownHosts, { force: true }));
  const term = new Terminal(secret, ['-p', m[3]!, `${m[4]}@${m[5]}`], ['-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'StrictHostKeyChecking=yes', ...SSH_OPTS.slice(4)]);
  t.teardown(() => term.kill());
  await term.waitFor(/\$ $/m, 30_000);
  term.type('echo ready-$((20+3))\r');
  await term.waitFor(/ready-23/);
  const live = await until(async () => (await tg.store.listSessions({ identity: 'alice', state: 'active' }))[0], 15_000, 'live session');
  const account = await until(async () => (await tg.store.listLeases({ sessionId: live.id }))[0]?.data['account'] as string | undefined, 15_000, 'lease');
  t.ok(userExists(account), `ephemeral account ${account} exists during the session`);

  // ---- carol sees it live and watches
  const carol = await signIn(browser, tg, 'carol', '/portal/sessions');
  const c = carol.page;
  const row = `#sessions tr[data-session="${live.id}"]`;
  await c.waitForSelector(row);
  const rowText = await c.textContent(row);
  t.match(rowText, /alice/);
  t.match(rowText, /web07/);
  t.match(rowText, /ssh/);
  t.match(rowText, /admin/);
  await c.click('#targets button:has-text("Check web07")');
  await c.waitForFunction(() => /reachable/.test(document.querySelector('#targets tr[data-target="web07"] .check')?.textContent ?? ''), null, { timeout: 20_000 });
  t.match(await c.textContent('#targets tr[data-target="web07"] .check'), /ok reachable, admin credential works/, 'the SOC checks the target from the console');
  await shot(c, 'sessions');
  await c.click(`${row} a:has-text("Watch alice")`);
  await c.waitForURL(`${tg.url}/portal/sessions/${live.id}`);
  await c.waitForFunction(() => /ready-23/.test(document.querySelector('#player')?.textContent ?? ''), null, { timeout: 15_000 });
  t.pass('the watcher starts from the current screen (what alice typed before carol came)');
  term.type('for i in 1 2 3; do echo "tick-$i"; done; hostname\r');
  await term.waitFor(/tick-3/);
  await c.waitForFunction(() => /tick-3/.test(document.querySelector('#player')?.textContent ?? ''), null, { timeout: 15_000 });
  t.pass('typed output appears live in the browser');
  await c.waitForFunction(() => /for i in 1 2 3/.test(document.getElementById('live-keys')?.textContent ?? ''), null, { timeout: 10_000 });
  t.pass('the keystrokes are shown live too');
  await c.waitForTimeout(1500);
  const left1 = await c.textContent('#meta [data-until]');
  await c.waitForFunction((before) => document.querySelector('#meta [data-until]')?.textContent !== before, left1, { timeout: 5_000 });
  t.pass('and it ticks');
  t.match(await c.textContent('#meta'), /Time left\d+m \d\ds left/, 'time left counts down');
  await shot(c, 'watch');

  // ---- carol terminates it
  await c.fill('#kill-reason', 'INC-4711 closed; end of maintenance window');
  await c.click('#kill-form button');
  const code = await term.closed;
  t.not(code, 0, 'the ssh client is disconnected');
  t.match(term.out, /terminated by carol/, 'alice is told who ended it and why');
  await c.waitForFunction(() => /has ended|not live/.test(document.getElementById('state')?.textContent ?? ''), null, { timeout: 15_000 });
  const ended = await until(async () => { const s = await tg.store.getSession(live.id); return s?.state === 'ended' ? s : null; }, 15_000, 'session ended');
  t.match(ended.endReason, /^killed/);
  await until(() => !userExists(account), 15_000, 'account removed');
  t.pass('the ephemeral account is gone');

  t.equal(await c.locator('#state a:has-text("Open the recording")').count(), 1, 'the ended session links to its recording');
  // ---- carol finds the recording
  await c.goto(`${tg.url}/portal/recordings?identity=alice`);
  await c.waitForSelector(`#results tr[data-session="${live.id}"]`);
  await c.waitForFunction(() => { const v = [...document.querySelectorAll('#results .verify')]; return v.length > 0 && v.every((e) => /verified/.test(e.textContent ?? '')); }, null, { timeout: 15_000 });
  await shot(c, 'recordings');
  await c.click(`#results tr[data-session="${live.id}"] a`);
  await c.waitForURL(`${tg.url}/portal/recordings/${live.id}`);
  await c.waitForSelector('.rec[data-kind=cast] .keys kbd');
  t.match(await c.textContent('.keys'), /tick/, 'keystrokes shown');
  await c.waitForFunction(() => { const v = [...document.querySelectorAll('.rec .verify')]; return v.length > 0 && v.every((e) => /seal verified/.test(e.textContent ?? '')); }, null, { timeout: 15_000 });
  const recs = await tg.store.listRecordings({ sessionId: live.id });
  const cast = recs.find((r) => r.kind === 'cast');
  t.ok(cast?.sha256, 'the cast is sealed');
  t.match(await c.textContent('#recs'), cast!.sha256!, 'its seal is shown');
  await c.waitForSelector('.rec[data-kind=cast] .ap-term', { timeout: 15_000 });
  // Start the replay (a click toggles play; retry if the player was still loading).
  for (let i = 0; i < 3; i++) {
    await c.click('.rec[data-kind=cast] .ap-player');
    const played = await c.waitForFunction(() => /tick-3/.test(document.querySelector('.rec[data-kind=cast] .player')?.textContent ?? ''), null, { timeout: 10_000 }).then(() => true, () => false);
    if (played) break;
  }
  await c.waitForFunction(() => /tick-3/.test(document.querySelector('.rec[data-kind=cast] .player')?.textContent ?? ''), null, { timeout: 5_000 });
  t.pass('the replay plays the recorded output');
  await c.waitForFunction(() => /tick/.test(document.querySelector('.keys li.current')?.textContent ?? ''), null, { timeout: 10_000 });
  t.pass('the keystroke being replayed is highlighted');
  await shot(c, 'replay');

  // ---- and the audit trail
  await c.click('#meta a:has-text("this session")');
  await c.waitForURL(`${tg.url}/portal/audit?subject=${live.id}`);
  await c.waitForSelector('#events table');
  t.equal(await c.locator('#more').isVisible(), false, 'no "Load more" when everything is shown');
  await c.waitForFunction(() => /chain verified/.test(document.getElementById('chain')?.textContent ?? ''));
  const audit = await c.textContent('#events');
  t.match(audit, /session\.kill/);
  t.match(audit, /INC-4711 closed/);
  t.match(audit, /session\.watch/, 'watching is audited too');
  await shot(c, 'audit');

  // ---- a file transfer under the same grant shows up as a transfer in its recording
  const tmp = mkdtempSync(join(tmpdir(), 'tg-portal-scp-'));
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
  writeFileSync(join(tmp, 'nginx.conf'), 'worker_processes 4;\n');
  const s2 = await tg.secret('alice', ended.grantId);
  const scp = await runClient(s2.secret, 'scp', ['-P', String(tg.listener('ssh').port), join(tmp, 'nginx.conf'), `${s2.username}@127.0.0.1:`]);
  t.equal(scp.code, 0, `scp upload works (${scp.stderr})`);
  const scpSession = await until(async () => (await tg.store.listSessions({ grantId: ended.grantId })).find((x) => x.id !== live.id && x.state === 'ended'), 15_000, 'scp session ended');
  await c.goto(`${tg.url}/portal/recordings/${scpSession.id}`);
  await c.waitForSelector('.rec[data-kind=events] tr.transfer', { timeout: 15_000 });
  t.match(await c.textContent('.rec[data-kind=events]'), /file-transfer.*nginx\.conf/s, 'the upload is listed as a transfer');
  await shot(c, 'replay-transfer');

  // ---- the dashboard counts it (once the scp session's teardown has revoked its lease)
  await until(async () => (await tg.store.listLeases({ state: ['pending', 'active', 'revoking'] })).length === 0, 15_000, 'leases revoked');
  await c.goto(`${tg.url}/portal/dashboard`);
  await c.waitForSelector('.figure');
  const figs = await c.textContent('#figures');
  t.match(figs, /(^|\D)0Standing privileges remaining/, 'no standing privilege left');
  t.match(figs, /2 of 2 sessions under an approved request/);
  t.match(figs, /over 1 decisions/);
  await shot(c, 'dashboard');
  allErrors.push(...carol.errors);
  await carol.ctx.close();

  t.same(allErrors.filter((e) => !/favicon|Failed to load resource/.test(e)), [], 'no script errors or CSP violations on any page');
  await tg.close();
  closed = true;
  t.same(usersWithPrefix(PREFIX), [], 'no account left on the machine');
});
