/**
 * The identity-aware reverse proxy on the gateway's uWebSockets.js front. This file routes each
 * request to its part: the app registry (apps.ts), the data path (data-path.ts: grant checks from
 * the session cache, rules, injected credentials, streaming both ways with backpressure through an
 * undici Pool per app), the sign-in hand-off between the gateway host and app hosts (signin.ts),
 * the gateway-host pages (gateway-pages.ts) and WebSockets (websockets.ts).
 * Apps are served only on their own origin; `/apps/<name>/...` on the gateway's origin is a redirect
 * there (GET/HEAD) or a 404, never a proxied byte.
 */
import uWS from 'uWebSockets.js';
import type { HttpMount, ProtocolContext } from '../types.js';
import type { AppConfig } from './config.js';
import { loadOrCreateAssertionKey, type AssertionKey } from './assertion.js';
import { errorPage } from './pages.js';
import { appOrigin, gatewayOrigin, resolveRequest, type GatewayOrigin } from './routing.js';
import { AppSessions } from './sessions.js';
import { AppRegistry } from './apps.js';
import { AppSignIn } from './signin.js';
import { GatewayPages } from './gateway-pages.js';
import { DataPath } from './data-path.js';
import { AppWebSockets, type WsData } from './websockets.js';
import { readIncoming, redirect, writePage, type Incoming, type ReqState } from './incoming.js';

export class HttpApps {
  private readonly apps: AppRegistry;
  readonly sessions: AppSessions;
  private readonly signIn: AppSignIn;
  private readonly pages: GatewayPages;
  private readonly dataPath: DataPath;
  private readonly webSockets: AppWebSockets;
  private gw: GatewayOrigin | null = null;

  constructor(private ctx: ProtocolContext, private front: HttpMount) {
    this.apps = new AppRegistry(ctx);
    const keyPromise: Promise<AssertionKey> = loadOrCreateAssertionKey(ctx.config.dataDir);
    keyPromise.catch((e) => ctx.log.error({ err: (e as Error).message }, 'cannot load the assertion key'));
    this.sessions = new AppSessions(ctx, () => keyPromise);
    const origin = () => this.origin();
    this.signIn = new AppSignIn(ctx, front, this.apps, origin);
    this.pages = new GatewayPages(ctx, front, this.apps, origin, keyPromise);
    this.dataPath = new DataPath(ctx, front, origin, this.signIn, this.sessions);
    this.webSockets = new AppWebSockets(ctx, front, this.apps, origin, this.signIn, this.sessions);
  }

  /** The public origin, read lazily: publicUrl is known only once the front listens. */
  private origin(): GatewayOrigin {
    this.gw ??= gatewayOrigin(this.ctx.config.publicUrl, this.front.appsDomain);
    return this.gw;
  }

  mount(): void {
    this.front.raw((res, req) => {
      try {
        return this.onRequest(res, req);
      } catch (e) {
        // Never let one request take the process down.
        this.ctx.log.error({ err: (e as Error).message, stack: (e as Error).stack }, 'app proxy request failed');
        try { res.cork(() => { res.writeStatus('500 Internal Server Error').end('Tollgate: internal error'); }); } catch { /* already answered */ }
        return true;
      }
    });
    this.front.app.ws<WsData>('/*', {
      compression: uWS.DISABLED,
      maxPayloadLength: 16 * 1024 * 1024,
      maxBackpressure: 16 * 1024 * 1024,
      closeOnBackpressureLimit: 1,
      idleTimeout: 0,
      upgrade: (res, req, context) => {
        try { this.webSockets.onUpgrade(res, req, context); } catch (e) {
          this.ctx.log.error({ err: (e as Error).message, stack: (e as Error).stack }, 'app proxy upgrade failed');
          try { res.cork(() => { res.writeStatus('500 Internal Server Error').end('Tollgate: internal error'); }); } catch { /* already answered */ }
        }
      },
      open: (ws) => this.webSockets.wsOpen(ws),
      message: (ws, msg, isBinary) => this.webSockets.wsMessage(ws, msg, isBinary),
      close: (ws, code, msg) => this.webSockets.wsClose(ws, code, msg),
    });
  }

  private onRequest(res: uWS.HttpResponse, req: uWS.HttpRequest): boolean {
    const inc = readIncoming(res, req);
    const r = resolveRequest({ host: inc.host, url: inc.url, query: inc.query, gateway: this.origin(), byLabel: this.apps.byLabel, byName: this.apps.byName });
    const st: ReqState = { aborted: false, done: false, bytesIn: 0 };
    if (r.kind === 'gateway') {
      if (inc.url === '/.well-known/jwks.json') { this.pages.jwks(res, st, inc); return true; }
      if (inc.url === '/apps/_auth') { this.signIn.authHandoff(res, st, inc); return true; }
      if (inc.url === '/apps/_request') { this.pages.requestForm(res, st, inc); return true; }
      return false;
    }
    if (r.kind === 'bad_request') { writePage(res, st, errorPage(400, 'Bad request', `Tollgate: ${r.reason}.`)); return true; }
    if (r.kind === 'unknown_app') { writePage(res, st, errorPage(404, 'No such app', `Tollgate: there is no app named "${r.name.slice(0, 64)}".`)); return true; }
    if (r.kind === 'elsewhere') { this.elsewhere(res, st, inc, r.app, r.location); return true; }
    this.dataPath.appRequest(res, st, inc, r.route);
    return true;
  }

  /** `/apps/<name>/...` on the gateway's origin: apps have their own origin; nothing is proxied here. */
  private elsewhere(res: uWS.HttpResponse, st: ReqState, inc: Incoming, app: AppConfig, location: string): void {
    const method = inc.method.toUpperCase();
    if (method === 'GET' || method === 'HEAD') { redirect(res, st, location); return; }
    writePage(res, st, errorPage(404, 'Not here', `Tollgate: ${app.target.name} is served at ${appOrigin(app, this.origin())}/, not on the gateway's own address.`));
  }

  /** End every app session (gateway shutdown is handled by the session manager; this is for tests). */
  async close(): Promise<void> {
    this.sessions.closeAll({ code: 'gateway_shutdown', message: 'Tollgate: the gateway is shutting down.' });
    await this.dataPath.close();
  }
}

export function mountHttpApps(ctx: ProtocolContext, front: HttpMount): HttpApps {
  const apps = new HttpApps(ctx, front);
  apps.mount();
  return apps;
}
