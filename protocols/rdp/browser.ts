/**
 * RDP desktops in the browser, served on the gateway's HTTP front through mountHttp:
 *   /rdp/view?target=T&role=R   the page (a canvas sized to the window, a clipboard box)
 *   /rdp/view.js                its script (it draws with the portal's screen renderer)
 *   /rdp/ws?target=T&role=R&width=W&height=H&kbd=TAG
 *                               the WebSocket: the recorder's screen lines down (what the live view
 *                               and replay draw), keys / pointer / wheel / clipboard up
 * The WebSocket is checked like a native login (protocols/web.ts: own origin, web session, the
 * grant's holder only). Behind it the gateway is the RDP client (client.ts) with the session's
 * minted credential, through the same relay as a native client: recorded, watchable, clipboard
 * rules, banners and enforcement alike.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type uWS from 'uWebSockets.js';
import type { Authorized, HttpMount, LiveSession, ProtocolContext } from '../types.js';
import type { ScreenRecorder, SessionRecording } from '../../recorder/types.js';
import { escapeHtml as esc, intIn, sendPage, viewerMessage, viewerSender, viewerUpgrade } from '../web.js';
import { browserHello, GatewayRdpClient } from './client.js';
import { clipboardRules, roleChannels } from './config.js';
import { CLIENT_USER_ID, FIRST_CHANNEL_ID, startSession } from './frontend.js';
import { keyboardLayoutOf } from './keyboard.js';
import { MCS_GLOBAL_CHANNEL } from './mcs.js';
import type { RdpRecorder } from './record.js';
import { UpstreamError } from './upstream.js';

const ASSET = readFileSync(join(import.meta.dirname, 'assets', 'view.js'), 'utf8');
/** Buffered WebSocket bytes above which screen lines are skipped (a keyframe catches the page up). */
const BEHIND_BYTES = 8 << 20;
/** Desktop sizes the page may ask for (RDP allows up to 8192; the recorder's frame is bounded too). */
const MIN_W = 320, MAX_W = 4096, MIN_H = 200, MAX_H = 2400;
const MAX_CLIPBOARD_TEXT = 256 * 1024;

interface WsData {
  ctx: ProtocolContext;
  auth: Authorized;
  clientAddr: string;
  query: URLSearchParams;
  closed: boolean;
  /** The RDP client is connected to the relay (closing it now ends the session). */
  started: boolean;
  client?: GatewayRdpClient;
}

