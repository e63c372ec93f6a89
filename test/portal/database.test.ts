/**
 * The SOC console on a database session: a real PostgreSQL cluster behind the gateway, alice's
 * node-postgres client running statements, carol watching them arrive live in the browser
 * (with a denied DROP flagged), then the statement log and its seal on the recording page.
 */
import t from 'tap';
import pg from 'pg';
import type { Browser } from 'playwright-core';
import { havePostgres, startTestCluster, waitFor } from '../support/pg.js';
import { DEFAULT_POLICIES } from '../support/gateway.js';
import { launchChromium, startPortalGateway, signIn, shot } from './helpers.js';

t.test('carol watches live SQL statements of alice\'s PostgreSQL session', { skip: !havePostgres && 'needs PostgreSQL (apt-get install postgresql)' }, async (t) => {
  const cluster = await startTestCluster(t, 'orders-db');
  const policies = [{ ...DEFAULT_POLICIES[0], rules: [{ kinds: ['DROP'], action: 'deny', message: 'no DROP through Tollgate' }] }];
  const tg = await startPortalGateway({ targets: [cluster.target], listeners: ['postgres'], policies });
  t.teardown(() => tg.close());
  const browser: Browser = await launchChromium();
  t.teardown(() => browser.close());

  const role = cluster.target.roles[0]!.name;
  const grant = await tg.grant('alice', 'orders-db', role);
  const s = await tg.secret('alice', grant.id);
  const { host, port } = tg.listener('postgres');
  const client = new pg.Client({ host, port, user: s.username, password: s.secret, database: 'app', ssl: { ca: tg.gw.tls.ca } });
  client.on('error', () => undefined);
  await client.connect();
  t.teardown(() => client.end().catch(() => undefined));
  await client.query('SELECT 41 + 1 AS answer');
  const live = await waitFor(async () => (await tg.store.listSessions({ state: 'active', target: 'orders-db' }))[0], 10_000, 'live session');

  const carol = await signIn(browser, tg, 'carol', `/portal/sessions/${live.id}`);
  const c = carol.page;
  await c.waitForFunction(() => /41 \+ 1/.test(document.getElementById('stmts')?.textContent ?? ''), null, { timeout: 15_000 });
  t.pass('statements run before carol came are in the snapshot');
  t.equal(await c.locator('#term-section').isHidden(), true, 'no terminal for a database session');
  await client.query("SELECT 'live-' || 'statement' AS v");
  await client.query('DROP TABLE IF EXISTS nothing_here').catch((e: Error) => t.match(e.message, /no DROP through Tollgate/, 'the client got the policy error'));
  await c.waitForFunction(() => /DROP TABLE IF EXISTS nothing_here/.test(document.getElementById('stmts')?.textContent ?? ''), null, { timeout: 15_000 });
  t.match(await c.textContent('#stmts'), /live-/, 'a new statement appears live');
  t.match(await c.textContent('#stmts tr.flagged'), /deny/, 'the denied statement is flagged');
  await shot(c, 'watch-database');

  await c.fill('#kill-reason', 'demo over');
  await c.click('#kill-form button');
  await c.waitForFunction(() => /has ended|not live/.test(document.getElementById('state')?.textContent ?? ''), null, { timeout: 15_000 });
  await waitFor(async () => (await tg.store.getSession(live.id))?.state === 'ended', 10_000, 'session ended');

  await c.goto(`${tg.url}/portal/recordings/${live.id}`);
  await c.waitForSelector('.rec[data-kind=queries] table');
  const log = await c.textContent('.rec[data-kind=queries]');
  t.match(log, /SELECT 41 \+ 1/);
  t.match(log, /DROP TABLE IF EXISTS nothing_here/);
  await c.waitForFunction(() => { const v = [...document.querySelectorAll('.rec .verify')]; return v.length > 0 && v.every((e) => /seal verified/.test(e.textContent ?? '')); }, null, { timeout: 15_000 });
  await shot(c, 'replay-database', { commit: false });
  t.same(carol.errors.filter((e) => !/favicon|Failed to load resource/.test(e)), [], 'no script errors or CSP violations');
  await carol.ctx.close();
});
