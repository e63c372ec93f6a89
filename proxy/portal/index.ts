import { readFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Principal } from '../../auth/types.js';
import { principalOf } from '../http/callers.js';
import type { HttpReply, HttpRequest } from '../http/server.js';
import type { ApiServices } from '../http/services.js';
import { PAGES, html, shell, messagePage, type Roles } from './shell.js';
import { computeHealth } from './dashboard.js';
import { strictCookieBounce } from '../http/web-security.js';
import { parseDuration } from '../../policies/config.js';

/**
 * The portal and SOC console: server-rendered HTML shells (one per page) with small vanilla JS
 * modules from /portal/assets/ that call the REST API with the session cookie. Pages are checked
 * server-side too: signed-out people are sent to sign in, people without the role get a 403 page.
 */

const here = dirname(fileURLToPath(import.meta.url));
const ASSET_DIR = join(here, 'assets');
const PLAYER_DIR = join(dirname(createRequire(import.meta.url).resolve('asciinema-player')), 'bundle');

const TYPES: Record<string, string> = { js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8', svg: 'image/svg+xml' };

function assetTable(): Map<string, { path: string; type: string }> {
  const m = new Map<string, { path: string; type: string }>();
  for (const name of ['portal.css', 'common.js', 'access.js', 'approvals.js', 'sessions.js', 'watch.js', 'recordings.js', 'replay.js', 'audit.js', 'dashboard.js', 'live-driver.js', 'screen-view.js']) {
    m.set(name, { path: join(ASSET_DIR, name), type: TYPES[name.split('.').pop()!]! });
  }
  m.set('player.js', { path: join(PLAYER_DIR, 'asciinema-player.min.js'), type: TYPES['js']! });
  m.set('player.css', { path: join(PLAYER_DIR, 'asciinema-player.css'), type: TYPES['css']! });
  return m;
}

const PAGE_BODIES: Record<string, string> = {
  access: `
<section aria-labelledby="h-grants"><h2 id="h-grants">Active grants</h2><div id="grants" class="list" aria-busy="true">Loading…</div></section>
<section aria-labelledby="h-request"><h2 id="h-request">Request access</h2>
<form id="request-form" class="form" novalidate>
  <div class="field"><label for="rq-target">Target</label><select id="rq-target" name="target" required></select></div>
  <div class="field"><label for="rq-role">Role</label><select id="rq-role" name="role" required></select></div>
  <div class="field"><label for="rq-duration">Duration</label><input id="rq-duration" name="duration" value="1h" required aria-describedby="rq-duration-help"><small id="rq-duration-help">For example 30m, 2h. <span id="rq-max"></span></small></div>
  <div class="field wide"><label for="rq-reason">Reason</label><textarea id="rq-reason" name="reason" rows="2" required placeholder="Ticket number and what you will do"></textarea></div>
  <p id="rq-error" class="err" role="alert"></p>
  <button type="submit" class="primary">Request access</button>
</form></section>
<section aria-labelledby="h-targets"><h2 id="h-targets">Targets you may request</h2><div id="targets" class="list" aria-busy="true">Loading…</div></section>
<section aria-labelledby="h-bg" id="bg-section" hidden><h2 id="h-bg">Emergency access</h2>
<details><summary>Break-glass: access now, without approval</summary>
<p class="notice">Only for emergencies. Access starts immediately, security is alerted, and someone else must review what you did.</p>
<form id="bg-form" class="form" novalidate>
  <div class="field"><label for="bg-target">Target</label><select id="bg-target" name="target" required></select></div>
  <div class="field"><label for="bg-role">Role</label><select id="bg-role" name="role" required></select></div>
  <div class="field"><label for="bg-duration">Duration</label><input id="bg-duration" name="duration" value="30m" required aria-describedby="bg-max"><small id="bg-max"></small></div>
  <div class="field wide"><label for="bg-reason">What is the emergency?</label><textarea id="bg-reason" name="reason" rows="2" required></textarea></div>
  <div class="field wide check"><input type="checkbox" id="bg-ack" required><label for="bg-ack">I understand that security is alerted and my session is reviewed.</label></div>
  <p id="bg-error" class="err" role="alert"></p>
  <button type="submit" class="danger">Use break-glass</button>
</form></details></section>
<section aria-labelledby="h-requests"><h2 id="h-requests">My requests</h2><div id="requests" class="list" aria-busy="true">Loading…</div></section>
<section aria-labelledby="h-mysessions"><h2 id="h-mysessions">My recent sessions</h2><div id="mysessions" class="list" aria-busy="true">Loading…</div></section>`,
  approvals: `
<section aria-labelledby="h-pending"><h2 id="h-pending">Waiting for you</h2><div id="pending" class="list" aria-busy="true">Loading…</div></section>
<section aria-labelledby="h-reviews"><h2 id="h-reviews">Break-glass reviews to close</h2><div id="reviews" class="list" aria-busy="true">Loading…</div></section>`,
  sessions: `
<p class="muted">Live sessions across every protocol. The list refreshes every few seconds.</p>
<div id="sessions" aria-busy="true">Loading…</div>
<section aria-labelledby="h-locks"><h2 id="h-locks">Active locks</h2><div id="locks" class="list" aria-busy="true">Loading…</div></section>
<section aria-labelledby="h-targets"><h2 id="h-targets">Targets</h2><p class="muted">Check dials a target with its admin credential: reachable, credentials work.</p><div id="targets" aria-busy="true">Loading…</div></section>`,
  recordings: `
<form id="search" class="form filters" role="search">
  <div class="field"><label for="f-identity">Identity</label><input id="f-identity" name="identity" autocomplete="off"></div>
  <div class="field"><label for="f-target">Target</label><input id="f-target" name="target" autocomplete="off"></div>
  <div class="field"><label for="f-since">From</label><input id="f-since" name="since" type="datetime-local"></div>
  <div class="field"><label for="f-until">To</label><input id="f-until" name="until" type="datetime-local"></div>
  <button type="submit" class="primary">Search</button>
</form>
<div id="results" aria-live="polite" aria-busy="true">Loading…</div>`,
  audit: `
<p id="chain" class="chain" role="status">Verifying the hash chain…</p>
<form id="filters" class="form filters" role="search">
  <div class="field"><label for="a-actor">Actor</label><input id="a-actor" name="actor" autocomplete="off"></div>
  <div class="field"><label for="a-action">Action</label><input id="a-action" name="action" placeholder="session.* or signin" autocomplete="off"></div>
  <div class="field"><label for="a-subject">Subject</label><input id="a-subject" name="subject" autocomplete="off"></div>
  <div class="field"><label for="a-since">From</label><input id="a-since" name="since" type="datetime-local"></div>
  <div class="field"><label for="a-until">To</label><input id="a-until" name="until" type="datetime-local"></div>
  <button type="submit" class="primary">Filter</button>
</form>
<div id="events" aria-busy="true">Loading…</div>
<p><button type="button" id="more" hidden>Load more</button></p>`,
  dashboard: `
<p class="muted">JIT health, computed from the store. <span id="asof"></span></p>
<div id="figures" class="figures" aria-busy="true">Loading…</div>
<section aria-labelledby="h-charts"><h2 id="h-charts">Last 14 days</h2><div id="charts" class="charts"></div></section>
<section aria-labelledby="h-standing"><h2 id="h-standing">Standing privileges</h2><div id="standing"></div></section>
<section aria-labelledby="h-delivery" id="delivery-section" hidden><h2 id="h-delivery">Notifications and SIEM</h2>
<p class="muted">Notifications that failed or are being retried, and how far each SIEM sink has received the audit log.</p>
<h3>Notifications</h3><div id="deliveries" aria-live="polite"></div><h3>SIEM push</h3><div id="siem"></div></section>`,
};

/** What the portal's pages and its two read-only API routes use. */
export type PortalServices = Pick<ApiServices, 'http' | 'callers' | 'roles' | 'oidc' | 'publicUrl' | 'log' | 'store' | 'clock' | 'sessions' | 'config'>;

export function mountPortal(s: PortalServices): void {
  const assets = assetTable();
  const wsOrigin = () => s.publicUrl.replace(/^http/, 'ws');
  const reply = (status: number, body: string): HttpReply => html(status, body, wsOrigin());

  const loginRedirect = (req: HttpRequest): HttpReply => {
    const bounce = strictCookieBounce(req, req.cookie(s.http.security.sessionCookie) !== undefined);
    if (bounce) return bounce;
    const q = req.query.toString();
    const back = `${req.path}${q ? `?${q}` : ''}`;
    if (!s.oidc) {
      return reply(503, messagePage('Sign-in unavailable', 'No identity provider is configured on this gateway, so the portal cannot sign you in. API tokens still work for the CLI.', null, { soc: false, approver: false }, ''));
    }
    return { status: 302, headers: { location: `/auth/login?returnTo=${encodeURIComponent(back)}`, 'cache-control': 'no-store' } };
  };

  /** The sign-out form's CSRF token for the web session of this request ('' for API tokens). */
  const csrfOf = (req: HttpRequest): string => {
    const c = req.cookie(s.http.security.sessionCookie);
    return c ? s.http.security.csrfToken(c) : '';
  };

  /** A page route: signed in, allowed, rendered; errors become an HTML error page. */
  const pageRoute = (key: string, render: (req: HttpRequest, p: Principal, roles: Roles, csrf: string) => Promise<HttpReply> | HttpReply) => async (req: HttpRequest): Promise<HttpReply> => {
    let p: Principal | null = null;
    let roles: Roles = { soc: false, approver: false };
    const csrf = csrfOf(req);
    const links = '<p><a href="/portal/access">Back to My access</a></p>';
    try {
      p = await principalOf(s, req);
      if (!p) return loginRedirect(req);
      roles = s.roles.of(p);
      const def = PAGES.find((x) => x.key === key)!;
      if (!def.allowed(roles)) return reply(403, messagePage(`${def.title}: not allowed`, `You are signed in as ${p.sub}. ${def.forbidden}`, p, roles, links, csrf));
      return await render(req, p, roles, csrf);
    } catch (e) {
      s.log.error({ err: e, path: req.path }, 'portal page failed');
      return reply(500, messagePage('Something went wrong', 'The page could not be built. The error is in the gateway log; try again in a moment.', p, roles, links, csrf));
    }
  };

  const simple = (key: string, extra: { css?: string[]; scripts?: string[] } = {}) => pageRoute(key, (_req, p, roles, csrf) => {
    const def = PAGES.find((x) => x.key === key)!;
    return reply(200, shell({ title: def.title, active: key, principal: p, roles, csrf, script: `${key}.js`, body: PAGE_BODIES[key]!, ...extra }));
  });

  const http = s.http;
  http.route('GET', '/', (req) => ({ status: 302, headers: { location: `/portal/access${req.query.toString() ? `?${req.query.toString()}` : ''}` } }));
  http.route('GET', '/portal', () => ({ status: 302, headers: { location: '/portal/access' } }));
  for (const key of ['access', 'approvals', 'sessions', 'recordings', 'audit', 'dashboard']) http.route('GET', `/portal/${key}`, simple(key));

  http.route('GET', '/portal/sessions/:id', pageRoute('sessions', (req, p, roles, csrf) => reply(200, shell({
    title: 'Watch session', active: 'sessions', principal: p, roles, csrf, script: 'watch.js',
    css: ['/portal/assets/player.css'], scripts: ['/portal/assets/player.js'], data: { session: req.params['id']! },
    body: `<p><a href="/portal/sessions">← All live sessions</a></p>
<dl id="meta" class="meta" aria-busy="true"></dl>
<p id="state" class="state" role="status">Connecting to the live view…</p>
<div class="controls" id="controls">
  <form id="kill-form" class="inline"><label for="kill-reason">Reason</label><input id="kill-reason" name="reason" required placeholder="Why end it?"><button type="submit" class="danger">Terminate</button></form>
  <form id="lock-form" class="inline"><label for="lock-reason">Lock reason</label><input id="lock-reason" name="reason" required placeholder="Why lock this identity?"><button type="submit" class="danger">Lock identity</button></form>
</div>
<section aria-labelledby="h-term" id="term-section" hidden><h2 id="h-term">Terminal</h2><div class="replay"><div id="player" class="player"></div>
<div class="keysbox" tabindex="0" role="region" aria-label="Keystrokes as typed"><h3>Typed</h3><ol id="live-keys" class="keys" aria-live="off"><li class="muted">Keystrokes appear here as they are typed.</li></ol></div></div></section>
<section aria-labelledby="h-stmts" id="stmts-section" hidden><h2 id="h-stmts">Statements</h2><div class="scroll" tabindex="0" role="region" aria-label="Statements"><table id="stmts"><caption class="sr">Statements as they run</caption><thead><tr><th scope="col">Time</th><th scope="col">Kind</th><th scope="col">Statement</th><th scope="col">Decision</th></tr></thead><tbody></tbody></table></div></section>
<section aria-labelledby="h-events" id="events-section" hidden><h2 id="h-events">Events</h2><ul id="events" class="events"></ul></section>`,
  }))));

  http.route('GET', '/portal/recordings/:id', pageRoute('recordings', (req, p, roles, csrf) => reply(200, shell({
    title: 'Recording', active: 'recordings', principal: p, roles, csrf, script: 'replay.js',
    css: ['/portal/assets/player.css'], scripts: ['/portal/assets/player.js'], data: { session: req.params['id']! },
    body: `<p><a href="/portal/recordings">← All recordings</a></p>
<dl id="meta" class="meta" aria-busy="true"></dl>
<div id="recs" aria-busy="true">Loading…</div>`,
  }))));

  http.route('GET', '/portal/assets/:name', (req): HttpReply => {
    const a = assets.get(req.params['name']!);
    if (!a || !existsSync(a.path)) return { status: 404, headers: { 'content-type': 'text/plain; charset=utf-8' }, body: 'no such asset' };
    return { status: 200, headers: { 'content-type': a.type, 'cache-control': 'no-cache' }, body: readFileSync(a.path) };
  });

  // Read-only API for the portal's own figures.
  http.route('GET', '/api/v1/portal/dashboard', async (req) => {
    const p = await principalOf(s, req);
    if (!p) return { status: 401, body: { error: 'unauthenticated', message: 'sign in first' } };
    const r = s.roles.of(p);
    if (!r.soc && !r.approver) return { status: 403, body: { error: 'forbidden', message: `${p.sub} is neither in a SOC group nor an approver` } };
    const days = Math.min(Math.max(Number(req.query.get('days') ?? 14) || 14, 1), 90);
    return { status: 200, body: await computeHealth(s.store, s.clock.now(), (id) => !!s.sessions.get(id), { days, gatewayId: s.config.gateway.id }) };
  });

  // Whether the signed-in person may use break-glass, and on what.
  http.route('GET', '/api/v1/portal/breakglass', async (req) => {
    const p = await principalOf(s, req);
    if (!p) return { status: 401, body: { error: 'unauthenticated', message: 'sign in first' } };
    const bg = s.config.breakGlass;
    const eligible = p.groups.some((g) => bg.groups.includes(g));
    return {
      status: 200,
      body: {
        eligible,
        maxDurationMs: parseDuration(bg.maxDuration),
        targets: eligible ? s.config.targets.map((t) => ({ name: t.name, protocol: t.protocol, risk: t.risk, roles: t.roles.map((r) => r.name) })) : [],
      },
    };
  });

  // Anything else under /portal: a page, not JSON.
  http.route('GET', '/portal/*', async (req) => {
    const p = await principalOf(s, req).catch(() => null);
    return reply(404, messagePage('Page not found', `There is no portal page at ${req.path}.`, p, s.roles.of(p), undefined, csrfOf(req)));
  });
}

