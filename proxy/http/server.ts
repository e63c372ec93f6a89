import { STATUS_CODES } from 'node:http';
import uWS from 'uWebSockets.js';
import type { Logger } from 'pino';

/**
 * The HTTP front on uWebSockets.js: a tiny router over buffered requests (REST API, portal, auth
 * pages), raw hooks for streaming handlers (the HTTP app proxy), and WebSocket routes (live view).
 */

export interface HttpRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: Record<string, string>;
  params: Record<string, string>;
  remote: string;
  body: Buffer;
  /** Parsed JSON body; throws HttpError(400) naming the problem. */
  json<T = unknown>(): T;
  cookie(name: string): string | undefined;
}

export interface HttpReply {
  status: number;
  headers?: Record<string, string | string[]>;
  body?: string | Buffer | object | null;
}

export class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly extra: Record<string, unknown> = {}) { super(message); }
}

export type Handler = (req: HttpRequest) => Promise<HttpReply> | HttpReply;

interface Route { method: string; parts: string[]; handler: Handler }

export interface WsRoute<U> {
  /** Decide on the upgrade from the request (auth etc.); return user data or an HttpReply to refuse. */
  upgrade(req: HttpRequest): Promise<{ ok: true; data: U } | { ok: false; reply: HttpReply }>;
  open(ws: uWS.WebSocket<U>): void;
  message?(ws: uWS.WebSocket<U>, data: Buffer, isBinary: boolean): void;
  close?(ws: uWS.WebSocket<U>, code: number, message: string): void;
}

/** A raw handler sees the uWS objects first; return true when it took the request. */
export type RawHook = (res: uWS.HttpResponse, req: uWS.HttpRequest) => boolean;

const MAX_BODY = 1024 * 1024;
/** What a request whose headers carry no valid credential may send (sign-in polls, forms); beyond it 413. */
export const PREAUTH_MAX_BODY = 8 * 1024;

export function statusLine(code: number): string { return `${code} ${STATUS_CODES[code] ?? 'Unknown'}`; }

function parseCookies(h: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!h) return out;
  for (const part of h.split(';')) {
    const i = part.indexOf('=');
    if (i < 0) continue;
    const k = part.slice(0, i).trim();
    if (k && !(k in out)) {
      try { out[k] = decodeURIComponent(part.slice(i + 1).trim()); } catch { out[k] = part.slice(i + 1).trim(); }
    }
  }
  return out;
}

export function buildRequest(base: Pick<HttpRequest, 'method' | 'path' | 'query' | 'headers' | 'remote'>, body: Buffer, params: Record<string, string>): HttpRequest {
  let cookies: Record<string, string> | null = null;
  let parsed: unknown;
  let done = false;
  return {
    method: base.method, path: base.path, query: base.query, headers: base.headers, remote: base.remote, body, params,
    json<T>(): T {
      if (!done) {
        if (!body.length) parsed = {};
        else {
          try { parsed = JSON.parse(body.toString('utf8')); } catch { throw new HttpError(400, 'the request body is not valid JSON', { field: 'body' }); }
        }
        done = true;
        if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new HttpError(400, 'the request body must be a JSON object', { field: 'body' });
      }
      return parsed as T;
    },
    cookie(name: string) { cookies ??= parseCookies(base.headers['cookie']); return cookies[name]; },
  };
}

export class HttpFront {
  private routes: Route[] = [];
  private rawHooks: RawHook[] = [];
  private app: uWS.TemplatedApp;
  private listenSocket: uWS.us_listen_socket | null = null;
  port = 0;
  private openSockets = new Set<uWS.WebSocket<unknown>>();
  /** A request body must have arrived by then (listeners.http.loginTimeout), or the answer is 408. */
  bodyTimeoutMs = 30_000;
  /**
   * Whether a request's headers carry a valid credential, decided before its body is read: bodies
   * of requests without one are capped at PREAUTH_MAX_BODY. Unset: every request may send MAX_BODY.
   */
  signedIn: ((req: HttpRequest) => boolean | Promise<boolean>) | null = null;

  constructor(private log: Logger, public onError: (e: unknown, req: HttpRequest) => HttpReply) {
    this.app = uWS.App();
  }

  route(method: string, pattern: string, handler: Handler): this {
    this.routes.push({ method: method.toUpperCase(), parts: pattern.split('/').filter(Boolean), handler });
    return this;
  }

  raw(hook: RawHook): this { this.rawHooks.push(hook); return this; }

