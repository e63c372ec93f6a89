/**
 * Every portal page in a real Chromium against a real gateway, people signed in through the dev
 * IdP: sign-in redirect, forbidden pages, empty states, request → approve → connection command,
 * a live session (in-memory protocol module) watched over the WebSocket with its current screen
 * and new output, terminate, lock, recordings with verified seals, audit with chain status,
 * dashboard figures, the strict CSP, axe-core accessibility rules on every page. More forms and
 * error paths are in forms.test.ts.
 */
import t from 'tap';
import { fakeConnect } from '../support/fake-module.js';
import { startFakePortal, signIn, shot, noPageErrors } from './helpers.js';
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';

const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js');

t.test('portal pages', async (t) => {
  const { ft, mod, tg, browser } = await startFakePortal(t);

  t.test('signed out: pages send you to sign in, assets and unknown pages answer plainly', async (t) => {
    const r = await fetch(`${tg.url}/portal/sessions`, { redirect: 'manual' });
    t.equal(r.status, 302);
    t.equal(r.headers.get('location'), `/auth/login?returnTo=${encodeURIComponent('/portal/sessions')}`);
    const root = await fetch(`${tg.url}/`, { redirect: 'manual' });
    t.equal(root.headers.get('location'), '/portal/access');
    const css = await fetch(`${tg.url}/portal/assets/portal.css`);
    t.equal(css.status, 200);
    t.match(css.headers.get('content-type'), /text\/css/);
    t.equal((await fetch(`${tg.url}/portal/assets/..%2Fportal%2Findex.ts`)).status, 404, 'no path traversal out of the asset table');
    t.equal((await fetch(`${tg.url}/portal/assets/nope.js`)).status, 404);
    t.equal((await fetch(`${tg.url}/api/v1/portal/dashboard`)).status, 401);
    t.equal((await tg.api('alice', 'GET', '/api/v1/portal/dashboard')).status, 403, 'dashboard API is for SOC and approvers');
  });

  t.test('forbidden pages say why, in a page', async (t) => {
    const { ctx, page, errors } = await signIn(browser, tg, 'alice');
    for (const p of ['/portal/sessions', '/portal/recordings', '/portal/audit', '/portal/approvals', '/portal/dashboard', '/portal/sessions/nope']) {
      const res = await page.goto(`${tg.url}${p}`);
      t.equal(res?.status(), 403, `${p} is 403 for alice`);
      t.match(await page.textContent('[role=alert]'), /signed in as alice/i, `${p} names who is signed in`);
    }
    const nav = await page.locator('nav[aria-label=Portal] a').allTextContents();
    t.same(nav, ['My access'], 'alice only sees the pages she may open');
    await shot(page, 'forbidden', { commit: false });
    const missing = await page.goto(`${tg.url}/portal/nothing-here`);
    t.equal(missing?.status(), 404);
    t.match(await page.textContent('main'), /no portal page/i);
    const csp = (await page.goto(`${tg.url}/portal/access`))?.headers()['content-security-policy'] ?? '';
    t.match(csp, /script-src 'self' 'wasm-unsafe-eval'/);
    t.notMatch(csp, /unsafe-inline/, 'no inline scripts or styles allowed');
    t.equal(await page.locator('script:not([src])').count(), 0, 'no inline script in the page');
    await noPageErrors(t, errors);
    await ctx.close();
  });

  t.test('empty states for the SOC and approvers', async (t) => {
    const carol = await signIn(browser, tg, 'carol', '/portal/sessions');
    await carol.page.waitForSelector('#sessions .empty');
    t.match(await carol.page.textContent('#sessions'), /No live sessions/);
    await carol.page.waitForSelector('#targets tr[data-target="box"]');
    await carol.page.click('#targets button:has-text("Check box")');
    await carol.page.waitForFunction(() => /failed/.test(document.querySelector('#targets tr[data-target="box"] .check')?.textContent ?? ''));
    t.match(await carol.page.textContent('#targets tr[data-target="box"] .check'), /cannot check targets/, 'a module without a check says so');
    await carol.page.goto(`${tg.url}/portal/recordings`);
    await carol.page.waitForSelector('#results .empty');
    t.match(await carol.page.textContent('#results'), /No recordings yet/);
    const nav = await carol.page.locator('nav[aria-label=Portal] a').allTextContents();
    t.ok(nav.includes('Sessions') && nav.includes('Audit'), 'the SOC sees the console pages');
    await carol.page.goto(`${tg.url}/portal/access`);
    await carol.page.waitForSelector('#targets .empty');
    t.match(await carol.page.textContent('#targets'), /No target is open to you/);
    t.match(await carol.page.textContent('#grants'), /No active grants/);
    await noPageErrors(t, carol.errors);
    await carol.ctx.close();
    const bob = await signIn(browser, tg, 'bob', '/portal/approvals');
    await bob.page.waitForSelector('#pending .empty');
    t.match(await bob.page.textContent('#pending'), /Nothing is waiting for you/);
    t.match(await bob.page.textContent('#reviews'), /No open break-glass reviews/);
    await bob.page.goto(`${tg.url}/portal/dashboard`);
    await bob.page.waitForSelector('.figure');
    t.match(await bob.page.textContent('#figures'), /—Privileged access through JIT\s*0 of 0 sessions/, 'no sessions yet: no percentage invented');
    t.match(await bob.page.textContent('#standing'), /None: no minted credential exists outside a live session/);
    await noPageErrors(t, bob.errors);
    await bob.ctx.close();
  });

  let sessionId = '';
  t.test('request, approve, command, watch live, terminate, recordings, audit, dashboard', async (t) => {
    const alice = await signIn(browser, tg, 'alice', '/portal/access?request=box');
    const a = alice.page;
    await a.waitForSelector('#targets table');
    t.equal(await a.inputValue('#rq-target'), 'box', '?request= prefills the target');
    t.same(await a.locator('#rq-role option').allTextContents(), ['user', 'admin']);
    // bad input is refused with the field named and focused
    await a.fill('#rq-duration', 'forever');
    await a.fill('#rq-reason', 'INC-1 check disk');
    await a.click('#request-form button[type=submit]');
    await a.waitForFunction(() => document.getElementById('rq-error')!.textContent !== '');
    t.match(await a.textContent('#rq-error'), /duration/i, 'the error names the duration');
    t.equal(await a.getAttribute('#rq-duration', 'aria-invalid'), 'true');
    await a.fill('#rq-duration', '30m');
    await a.click('#request-form button[type=submit]');
    await a.waitForSelector('#requests [data-request]');
    t.match(await a.textContent('#flash'), /waiting for approval/);
    t.match(await a.textContent('#requests'), /pending/);
    t.match(await a.textContent('#requests .progress'), /stage 1 of 1/);
    await shot(a, 'access-pending', { commit: false });

    const bob = await signIn(browser, tg, 'bob', '/portal/approvals');
    const b = bob.page;
    await b.waitForSelector('#pending [data-request]');
    t.match(await b.textContent('#pending'), /alice → box/);
    t.match(await b.textContent('#pending'), /INC-1 check disk/);
    await b.fill('#pending textarea', 'ok for INC-1');
    await b.click('#pending button:has-text("Approve alice")');
    await b.waitForSelector('#pending .empty');
    t.match(await b.textContent('#flash'), /Approved: alice now has box/);
    await noPageErrors(t, bob.errors);
    await bob.ctx.close();

    await a.waitForSelector('#grants [data-grant]', { timeout: 15_000 });
    t.match(await a.textContent('#flash'), /Approved: your access to box is ready/, 'the open page notices the approval by itself');
    t.match(await a.textContent('#grants'), /box/);
    t.match(await a.textContent('#grants [data-until]'), /left/);
    t.match(await a.textContent('#requests'), /Approved by bob/);
    await a.click('#grants button:has-text("Get connection command")');
    await a.waitForSelector('#grants pre.cmd');
    const cmd = await a.textContent('#grants pre.cmd[data-client=fake]');
    const m = /fake --user (\S+) --secret (\S+)/.exec(cmd ?? '');
    t.ok(m, `a ready-to-copy command: ${(cmd ?? "").replace(/--secret \S+/, '--secret <secret>')}`);
    // A connection file (RDP's .rdp) is offered as a download named after the target, same text.
    const fileText = await a.textContent('#grants pre.cmd[data-client="fake (.fakeconf file)"]');
    const [dl] = await Promise.all([a.waitForEvent('download'), a.click('#grants a.download')]);
    t.equal(dl.suggestedFilename(), 'box.fakeconf', 'the download is named after the target');
    t.equal(readFileSync((await dl.path())!, 'utf8'), `${(fileText ?? '').replace(/\n/g, '\r\n')}\r\n`, 'the downloaded file holds the shown lines (CRLF, as mstsc writes them)');
    await noPageErrors(t, alice.errors);

    // the "client" connects with what the page showed
    const conn = await fakeConnect(mod.ctx!, ft, m![1]!, m![2]!);
    t.ok(conn.ok, 'the command from the page connects');
    if (!conn.ok) return;
    sessionId = conn.session.id;
    const cast = conn.session.recording.cast({ width: 80, height: 24, env: { TERM: 'xterm' } });
    cast.output('alice@box:~$ ');
    cast.input('uptime\r');
    cast.output('uptime\r\n 15:00:01 up 3 days, load average: 0.01\r\nalice@box:~$ ');
    const q = conn.session.recording.queries().statement({ statement: 'SELECT 1', kind: 'SELECT' });
    q.finish({ rows: 1 });

    const carol = await signIn(browser, tg, 'carol', '/portal/sessions');
    const c = carol.page;
    await c.waitForSelector(`#sessions tr[data-session="${sessionId}"]`);
    const row = await c.textContent(`#sessions tr[data-session="${sessionId}"]`);
    t.match(row, /alice/);
    t.match(row, /box/);
    t.match(row, /fake/);
    t.match(row, /\d+m \d\ds/, 'time left shown');
    await shot(c, 'sessions-fake', { commit: false });
    await c.click(`#sessions tr[data-session="${sessionId}"] a:has-text("Watch alice")`);
    await c.waitForURL(`${tg.url}/portal/sessions/${sessionId}`);
    await c.waitForFunction(() => /load average/.test(document.querySelector('#player')?.textContent ?? ''), null, { timeout: 15_000 });
    t.pass('the watcher starts from the current screen');
    t.match(await c.textContent('#meta'), /alice/);
    await c.waitForFunction(() => /\d+m \d\ds left/.test(document.getElementById('meta')?.textContent ?? ''), null, { timeout: 5_000 });
    t.pass('time left counts down on the watch page');
    t.match(await c.textContent('#stmts'), /SELECT 1/, 'statements shown live');
    cast.output('df -h\r\n/dev/sda1  40G  12G  28G  30% /\r\n');
    await c.waitForFunction(() => /dev\/sda1/.test(document.querySelector('#player')?.textContent ?? ''), null, { timeout: 10_000 });
    t.pass('new output appears live');
    conn.session.recording.queries().statement({ statement: 'DELETE FROM t', kind: 'DELETE', decision: 'deny' }).finish({ error: 'denied by rule' });
    await c.waitForFunction(() => /DELETE FROM t/.test(document.getElementById('stmts')?.textContent ?? ''));
    await shot(c, 'watch-fake', { commit: false });
    // terminate needs a reason
    await c.click('#kill-form button');
    t.equal(await c.getAttribute('#kill-reason', 'aria-invalid'), null, 'the browser asks for the required reason first');
    await c.fill('#kill-reason', 'suspicious df');
    await c.click('#kill-form button');
    await c.waitForFunction(() => /has ended/.test(document.getElementById('state')?.textContent ?? ''), null, { timeout: 10_000 });
    t.ok(conn.ended.length, 'the session was terminated');
    t.match(conn.ended[0]?.message ?? '', /terminated by carol: suspicious df/);
    await noPageErrors(t, carol.errors);

    // reopening the watch page of an ended session says so
    await c.reload();
    await c.waitForFunction(() => /not live/.test(document.getElementById('state')?.textContent ?? ''));
    t.match(await c.textContent('#state'), /not live/);

    // recordings: search, seal, verify, replay with keystrokes, statements
    await c.goto(`${tg.url}/portal/recordings`);
    await c.waitForSelector(`#results tr[data-session="${sessionId}"]`);
    await c.waitForFunction(() => [...document.querySelectorAll('#results .verify')].every((e) => /verified/.test(e.textContent ?? '')));
    t.match(await c.textContent('#results'), /sha256:/);
    await c.fill('#f-identity', 'nobody');
    await c.click('#search button');
    await c.waitForSelector('#results .empty');
    t.match(await c.textContent('#results'), /No recordings match/);
    await c.fill('#f-identity', 'alice');
    await c.fill('#f-since', '2099-01-01T00:00');
    await c.click('#search button');
    await c.waitForSelector('#results .empty');
    t.match(await c.textContent('#results'), /No recordings match/, 'a time window with nothing in it');
    await c.fill('#f-since', '');
    await c.click('#search button');
    await c.waitForSelector(`#results tr[data-session="${sessionId}"]`);
    await c.click(`#results a:has-text("Replay box")`);
    await c.waitForURL(`${tg.url}/portal/recordings/${sessionId}`);
    await c.waitForSelector('.rec[data-kind=cast] .keys kbd');
    t.match(await c.textContent('.keys'), /uptime/, 'keystrokes listed');
    await c.waitForFunction(() => [...document.querySelectorAll('.rec .verify')].length >= 2 && [...document.querySelectorAll('.rec .verify')].every((e) => /seal verified/.test(e.textContent ?? '')));
    const recs = await tg.store.listRecordings({ sessionId });
    for (const r of recs) t.match(await c.textContent('#recs'), r.sha256!, `full seal of the ${r.kind} recording shown`);
    await c.waitForSelector('.rec[data-kind=queries] table');
    t.match(await c.textContent('.rec[data-kind=queries]'), /DELETE FROM t/);
    await c.waitForSelector('.rec[data-kind=cast] .ap-term', { timeout: 10_000 });
    await shot(c, 'replay-fake', { commit: false });

    // audit: chain verified, filter by the session
    await c.goto(`${tg.url}/portal/audit?subject=${sessionId}`);
    await c.waitForSelector('#events table');
    await c.waitForFunction(() => /chain verified/.test(document.getElementById('chain')?.textContent ?? ''));
    const audit = await c.textContent('#events');
    t.match(audit, /session\.kill/);
    t.match(audit, /suspicious df/);
    await c.fill('#a-subject', '');
    await c.fill('#a-action', 'nothing.*');
    await c.click('#filters button');
    await c.waitForSelector('#events .empty');

    // dashboard
    await c.goto(`${tg.url}/portal/dashboard`);
    await c.waitForSelector('.figure');
    const figs = await c.textContent('#figures');
    t.match(figs, /Standing privileges remaining\s*/);
    t.match(figs, /Writing\s*Session recordings\s*on failure: refuse/, 'the recording fail-safe is shown');
    t.match(figs, /Writing\s*Audit store/);
    t.match(figs, /1 of 1 sessions under an approved request/);
    t.equal(await c.locator('.chart svg rect').count(), 4 * 14, 'four charts of 14 days');
    await noPageErrors(t, carol.errors);
    await carol.ctx.close();
    await alice.ctx.close();
  });

  t.test('lock the identity from the console', async (t) => {
    const g = await tg.grant('alice', 'vault', 'reader');
    const s = await tg.secret('alice', g.id);
    const conn = await fakeConnect(mod.ctx!, ft, s.username, s.secret);
    t.ok(conn.ok);
    if (!conn.ok) return;
    // Taken before the lock: while locked, alice gets no new secret at all.
    const spare = await tg.secret('alice', g.id);
    const carol = await signIn(browser, tg, 'carol', '/portal/sessions');
    const c = carol.page;
    const row = `#sessions tr[data-session="${conn.session.id}"]`;
    await c.waitForSelector(row);
    await c.fill(`${row} input[placeholder^="Why lock"]`, 'account compromise suspected');
    await c.click(`${row} button:has-text("Lock alice")`);
    await c.waitForFunction(() => /alice is locked/.test(document.getElementById('flash')?.textContent ?? ''));
    t.ok(conn.ended.length, 'the live session ended with the lock');
    await c.waitForSelector('#locks table');
    t.match(await c.textContent('#locks'), /account compromise suspected/);
    const again = await fakeConnect(mod.ctx!, ft, s.username, spare.secret);
    t.notOk(again.ok, 'new connections are refused while locked');
    t.equal((await tg.api('alice', 'POST', `/api/v1/grants/${g.id}/secret`, {})).status, 403, 'and no new secret is issued');
    await c.click('#locks button:has-text("Remove lock on alice")');
    await c.waitForSelector('#locks .empty');
    t.equal(ft.accounts.size, 0, 'no account left behind');
    await noPageErrors(t, carol.errors);
    await carol.ctx.close();
  });

  t.test('alice ends her own live session from My access', async (t) => {
    const g = (await tg.store.listGrants({ identity: 'alice', state: 'active' })).find((x) => x.target === 'box')!;
    const s = await tg.secret('alice', g.id);
    const conn = await fakeConnect(mod.ctx!, ft, s.username, s.secret);
    t.ok(conn.ok);
    if (!conn.ok) return;
    const alice = await signIn(browser, tg, 'alice');
    const row = `#mysessions tr[data-session="${conn.session.id}"]`;
    await alice.page.waitForSelector(row);
    await alice.page.click(`${row} button:has-text("End my session on box")`);
    await alice.page.waitForFunction(() => /was ended/.test(document.getElementById('flash')?.textContent ?? ''));
    t.match(conn.ended[0]?.message ?? '', /terminated by alice/);
    t.equal(ft.accounts.size, 0, 'its account is gone');
    await noPageErrors(t, alice.errors);
    await alice.ctx.close();
  });

  t.test('labels, landmarks, axe-core WCAG 2 A/AA rules and a phone-sized screen on every page', async (t) => {
    const carol = await signIn(browser, tg, 'carol', '/portal/access', { width: 390, height: 844 }, { bypassCSP: true });
    const c = carol.page;
    for (const p of ['/portal/access', '/portal/approvals', '/portal/sessions', '/portal/recordings', '/portal/audit', '/portal/dashboard', `/portal/recordings/${sessionId}`]) {
      await c.goto(`${tg.url}${p}`);
      await c.waitForFunction(() => !document.querySelector('[aria-busy="true"]'), null, { timeout: 15_000 });
      const report = await c.evaluate(() => {
        const unlabeled = [...document.querySelectorAll('input:not([type=hidden]), select, textarea')].filter((e) => {
          const id = e.getAttribute('id');
          return !(id && document.querySelector(`label[for="${id}"]`)) && !e.getAttribute('aria-label') && !e.closest('label');
        }).map((e) => e.outerHTML.slice(0, 80));
        return {
          unlabeled,
          main: document.querySelectorAll('main').length,
          h1: document.querySelectorAll('h1').length,
          nav: document.querySelectorAll('nav').length,
          overflow: document.documentElement.scrollWidth - window.innerWidth,
          lang: document.documentElement.lang,
        };
      });
      await c.addScriptTag({ path: AXE });
      const axe = await c.evaluate(async () => {
        const r = await (window as unknown as { axe: { run(ctx: Document, o: object): Promise<{ violations: { id: string; nodes: { target: string[] }[] }[] }> } }).axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } });
        return r.violations.map((v) => `${v.id}: ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
      });
      t.same(axe, [], `${p}: no axe-core violations`);
      t.same(report.unlabeled, [], `${p}: every field has a label`);
      t.ok(report.main === 1 && report.h1 === 1 && report.nav === 1 && report.lang === 'en', `${p}: one main, one h1, a nav, a language`);
      t.ok(report.overflow <= 0, `${p}: no sideways scrolling on a phone (${report.overflow}px)`);
    }
    await shot(c, 'replay-phone', { commit: false });
    await noPageErrors(t, carol.errors);
    await carol.ctx.close();
  });

});

