/**
 * Hostile identities: an IdP (the dev IdP, run on its own as an external IdP would be, since the
 * gateway's built-in one only takes plain names) has users whose names (= the OIDC subject),
 * emails and groups hold quotes, semicolons, backslashes, shell and HTML syntax, newlines, NUL,
 * right-to-left marks and 1,000 characters. Each signs in through the real code and device flows:
 * it works, or it is refused with a sentence (a subject with control or direction characters, or
 * longer than 255, is refused: bad_subject). Those signed in get grants and open real sessions on
 * real targets: an ephemeral Linux account and a certificate over ssh (sshd), a PostgreSQL role, a
 * MariaDB user; the test then checks every target for stray objects (extra accounts, roles, users,
 * a marker file a shell break-out would create). Last, headless Chromium opens the portal pages that
 * show these identities (approvals, audit, sessions, my access): no injected element or script runs.
 * Not covered here: directory (Samba AD) accounts; their names come from directory-leases.ts
 * accountName, which keeps [a-z0-9] of the identity only.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import pg from 'pg';
import mysql from 'mysql2/promise';
import pino from 'pino';
import { chromium, type Browser } from 'playwright-core';
import { startDevIdp } from '../../auth/devidp.js';
import { Secret } from '../../auth/secret.js';
import { freePort } from '../../protocols/net.js';
import { apiOf, requestAndApprove, startTestGateway } from '../support/gateway.js';
import { browse, browserSignIn, CookieJar, deviceSignIn } from '../support/signin.js';
import { havePostgres, startTestCluster, waitFor } from '../support/pg.js';
import { startTestMariadb } from '../support/mariadb.js';
import { haveSshd, runClient, startTestSshd, usersWithPrefix } from '../support/sshd.js';

if (!haveSshd || !havePostgres) throw new Error('the hostile-identities test needs sshd (as root) and PostgreSQL');

const tag = randomBytes(3).toString('hex');
const marker = `/tmp/tg-pwned-${tag}`;
const prefix = `h${tag}-`;

interface Hostile { key: string; name: string; email?: string; groups: string[] }
/** Users that must sign in and work. */
const ACCEPTED: Hostile[] = [
  { key: 'quotes', name: `o'reilly";drop role postgres;--\\`, email: `"o'reilly;\\"@evil.test`, groups: ['engineers', `ops'; DROP ROLE postgres; --`, 'a\\b"c'] },
  { key: 'shell', name: `$(touch ${marker})\`touch ${marker}\`;id|x&y`, email: `x@y;touch ${marker}`, groups: ['engineers', `$(touch ${marker})`] },
  { key: 'html', name: '<img src=x onerror="window.__pwned=1">', email: '<script>window.__pwned=2</script>@x.test', groups: ['engineers', '</script><script>window.__pwned=3</script>', '<b onmouseover=window.__pwned=4>g</b>'] },
  { key: 'long', name: 'l'.repeat(255), email: `${'e'.repeat(990)}@long.test`, groups: ['engineers', 'g'.repeat(1000)] },
  { key: 'claims', name: 'ctrl-claims', email: 'a\nb\u0000c\u202e@x.test', groups: ['engineers', 'line\nbreak', 'nul\u0000g', '\u202eevil'] },
];
/** Users whose subject the gateway must refuse (bad_subject). */
const REFUSED: Hostile[] = [
  { key: 'newline', name: 'evil\nadmin', groups: ['engineers'] },
  { key: 'cr', name: 'evil\radmin', groups: ['engineers'] },
  { key: 'nul', name: 'nul\u0000root', groups: ['engineers'] },
  { key: 'rtl', name: '\u202enimda', groups: ['engineers'] },
  { key: 'thousand', name: 'x'.repeat(1000), groups: ['engineers'] },
];
const pw = (h: Hostile) => `pw-${h.key}-${tag}`;

const linuxAccounts = () => spawnSync('getent', ['passwd'], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.split(':')[0]!).filter(Boolean);
const linuxGroups = () => spawnSync('getent', ['group'], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.split(':')[0]!).filter(Boolean);
/** Fragments a name made from a hostile identity without sanitising would contain. */
const FRAGMENTS = ['reilly', 'drop', 'touch', 'pwned', 'onerror', 'script', 'lllllll', 'ctrl', 'nimda', 'evil'];