  ws<U>(pattern: string, route: WsRoute<U>): this {
    this.app.ws<U>(pattern, {
      compression: uWS.DISABLED,
      maxPayloadLength: 1024 * 1024,
      idleTimeout: 120,
      maxBackpressure: 4 * 1024 * 1024,
      upgrade: (res, req, context) => {
        const snap = this.snapshot(req, Buffer.alloc(0));
        const key = req.getHeader('sec-websocket-key');
        const proto = req.getHeader('sec-websocket-protocol');
        const ext = req.getHeader('sec-websocket-extensions');
        let aborted = false;
        res.onAborted(() => { aborted = true; });
        // params for ws patterns: use the pattern's :names
        const pparts = pattern.split('/').filter(Boolean);
        const uparts = snap.path.split('/').filter(Boolean);
        pparts.forEach((p, i) => { if (p.startsWith(':')) snap.params[p.slice(1)] = decodeURIComponent(uparts[i] ?? ''); });
        route.upgrade(snap).then((r) => {
          if (aborted) return;
          res.cork(() => {
            if (r.ok) res.upgrade(r.data, key, proto, ext, context);
            else this.write(res, r.reply);
          });
        }, (e) => {
          if (aborted) return;
          res.cork(() => this.write(res, this.onError(e, snap)));
        });
      },
      open: (ws) => { this.openSockets.add(ws as uWS.WebSocket<unknown>); route.open(ws); },
      message: (ws, msg, isBinary) => route.message?.(ws, Buffer.from(msg), isBinary),
      close: (ws, code, msg) => {
        this.openSockets.delete(ws as uWS.WebSocket<unknown>);
        route.close?.(ws, code, Buffer.from(msg).toString('utf8'));
      },
    });
    return this;
  }

  private snapshot(req: uWS.HttpRequest, body: Buffer, remote = ''): HttpRequest {
    const headers: Record<string, string> = {};
    req.forEach((k, v) => { headers[k] = headers[k] ? `${headers[k]}, ${v}` : v; });
    let path = req.getUrl();
    try { path = decodeURI(path); } catch { /* keep raw */ }
    return buildRequest({ method: req.getMethod().toUpperCase(), path, query: new URLSearchParams(req.getQuery() ?? ''), headers, remote }, body, {});
  }

  private match(method: string, path: string): { route: Route; params: Record<string, string> } | { allowed: string[] } | null {
    const parts = path.split('/').filter(Boolean);
    const allowed: string[] = [];
    for (const r of this.routes) {
      if (r.parts.length !== parts.length && !(r.parts.at(-1) === '*' && parts.length >= r.parts.length - 1)) continue;
      const params: Record<string, string> = {};
      let ok = true;
      for (let i = 0; i < r.parts.length; i++) {
        const p = r.parts[i]!;
        if (p === '*') { params['*'] = parts.slice(i).join('/'); break; }
        if (p.startsWith(':')) { if (parts[i] === undefined) { ok = false; break; } params[p.slice(1)] = parts[i]!; } else if (p !== parts[i]) { ok = false; break; }
      }
      if (!ok) continue;
      if (r.method === method || (method === 'HEAD' && r.method === 'GET')) return { route: r, params };
      allowed.push(r.method);
    }
    return allowed.length ? { allowed } : null;
  }

  write(res: uWS.HttpResponse, reply: HttpReply, closeConnection = false): void {
    res.writeStatus(statusLine(reply.status));
    let body: string | Buffer = '';
    let type: string | undefined;
    if (reply.body === undefined || reply.body === null) body = '';
    else if (Buffer.isBuffer(reply.body) || typeof reply.body === 'string') body = reply.body;
    else { body = JSON.stringify(reply.body); type = 'application/json; charset=utf-8'; }
    const headers: Record<string, string | string[]> = { ...(type ? { 'content-type': type } : {}), ...reply.headers };
    for (const [k, v] of Object.entries(headers)) {
      for (const one of Array.isArray(v) ? v : [v]) res.writeHeader(k, one);
    }
    res.writeHeader('x-content-type-options', 'nosniff');
    res.end(body, closeConnection);
  }

