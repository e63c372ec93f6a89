/**
 * The browser side, served on the gateway's HTTP front through mountHttp:
 *   /vnc/view?target=T&role=R    an interactive canvas viewer for an active grant
 *   /vnc/watch?session=ID        the SOC's live view from the current frame, terminate / lock
 *   /vnc/replay?recording=ID     replay of a screen recording with a seek bar (keyframe index)
 *   /vnc/ws?target=T&role=R      the viewer's WebSocket: screen lines (as recorded) down, input up
 * The WebSocket is checked like a native login: the gateway's own origin (a page of another origin,
 * an HTTP app say, cannot open it with the person's cookie), the gateway web session cookie, then
 * the same grant/lock/hours checks (ctx.access.authenticate with the principal). Behind it the gateway is the RFB
 * client: it asks for updates, and the relay applies the role's view-only and clipboard rules.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { EventEmitter } from 'node:events';
import { Duplex } from 'node:stream';
import type uWS from 'uWebSockets.js';
import type { HttpMount, LiveSession, ProtocolContext } from '../types.js';
import type { ScreenWriter } from '../../recorder/screen/index.js';
import { encodeKeyEvent, encodePointerEvent, encodeSetEncodings, encodeUpdateRequest, ENC } from './client-messages.js';
import { clipboardOf, viewOnlyOf } from './config.js';
import { screenWriterFor, startFailure, startUpstream } from './frontend.js';
import { ServerStreamState } from './server-messages.js';
import { VncRelay } from './relay.js';
import { cookieValue, escapeHtml as esc } from '../web.js';

const ASSET = readFileSync(join(import.meta.dirname, 'assets', 'screen.js'), 'utf8');
const CSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/** Buffered WebSocket bytes above which screen lines are skipped (a keyframe catches the viewer up). */
const BEHIND_BYTES = 8 << 20;
const UPDATE_INTERVAL_MS = 40;


