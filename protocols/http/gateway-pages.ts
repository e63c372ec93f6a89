/** Pages the app proxy serves on the gateway's own origin: the JWKS of its identity assertions and the request form. */
import type uWS from 'uWebSockets.js';
import type { HttpMount, ProtocolContext } from '../types.js';
import type { AssertionKey } from './assertion.js';
import type { AppRegistry } from './apps.js';
import { cookieValue } from './headers.js';
import { continuePage, errorPage, esc, htmlPage, requestFormPage } from './pages.js';
import { appOrigin, type GatewayOrigin } from './routing.js';
import { crossSiteNavigation, header, redirect, writePage, type Incoming, type ReqState } from './incoming.js';

const FORM_MAX = 16 * 1024;

export class GatewayPages {
  constructor(private ctx: ProtocolContext, private front: HttpMount, private apps: AppRegistry, private origin: () => GatewayOrigin,
    private keyPromise: Promise<AssertionKey>) {}

  jwks(res: uWS.HttpResponse, st: ReqState, inc: Incoming): void {
    res.onAborted(() => { st.aborted = true; });
    if (inc.method.toUpperCase() !== 'GET' && inc.method.toUpperCase() !== 'HEAD') {
      writePage(res, st, errorPage(405, 'Method not allowed', 'GET only.'), [['allow', 'GET']]);
      return;
    }
    this.keyPromise.then((k) => writePage(res, st, {
      status: 200, headers: { 'content-type': 'application/jwk-set+json', 'cache-control': 'public, max-age=300' }, body: JSON.stringify(k.jwks),
    }), () => writePage(res, st, errorPage(503, 'Unavailable', 'Tollgate: the assertion key is not available.')));
  }

  /**
   * GET: the request form (gateway host, cookie-authenticated); POST: file the request through the
   * gateway API. The POST must come from the gateway's own page: Origin (when sent) and the web
   * session's CSRF token in the form.
   */
  requestForm(res: uWS.HttpResponse, st: ReqState, inc: Incoming): void {
    res.onAborted(() => { st.aborted = true; });
    const method = inc.method.toUpperCase();
    const cookie = cookieValue(header(inc, 'cookie'), this.front.sessionCookie);
    const q = new URLSearchParams(inc.query);
    if (method === 'GET') {
      const app = this.apps.byName.get(q.get('app') ?? '');
      if (!app) { writePage(res, st, errorPage(404, 'No such app', 'Tollgate: unknown app.')); return; }
      const toLogin = () => redirect(res, st, `/auth/login?returnTo=${encodeURIComponent(`/apps/_request?${inc.query}`)}`);
      if (!cookie && crossSiteNavigation(inc)) { writePage(res, st, continuePage(`/apps/_request?${inc.query}`)); return; }
      if (!cookie) { toLogin(); return; }
      this.ctx.access.webPrincipal(cookie).then((p) => {
        if (!p) { toLogin(); return; }
        writePage(res, st, requestFormPage({ identity: p.sub, app: app.target.name, roles: app.target.roles.map((r) => r.name), csrf: this.front.csrfToken(cookie) }));
      }, () => writePage(res, st, errorPage(500, 'Gateway error', 'Tollgate: could not check your sign-in.')));
      return;
    }
    if (method !== 'POST') { writePage(res, st, errorPage(405, 'Method not allowed', 'GET or POST only.'), [['allow', 'GET, POST']]); return; }
    const present = header(inc, 'origin') !== undefined || header(inc, 'sec-fetch-site') !== undefined;
    const foreign = present ? this.front.foreignOrigin((h) => header(inc, h)) : null;
    if (foreign || !cookie) {
      res.onData(() => undefined);
      writePage(res, st, foreign
        ? errorPage(403, 'Forbidden', `Tollgate: this form must be sent from the gateway's own page (${foreign}).`)
        : errorPage(401, 'Sign in first', 'Tollgate: sign in to the gateway first.'));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    res.onData((chunk, isLast) => {
      if (st.done) return;
      size += chunk.byteLength;
      if (size > FORM_MAX) { writePage(res, st, errorPage(413, 'Too large', 'Tollgate: the form is too large.')); return; }
      chunks.push(Buffer.copyBytesFrom(new Uint8Array(chunk)));
      if (!isLast) return;
      const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
      if (!this.front.checkCsrf(cookie, form.get('csrf'))) {
        writePage(res, st, errorPage(403, 'Forbidden', 'Tollgate: the form is stale or was not sent from the gateway\'s page; open the request page again.'));
        return;
      }
      const app = this.apps.byName.get(form.get('app') ?? '');
      if (!app) { writePage(res, st, errorPage(404, 'No such app', 'Tollgate: unknown app.')); return; }
      const payload = { target: app.target.name, role: form.get('role') ?? app.target.roles[0]!.name, duration: form.get('duration') || '1h', reason: form.get('reason') ?? '' };
      this.front.api('POST', '/api/v1/requests', cookie, payload).then((r) => {
        const j = (r.body && typeof r.body === 'object' ? r.body : {}) as { id?: string; state?: string; message?: string; error?: string };
        if (r.status === 201) {
          const approved = j.state === 'approved';
          writePage(res, st, htmlPage(201, 'Request sent', `<h1>Request sent</h1><p id="state">Your request for ${esc(app.target.name)} is <b>${esc(j.state ?? 'pending')}</b>${approved ? '' : ' — you will get access once it is approved'}.</p>
<p>Request id: <code id="request-id">${esc(j.id ?? '')}</code></p><p><a href="${esc(appOrigin(app, this.origin()))}/">Open ${esc(app.target.name)}</a> · <a href="/">Portal</a></p>`));
        } else {
          writePage(res, st, htmlPage(r.status >= 400 && r.status < 600 ? r.status : 400, 'Request not sent', `<h1>Request not sent</h1><p class="err">${esc(j.message ?? j.error ?? `the gateway answered ${r.status}`)}</p><p><a href="/apps/_request?app=${encodeURIComponent(app.target.name)}">Back</a></p>`));
        }
      }, (e) => {
        this.ctx.log.error({ err: (e as Error).message }, 'filing the request failed');
        writePage(res, st, errorPage(500, 'Request not sent', 'Tollgate: the gateway could not file the request; try again.'));
      });
    });
  }
}
