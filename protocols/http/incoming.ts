/** The app proxy's view of one uWS request, and the small answers every part of it writes. */
import { STATUS_CODES } from 'node:http';
import type uWS from 'uWebSockets.js';
import type { Page } from './pages.js';

export interface Incoming {
  method: string;
  url: string;
  query: string;
  host: string;
  headers: [string, string][];
  remote: string;
}

/** Per-request state shared by the abort handler and the async path. */
export interface ReqState { aborted: boolean; done: boolean; bytesIn: number }

export function statusLine(code: number): string { return `${code} ${STATUS_CODES[code] ?? 'Unknown'}`; }

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

export function readIncoming(res: uWS.HttpResponse, req: uWS.HttpRequest): Incoming {
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

export function header(inc: Incoming, name: string): string | undefined {
  const h = inc.headers.find(([k]) => k === name);
  return h?.[1];
}

/**
 * A top-level navigation from another site (an app on *.localhost to the gateway on 127.0.0.1)
 * carries no SameSite=Strict gateway cookie: re-open the page from the gateway's own origin once.
 */
export function crossSiteNavigation(inc: Incoming): boolean {
  return header(inc, 'sec-fetch-site') === 'cross-site' && header(inc, 'sec-fetch-mode') === 'navigate';
}

/** Write a complete small response (inside cork when called asynchronously). */
export function writePage(res: uWS.HttpResponse, st: ReqState, page: Page, extra: [string, string][] = []): void {
  if (st.aborted || st.done) return;
  st.done = true;
  res.cork(() => {
    res.writeStatus(statusLine(page.status));
    for (const [k, v] of Object.entries(page.headers)) res.writeHeader(k, v);
    for (const [k, v] of extra) res.writeHeader(k, v);
    res.end(page.body);
  });
}

export function redirect(res: uWS.HttpResponse, st: ReqState, location: string, extra: [string, string][] = []): void {
  writePage(res, st, { status: 302, headers: { location, 'cache-control': 'no-store' }, body: '' }, extra);
}