function page(mode: string, title: string, attrs: Record<string, string>, body: string): string {
  const data = Object.entries(attrs).map(([k, v]) => ` data-${k}="${esc(v)}"`).join('');
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(title)}</title><style>
body{font:14px system-ui,sans-serif;margin:0;background:#1b1d21;color:#e8e8e8}header{padding:8px 12px;display:flex;gap:12px;align-items:center;flex-wrap:wrap}
main{padding:0 12px 12px}canvas{background:#000;max-width:100%;outline:none;display:block}#status{color:#9ad}#status.bad{color:#f88}
button,input{font:inherit}ul#events{max-height:200px;overflow:auto;font-family:monospace;font-size:12px;padding-left:16px}
input[type=range]{width:min(600px,90vw)}
</style></head><body data-mode="${esc(mode)}"${data}><header><strong>${esc(title)}</strong><span id="status" role="status">connecting…</span>${body}</header>
<main><canvas id="screen" tabindex="0" width="640" height="480" aria-label="remote screen"></canvas><ul id="events" aria-label="events"></ul></main>
<script type="module" src="/vnc/screen.js"></script></body></html>`;
}

function send(res: uWS.HttpResponse, status: string, type: string, body: string): void {
  res.cork(() => {
    res.writeStatus(status).writeHeader('content-type', type).writeHeader('cache-control', 'no-store')
      .writeHeader('content-security-policy', CSP).writeHeader('x-content-type-options', 'nosniff').end(body);
  });
}

function query(q: string): URLSearchParams {
  return new URLSearchParams(q ?? '');
}


interface WsData {
  ctx: ProtocolContext;
  auth: import('../types.js').Authorized;
  clientAddr: string;
  closed: boolean;
  /** Emits 'close' when the browser's WebSocket closes (the session then ends, see withSession). */
  gone: EventEmitter;
  client?: Duplex;
  session?: LiveSession;
}

export function mountBrowser(ctx: ProtocolContext, front: HttpMount): void {
  front.raw((res, req) => {
    const url = req.getUrl();
    if (!url.startsWith('/vnc/')) return false;
    const q = query(req.getQuery() ?? '');
    if (url === '/vnc/screen.js') {
      send(res, '200 OK', 'text/javascript; charset=utf-8', ASSET);
    } else if (url === '/vnc/view') {
      const target = q.get('target') ?? '';
      const role = q.get('role') ?? '';
      send(res, '200 OK', 'text/html; charset=utf-8', page('view', `${target}${role ? ` (${role})` : ''} — Tollgate VNC`, { target, role }, ''));
    } else if (url === '/vnc/watch') {
      const id = q.get('session') ?? '';
      send(res, '200 OK', 'text/html; charset=utf-8', page('watch', 'Live VNC session — Tollgate', { session: id },
        '<label>Reason <input id="reason" value="terminated from the live view"></label><button id="kill" type="button">Terminate</button><button id="lock" type="button">Lock identity</button>'));
    } else if (url === '/vnc/replay') {
      const id = q.get('recording') ?? '';
      send(res, '200 OK', 'text/html; charset=utf-8', page('replay', 'VNC recording — Tollgate', { recording: id },
        '<button id="play" type="button">Play</button><input id="seek" type="range" min="0" max="0" step="0.01" value="0" aria-label="seek"><span id="time">0.0 s</span>'));
    } else if (url === '/vnc/ws') {
      return false; // the WebSocket route below
    } else {
      send(res, '404 Not Found', 'text/plain; charset=utf-8', 'Tollgate: no such VNC page');
    }
    return true;
  });

  front.app.ws<WsData>('/vnc/ws', {
    compression: 0,
    maxPayloadLength: 64 * 1024,
    maxBackpressure: 64 << 20,
    idleTimeout: 0,
    upgrade: (res, req, context) => {
      const key = req.getHeader('sec-websocket-key');
      const proto = req.getHeader('sec-websocket-protocol');
      const ext = req.getHeader('sec-websocket-extensions');
      const cookie = cookieValue(req.getHeader('cookie'), front.sessionCookie);
      const q = query(req.getQuery() ?? '');
      const clientAddr = Buffer.from(res.getRemoteAddressAsText()).toString() || 'browser';
      const foreign = front.foreignOrigin((h) => req.getHeader(h) || undefined, true);
      let aborted = false;
      res.onAborted(() => { aborted = true; });
      const refuse = (status: string, msg: string) => {
        if (!aborted) res.cork(() => { res.writeStatus(status).writeHeader('content-type', 'text/plain; charset=utf-8').end(msg); });
      };
      if (foreign) { refuse('403 Forbidden', `Tollgate: WebSocket refused: ${foreign}`); return; }
      void (async () => {
        const principal = cookie ? await ctx.access.webPrincipal(cookie) : null;
        if (!principal) return refuse('401 Unauthorized', 'Tollgate: sign in first');
        const target = q.get('target') ?? '';
        const role = q.get('role') ?? '';
        const outcome = await ctx.access.authenticate({ protocol: 'vnc', username: role ? `${target}:${role}` : target, clientAddr, principal });
        if (!outcome.ok) return refuse('403 Forbidden', outcome.reason);
        if (outcome.auth.target.protocol !== 'vnc') return refuse('400 Bad Request', `Tollgate: ${target} is not a VNC target`);
        if (aborted) return;
        res.cork(() => res.upgrade<WsData>({ ctx, auth: outcome.auth, clientAddr, closed: false, gone: new EventEmitter() }, key, proto, ext, context));
      })().catch((e) => refuse('500 Internal Server Error', `Tollgate: ${(e as Error).message}`));
    },
    open: (ws) => { void openViewer(ws); },
    message: (ws, msg) => {
      const d = ws.getUserData();
      if (!d.client) return;
      let m: { type?: unknown; down?: unknown; keysym?: unknown; mask?: unknown; x?: unknown; y?: unknown };
      try { m = JSON.parse(Buffer.from(msg).toString('utf8')); } catch { return; }
      const n = (v: unknown, max: number) => (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max ? v : null);
      if (m.type === 'key' && typeof m.down === 'boolean' && n(m.keysym, 0x7fffffff) !== null) {
        d.client.push(encodeKeyEvent(m.down, m.keysym as number));
      } else if (m.type === 'pointer' && n(m.mask, 255) !== null && n(m.x, 65535) !== null && n(m.y, 65535) !== null) {
        d.client.push(encodePointerEvent(m.mask as number, m.x as number, m.y as number));
      }
    },
    close: (ws) => {
      const d = ws.getUserData();
      d.closed = true;
      d.client?.destroy();
      d.gone.emit('close');
    },
  });
}

async function openViewer(ws: uWS.WebSocket<WsData>): Promise<void> {
  const d = ws.getUserData();
  const { ctx, auth } = d;
  const sendJson = (o: unknown): boolean => {
    if (d.closed) return false;
    try { ws.send(JSON.stringify(o), false); return true; } catch { return false; }
  };
  const close = (msg: string) => {
    if (d.closed) return;
    sendJson({ type: 'end', message: msg });
    d.closed = true;
    try { ws.end(1000, msg.slice(0, 120)); } catch { /* gone */ }
  };
  if (d.closed) return;
  await ctx.sessions.withSession(auth, { protocol: 'vnc', clientAddr: d.clientAddr, client: d.gone }, async (s) => {
    try {
      const up = await startUpstream(ctx, s);
      if (d.closed) { up.socket.destroy(); return { code: 'client_exit', message: 'the browser left before the session started' }; }
      let behind = false;
      let writer: ScreenWriter | null = null;
      const tee = (type: string, data: Record<string, unknown>) => {
        if (d.closed) return;
        if (type !== 'keyframe' && ws.getBufferedAmount() > BEHIND_BYTES) { behind = true; return; }
        sendJson({ type, ...data });
      };
      writer = screenWriterFor(ctx, s, up.init.width, up.init.height, tee);
      let timer: ReturnType<typeof setTimeout> | null = null;
      const client = new Duplex({
        read() { /* input is pushed from WebSocket messages */ },
        // The browser gets the screen through the recorder's tee and messages through onServerMessage below.
        write(_chunk: Buffer, _enc, cb) { cb(); },
        destroy(err, cb) {
          if (timer) clearTimeout(timer);
          close('the session ended');
          cb(err);
        },
      });
      d.client = client;
      const state = new ServerStreamState(up.init.width, up.init.height, up.init.pf);
      sendJson({ type: 'init', width: up.init.width, height: up.init.height, name: `${auth.target.name} via Tollgate`, viewOnly: viewOnlyOf(auth.role), clipboard: clipboardOf(auth.role), session: s.id });
      client.push(encodeSetEncodings([ENC.ZRLE, ENC.Hextile, ENC.CopyRect, ENC.Raw, ENC.DesktopSize, ENC.Cursor]));
      client.push(encodeUpdateRequest(false, 0, 0, up.init.width, up.init.height));
      s.onWarning((message, msLeft) => { sendJson({ type: 'warning', message, msLeft }); });
      s.audit('vnc.connect', { browser: true, width: up.init.width, height: up.init.height, clipboard: clipboardOf(auth.role), viewOnly: viewOnlyOf(auth.role) });
      new VncRelay({
        ctx, session: s, client, upstream: up.socket, state, writer, clipboard: clipboardOf(auth.role), viewOnly: viewOnlyOf(auth.role),
        clientRest: Buffer.alloc(0), upstreamRest: up.rest,
        onServerMessage: (m) => {
          if (m.type === 'FramebufferUpdate') {
            if (behind && ws.getBufferedAmount() < BEHIND_BYTES / 8) { behind = false; writer?.keyframe(); }
            timer ??= setTimeout(() => { timer = null; if (!client.destroyed) client.push(encodeUpdateRequest(true, 0, 0, state.width, state.height)); }, UPDATE_INTERVAL_MS);
          } else if (m.type === 'ServerCutText') {
            sendJson({ type: 'clipboard', text: m.text.toString('latin1').slice(0, 65536) });
          } else if (m.type === 'Bell') {
            sendJson({ type: 'bell' });
          }
        },
      }).start();
      return await s.ending;
    } catch (e) {
      const end = startFailure(e);
      close(end.message);
      return end;
    }
  }).catch((e: Error) => close(startFailure(e).message));
}
