/**
 * Test helpers for the HTTP app proxy: a real upstream app (node:http) that verifies the gateway's
 * identity assertion against its JWKS and echoes what it saw, a minimal WebSocket echo (RFC 6455
 * framing written here), and a raw HTTP client that can set the Host header.
 */
import http from 'node:http';
import net from 'node:net';
import { createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import { Agent, WebSocket } from 'undici';
import { httpModule } from '../../protocols/http/index.js';

function unverified(h: http.IncomingHttpHeaders): { ok: boolean; payload?: { sub: string } } {
  const tok = h['x-tollgate-assertion'] ?? h['x-identity'] ?? String(h['authorization'] ?? '').replace(/^Bearer /, '');
  try { return { ok: true, payload: { sub: String(decodeJwt(String(tok)).sub) } }; } catch { return { ok: false }; }
}

export interface Upstream {
  url: string;
  port: number;
  /** Requests seen (method, url, headers). */
  seen: { method: string; url: string; headers: http.IncomingHttpHeaders }[];
  /** Open WebSocket sockets. */
  wsSockets: Set<net.Socket>;
  close(): Promise<void>;
}

/** Deterministic bytes for download checks. */
export function pattern(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + (i >> 10)) & 255;
  return b;
}

export function sha256(b: Buffer): string { return createHash('sha256').update(b).digest('hex'); }

// ---- minimal RFC 6455 server side: parse masked client frames, send unmasked frames.
function wsFrame(opcode: number, payload: Buffer): Buffer {
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0x80 | opcode, len]) : len < 65536
    ? Buffer.from([0x80 | opcode, 126, len >> 8, len & 255])
    : (() => { const h = Buffer.alloc(10); h[0] = 0x80 | opcode; h[1] = 127; h.writeBigUInt64BE(BigInt(len), 2); return h; })();
  return Buffer.concat([head, payload]);
}

function wsEcho(socket: net.Socket, onFrame?: (opcode: number, payload: Buffer) => void): void {
  let buf = Buffer.alloc(0);
  let fragments: Buffer[] = [];
  let fragOpcode = 0;
  socket.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      if (buf.length < 2) return;
      const fin = (buf[0]! & 0x80) !== 0;
      const opcode = buf[0]! & 0x0f;
      const masked = (buf[1]! & 0x80) !== 0;
      let len = buf[1]! & 0x7f;
      let off = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
      const maskOff = off;
      if (masked) off += 4;
      if (buf.length < off + len) return;
      const payload = Buffer.from(buf.subarray(off, off + len));
      if (masked) for (let i = 0; i < len; i++) payload[i]! ^= buf[maskOff + (i & 3)]!;
      buf = buf.subarray(off + len);
      onFrame?.(opcode, payload);
      if (opcode === 0x8) { socket.end(wsFrame(0x8, payload.subarray(0, 2))); return; }
      if (opcode === 0x9) { socket.write(wsFrame(0xa, payload)); continue; }
      if (opcode === 0xa) continue;
      if (opcode !== 0) { fragOpcode = opcode; fragments = []; }
      fragments.push(payload);
      if (fin) {
        const msg = Buffer.concat(fragments);
        fragments = [];
        // "whoami" over the socket answers with the identity header the upgrade carried.
        socket.write(wsFrame(fragOpcode, msg));
      }
    }
  });
}

