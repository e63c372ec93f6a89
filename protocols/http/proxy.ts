/**
 * The identity-aware reverse proxy on the gateway's uWebSockets.js front: routing, sign-in hand-off
 * between the gateway host and app hosts, grant checks from the session cache, rules, injected
 * credentials, streaming both ways with backpressure (undici Pool per app), and WebSockets.
 * Apps are served only on their own origin; `/apps/<name>/...` on the gateway's origin is a redirect
 * there (GET/HEAD) or a 404, never a proxied byte.
 */
import { STATUS_CODES } from 'node:http';
import { Readable } from 'node:stream';
import { randomUUID } from 'node:crypto';
import { Pool, WebSocket as UpstreamWebSocket, type Dispatcher } from 'undici';
import uWS from 'uWebSockets.js';
import { LRUCache } from 'lru-cache';
import type { EndReason, HttpMount, ProtocolContext } from '../types.js';
import type { Principal } from '../../auth/types.js';
import { appConfig, type AppConfig } from './config.js';
import { loadOrCreateAssertionKey, type AssertionKey } from './assertion.js';
import { injectedHeaderNames } from './credentials.js';
import {
  cookieValue, downstreamResponseHeaders, overrideMethods, refusedSetCookie, safeHeaderValue, upstreamRequestHeaders,
} from './headers.js';
import { continuePage, errorPage, esc, htmlPage, noGrantPage, requestFormPage, type Page } from './pages.js';
import {
  appHost, appOrigin, CALLBACK_PATH, checkReturn, gatewayOrigin, resolveRequest, rulePath, upstreamPath, type AppRoute, type GatewayOrigin,
} from './routing.js';
import { AppSessions, type AppSession, type Closable } from './sessions.js';

const APP_COOKIE_PREFIX = 'tg_app_';
const HANDOFF_TTL_MS = 60_000;
const COOKIE_CACHE_MS = 30_000;
const UPLOAD_HWM = 256 * 1024;
const FORM_MAX = 16 * 1024;
const WS_CLOSE_REASON_MAX = 120;
const WS_UPSTREAM_BUFFER_MAX = 16 * 1024 * 1024;

/** Sealed values carry their purpose, so one can never stand in for the other. */
interface AppCookie { k: 'tg-app-cookie'; sub: string; app: string; p: Principal }
interface Handoff { k: 'tg-app-handoff'; sub: string; app: string; p: Principal; n: string }

interface Incoming {
  method: string;
  url: string;
  query: string;
  host: string;
  headers: [string, string][];
  remote: string;
}

/** Per-request state shared by the abort handler and the async path. */
interface ReqState { aborted: boolean; done: boolean; bytesIn: number }

/**
 * Drop an upstream body without an unhandled 'error'. Empty or finished bodies are drained (cheap);
 * destroying one early makes undici build an error with a stack trace, which is costly per request.
 */
function discard(body: Readable, abort = false): void {
  body.on('error', () => undefined);
  if (abort) body.destroy();
  else (body as Readable & { dump?: () => Promise<void> }).dump?.().catch(() => undefined) ?? body.resume();
}

function statusLine(code: number): string { return `${code} ${STATUS_CODES[code] ?? 'Unknown'}`; }

