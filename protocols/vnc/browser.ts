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
import { encodeClientCutText, encodeKeyEvent, encodePointerEvent, encodeSetEncodings, encodeUpdateRequest, ENC, MAX_CUT_TEXT } from './client-messages.js';
import { clipboardOf, viewOnlyOf } from './config.js';
import { screenWriterFor, startFailure, startUpstream } from './frontend.js';
import { ServerStreamState } from './server-messages.js';
import { VncRelay } from './relay.js';
import { escapeHtml as esc, intIn, sendPage, viewerMessage, viewerSender, viewerUpgrade } from '../web.js';

const ASSET = readFileSync(join(import.meta.dirname, 'assets', 'screen.js'), 'utf8');
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
      sendPage(res, '200 OK', 'text/javascript; charset=utf-8', ASSET);
    } else if (url === '/vnc/view') {
      const target = q.get('target') ?? '';
      const role = q.get('role') ?? '';
      sendPage(res, '200 OK', 'text/html; charset=utf-8', page('view', `${target}${role ? ` (${role})` : ''} — Tollgate VNC`, { target, role },
        '<label for="clip">Clipboard</label><textarea id="clip" rows="1" cols="30"></textarea><button id="clip-send" type="button">Send to the desktop</button>'));
    } else if (url === '/vnc/watch') {
      const id = q.get('session') ?? '';
      sendPage(res, '200 OK', 'text/html; charset=utf-8', page('watch', 'Live VNC session — Tollgate', { session: id },
        '<label>Reason <input id="reason" value="terminated from the live view"></label><button id="kill" type="button">Terminate</button><button id="lock" type="button">Lock identity</button>'));
    } else if (url === '/vnc/replay') {
      const id = q.get('recording') ?? '';
      sendPage(res, '200 OK', 'text/html; charset=utf-8', page('replay', 'VNC recording — Tollgate', { recording: id },
        '<button id="play" type="button">Play</button><input id="seek" type="range" min="0" max="0" step="0.01" value="0" aria-label="seek"><span id="time">0.0 s</span>'));
    } else if (url === '/vnc/ws') {
      return false; // the WebSocket route below
    } else {
      sendPage(res, '404 Not Found', 'text/plain; charset=utf-8', 'Tollgate: no such VNC page');
    }
    return true;
  });

  front.app.ws<WsData>('/vnc/ws', {
    compression: 0,
    maxPayloadLength: 64 * 1024,
    maxBackpressure: 64 << 20,
    idleTimeout: 0,
    upgrade: viewerUpgrade<WsData>(ctx, front, 'vnc', (auth, clientAddr) => ({ ctx, auth, clientAddr, closed: false, gone: new EventEmitter() })),
    open: (ws) => { void openViewer(ws); },
    message: (ws, msg) => {
      const d = ws.getUserData();
      const m = viewerMessage(msg);
      if (!d.client || !m) return;
      if (m.type === 'key' && typeof m.down === 'boolean' && intIn(m.keysym, 0x7fffffff) !== null) {
        d.client.push(encodeKeyEvent(m.down, m.keysym as number));
      } else if (m.type === 'pointer' && intIn(m.mask, 255) !== null && intIn(m.x, 65535) !== null && intIn(m.y, 65535) !== null) {
        d.client.push(encodePointerEvent(m.mask as number, m.x as number, m.y as number));
      } else if (m.type === 'clipboard' && typeof m.text === 'string' && m.text.length <= MAX_CUT_TEXT) {
        // RFB cut text is Latin-1; the relay applies the role's clipboard rule (and audits a refusal).
        d.client.push(encodeClientCutText(Buffer.from(m.text.replace(/[^\x00-\xff]/g, '?'), 'latin1')));
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
  const { send: sendJson, close } = viewerSender(ws as uWS.WebSocket<unknown>, d);
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
      // The gateway's reason (kill, lock, expiry) is what the browser is told when the relay closes.
      let ending = 'the session ended';
      s.onTerminate((r) => { ending = r.message; });
      let timer: ReturnType<typeof setTimeout> | null = null;
      const client = new Duplex({
        read() { /* input is pushed from WebSocket messages */ },
        // The browser gets the screen through the recorder's tee and messages through onServerMessage below.
        write(_chunk: Buffer, _enc, cb) { cb(); },
        destroy(err, cb) {
          if (timer) clearTimeout(timer);
          close(ending);
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
