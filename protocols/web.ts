/**
 * The small pieces of the web every HTML-serving part of the gateway needs (the HTTP front, the
 * HTTP app proxy, the browser desktops): HTML escaping and Cookie header parsing, one rule each;
 * and what the browser desktops (VNC's /vnc/*, RDP's /rdp/*) share: the pages'
 * Content-Security-Policy, and the WebSocket upgrade, which is checked like a native login: the
 * gateway's own origin (a page of another origin, an HTTP app say, cannot open it with the
 * person's cookie), the gateway web session cookie, then the same grant / lock / hours checks
 * (ctx.access.authenticate with the principal) for the target and role in the query. Only the
 * grant's holder gets through.
 */
import type uWS from 'uWebSockets.js';
import type { Authorized, HttpMount, ProtocolContext } from './types.js';


const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Text for HTML element content and quoted attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!);
}

/**
 * Cookies by name from a Cookie header (values percent-decoded when they decode). A name sent
 * twice (a cookie tossed in from a parent domain or another path next to the real one) is
 * ambiguous and reads as null, so it can never choose a session.
 */
export function parseCookies(header: string | undefined): Map<string, string | null> {
  const out = new Map<string, string | null>();
  if (!header) return out;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i < 0) continue;
    const k = part.slice(0, i).trim();
    if (!k) continue;
    if (out.has(k)) { out.set(k, null); continue; }
    const v = part.slice(i + 1).trim();
    try { out.set(k, decodeURIComponent(v)); } catch { out.set(k, v); }
  }
  return out;
}

/** One cookie's value from a Cookie header; undefined when absent or ambiguous (see parseCookies). */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  return parseCookies(header).get(name) ?? undefined;
}

export const VIEWER_CSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export function sendPage(res: uWS.HttpResponse, status: string, type: string, body: string): void {
  res.cork(() => {
    res.writeStatus(status).writeHeader('content-type', type).writeHeader('cache-control', 'no-store')
      .writeHeader('content-security-policy', VIEWER_CSP).writeHeader('x-content-type-options', 'nosniff').end(body);
  });
}

/**
 * The upgrade handler of a desktop viewer's WebSocket for `protocol`: refusals are plain HTTP
 * answers (403 foreign origin or no grant, 401 not signed in, 400 a target of another protocol);
 * data() builds the socket's user data from the authorization.
 */
export function viewerUpgrade<U>(
  ctx: ProtocolContext, front: HttpMount, protocol: string, data: (auth: Authorized, clientAddr: string, query: URLSearchParams) => U,
): (res: uWS.HttpResponse, req: uWS.HttpRequest, context: uWS.us_socket_context_t) => void {
  return (res, req, context) => {
    const key = req.getHeader('sec-websocket-key');
    const proto = req.getHeader('sec-websocket-protocol');
    const ext = req.getHeader('sec-websocket-extensions');
    const cookie = cookieValue(req.getHeader('cookie'), front.sessionCookie);
    const q = new URLSearchParams(req.getQuery() ?? '');
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
      const outcome = await ctx.access.authenticate({ protocol, username: role ? `${target}:${role}` : target, clientAddr, principal });
      if (!outcome.ok) return refuse('403 Forbidden', outcome.reason);
      if (outcome.auth.target.protocol !== protocol) return refuse('400 Bad Request', `Tollgate: ${target} is not a ${protocol.toUpperCase()} target`);
      if (aborted) return;
      res.cork(() => res.upgrade<U>(data(outcome.auth, clientAddr, q), key, proto, ext, context));
    })().catch((e) => refuse('500 Internal Server Error', `Tollgate: ${(e as Error).message}`));
  };
}

/**
 * Sending to a viewer's WebSocket: JSON messages while it is open, and close with a last 'end'
 * message (the reason, which the page shows). state.closed is shared with the socket's close handler.
 */
export function viewerSender(ws: uWS.WebSocket<unknown>, state: { closed: boolean }): { send(o: unknown): boolean; close(message: string): void } {
  const send = (o: unknown): boolean => {
    if (state.closed) return false;
    try { ws.send(JSON.stringify(o), false); return true; } catch { return false; }
  };
  return {
    send,
    close(message) {
      if (state.closed) return;
      send({ type: 'end', message });
      state.closed = true;
      try { ws.end(1000, message.slice(0, 120)); } catch { /* gone */ }
    },
  };
}

/** A JSON message from a viewer's WebSocket, or null when it is not a JSON object. */
export function viewerMessage(msg: ArrayBuffer): Record<string, unknown> | null {
  try {
    const m: unknown = JSON.parse(Buffer.from(msg).toString('utf8'));
    return m && typeof m === 'object' && !Array.isArray(m) ? (m as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** v when it is an integer in [0, max], else null. */
export function intIn(v: unknown, max: number, min = 0): number | null {
  return typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max ? v : null;
}
