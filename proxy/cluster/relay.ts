/**
 * The internal channel between nodes: mutual TLS with certificates from the gateway CA (O = "Tollgate
 * gateway node", CN = node id, tls.ts), newline-delimited JSON. A node that shows a live session it
 * does not hold (the portal's or the API's live view) dials the node that holds it (its address is
 * in the registry) and streams the session's frames from there:
 *
 *   → {"op":"watch","session":"<id>","by":"<identity>"}
 *   ← {"type":"snapshot","session":{…},"frames":[…]}   then one frame per line, the last {"type":"end"}
 *   ← {"type":"error","message":"…"}                    (no such live session)
 *
 * A peer must present a node certificate of the same CA; a request must arrive within 5 s and fit
 * 8 KiB; a watcher that does not read (more than 16 MiB queued) is cut off.
 */
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { LiveFrame } from '../../recorder/types.js';
import type { Secret } from '../../auth/secret.js';
import { NODE_CERT_ORG } from '../tls.js';

export interface NodeTls { cert: string; key: Secret; ca: string }

/** What a node offers a watcher of one of its live sessions. */
export interface LocalWatch {
  session: Record<string, unknown>;
  snapshot: LiveFrame[];
  unsubscribe(): void;
}

export interface InternalServerOptions {
  host: string;
  port: number;
  tls: NodeTls;
  log: Logger;
  /** Subscribe to a live session of this node (null: not live here). onFrame gets every frame, the last of type 'end'. */
  watch(sessionId: string, by: string, peer: string, onFrame: (f: LiveFrame) => void): LocalWatch | null;
}

const REQUEST_MAX = 8 * 1024;
const REQUEST_TIMEOUT_MS = 5_000;
const WATCHER_BUFFER_MAX = 16 * 1024 * 1024;

function peerNode(sock: tls.TLSSocket): string | null {
  if (!sock.authorized) return null;
  const c = sock.getPeerCertificate();
  const org = c?.subject?.O;
  const cn = c?.subject?.CN;
  return org === NODE_CERT_ORG && typeof cn === 'string' ? cn : null;
}

export interface InternalServer { host: string; port: number; close(): Promise<void> }

export async function startInternalServer(o: InternalServerOptions): Promise<InternalServer> {
  const sockets = new Set<tls.TLSSocket>();
  const server = tls.createServer({
    cert: o.tls.cert, key: o.tls.key.reveal(), ca: o.tls.ca, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2',
  }, (sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    const peer = peerNode(sock);
    if (!peer) { sock.destroy(); return; }
    let buf = '';
    const timer = setTimeout(() => sock.destroy(), REQUEST_TIMEOUT_MS);
    const onData = (d: Buffer) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0) { if (buf.length > REQUEST_MAX) sock.destroy(); return; }
      sock.off('data', onData);
      clearTimeout(timer);
      let req: { op?: unknown; session?: unknown; by?: unknown };
      try { req = JSON.parse(buf.slice(0, nl)) as typeof req; } catch { sock.destroy(); return; }
      if (req.op !== 'watch' || typeof req.session !== 'string') { sock.end(`${JSON.stringify({ type: 'error', message: 'unknown request' })}\n`); return; }
      const send = (obj: unknown) => {
        if (sock.destroyed) return;
        if (sock.writableLength > WATCHER_BUFFER_MAX) { o.log.warn({ peer, session: req.session }, 'internal channel: a watcher fell behind; cut off'); sock.destroy(); return; }
        sock.write(`${JSON.stringify(obj)}\n`);
      };
      const w = o.watch(req.session, typeof req.by === 'string' ? req.by : 'unknown', peer, (f) => {
        send(f);
        if (f.type === 'end') sock.end();
      });
      if (!w) { sock.end(`${JSON.stringify({ type: 'error', message: 'no such live session on this node' })}\n`); return; }
      sock.on('close', () => w.unsubscribe());
      send({ type: 'snapshot', session: w.session, frames: w.snapshot });
    };
    sock.on('data', onData);
  });
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    // exclusive: worker processes each bind their own port (node:cluster would otherwise share it).
    server.listen({ host: o.host, port: o.port, exclusive: true }, () => { server.off('error', rej); res(); });
  });
  const port = (server.address() as { port: number }).port;
  return {
    host: o.host,
    port,
    close: () => new Promise<void>((res) => {
      server.close(() => res());
      for (const s of sockets) s.destroy();
    }),
  };
}

export interface RemoteWatch {
  session: Record<string, unknown>;
  snapshot: LiveFrame[];
  close(): void;
}

/** Dial `addr` (host:port) as node `self`, expecting node `peer`, and watch one of its sessions. */
export function watchRemote(o: {
  addr: string; peer: string; tls: NodeTls; sessionId: string; by: string; timeoutMs?: number;
  onFrame(f: LiveFrame): void; onClose(): void;
}): Promise<RemoteWatch> {
  const i = o.addr.lastIndexOf(':');
  const host = o.addr.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(o.addr.slice(i + 1));
  return new Promise<RemoteWatch>((resolve, reject) => {
    let settled = false;
    const sock = tls.connect({
      host, port, cert: o.tls.cert, key: o.tls.key.reveal(), ca: o.tls.ca, minVersion: 'TLSv1.2',
      // The peer is named by its node certificate, not by a host name: it must be the node the registry says.
      checkServerIdentity: (_h, cert) => (cert.subject?.O === NODE_CERT_ORG && cert.subject?.CN === o.peer
        ? undefined : new Error(`the internal channel at ${o.addr} is not node ${o.peer}`)),
    });
    const fail = (e: Error) => { if (!settled) { settled = true; reject(e); } sock.destroy(); };
    const timer = setTimeout(() => fail(new Error(`node ${o.peer} did not answer within ${o.timeoutMs ?? 5000} ms`)), o.timeoutMs ?? 5000);
    sock.on('error', fail);
    sock.once('secureConnect', () => sock.write(`${JSON.stringify({ op: 'watch', session: o.sessionId, by: o.by })}\n`));
    let buf = '';
    sock.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let msg: { type?: string; message?: string; session?: Record<string, unknown>; frames?: LiveFrame[] };
        try { msg = JSON.parse(line) as typeof msg; } catch { fail(new Error('the peer sent something that is not JSON')); return; }
        if (!settled) {
          settled = true;
          clearTimeout(timer);
          if (msg.type !== 'snapshot') { reject(new Error(msg.message ?? 'the peer refused')); sock.destroy(); return; }
          resolve({ session: msg.session ?? {}, snapshot: msg.frames ?? [], close: () => sock.destroy() });
          continue;
        }
        o.onFrame(msg as LiveFrame);
      }
    });
    sock.on('close', () => { clearTimeout(timer); if (!settled) fail(new Error(`node ${o.peer} closed the internal channel`)); else o.onClose(); });
  });
}