export async function startUpstream(opts: { jwksUrl?: () => string; issuer?: () => string; audience?: string } = {}): Promise<Upstream> {
  const seen: Upstream['seen'] = [];
  const wsSockets = new Set<net.Socket>();
  let jwks: ReturnType<typeof createRemoteJWKSet> | null = null;
  const verify = async (h: http.IncomingHttpHeaders) => {
    const tok = h['x-tollgate-assertion'];
    if (typeof tok !== 'string') return { ok: false, error: 'no assertion header' };
    if (!opts.jwksUrl) return { ok: false, error: 'no JWKS configured' };
    jwks ??= createRemoteJWKSet(new URL(opts.jwksUrl()));
    try {
      const { payload, protectedHeader } = await jwtVerify(tok, jwks, { issuer: opts.issuer?.(), audience: opts.audience, algorithms: ['ES256'] });
      return { ok: true, payload, alg: protectedHeader.alg };
    } catch (e) {
      return { ok: false, error: (e as Error).message };
    }
  };
  const server = http.createServer(async (req, res) => {
    seen.push({ method: req.method!, url: req.url!, headers: req.headers });
    const u = new URL(req.url!, 'http://x');
    const json = (status: number, v: unknown) => {
      const b = Buffer.from(JSON.stringify(v));
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': b.length });
      res.end(b);
    };
    if (u.pathname === '/whoami' || u.pathname.startsWith('/admin/') || u.pathname === '/') {
      const v = await verify(req.headers);
      json(v.ok ? 200 : 401, { path: u.pathname, query: u.search, method: req.method, assertion: v, headers: req.headers });
      return;
    }
    if (u.pathname === '/headers') {
      json(200, { path: u.pathname, method: req.method, headers: req.headers, rawHeaders: req.rawHeaders });
      return;
    }
    if (u.pathname === '/upload') {
      const h = createHash('sha256');
      let n = 0;
      req.on('data', (c: Buffer) => { h.update(c); n += c.length; });
      req.on('end', () => json(200, { bytes: n, sha256: h.digest('hex') }));
      return;
    }
    if (u.pathname === '/echo') {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      req.pipe(res);
      return;
    }
    if (u.pathname === '/download') {
      const n = Number(u.searchParams.get('n') ?? '1024');
      const data = pattern(n);
      const chunked = u.searchParams.get('chunked') === '1';
      res.writeHead(200, { 'content-type': 'application/octet-stream', ...(chunked ? {} : { 'content-length': n }) });
      let i = 0;
      const step = 64 * 1024;
      const pump = () => {
        while (i < n) {
          const ok = res.write(data.subarray(i, i + step));
          i += step;
          if (!ok) { res.once('drain', pump); return; }
        }
        res.end();
      };
      pump();
      return;
    }
    if (u.pathname === '/stream') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      let k = 0;
      const t = setInterval(() => {
        res.write(`tick ${k}\n`);
        if (++k === 5) { clearInterval(t); res.end('done\n'); }
      }, 50);
      req.on('close', () => clearInterval(t));
      return;
    }
    if (u.pathname === '/slow') {
      const t = setTimeout(() => json(200, { late: true }), Number(u.searchParams.get('ms') ?? '5000'));
      req.on('close', () => clearTimeout(t));
      return;
    }
    if (u.pathname === '/redirect') {
      res.writeHead(302, { location: `http://127.0.0.1:${(server.address() as AddressInfo).port}/whoami?from=redirect` });
      res.end();
      return;
    }
    if (u.pathname === '/cookies') {
      // An app trying to set (or overwrite) gateway cookies and cookies for wider domains.
      res.writeHead(200, {
        'content-type': 'text/plain',
        'set-cookie': [
          'tg_session=stolen; Path=/', '__Host-tg_session=stolen; Path=/; Secure', 'TG_OIDC=x; Path=/', 'tg_app_other=x; Path=/',
          'wide=1; Domain=localhost; Path=/', 'dotted=1; domain=.LOCALHOST; Path=/', 'twice=1; Domain=echo.localhost; Domain=localhost',
          'own=1; Domain=echo.localhost; Path=/', 'plain=1; Path=/; HttpOnly',
        ],
      });
      res.end('cookies');
      return;
    }
    if (u.pathname === '/protohdr') {
      res.writeHead(200, ['content-type', 'text/plain', 'constructor', 'a', '__proto__', 'b', 'toString', 'c']);
      res.end('proto');
      return;
    }
    if (u.pathname === '/hop') {
      res.writeHead(200, { 'content-type': 'text/plain', connection: 'x-secret-hop, keep-alive', 'x-secret-hop': 'must-not-pass', 'keep-alive': 'timeout=5', 'set-cookie': ['a=1; Path=/', 'b=2; Path=/'] });
      res.end('hop');
      return;
    }
    if (u.pathname === '/truncated') {
      res.writeHead(200, { 'content-length': 1000 });
      res.write('x'.repeat(100));
      setTimeout(() => res.destroy(), 50);
      return;
    }
    json(404, { error: 'not found', path: u.pathname });
  });
  server.on('upgrade', async (req, socket: net.Socket, head) => {
    seen.push({ method: req.method!, url: req.url!, headers: req.headers });
    const key = req.headers['sec-websocket-key'];
    // Without a JWKS (credential tests) the upgrade only needs some identity header.
    const v = opts.jwksUrl ? await verify(req.headers) : unverified(req.headers);
    if (typeof key !== 'string' || !v.ok) {
      socket.end('HTTP/1.1 401 Unauthorized\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    const protos = String(req.headers['sec-websocket-protocol'] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n${protos.length ? `sec-websocket-protocol: ${protos[0]}\r\n` : ''}\r\n`);
    wsSockets.add(socket);
    socket.on('close', () => wsSockets.delete(socket));
    socket.on('error', () => undefined);
    // First frame: who the gateway said this is.
    socket.write(wsFrame(1, Buffer.from(JSON.stringify({ hello: (v as { payload: { sub: string } }).payload.sub }))));
    if (head.length) socket.unshift(head);
    wsEcho(socket);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`, port, seen, wsSockets,
    close: async () => {
      for (const s of wsSockets) s.destroy();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

export interface RawResponse { status: number; headers: http.IncomingHttpHeaders; rawHeaders: string[]; body: Buffer }

/** A request to the gateway with any Host header (node:http lets us set it). */
export function raw(port: number, opts: { method?: string; path: string; host?: string; headers?: Record<string, string | string[]>; body?: Buffer | string }): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port, method: opts.method ?? 'GET', path: opts.path, agent: false,
      headers: { ...(opts.host ? { host: opts.host } : {}), ...(opts.headers ?? {}) },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, rawHeaders: res.rawHeaders, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** Send raw bytes on a fresh TCP connection and collect what comes back until close or timeout. */
export function rawBytes(port: number, data: string | Buffer, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let out = '';
    const t = setTimeout(() => { s.destroy(); resolve(out); }, timeoutMs);
    s.on('data', (d) => { out += d.toString('latin1'); });
    s.on('close', () => { clearTimeout(t); resolve(out); });
    s.on('error', () => { clearTimeout(t); resolve(out); });
    s.write(data);
  });
}

export function setCookies(h: http.IncomingHttpHeaders): string[] {
  const v = h['set-cookie'];
  return Array.isArray(v) ? v : v ? [v] : [];
}

/** The sign-in hand-off without a browser: gateway web session → /apps/_auth → app callback → app cookie. */
export async function signInApp(tg: { url: string; gw: { webSessions: { create(identity: string, mfaAt: number | null, ttlMs: number): Promise<{ cookie: { reveal(): string } }> } } },
  user: string, app: string, appUrl: string): Promise<{ cookie: string; gatewayCookie: string; steps: RawResponse[] }> {
  const port = Number(new URL(tg.url).port);
  const u = new URL(appUrl);
  const steps: RawResponse[] = [];
  const first = await raw(port, { path: u.pathname + u.search, host: u.host });
  steps.push(first);
  if (first.status !== 302) throw new Error(`expected a redirect to sign in, got ${first.status}`);
  const auth = new URL(String(first.headers.location));
  const { cookie } = await tg.gw.webSessions.create(user, null, 3_600_000);
  const gatewayCookie = `tg_session=${encodeURIComponent(cookie.reveal())}`;
  const second = await raw(port, { path: auth.pathname + auth.search, headers: { cookie: gatewayCookie } });
  steps.push(second);
  if (second.status !== 302) throw new Error(`expected the hand-off redirect, got ${second.status} ${second.body}`);
  const cb = new URL(String(second.headers.location));
  const third = await raw(port, { path: cb.pathname + cb.search, host: cb.host });
  steps.push(third);
  const c = setCookies(third.headers).find((x) => x.startsWith(`tg_app_${app}=`));
  if (third.status !== 302 || !c) throw new Error(`expected the app cookie, got ${third.status}`);
  return { cookie: c.split(';')[0]!, gatewayCookie, steps };
}

/** Connect every host name to 127.0.0.1 (`<app>.localhost` does not resolve in Node here; browsers resolve it themselves). */
export const loopback = new Agent({
  connect: { lookup: (_h: string, o: { all?: boolean }, cb: (e: Error | null, a: unknown, f?: number) => void) => (o?.all ? cb(null, [{ address: '127.0.0.1', family: 4 }]) : cb(null, '127.0.0.1', 4)) } as never,
});

/** A WebSocket to `host` (an app host with the gateway's port), connected over loopback. */
export function appWs(host: string, path: string, opts: { protocols?: string[]; headers?: Record<string, string> } = {}): WebSocket {
  return new WebSocket(`ws://${host}${path}`, { dispatcher: loopback, ...opts } as never);
}

/** The module registry with only the HTTP module: these tests do not depend on other protocols' state. */
export function onlyHttp(): Map<string, import('../../protocols/types.js').ProtocolModule> {
  return new Map([['http', httpModule]]);
}