function page(target: string, role: string): string {
  const title = `${target}${role ? ` (${role})` : ''} — Tollgate RDP`;
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(title)}</title><style>
body{font:14px system-ui,sans-serif;margin:0;background:#1b1d21;color:#e8e8e8}header{padding:6px 12px;display:flex;gap:10px;align-items:center;flex-wrap:wrap}
h1{font-size:15px;margin:0}main{padding:0 12px 12px}canvas{outline:none}canvas:focus{outline:2px solid #9ad}#status.bad{color:#ffb0b0}
#status{color:#9ad;flex:1 0 100%;order:9;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;min-height:1.3em}
button,textarea{font:inherit}textarea{vertical-align:middle}
</style></head><body data-target="${esc(target)}" data-role="${esc(role)}"><header><h1>${esc(title)}</h1><span id="status" role="status">connecting…</span>
<label for="clip">Clipboard</label><textarea id="clip" rows="1" cols="28"></textarea><button id="clip-send" type="button" disabled>Send to the desktop</button>
<button id="reconnect" type="button" hidden>Reconnect</button></header>
<main><canvas id="screen" tabindex="0" role="application" aria-roledescription="remote desktop" aria-label="Remote desktop of ${esc(target)}" width="640" height="480"></canvas></main>
<script type="module" src="/rdp/view.js"></script></body></html>`;
}

/** The session's recording with its screen lines also sent to the page. */
function teeRecording(rec: SessionRecording, tee: (type: string, data: Record<string, unknown>) => void): SessionRecording {
  return {
    sessionId: rec.sessionId,
    cast: (o) => rec.cast(o),
    queries: () => rec.queries(),
    events: () => rec.events(),
    screen: (o): ScreenRecorder => {
      const s = rec.screen(o);
      return { write: (type, data) => { s.write(type, data); tee(type, data); }, close: () => s.close() };
    },
    close: () => rec.close(),
  };
}

export function mountBrowser(ctx: ProtocolContext, front: HttpMount): void {
  front.raw((res, req) => {
    const url = req.getUrl();
    if (!url.startsWith('/rdp/')) return false;
    const q = new URLSearchParams(req.getQuery() ?? '');
    if (url === '/rdp/view.js') sendPage(res, '200 OK', 'text/javascript; charset=utf-8', ASSET);
    else if (url === '/rdp/view') sendPage(res, '200 OK', 'text/html; charset=utf-8', page(q.get('target') ?? '', q.get('role') ?? ''));
    else if (url === '/rdp/ws') return false; // the WebSocket route below
    else sendPage(res, '404 Not Found', 'text/plain; charset=utf-8', 'Tollgate: no such RDP page');
    return true;
  });

  front.app.ws<WsData>('/rdp/ws', {
    compression: 0,
    maxPayloadLength: MAX_CLIPBOARD_TEXT * 3 + 1024,
    maxBackpressure: 64 << 20,
    idleTimeout: 0,
    upgrade: viewerUpgrade<WsData>(ctx, front, 'rdp', (auth, clientAddr, query) => ({ ctx, auth, clientAddr, query, closed: false, started: false })),
    open: (ws) => { void openDesktop(ws); },
    message: (ws, msg) => {
      const d = ws.getUserData();
      const m = viewerMessage(msg);
      const c = d.client;
      if (!c || !m || !c.ready) return;
      const x = intIn(m.x, 65535), y = intIn(m.y, 65535);
      if (m.type === 'key' && typeof m.code === 'string' && m.code.length <= 32 && typeof m.down === 'boolean') c.key(m.code, m.down);
      else if (m.type === 'pointer' && x !== null && y !== null && intIn(m.buttons, 31) !== null) c.pointer(x, y, m.buttons as number);
      else if (m.type === 'wheel' && x !== null && y !== null && intIn(m.dx, 10_000, -10_000) !== null && intIn(m.dy, 10_000, -10_000) !== null) c.wheel(x, y, m.dx as number, m.dy as number);
      else if (m.type === 'sync') c.sync({ caps: m.caps === true, num: m.num === true, scroll: m.scroll === true });
      else if (m.type === 'clipboard' && typeof m.text === 'string' && m.text.length <= MAX_CLIPBOARD_TEXT) c.clipboardText(m.text);
    },
    close: (ws) => {
      const d = ws.getUserData();
      d.closed = true;
      if (d.started) d.client?.close();
    },
  });
}

function sizeFrom(q: URLSearchParams): { width: number; height: number } {
  const n = (k: string, min: number, max: number, dflt: number) => {
    const v = Number(q.get(k));
    return Number.isFinite(v) && v > 0 ? Math.max(min, Math.min(max, Math.floor(v))) : dflt;
  };
  // Widths a multiple of 4: what RDP servers expect of a desktop (and of uncompressed bitmaps).
  return { width: n('width', MIN_W, MAX_W, 1024) & ~3, height: n('height', MIN_H, MAX_H, 768) };
}

async function openDesktop(ws: uWS.WebSocket<WsData>): Promise<void> {
  const d = ws.getUserData();
  const { ctx, auth } = d;
  const { send: sendJson, close } = viewerSender(ws as uWS.WebSocket<unknown>, d);
  let ending = 'the session ended';
  let session: LiveSession | null = null;
  try {
    const { width, height } = sizeFrom(d.query);
    const keyboardLayout = keyboardLayoutOf(d.query.get('kbd'));
    const rules = clipboardRules(auth.role);
    const clip = roleChannels(auth.role).has('cliprdr') && (rules.toServer || rules.toClient);
    const s = await ctx.sessions.open(auth, { protocol: 'rdp', clientAddr: d.clientAddr });
    session = s;
    s.onTerminate((r) => { ending = r.message; });
    s.onWarning((message, msLeft) => { sendJson({ type: 'warning', message, msLeft }); });
    const client = new GatewayRdpClient(
      { userId: CLIENT_USER_ID, ioChannel: MCS_GLOBAL_CHANNEL, clipChannel: clip ? FIRST_CHANNEL_ID : null, keyboardLayout, toServer: rules.toServer, toClient: rules.toClient },
      {
        desktop: (w, h, bpp) => { sendJson({ type: 'desktop', width: w, height: h, bpp }); },
        clipboard: (text) => { sendJson({ type: 'clipboard', text: text.slice(0, MAX_CLIPBOARD_TEXT) }); },
        problem: (message) => { ending = `Tollgate: ${message}`; sendJson({ type: 'problem', message }); },
        // After the relay's last lines (the final banner and keyframe) have gone to the page.
        closed: () => { setImmediate(() => close(ending)); },
      },
    );
    d.client = client;
    let behind = false;
    let recorder: RdpRecorder | null = null;
    const tee = (type: string, data: Record<string, unknown>) => {
      if (d.closed) return;
      if (type !== 'keyframe' && ws.getBufferedAmount() > BEHIND_BYTES) { behind = true; return; }
      if (behind && ws.getBufferedAmount() < BEHIND_BYTES / 8) {
        behind = false;
        queueMicrotask(() => recorder?.keyframe());
      }
      sendJson({ type, ...data });
    };
    sendJson({ type: 'init', session: s.id, name: `${auth.target.name} via Tollgate`, width, height, clipboard: { toServer: rules.toServer && clip, toClient: rules.toClient && clip } });
    s.audit('rdp.browser', { width, height, keyboardLayout: `0x${keyboardLayout.toString(16).padStart(8, '0')}`, clipboard: clip });
    recorder = await startSession(ctx, s, auth, client.socket, () => ({ frames: [], rest: Buffer.alloc(0) }), browserHello({ width, height, keyboardLayout, channels: clip ? ['cliprdr'] : [] }), {
      recording: teeRecording(s.recording, tee),
    });
    d.started = true;
    // The page left while the desktop was being connected: end it now.
    if (d.closed) client.close();
  } catch (e) {
    const reason = e instanceof UpstreamError ? `Tollgate: ${e.message}` : `Tollgate: the desktop could not be opened: ${(e as Error).message}`;
    close(reason);
    const s = session as LiveSession | null;
    if (s && !s.ended) await s.end({ code: e instanceof UpstreamError ? 'target_error' : 'error', message: reason });
  }
}
