/**
 * The data path of the app proxy: an app request is signed in (the app's cookie), checked against
 * the grant (the session cache) and the rules, given its injected credential, and streamed both
 * ways with backpressure through an undici Pool per app.
 */
import { Readable } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';
import type uWS from 'uWebSockets.js';
import type { HttpMount, ProtocolContext } from '../types.js';
import type { AppConfig } from './config.js';
import { injectedHeaderNames } from './credentials.js';
import { downstreamResponseHeaders, overrideMethods, refusedSetCookie, safeHeaderValue, upstreamRequestHeaders } from './headers.js';
import { errorPage, noGrantPage } from './pages.js';
import { appHost, CALLBACK_PATH, rulePath, upstreamPath, type AppRoute, type GatewayOrigin } from './routing.js';
import type { AppSession, AppSessions, Closable } from './sessions.js';
import type { AppSignIn } from './signin.js';
import { header, redirect, statusLine, writePage, type Incoming, type ReqState } from './incoming.js';

const UPLOAD_HWM = 256 * 1024;

/**
 * Drop an upstream body without an unhandled 'error'. Empty or finished bodies are drained (cheap);
 * destroying one early makes undici build an error with a stack trace, which is costly per request.
 */
function discard(body: Readable, abort = false): void {
  body.on('error', () => undefined);
  if (abort) body.destroy();
  else (body as Readable & { dump?: () => Promise<void> }).dump?.().catch(() => undefined) ?? body.resume();
}

const RULE_STRENGTH: Record<string, number> = { kill: 3, deny: 2, alert: 1, allow: 0 };

/**
 * The rules for this request, on the normalized path, for the method and every method the
 * request asks the app to use instead (X-HTTP-Method-Override and friends, `_method` in the
 * query): the strongest decision wins, so `POST` + `X-HTTP-Method-Override: DELETE` is a DELETE.
 */
export function checkRules(entry: AppSession, inc: Incoming, method: string, rp: string, route: AppRoute): ReturnType<AppSession['session']['check']> & { method: string } {
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

export class DataPath {
  private pools = new Map<string, Pool>();

  constructor(private ctx: ProtocolContext, private front: HttpMount, private origin: () => GatewayOrigin, private signIn: AppSignIn,
    private sessions: AppSessions) {}

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

  appRequest(res: uWS.HttpResponse, st: ReqState, inc: Incoming, route: AppRoute): void {
    const { app } = route;
    const method = inc.method.toUpperCase();
    if (!/^[A-Z]{1,20}$/.test(method)) { writePage(res, st, errorPage(400, 'Bad request', 'Tollgate: malformed request method.')); return; }
    if (method === 'CONNECT' || method === 'TRACE') { writePage(res, st, errorPage(405, 'Method not allowed', `Tollgate: ${method} is not proxied.`), [['allow', 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS']]); return; }
    const pathOnly = route.rest.split('?')[0]!;
    if (pathOnly === CALLBACK_PATH) { this.signIn.callback(res, st, inc, route); return; }
    const cl = header(inc, 'content-length');
    const te = header(inc, 'transfer-encoding');
    if (cl !== undefined && (!/^\d{1,15}$/.test(cl) || te !== undefined)) { writePage(res, st, errorPage(400, 'Bad request', 'Tollgate: malformed Content-Length.')); return; }
    const who = this.signIn.signedIn(inc, app);
    if (!who) {
      if (method === 'GET' || method === 'HEAD') {
        const ret = route.base + route.rest;
        redirect(res, st, `${this.ctx.config.publicUrl}/apps/_auth?app=${encodeURIComponent(app.target.name)}&return=${encodeURIComponent(ret)}`);
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
          : noGrantPage({ identity: who.sub, app: app.target.name, reason: a.reason, publicUrl: this.ctx.config.publicUrl }));
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

    const decision = checkRules(entry, inc, method, rp, route);
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

  /** Close every upstream connection pool. */
  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((p) => p.close().catch(() => undefined)));
    this.pools.clear();
  }
}