  /**
   * Read a request body, authenticating from the headers first: without a valid credential at most
   * PREAUTH_MAX_BODY is accepted (a declared larger body is refused before a byte of it is read;
   * while the credential is being checked, reading pauses at that size); with one, MAX_BODY. 413
   * beyond, 408 when the body has not arrived within bodyTimeoutMs; both close the connection.
   */
  private readBody(res: uWS.HttpResponse, req: HttpRequest, chunks: Buffer[], aborted: () => boolean, run: () => void): void {
    const declared = Number(req.headers['content-length'] ?? 0) || 0;
    let size = 0;
    let limit: number | null = null; // null: the credential is still being checked
    let finished = false;
    let complete = false;
    let paused = false;
    const timer = setTimeout(() => stop({ status: 408, body: { error: 'timeout', message: `the request body did not arrive within ${Math.round(this.bodyTimeoutMs / 1000)} s` } }), this.bodyTimeoutMs);
    timer.unref();
    const stop = (reply: HttpReply) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      if (!aborted()) res.cork(() => this.write(res, reply, true));
    };
    const tooLarge = () => stop({
      status: 413,
      body: limit === MAX_BODY
        ? { error: 'too_large', message: 'request body over 1 MiB' }
        : { error: 'too_large', message: `request body over ${PREAUTH_MAX_BODY / 1024} KiB without a valid credential: authenticate first` },
    });
    const proceed = () => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      run();
    };
    const decide = (ok: boolean) => {
      limit = ok ? MAX_BODY : PREAUTH_MAX_BODY;
      if (finished) return;
      if (declared > limit || size > limit) return tooLarge();
      if (complete) return proceed();
      if (paused) { paused = false; res.resume(); }
    };
    if (declared > MAX_BODY) { limit = MAX_BODY; tooLarge(); return; }
    let known: boolean | Promise<boolean> = true;
    try { known = this.signedIn ? this.signedIn(req) : true; } catch { known = false; }
    if (typeof known === 'boolean') decide(known);
    else known.then(decide, () => decide(false));
    if (finished) return;
    res.onData((ab, isLast) => {
      if (finished) return;
      size += ab.byteLength;
      if (size > (limit ?? MAX_BODY)) return tooLarge();
      chunks.push(Buffer.from(ab.slice(0)));
      if (limit === null && size >= PREAUTH_MAX_BODY && !paused && !isLast) { paused = true; res.pause(); }
      if (isLast) { complete = true; if (limit !== null) proceed(); }
    });
  }

  start(host: string, port: number): Promise<number> {
    this.app.any('/*', (res, req) => {
      for (const hook of this.rawHooks) if (hook(res, req)) return;
      const method = req.getMethod().toUpperCase();
      const remote = Buffer.from(res.getRemoteAddressAsText()).toString();
      const snapReq = this.snapshot(req, Buffer.alloc(0), remote);
      const m = this.match(method, snapReq.path);
      let aborted = false;
      res.onAborted(() => { aborted = true; });
      const respond = (reply: HttpReply) => {
        if (aborted) return;
        res.cork(() => this.write(res, reply));
      };
      if (!m) return respond({ status: 404, body: { error: 'not_found', message: `no route for ${method} ${snapReq.path}` } });
      if ('allowed' in m) return respond({ status: 405, headers: { allow: m.allowed.join(', ') }, body: { error: 'method_not_allowed', message: `${method} is not allowed here` } });
      const chunks: Buffer[] = [];
      const run = () => {
        const params = Object.fromEntries(Object.entries(m.params).map(([k, v]) => { try { return [k, decodeURIComponent(v)]; } catch { return [k, v]; } }));
        const full = buildRequest(snapReq, Buffer.concat(chunks), params);
        Promise.resolve().then(() => m.route.handler(full)).then(respond, (e) => respond(this.onError(e, full)));
      };
      if (method === 'GET' || method === 'HEAD' || (method === 'DELETE' && !snapReq.headers['content-length'])) { run(); return; }
      this.readBody(res, snapReq, chunks, () => aborted, run);
    });
    return new Promise((resolve, reject) => {
      this.app.listen(host, port, (s) => {
        if (!s) return reject(new Error(`cannot listen on ${host}:${port}`));
        this.listenSocket = s;
        this.port = uWS.us_socket_local_port(s);
        resolve(this.port);
      });
    });
  }

  close(): void {
    if (this.listenSocket) { uWS.us_listen_socket_close(this.listenSocket); this.listenSocket = null; }
    for (const ws of this.openSockets) { try { ws.end(1001, 'gateway shutting down'); } catch { /* already closed */ } }
    this.openSockets.clear();
    try { (this.app as unknown as { close?: () => void }).close?.(); } catch { /* older uWS */ }
  }

  get uws(): uWS.TemplatedApp { return this.app; }
}