function remoteOf(res: uWS.HttpResponse): string {
  const a = Buffer.from(res.getRemoteAddressAsText()).toString();
  // uWS prints IPv4-mapped IPv6 in full form.
  const m = /^(?:0000:){5}ffff:([0-9a-f]{4}):([0-9a-f]{4})$/i.exec(a);
  if (m) {
    const hi = parseInt(m[1]!, 16);
    const lo = parseInt(m[2]!, 16);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return a;
}

function readIncoming(res: uWS.HttpResponse, req: uWS.HttpRequest): Incoming {
  const headers: [string, string][] = [];
  req.forEach((k, v) => { headers.push([k, v]); });
  return {
    method: req.getCaseSensitiveMethod(),
    url: req.getUrl(),
    query: req.getQuery() ?? '',
    host: req.getHeader('host'),
    headers,
    remote: remoteOf(res),
  };
}

function header(inc: Incoming, name: string): string | undefined {
  const h = inc.headers.find(([k]) => k === name);
  return h?.[1];
}

/**
 * A top-level navigation from another site (an app on *.localhost to the gateway on 127.0.0.1)
 * carries no SameSite=Strict gateway cookie: re-open the page from the gateway's own origin once.
 */
function crossSiteNavigation(inc: Incoming): boolean {
  return header(inc, 'sec-fetch-site') === 'cross-site' && header(inc, 'sec-fetch-mode') === 'navigate';
}

const RULE_STRENGTH: Record<string, number> = { kill: 3, deny: 2, alert: 1, allow: 0 };

/** Write a complete small response (inside cork when called asynchronously). */
function writePage(res: uWS.HttpResponse, st: ReqState, page: Page, extra: [string, string][] = []): void {
  if (st.aborted || st.done) return;
  st.done = true;
  res.cork(() => {
    res.writeStatus(statusLine(page.status));
    for (const [k, v] of Object.entries(page.headers)) res.writeHeader(k, v);
    for (const [k, v] of extra) res.writeHeader(k, v);
    res.end(page.body);
  });
}

function redirect(res: uWS.HttpResponse, st: ReqState, location: string, extra: [string, string][] = []): void {
  writePage(res, st, { status: 302, headers: { location, 'cache-control': 'no-store' }, body: '' }, extra);
}

export class HttpApps {
  private labels = new Map<string, AppConfig>();
  private names = new Map<string, AppConfig>();
  private seenTargets: unknown[] = [];
  /** App maps, rebuilt when the gateway's target list changes (the demo adds targets after start-up). */
  private get byLabel(): Map<string, AppConfig> { this.refreshApps(); return this.labels; }
  private get byName(): Map<string, AppConfig> { this.refreshApps(); return this.names; }
  private refreshApps(): void {
    const all = this.ctx.targets();
    if (all.length === this.seenTargets.length && all.every((t, i) => t === this.seenTargets[i])) return;
    this.seenTargets = [...all];
    this.labels = new Map();
    this.names = new Map();
    for (const t of all) {
      if (t.protocol !== 'http') continue;
      const a = appConfig(t);
      this.labels.set(a.label, a);
      this.names.set(t.name, a);
    }
  }
  private pools = new Map<string, Pool>();
  private keyPromise: Promise<AssertionKey>;
  readonly sessions: AppSessions;
  private usedHandoffs = new LRUCache<string, true>({ max: 50_000, ttl: HANDOFF_TTL_MS * 2 });
  private cookieCache = new LRUCache<string, AppCookie>({ max: 10_000, ttl: COOKIE_CACHE_MS });
  private gw: GatewayOrigin | null = null;

  constructor(private ctx: ProtocolContext, private front: HttpMount) {
    this.refreshApps();
    this.keyPromise = loadOrCreateAssertionKey(ctx.dataDir);
    this.keyPromise.catch((e) => ctx.log.error({ err: (e as Error).message }, 'cannot load the assertion key'));
    this.sessions = new AppSessions(ctx, () => this.keyPromise);
  }

  /** The public origin, read lazily: publicUrl is known only once the front listens. */
  private origin(): GatewayOrigin {
    this.gw ??= gatewayOrigin(this.ctx.publicUrl, this.front.appsDomain);
    return this.gw;
  }

  /** The app's sign-in cookie on its own host (`__Host-` when the front is TLS). */
  private cookieNameFor(app: AppConfig): string {
    return `${this.front.secureCookies ? '__Host-' : ''}${APP_COOKIE_PREFIX}${app.target.name}`;
  }

  private pool(app: AppConfig): Pool {
    let p = this.pools.get(app.target.name);
    if (!p) {
      p = new Pool(app.upstream.origin, {
        connections: app.connections,
        keepAliveTimeout: 10_000,
        headersTimeout: app.timeoutMs,
        bodyTimeout: app.timeoutMs,
        connect: { timeout: Math.min(app.timeoutMs, 10_000) },
      });
      this.pools.set(app.target.name, p);
    }
    return p;
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
        try { this.onUpgrade(res, req, context); } catch (e) {
          this.ctx.log.error({ err: (e as Error).message, stack: (e as Error).stack }, 'app proxy upgrade failed');
          try { res.cork(() => { res.writeStatus('500 Internal Server Error').end('Tollgate: internal error'); }); } catch { /* already answered */ }
        }
      },
      open: (ws) => this.wsOpen(ws),
      message: (ws, msg, isBinary) => this.wsMessage(ws, msg, isBinary),
      close: (ws, code, msg) => this.wsClose(ws, code, msg),
    });
  }

  // ---------------------------------------------------------------- HTTP

  private onRequest(res: uWS.HttpResponse, req: uWS.HttpRequest): boolean {
    const inc = readIncoming(res, req);
    const r = resolveRequest({ host: inc.host, url: inc.url, query: inc.query, gateway: this.origin(), byLabel: this.byLabel, byName: this.byName });
    const st: ReqState = { aborted: false, done: false, bytesIn: 0 };
    if (r.kind === 'gateway') {
      if (inc.url === '/.well-known/jwks.json') { this.jwks(res, st, inc); return true; }
      if (inc.url === '/apps/_auth') { this.authHandoff(res, st, inc); return true; }
      if (inc.url === '/apps/_request') { this.requestForm(res, st, inc); return true; }
      return false;
    }
    if (r.kind === 'bad_request') { writePage(res, st, errorPage(400, 'Bad request', `Tollgate: ${r.reason}.`)); return true; }
    if (r.kind === 'unknown_app') { writePage(res, st, errorPage(404, 'No such app', `Tollgate: there is no app named "${r.name.slice(0, 64)}".`)); return true; }
    if (r.kind === 'elsewhere') { this.elsewhere(res, st, inc, r.app, r.location); return true; }
    this.appRequest(res, st, inc, r.route);
    return true;
  }

  /** `/apps/<name>/...` on the gateway's origin: apps have their own origin; nothing is proxied here. */
  private elsewhere(res: uWS.HttpResponse, st: ReqState, inc: Incoming, app: AppConfig, location: string): void {
    const method = inc.method.toUpperCase();
    if (method === 'GET' || method === 'HEAD') { redirect(res, st, location); return; }
    writePage(res, st, errorPage(404, 'Not here', `Tollgate: ${app.target.name} is served at ${appOrigin(app, this.origin())}/, not on the gateway's own address.`));
  }

  private signedIn(inc: Incoming, app: AppConfig): AppCookie | null {
    const raw = cookieValue(header(inc, 'cookie'), this.cookieNameFor(app));
    if (!raw) return null;
    // Unsealing (AES-GCM + JSON) on every request is the costliest step of the data path: keep
    // recent results briefly (a cookie stays accepted at most COOKIE_CACHE_MS past its expiry).
    const hit = this.cookieCache.get(raw);
    if (hit) return hit.app === app.target.name ? hit : null;
    const v = this.ctx.unseal<AppCookie>(raw);
    if (!v || v.k !== 'tg-app-cookie' || v.app !== app.target.name || typeof v.sub !== 'string' || !v.p || v.p.sub !== v.sub) return null;
    this.cookieCache.set(raw, v);
    return v;
  }

  private appRequest(res: uWS.HttpResponse, st: ReqState, inc: Incoming, route: AppRoute): void {
    const { app } = route;
    const method = inc.method.toUpperCase();
    if (!/^[A-Z]{1,20}$/.test(method)) { writePage(res, st, errorPage(400, 'Bad request', 'Tollgate: malformed request method.')); return; }
    if (method === 'CONNECT' || method === 'TRACE') { writePage(res, st, errorPage(405, 'Method not allowed', `Tollgate: ${method} is not proxied.`), [['allow', 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS']]); return; }
    const pathOnly = route.rest.split('?')[0]!;
    if (pathOnly === CALLBACK_PATH) { this.callback(res, st, inc, route); return; }
    const cl = header(inc, 'content-length');
    const te = header(inc, 'transfer-encoding');
    if (cl !== undefined && (!/^\d{1,15}$/.test(cl) || te !== undefined)) { writePage(res, st, errorPage(400, 'Bad request', 'Tollgate: malformed Content-Length.')); return; }
    const who = this.signedIn(inc, app);
    if (!who) {
      if (method === 'GET' || method === 'HEAD') {
        const ret = route.base + route.rest;
        redirect(res, st, `${this.ctx.publicUrl}/apps/_auth?app=${encodeURIComponent(app.target.name)}&return=${encodeURIComponent(ret)}`);
      } else {
        writePage(res, st, errorPage(401, 'Sign in first', `Tollgate: sign in to ${app.target.name} first (open ${route.base}/ in the browser).`));
      }
      return;
    }
    const rp = rulePath(pathOnly);
    if (rp === null) { writePage(res, st, errorPage(400, 'Bad request', 'Tollgate: the request path has malformed percent-encoding.')); return; }

    // The body must be read from now on (uWS drops what arrives without a handler); it waits,
    // paused, in a bounded stream until the grant check is done.
    const hasBody = (cl !== undefined && cl !== '0') || te !== undefined;
    let body: Readable | undefined;
    let paused = false;
    if (hasBody) {
      body = new Readable({ highWaterMark: UPLOAD_HWM, read: () => { if (paused && !st.aborted && !st.done) { paused = false; res.resume(); } } });
      const b = body;
      res.onData((chunk, isLast) => {
        if (b.destroyed) return;
        st.bytesIn += chunk.byteLength;
        if (chunk.byteLength && !b.push(Buffer.copyBytesFrom(new Uint8Array(chunk))) && !paused) { paused = true; res.pause(); }
        if (isLast) b.push(null);
      });
    }
    const abort = new AbortController();
    res.onAborted(() => {
      st.aborted = true;
      abort.abort();
      body?.destroy();
    });

    const cached = this.sessions.peek(who.sub, app);
    if (cached) { this.forward(res, st, inc, route, method, rp, cached, body, abort); return; }
    this.sessions.acquire(who.p, app, inc.remote).then((a) => {
      if (st.aborted) return;
      if (!a.ok) {
        body?.destroy();
        writePage(res, st, a.code === 'error'
          ? errorPage(502, 'App credential unavailable', a.reason)
          : noGrantPage({ identity: who.sub, app: app.target.name, reason: a.reason, publicUrl: this.ctx.publicUrl }));
        return;
      }
      this.forward(res, st, inc, route, method, rp, a.entry, body, abort);
    }, (e) => {
      this.ctx.log.error({ err: (e as Error).message, app: app.target.name }, 'grant check failed');
      body?.destroy();
      writePage(res, st, errorPage(500, 'Gateway error', 'Tollgate: the grant check failed; try again.'));
    });
  }

  private forward(res: uWS.HttpResponse, st: ReqState, inc: Incoming, route: AppRoute, method: string, rp: string, entry: AppSession,
    body: Readable | undefined, abort: AbortController): void {
    const { session, app } = entry;
    const started = Date.now();
    let bytesOut = 0;
    let status = 0;
    const pathOnly = route.rest.split('?')[0]!;
    const closable: Closable = { close: (reason) => { abort.abort(); if (!st.aborted && !st.done) { st.done = true; res.close(); } void reason; } };
    const finish = () => {
      entry.open.delete(closable);
      entry.lastUsed = this.ctx.clock.now();
      session.addBytes(st.bytesIn, bytesOut);
      session.recording.events().event('http.request', { method, path: pathOnly, status, bytesIn: st.bytesIn, bytesOut, durationMs: Date.now() - started });
    };

    const decision = this.checkRules(entry, inc, method, rp, route);
    if (decision.action === 'deny' || decision.action === 'kill') {
      body?.destroy();
      status = 403;
      writePage(res, st, errorPage(403, 'Forbidden by policy', decision.message || `Tollgate: ${decision.method} ${rp} is not allowed for your role.`));
      finish();
      return;
    }
    entry.open.add(closable);

    const headers = upstreamRequestHeaders(inc.headers, {
      forward: { clientAddr: inc.remote, host: inc.host, proto: this.origin().proto },
      dropCookie: (n) => this.front.isGatewayCookie(n),
      injected: injectedHeaderNames(app),
    });
    const cl = header(inc, 'content-length');
    if (body && cl !== undefined) headers['content-length'] = cl;

    const send = (cred: Record<string, string>) => {
      Object.assign(headers, cred);
      this.pool(app).request({
        method: method as Dispatcher.HttpMethod,
        path: upstreamPath(app.upstream, route.rest),
        headers,
        body: body ?? null,
        signal: abort.signal,
        headersTimeout: app.timeoutMs,
        bodyTimeout: app.timeoutMs,
      }).then((up) => {
        status = up.statusCode;
        if (st.aborted || st.done) { discard(up.body, true); finish(); return; }
        this.respond(res, st, method, route, up, (n) => { bytesOut += n; }, finish);
      }, (e: Error & { code?: string }) => {
        if (st.aborted || st.done) { status = status || 499; finish(); return; }
        const timeout = e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_CONNECT_TIMEOUT';
        status = timeout ? 504 : 502;
        session.log.info({ err: e.code ?? e.message, status }, 'upstream request failed');
        body?.destroy();
        writePage(res, st, timeout
          ? errorPage(504, 'App timed out', `Tollgate: ${app.target.name} did not answer in time.`)
          : errorPage(502, 'App unreachable', `Tollgate: cannot reach ${app.target.name} (${e.code ?? 'connection failed'}).`));
        finish();
      });
    };
    let cred: Record<string, string> | Promise<Record<string, string>>;
    try { cred = entry.credential.headers(); } catch (e) { cred = Promise.reject(e); }
    if (cred instanceof Promise) {
      cred.then(send, (e) => {
        session.log.warn({ err: (e as Error).message }, 'credential failed');
        status = 500;
        writePage(res, st, errorPage(500, 'Gateway error', 'Tollgate: could not sign the identity assertion.'));
        finish();
      });
    } else send(cred);
  }

  /**
   * The rules for this request, on the normalized path, for the method and every method the
   * request asks the app to use instead (X-HTTP-Method-Override and friends, `_method` in the
   * query): the strongest decision wins, so `POST` + `X-HTTP-Method-Override: DELETE` is a DELETE.
   */
  private checkRules(entry: AppSession, inc: Incoming, method: string, rp: string, route: AppRoute): ReturnType<AppSession['session']['check']> & { method: string } {
    const query = route.rest.includes('?') ? new URLSearchParams(route.rest.slice(route.rest.indexOf('?') + 1)) : null;
    const asked = [...overrideMethods(inc.headers), ...(query?.getAll('_method') ?? []).map((m) => m.trim().toUpperCase())];
    const methods = [...new Set([...asked.filter((m) => /^[A-Z]{1,20}$/.test(m) && m !== method), method])];
    let best: ReturnType<AppSession['session']['check']> & { method: string } = { action: 'allow', message: '', method };
    for (const m of methods) {
      const d = entry.session.check(`${m} ${rp}`, { method: m, path: rp });
      if (RULE_STRENGTH[d.action]! > RULE_STRENGTH[best.action]!) best = { ...d, method: m };
      if (best.action === 'kill' || best.action === 'deny') break;
    }
    return best;
  }

  private respond(res: uWS.HttpResponse, st: ReqState, method: string, route: AppRoute, up: Dispatcher.ResponseData,
    count: (n: number) => void, finish: () => void): void {
    const host = appHost(route.app, this.origin());
    const hdrs = downstreamResponseHeaders(up.headers).filter(([k, v]) => {
      if (k !== 'set-cookie') return true;
      const why = refusedSetCookie(v, { appHost: host, isGatewayCookie: (n) => this.front.isGatewayCookie(n) });
      if (why) this.ctx.log.warn({ app: route.app.target.name, why }, 'app Set-Cookie dropped');
      return why === null;
    });
    const clRaw = up.headers['content-length'];
    const length = typeof clRaw === 'string' && /^\d+$/.test(clRaw) ? Number(clRaw) : null;
    const noBody = method === 'HEAD' || up.statusCode === 204 || up.statusCode === 304 || (up.statusCode >= 100 && up.statusCode < 200);
    const writeHead = () => {
      res.writeStatus(statusLine(up.statusCode));
      for (const [k, v0] of hdrs) {
        const v = k === 'location' ? this.rewriteLocation(v0, route) : v0;
        if (safeHeaderValue(v)) res.writeHeader(k, v);
      }
    };
    if (noBody) {
      discard(up.body);
      st.done = true;
      res.cork(() => {
        writeHead();
        if (method === 'HEAD' && length !== null) res.endWithoutBody(length);
        else res.endWithoutBody();
      });
      finish();
      return;
    }
    const stream = up.body;
    stream.on('error', () => undefined);
    let ended = false;
    const end = () => { if (!ended) { ended = true; st.done = true; finish(); } };
    const fail = () => {
      if (ended) return;
      ended = true;
      stream.destroy();
      if (!st.aborted && !st.done) { st.done = true; res.close(); }
      finish();
    };
    let headWritten = false;
    const ensureHead = () => { if (!headWritten) { headWritten = true; writeHead(); } };

    if (length !== null) {
      // Known length: tryEnd streams with Content-Length; on backpressure keep the chunk and wait.
      if (length === 0) {
        discard(stream);
        st.done = true;
        res.cork(() => { ensureHead(); res.end(); });
        end();
        return;
      }
      let pendingChunk: Buffer | null = null;
      let pendingOffset = 0;
      res.onWritable((offset) => {
        if (!pendingChunk) return true;
        const [ok, done] = res.tryEnd(pendingChunk.subarray(offset - pendingOffset), length);
        if (done) { pendingChunk = null; end(); stream.resume(); return true; }
        if (ok) { pendingChunk = null; stream.resume(); }
        return ok;
      });
      stream.on('data', (chunk: Buffer) => {
        if (st.aborted || ended) return;
        count(chunk.length);
        res.cork(() => {
          ensureHead();
          const before = res.getWriteOffset();
          const [ok, done] = res.tryEnd(chunk, length);
          if (done) { end(); return; }
          if (!ok) { pendingChunk = chunk; pendingOffset = before; stream.pause(); }
        });
      });
      stream.on('end', () => {
        if (!ended && !st.aborted) {
          // The app sent less than it announced: the browser must not take this as complete.
          if (!st.done && res.getWriteOffset() < length) fail(); else end();
        }
      });
    } else {
      res.onWritable(() => { stream.resume(); return true; });
      stream.on('data', (chunk: Buffer) => {
        if (st.aborted || ended) return;
        count(chunk.length);
        res.cork(() => {
          ensureHead();
          if (!res.write(chunk)) stream.pause();
        });
      });
      stream.on('end', () => {
        if (ended || st.aborted) return;
        res.cork(() => { ensureHead(); res.end(); });
        end();
      });
    }
    stream.on('error', fail);
    stream.on('close', () => { if (!ended && st.aborted) end(); });
  }

  private rewriteLocation(loc: string, route: AppRoute): string {
    const upOrigin = route.app.upstream.origin;
    const basePath = route.app.upstream.pathname.replace(/\/+$/, '');
    if (loc.startsWith(upOrigin + '/') || loc === upOrigin) {
      let rest = loc.slice(upOrigin.length) || '/';
      if (basePath && rest.startsWith(basePath)) rest = rest.slice(basePath.length) || '/';
      return route.base + rest;
    }
    return loc;
  }

  // ---------------------------------------------------------------- sign-in hand-off

  /** Gateway host: /apps/_auth?app=&return= → gateway sign-in → sealed hand-off to the app host. */
  private authHandoff(res: uWS.HttpResponse, st: ReqState, inc: Incoming): void {
    res.onAborted(() => { st.aborted = true; });
    const q = new URLSearchParams(inc.query);
    const app = this.byName.get(q.get('app') ?? '');
    if (!app) { writePage(res, st, errorPage(404, 'No such app', 'Tollgate: unknown app.')); return; }
    const ret = checkReturn(q.get('return'), [appOrigin(app, this.origin())]);
    if (!ret) { writePage(res, st, errorPage(400, 'Bad request', `Tollgate: the return address is not an address of ${app.target.name}.`)); return; }
    const cookie = cookieValue(header(inc, 'cookie'), this.front.sessionCookie);
    const toLogin = () => redirect(res, st, `/auth/login?returnTo=${encodeURIComponent(`/apps/_auth?${inc.query}`)}`);
    if (!cookie && crossSiteNavigation(inc)) { writePage(res, st, continuePage(`/apps/_auth?${inc.query}`)); return; }
    if (!cookie) { toLogin(); return; }
    this.ctx.webPrincipal(cookie).then((p) => {
      if (!p) { toLogin(); return; }
      const t = this.ctx.seal({ k: 'tg-app-handoff', sub: p.sub, app: app.target.name, p, n: randomUUID() } satisfies Handoff, HANDOFF_TTL_MS);
      redirect(res, st, `${ret.base}${CALLBACK_PATH}?t=${encodeURIComponent(t)}&return=${encodeURIComponent(ret.url)}`);
    }, (e) => {
      this.ctx.log.error({ err: (e as Error).message }, 'web session check failed');
      writePage(res, st, errorPage(500, 'Gateway error', 'Tollgate: could not check your sign-in.'));
    });
  }

  /** App host: /.tollgate/callback?t=&return= → the app's own cookie, then back to the page. */
  private callback(res: uWS.HttpResponse, st: ReqState, inc: Incoming, route: AppRoute): void {
    const q = new URLSearchParams(inc.query);
    const h = this.ctx.unseal<Handoff>(q.get('t') ?? '');
    if (!h || h.k !== 'tg-app-handoff' || h.app !== route.app.target.name || typeof h.n !== 'string' || !h.p || h.p.sub !== h.sub) {
      writePage(res, st, errorPage(400, 'Sign-in failed', 'Tollgate: the sign-in hand-off is invalid or expired; reload the page to try again.'));
      return;
    }
    if (this.usedHandoffs.has(h.n)) { writePage(res, st, errorPage(400, 'Sign-in failed', 'Tollgate: this sign-in hand-off was already used; reload the page.')); return; }
    const ret = checkReturn(q.get('return'), [route.base]);
    if (!ret) { writePage(res, st, errorPage(400, 'Bad request', 'Tollgate: the return address is not an address of this app.')); return; }
    this.usedHandoffs.set(h.n, true);
    const app = route.app;
    const value = this.ctx.seal({ k: 'tg-app-cookie', sub: h.sub, app: app.target.name, p: h.p } satisfies AppCookie, app.cookieTtlMs);
    // Lax, not Strict: the hand-off arrives here from the gateway (another site in the demo), and the
    // redirect to the page must carry the cookie. Host-only (no Domain) on the app's own host.
    const secure = this.front.secureCookies ? '; Secure' : '';
    const setCookie = `${this.cookieNameFor(app)}=${encodeURIComponent(value)}; Path=/; HttpOnly; SameSite=Lax; Max-Age=${Math.floor(app.cookieTtlMs / 1000)}${secure}`;
    redirect(res, st, ret.url, [['set-cookie', setCookie]]);
  }

  // ---------------------------------------------------------------- gateway-host pages

  private jwks(res: uWS.HttpResponse, st: ReqState, inc: Incoming): void {
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
  private requestForm(res: uWS.HttpResponse, st: ReqState, inc: Incoming): void {
    res.onAborted(() => { st.aborted = true; });
    const method = inc.method.toUpperCase();
    const cookie = cookieValue(header(inc, 'cookie'), this.front.sessionCookie);
    const q = new URLSearchParams(inc.query);
    if (method === 'GET') {
      const app = this.byName.get(q.get('app') ?? '');
      if (!app) { writePage(res, st, errorPage(404, 'No such app', 'Tollgate: unknown app.')); return; }
      const toLogin = () => redirect(res, st, `/auth/login?returnTo=${encodeURIComponent(`/apps/_request?${inc.query}`)}`);
      if (!cookie && crossSiteNavigation(inc)) { writePage(res, st, continuePage(`/apps/_request?${inc.query}`)); return; }
      if (!cookie) { toLogin(); return; }
      this.ctx.webPrincipal(cookie).then((p) => {
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
      const app = this.byName.get(form.get('app') ?? '');
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

  // ---------------------------------------------------------------- WebSockets

  private onUpgrade(res: uWS.HttpResponse, req: uWS.HttpRequest, context: uWS.us_socket_context_t): void {
    const inc = readIncoming(res, req);
    const key = req.getHeader('sec-websocket-key');
    const protocols = req.getHeader('sec-websocket-protocol');
    const st: ReqState = { aborted: false, done: false, bytesIn: 0 };
    const r = resolveRequest({ host: inc.host, url: inc.url, query: inc.query, gateway: this.origin(), byLabel: this.byLabel, byName: this.byName });
    if (r.kind !== 'app') {
      writePage(res, st, r.kind === 'bad_request' ? errorPage(400, 'Bad request', `Tollgate: ${r.reason}.`) : errorPage(404, 'Not found', 'Tollgate: no WebSocket here.'));
      return;
    }
    const route = r.route;
    const app = route.app;
    // A page of another origin (another app, say) must not open this app's WebSocket with its cookie.
    const origin = header(inc, 'origin');
    if (origin !== undefined && origin !== new URL(route.base).origin) {
      writePage(res, st, errorPage(403, 'Forbidden', `Tollgate: a WebSocket to ${app.target.name} must be opened by its own pages, not from ${origin.slice(0, 120)}.`));
      return;
    }
    const who = this.signedIn(inc, app);
    if (!who) { writePage(res, st, errorPage(401, 'Sign in first', `Tollgate: sign in to ${app.target.name} first.`)); return; }
    const pathOnly = route.rest.split('?')[0]!;
    const rp = rulePath(pathOnly);
    if (rp === null) { writePage(res, st, errorPage(400, 'Bad request', 'Tollgate: malformed path.')); return; }
    let upstream: UpstreamWebSocket | null = null;
    res.onAborted(() => { st.aborted = true; upstream?.close(); });

    const go = (entry: AppSession) => {
      const d = this.checkRules(entry, inc, 'GET', rp, route);
      if (d.action === 'deny' || d.action === 'kill') {
        writePage(res, st, errorPage(403, 'Forbidden by policy', d.message || 'Tollgate: not allowed for your role.'));
        return;
      }
      const headers = upstreamRequestHeaders(inc.headers, {
        forward: { clientAddr: inc.remote, host: inc.host, proto: this.origin().proto },
        dropCookie: (n) => this.front.isGatewayCookie(n),
        injected: injectedHeaderNames(app),
        websocket: true,
      });
      Promise.resolve(entry.credential.headers()).then((cred) => {
        if (st.aborted) return;
        Object.assign(headers, cred);
        const u = new URL(app.upstream.href);
        u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
        const [p, qs] = [upstreamPath(app.upstream, pathOnly), route.rest.includes('?') ? route.rest.slice(route.rest.indexOf('?')) : ''];
        const url = `${u.protocol}//${u.host}${p}${qs}`;
        const protoList = protocols ? protocols.split(',').map((s) => s.trim()).filter(Boolean) : [];
        const ws = new UpstreamWebSocket(url, { protocols: protoList, headers } as never);
        ws.binaryType = 'arraybuffer';
        upstream = ws;
        const data: WsData = { entry, upstream: ws, queue: [], socket: null, closed: false, started: Date.now(), bytesIn: 0, bytesOut: 0, path: pathOnly, closable: null };
        const early = (ev: { data: unknown }) => { data.queue.push(ev.data as ArrayBuffer | string); };
        ws.addEventListener('message', early);
        const onFail = (ev: Event) => {
          entry.session.log.info({ event: ev.type, err: (ev as unknown as { error?: Error }).error?.message, code: (ev as unknown as { code?: number }).code }, 'upstream WebSocket failed');
          if (st.done || st.aborted) return;
          writePage(res, st, errorPage(502, 'App unreachable', `Tollgate: the WebSocket to ${app.target.name} failed.`));
        };
        ws.addEventListener('error', onFail);
        ws.addEventListener('close', onFail);
        ws.addEventListener('open', () => {
          ws.removeEventListener('error', onFail);
          ws.removeEventListener('close', onFail);
          ws.removeEventListener('message', early);
          if (st.aborted || entry.closing) { ws.close(1000); return; }
          st.done = true;
          res.cork(() => res.upgrade(data, key, ws.protocol, '', context));
        });
      }, () => writePage(res, st, errorPage(500, 'Gateway error', 'Tollgate: could not sign the identity assertion.')));
    };
    const cached = this.sessions.peek(who.sub, app);
    if (cached) { go(cached); return; }
    this.sessions.acquire(who.p, app, inc.remote).then((a) => {
      if (st.aborted) return;
      if (!a.ok) {
        writePage(res, st, a.code === 'error'
          ? errorPage(502, 'App credential unavailable', a.reason)
          : noGrantPage({ identity: who.sub, app: app.target.name, reason: a.reason, publicUrl: this.ctx.publicUrl }));
        return;
      }
      go(a.entry);
    }, () => writePage(res, st, errorPage(500, 'Gateway error', 'Tollgate: the grant check failed.')));
  }

  private wsOpen(ws: uWS.WebSocket<WsData>): void {
    const d = ws.getUserData();
    d.socket = ws;
    const { entry, upstream } = d;
    if (entry.closing) { ws.end(4001, 'Tollgate: the session has ended.'); return; }
    const closable: Closable = {
      close: (reason: EndReason) => {
        if (d.closed) return;
        d.closed = true;
        const code = reason.code === 'client_exit' ? 1001 : 4001;
        try { ws.end(code, truncateReason(reason.message)); } catch { /* already gone */ }
        try { upstream.close(1000, 'session ended'); } catch { /* already closed */ }
      },
    };
    d.closable = closable;
    entry.open.add(closable);
    const toClient = (m: ArrayBuffer | string) => {
      if (d.closed) return;
      const isBinary = typeof m !== 'string';
      d.bytesOut += isBinary ? m.byteLength : Buffer.byteLength(m);
      ws.send(m, isBinary);
    };
    for (const m of d.queue) toClient(m);
    d.queue = [];
    upstream.addEventListener('message', (ev) => toClient(ev.data as ArrayBuffer | string));
    upstream.addEventListener('close', (ev) => {
      if (d.closed) return;
      d.closed = true;
      const code = ev.code === 1005 || ev.code === 1006 || ev.code === 1015 || !ev.code ? 1011 : ev.code;
      try { ws.end(code === 1011 && ev.code === 1005 ? 1000 : code, truncateReason(ev.reason || '')); } catch { /* gone */ }
    });
    upstream.addEventListener('error', () => { /* close follows */ });
  }

  private wsMessage(ws: uWS.WebSocket<WsData>, msg: ArrayBuffer, isBinary: boolean): void {
    const d = ws.getUserData();
    if (d.closed) return;
    d.bytesIn += msg.byteLength;
    d.entry.lastUsed = this.ctx.clock.now();
    if (d.upstream.bufferedAmount > WS_UPSTREAM_BUFFER_MAX) {
      // The app does not keep up: refuse to buffer without bound.
      d.closed = true;
      ws.end(1008, 'Tollgate: the app is not keeping up with the messages sent.');
      try { d.upstream.close(1000, 'client too fast'); } catch { /* closed */ }
      return;
    }
    if (isBinary) d.upstream.send(Buffer.copyBytesFrom(new Uint8Array(msg)));
    else d.upstream.send(Buffer.from(msg).toString('utf8'));
  }

  private wsClose(ws: uWS.WebSocket<WsData>, code: number, msg: ArrayBuffer): void {
    const d = ws.getUserData();
    const { entry } = d;
    if (d.closable) entry.open.delete(d.closable);
    entry.lastUsed = this.ctx.clock.now();
    entry.session.addBytes(d.bytesIn, d.bytesOut);
    entry.session.recording.events().event('http.websocket', {
      path: d.path, closeCode: code, bytesIn: d.bytesIn, bytesOut: d.bytesOut, durationMs: Date.now() - d.started,
    });
    if (!d.closed) {
      d.closed = true;
      const valid = code === 1000 || (code >= 3000 && code <= 4999);
      try { d.upstream.close(valid ? code : 1000, valid ? truncateReason(Buffer.from(msg).toString('utf8')) : undefined); } catch { /* closed */ }
    }
  }

  /** End every app session (gateway shutdown is handled by the session manager; this is for tests). */
  async close(): Promise<void> {
    this.sessions.closeAll({ code: 'gateway_shutdown', message: 'Tollgate: the gateway is shutting down.' });
    await Promise.all([...this.pools.values()].map((p) => p.close().catch(() => undefined)));
    this.pools.clear();
  }
}

interface WsData {
  entry: AppSession;
  upstream: UpstreamWebSocket;
  queue: (ArrayBuffer | string)[];
  socket: uWS.WebSocket<WsData> | null;
  closed: boolean;
  started: number;
  bytesIn: number;
  bytesOut: number;
  path: string;
  closable: Closable | null;
}

/** Close reasons are at most 123 bytes; cut on a character boundary. */
function truncateReason(s: string): string {
  let out = s;
  while (Buffer.byteLength(out) > WS_CLOSE_REASON_MAX) out = out.slice(0, -1);
  return out;
}

export function mountHttpApps(ctx: ProtocolContext, front: HttpMount): HttpApps {
  const apps = new HttpApps(ctx, front);
  apps.mount();
  return apps;
}