t.test('hostile identities: sign-in works or is refused clearly, provisioners stay safe, the portal escapes', async (t) => {
  const sshd = await startTestSshd(t, { eph: 'hostile-box', cert: 'hostile-cert', pw: 'hostile-pw' });
  const box = { ...sshd.targets[0]!, credentials: { ...(sshd.targets[0]!.credentials as Record<string, unknown>), prefix } };
  const cert = sshd.targets[1]!;
  const pgc = await startTestCluster(t, 'hostile-db');
  const my = await startTestMariadb(t);
  if (!my) throw new Error('the hostile-identities test needs MariaDB');
  const myTarget = { ...my.target, name: 'hostile-my' };

  // An external IdP with the hostile users (and the approvers and SOC analyst, to sign in too).
  const port = await freePort();
  const gwUrl = `http://127.0.0.1:${port}`;
  const clientSecret = randomBytes(24).toString('base64url');
  const idp = await startDevIdp({
    host: '127.0.0.1', port: 0, log: pino({ level: 'silent' }),
    users: [
      ...[...ACCEPTED, ...REFUSED].map((h) => ({ name: h.name, ...(h.email ? { email: h.email } : {}), password: new Secret(pw(h)), groups: h.groups })),
      { name: 'bob', password: new Secret(`bob-${tag}`), groups: ['approvers'] },
      { name: 'carol', password: new Secret(`carol-${tag}`), groups: ['soc'] },
    ],
    clients: [{ client_id: 'tollgate', client_secret: clientSecret, redirect_uris: [`${gwUrl}/auth/callback`], grant_types: ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'] }],
  });
  t.teardown(() => idp.close());

  const usersBefore = linuxAccounts();
  const groupsBefore = linuxGroups();
  const su = await pgc.su();
  t.teardown(() => su.end());
  const pgRoles = async () => (await su.query('select rolname from pg_roles order by 1')).rows.map((r) => r.rolname as string);
  const pgDatabases = async () => (await su.query('select datname from pg_database order by 1')).rows.map((r) => r.datname as string);
  const pgRolesBefore = await pgRoles();
  const pgDbBefore = await pgDatabases();
  const myUsers = async () => ((await my.admin('select user, host from mysql.user order by 1, 2')) as { user: string; host: string }[]).map((r) => `${r.user}@${r.host}`);
  const myDatabases = async () => ((await my.admin('show databases')) as Record<string, string>[]).map((r) => Object.values(r)[0]!).sort();
  const myUsersBefore = await myUsers();
  const myDbBefore = await myDatabases();

  const tg = await startTestGateway({
    targets: [box, cert, pgc.target, myTarget],
    listeners: ['ssh', 'postgres', 'mysql'],
    http: { port },
    gateway: { publicUrl: gwUrl },
    extra: { idp: { issuer: idp.issuer, clientId: 'tollgate', clientSecret: { value: clientSecret } } },
  });
  t.teardown(() => tg.close());
  const ca = tg.gw.tls.ca;
  const ssh = tg.listener('ssh');
  const pgl = tg.listener('postgres');
  const myl = tg.listener('mysql');

  t.test('subjects with control or direction characters, or over 255 characters, are refused clearly', async (t) => {
    for (const h of REFUSED) {
      const jar = new CookieJar();
      const last = await browse(jar, new URL('/auth/login?returnTo=%2Fapi%2Fv1%2Fme', gwUrl), { login: h.name, password: pw(h), otp: '' },
        (hop) => hop.url.origin === gwUrl && hop.url.pathname === '/api/v1/me');
      t.notOk(jar.get('tg_session', gwUrl), `${h.key}: no session cookie`);
      t.equal(last.status, 400, `${h.key}: the callback answers 400`);
      t.match(last.body, /sign-in refused: the identity provider sent a subject \(sub\) (with control or text-direction characters|longer than 255 characters)/, `${h.key}: the page says why`);
      const dev = await deviceSignIn(gwUrl, h.name, pw(h));
      t.equal(dev.status, 400, `${h.key}: the device flow is refused`);
      t.match(dev.body?.message ?? '', /subject \(sub\)/, `${h.key}: with the reason`);
    }
    const failed = await tg.store.listAudit({ action: 'signin.failed' });
    t.ok(failed.filter((e) => /subject \(sub\)/.test(JSON.stringify(e))).length >= REFUSED.length, 'each browser refusal is audited with its reason');
    for (const h of REFUSED) t.notOk(await tg.store.getIdentity(h.name), `${h.key}: no identity stored`);
  });

  const tokens: Record<string, string> = { bob: tg.token('bob'), dave: tg.token('dave'), carol: tg.token('carol') };
  const cookies: Record<string, string> = {};
  t.test('the other hostile identities sign in through both flows, exactly as the IdP names them', async (t) => {
    for (const h of ACCEPTED) {
      const b = await browserSignIn(gwUrl, h.name, pw(h));
      cookies[h.key] = b.cookie;
      const dev = await deviceSignIn(gwUrl, h.name, pw(h));
      t.equal(dev.status, 200, `${h.key}: device sign-in`);
      tokens[h.key] = dev.body.token;
      const me = await fetch(`${gwUrl}/api/v1/me`, { headers: { authorization: `Bearer ${dev.body.token}` } });
      const body = await me.json() as { sub?: string; identity?: { sub?: string } };
      t.equal(body.sub ?? body.identity?.sub, h.name, `${h.key}: the API knows the identity by its exact subject`);
      const stored = await tg.store.getIdentity(h.name);
      t.same(stored?.groups, h.groups, `${h.key}: groups stored as the IdP sent them`);
      t.equal(stored?.email ?? null, h.email ?? null, `${h.key}: email stored as sent`);
    }
    cookies['bob'] = (await browserSignIn(gwUrl, 'bob', `bob-${tag}`)).cookie;
    cookies['carol'] = (await browserSignIn(gwUrl, 'carol', `carol-${tag}`)).cookie;
  });

  const api = apiOf(gwUrl, tokens);
  t.test('every provisioner mints safe names and sessions work', async (t) => {
    for (const h of ACCEPTED) {
      const secret = async (target: string, role: string) => {
        const g = await requestAndApprove(api, h.key, target, role);
        const r = await api(h.key, 'POST', `/api/v1/grants/${g}/secret`, {});
        if (r.status !== 201) throw new Error(`secret: ${r.status} ${JSON.stringify(r.body)}`);
        return r.body as { username: string; secret: string };
      };
      // ssh, ephemeral account
      const s = await secret('hostile-box', 'user');
      const r = await runClient(s.secret, 'ssh', ['-p', String(ssh.port), `${s.username}@127.0.0.1`, 'id -un; echo done'], { timeoutMs: 60_000 });
      t.equal(r.code, 0, `${h.key}: ssh session ran (${r.stderr.trim().slice(-200)})`);
      const account = r.stdout.split('\n')[0]!.trim();
      t.match(account, new RegExp(`^${prefix}[a-z0-9_-]*-[a-z0-9]{4}$`), `${h.key}: the Linux account name is sanitised (${account})`);
      // ssh, certificate (the key id carries the subject)
      const c = await secret('hostile-cert', 'ops');
      const rc = await runClient(c.secret, 'ssh', ['-p', String(ssh.port), `${c.username}@127.0.0.1`, 'echo cert-ok'], { timeoutMs: 60_000 });
      t.equal(rc.code, 0, `${h.key}: certificate session ran`);
      t.match(rc.stdout, /cert-ok/, `${h.key}: certificate session output`);
      // PostgreSQL
      const p = await secret('hostile-db', 'read');
      const client = new pg.Client({ host: '127.0.0.1', port: pgl.port, user: p.username, password: p.secret, database: 'app', ssl: { ca } });
      await client.connect();
      const role = (await client.query('select current_user as u')).rows[0].u as string;
      await client.end();
      t.match(role, /^tg_[a-z0-9_]+$/, `${h.key}: the PostgreSQL role name is sanitised (${role})`);
      // MariaDB
      const m = await secret('hostile-my', 'read');
      const conn = await mysql.createConnection({ host: '127.0.0.1', port: myl.port, user: m.username, password: m.secret, ssl: { ca } });
      const [rows] = await conn.query('select current_user() as u') as unknown as [{ u: string }[]];
      await conn.end();
      t.match(rows[0]!.u, /^tg_[a-z0-9_]+@/, `${h.key}: the MariaDB user name is sanitised (${rows[0]!.u})`);
    }
  });

  t.test('no stray objects on any target once the sessions ended', async (t) => {
    await waitFor(async () => usersWithPrefix(prefix).length === 0, 30_000, 'ephemeral accounts removed');
    t.same(usersWithPrefix(prefix), [], 'no ephemeral account left');
    const newUsers = linuxAccounts().filter((u) => !usersBefore.includes(u));
    t.same(newUsers.filter((u) => FRAGMENTS.some((f) => u.toLowerCase().includes(f))), [], 'no Linux account named after a hostile identity');
    const newGroups = linuxGroups().filter((g) => !groupsBefore.includes(g));
    t.same(newGroups.filter((g) => FRAGMENTS.some((f) => g.toLowerCase().includes(f)) || g.startsWith(prefix) || g === 'ops'), [], 'no Linux group from a hostile identity or a session');
    t.notOk(existsSync(marker), 'no shell break-out ran (marker file absent)');
    t.same(readdirSync('/tmp').filter((f) => f.startsWith(`tg-pwned-${tag}`)), [], 'nothing like it under /tmp');
    t.same(await pgc.noSessionRoles(30_000), [], 'no PostgreSQL session role left');
    t.same(await pgRoles(), pgRolesBefore, 'PostgreSQL roles exactly as before (postgres still there)');
    t.same(await pgDatabases(), pgDbBefore, 'PostgreSQL databases as before');
    await waitFor(async () => (await my.sessionUsers()).length === 0, 30_000, 'MariaDB session users removed');
    t.same(await myUsers(), myUsersBefore, 'MariaDB users exactly as before');
    t.same(await myDatabases(), myDbBefore, 'MariaDB databases as before');
  });

  t.test('the portal shows hostile identities as text: no injected element or script runs', async (t) => {
    const html = ACCEPTED.find((h) => h.key === 'html')!;
    const quotes = ACCEPTED.find((h) => h.key === 'quotes')!;
    // A pending request for the approvers' page, with a hostile reason too.
    const r = await api('html', 'POST', '/api/v1/requests', { target: 'hostile-box', role: 'admin', duration: '1h', reason: '<img src=y onerror="window.__pwned=5"> pending' });
    t.equal(r.status, 201, 'a pending request by the html identity');
    const browser: Browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    t.teardown(() => browser.close());
    const visits: { who: string; path: string; shows?: string[] }[] = [
      { who: 'html', path: '/portal/access' },
      { who: 'quotes', path: '/portal/access' },
      { who: 'bob', path: '/portal/approvals', shows: [html.name] },
      { who: 'carol', path: '/portal/audit', shows: [html.name, quotes.name] },
      { who: 'carol', path: '/portal/sessions' },
      { who: 'carol', path: '/portal/recordings' },
      { who: 'carol', path: '/portal/dashboard' },
    ];
    for (const v of visits) {
      const ctx = await browser.newContext();
      await ctx.addCookies([{ name: 'tg_session', value: cookies[v.who]!, url: gwUrl }]);
      const page = await ctx.newPage();
      const dialogs: string[] = [];
      page.on('dialog', (d) => { dialogs.push(d.message()); void d.dismiss(); });
      const res = await page.goto(`${gwUrl}${v.path}`, { waitUntil: 'networkidle' });
      t.equal(res?.status(), 200, `${v.who} ${v.path}: 200`);
      for (const text of v.shows ?? []) {
        const shown = await page.waitForFunction((s) => document.body.innerText.includes(s), text, { timeout: 20_000 }).then(() => true, () => false);
        t.ok(shown, `${v.who} ${v.path}: shows ${JSON.stringify(text.slice(0, 40))} as text`);
      }
      // Hover everything once: an injected onmouseover would fire.
      await page.evaluate(() => { for (const e of document.querySelectorAll('body *')) e.dispatchEvent(new MouseEvent('mouseover', { bubbles: true })); });
      const state = await page.evaluate(() => ({
        pwned: (window as unknown as { __pwned?: unknown }).__pwned ?? null,
        handlers: [...document.querySelectorAll('*')].filter((e) => e.hasAttribute('onerror') || e.hasAttribute('onmouseover')).length,
        injectedImgs: document.querySelectorAll('img[src="x"], img[src="y"]').length,
        injectedB: [...document.querySelectorAll('b')].filter((b) => b.textContent === 'g').length,
        inlineScripts: [...document.querySelectorAll('script')].filter((s) => (s.textContent ?? '').includes('__pwned')).length,
      }));
      t.same(state, { pwned: null, handlers: 0, injectedImgs: 0, injectedB: 0, inlineScripts: 0 }, `${v.who} ${v.path}: no injected element, handler or script`);
      t.same(dialogs, [], `${v.who} ${v.path}: no dialog opened`);
      await ctx.close();
    }
  });
});
