/** WebSockets to an app: the same sign-in, grant and rule checks as a request, then frames both ways with bounded buffers. */
import { WebSocket as UpstreamWebSocket } from 'undici';
import type uWS from 'uWebSockets.js';
import type { EndReason, HttpMount, ProtocolContext } from '../types.js';
import type { AppRegistry } from './apps.js';
import { injectedHeaderNames } from './credentials.js';
import { checkRules } from './data-path.js';
import { upstreamRequestHeaders } from './headers.js';
import { errorPage, noGrantPage } from './pages.js';
import { resolveRequest, rulePath, upstreamPath, type GatewayOrigin } from './routing.js';
import type { AppSession, AppSessions, Closable } from './sessions.js';
import type { AppSignIn } from './signin.js';
import { header, readIncoming, writePage, type ReqState } from './incoming.js';

const WS_CLOSE_REASON_MAX = 120;
const WS_UPSTREAM_BUFFER_MAX = 16 * 1024 * 1024;

export interface WsData {
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

export class AppWebSockets {
  constructor(private ctx: ProtocolContext, private front: HttpMount, private apps: AppRegistry, private origin: () => GatewayOrigin,
    private signIn: AppSignIn, private sessions: AppSessions) {}

  onUpgrade(res: uWS.HttpResponse, req: uWS.HttpRequest, context: uWS.us_socket_context_t): void {
    const inc = readIncoming(res, req);
    const key = req.getHeader('sec-websocket-key');
    const protocols = req.getHeader('sec-websocket-protocol');
    const st: ReqState = { aborted: false, done: false, bytesIn: 0 };
    const r = resolveRequest({ host: inc.host, url: inc.url, query: inc.query, gateway: this.origin(), byLabel: this.apps.byLabel, byName: this.apps.byName });
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
    const who = this.signIn.signedIn(inc, app);
    if (!who) { writePage(res, st, errorPage(401, 'Sign in first', `Tollgate: sign in to ${app.target.name} first.`)); return; }
    const pathOnly = route.rest.split('?')[0]!;
    const rp = rulePath(pathOnly);
    if (rp === null) { writePage(res, st, errorPage(400, 'Bad request', 'Tollgate: malformed path.')); return; }
    let upstream: UpstreamWebSocket | null = null;
    res.onAborted(() => { st.aborted = true; upstream?.close(); });

    const go = (entry: AppSession) => {
      const d = checkRules(entry, inc, 'GET', rp, route);
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
          : noGrantPage({ identity: who.sub, app: app.target.name, reason: a.reason, publicUrl: this.ctx.config.publicUrl }));
        return;
      }
      go(a.entry);
    }, () => writePage(res, st, errorPage(500, 'Gateway error', 'Tollgate: the grant check failed.')));
  }

  wsOpen(ws: uWS.WebSocket<WsData>): void {
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

  wsMessage(ws: uWS.WebSocket<WsData>, msg: ArrayBuffer, isBinary: boolean): void {
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

  wsClose(ws: uWS.WebSocket<WsData>, code: number, msg: ArrayBuffer): void {
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
}
