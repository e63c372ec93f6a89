/**
 * The sign-in hand-off between the gateway's origin and an app's own origin: the gateway checks
 * its web session and seals a one-time hand-off; the app host turns it into the app's own
 * sign-in cookie (sealed, per app, host-only). The gateway's cookies never reach an app host.
 */
import { randomUUID } from 'node:crypto';
import type uWS from 'uWebSockets.js';
import { LRUCache } from 'lru-cache';
import type { HttpMount, ProtocolContext } from '../types.js';
import type { Principal } from '../../auth/types.js';
import type { AppConfig } from './config.js';
import type { AppRegistry } from './apps.js';
import { cookieValue } from './headers.js';
import { continuePage, errorPage } from './pages.js';
import { appOrigin, CALLBACK_PATH, checkReturn, type AppRoute, type GatewayOrigin } from './routing.js';
import { crossSiteNavigation, header, redirect, writePage, type Incoming, type ReqState } from './incoming.js';

const APP_COOKIE_PREFIX = 'tg_app_';
const HANDOFF_TTL_MS = 60_000;
const COOKIE_CACHE_MS = 30_000;

/** Sealed values carry their purpose, so one can never stand in for the other. */
export interface AppCookie { k: 'tg-app-cookie'; sub: string; app: string; p: Principal }
interface Handoff { k: 'tg-app-handoff'; sub: string; app: string; p: Principal; n: string }

export class AppSignIn {
  private usedHandoffs = new LRUCache<string, true>({ max: 50_000, ttl: HANDOFF_TTL_MS * 2 });
  private cookieCache = new LRUCache<string, AppCookie>({ max: 10_000, ttl: COOKIE_CACHE_MS });

  constructor(private ctx: ProtocolContext, private front: HttpMount, private apps: AppRegistry, private origin: () => GatewayOrigin) {}

  /** The app's sign-in cookie on its own host (`__Host-` when the front is TLS). */
  cookieNameFor(app: AppConfig): string {
    return `${this.front.secureCookies ? '__Host-' : ''}${APP_COOKIE_PREFIX}${app.target.name}`;
  }

  signedIn(inc: Incoming, app: AppConfig): AppCookie | null {
    const raw = cookieValue(header(inc, 'cookie'), this.cookieNameFor(app));
    if (!raw) return null;
    // Unsealing (AES-GCM + JSON) on every request is the costliest step of the data path: keep
    // recent results briefly (a cookie stays accepted at most COOKIE_CACHE_MS past its expiry).
    const hit = this.cookieCache.get(raw);
    if (hit) return hit.app === app.target.name ? hit : null;
    const v = this.ctx.crypto.unseal<AppCookie>(raw);
    if (!v || v.k !== 'tg-app-cookie' || v.app !== app.target.name || typeof v.sub !== 'string' || !v.p || v.p.sub !== v.sub) return null;
    this.cookieCache.set(raw, v);
    return v;
  }

  /** Gateway host: /apps/_auth?app=&return= → gateway sign-in → sealed hand-off to the app host. */
  authHandoff(res: uWS.HttpResponse, st: ReqState, inc: Incoming): void {
    res.onAborted(() => { st.aborted = true; });
    const q = new URLSearchParams(inc.query);
    const app = this.apps.byName.get(q.get('app') ?? '');
    if (!app) { writePage(res, st, errorPage(404, 'No such app', 'Tollgate: unknown app.')); return; }
    const ret = checkReturn(q.get('return'), [appOrigin(app, this.origin())]);
    if (!ret) { writePage(res, st, errorPage(400, 'Bad request', `Tollgate: the return address is not an address of ${app.target.name}.`)); return; }
    const cookie = cookieValue(header(inc, 'cookie'), this.front.sessionCookie);
    const toLogin = () => redirect(res, st, `/auth/login?returnTo=${encodeURIComponent(`/apps/_auth?${inc.query}`)}`);
    if (!cookie && crossSiteNavigation(inc)) { writePage(res, st, continuePage(`/apps/_auth?${inc.query}`)); return; }
    if (!cookie) { toLogin(); return; }
    this.ctx.access.webPrincipal(cookie).then((p) => {
      if (!p) { toLogin(); return; }
      const t = this.ctx.crypto.seal({ k: 'tg-app-handoff', sub: p.sub, app: app.target.name, p, n: randomUUID() } satisfies Handoff, HANDOFF_TTL_MS);
      redirect(res, st, `${ret.base}${CALLBACK_PATH}?t=${encodeURIComponent(t)}&return=${encodeURIComponent(ret.url)}`);
    }, (e) => {
      this.ctx.log.error({ err: (e as Error).message }, 'web session check failed');
      writePage(res, st, errorPage(500, 'Gateway error', 'Tollgate: could not check your sign-in.'));
    });
  }

  /** App host: /.tollgate/callback?t=&return= → the app's own cookie, then back to the page. */
  callback(res: uWS.HttpResponse, st: ReqState, inc: Incoming, route: AppRoute): void {
    const q = new URLSearchParams(inc.query);
    const h = this.ctx.crypto.unseal<Handoff>(q.get('t') ?? '');
    if (!h || h.k !== 'tg-app-handoff' || h.app !== route.app.target.name || typeof h.n !== 'string' || !h.p || h.p.sub !== h.sub) {
      writePage(res, st, errorPage(400, 'Sign-in failed', 'Tollgate: the sign-in hand-off is invalid or expired; reload the page to try again.'));
      return;
    }
    if (this.usedHandoffs.has(h.n)) { writePage(res, st, errorPage(400, 'Sign-in failed', 'Tollgate: this sign-in hand-off was already used; reload the page.')); return; }
    const ret = checkReturn(q.get('return'), [route.base]);
    if (!ret) { writePage(res, st, errorPage(400, 'Bad request', 'Tollgate: the return address is not an address of this app.')); return; }
    this.usedHandoffs.set(h.n, true);
    const app = route.app;
    const value = this.ctx.crypto.seal({ k: 'tg-app-cookie', sub: h.sub, app: app.target.name, p: h.p } satisfies AppCookie, app.cookieTtlMs);
    // Lax, not Strict: the hand-off arrives here from the gateway (another site in the demo), and the
    // redirect to the page must carry the cookie. Host-only (no Domain) on the app's own host.
    const secure = this.front.secureCookies ? '; Secure' : '';
    const setCookie = `${this.cookieNameFor(app)}=${encodeURIComponent(value)}; Path=/; HttpOnly; SameSite=Lax; Max-Age=${Math.floor(app.cookieTtlMs / 1000)}${secure}`;
    redirect(res, st, ret.url, [['set-cookie', setCookie]]);
  }
}
