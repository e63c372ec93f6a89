/**
 * Dial the PostgreSQL server as the per-session role: start-up, SCRAM-SHA-256 (or the other
 * password methods the server may ask for), then collect ParameterStatus / BackendKeyData until
 * ReadyForQuery. Frontend messages are serialized with pg-protocol.
 */
import net from 'node:net';
import tls from 'node:tls';
import { serialize } from 'pg-protocol';
import type { Clock } from '../../policies/clock.js';
import {
  FrameSplitter, ProtocolViolation, decodeBackendKey, decodeErrorFields, Reader, type ErrorFields, type Frame,
} from './framing.js';
import { ScramClient, SCRAM } from './scram.js';
import { createHash } from 'node:crypto';
import { tlsClientOptions, type UpstreamTls } from './provisioner.js';

/** The server refused (its ErrorResponse is forwarded to the client as is). */
export class UpstreamError extends Error {
  constructor(readonly fields: ErrorFields | null, message: string, readonly raw?: Buffer) {
    super(message);
    this.name = 'UpstreamError';
  }
}

export interface UpstreamConnection {
  socket: net.Socket;
  /** ParameterStatus frames, raw, in order. */
  parameterFrames: Buffer[];
  /** NoticeResponse frames received during start-up, raw. */
  noticeFrames: Buffer[];
  backend: { pid: number; key: number };
  /** Transaction status from the first ReadyForQuery. */
  status: string;
  /** Bytes received after ReadyForQuery (normally none). */
  rest: Buffer;
}

export interface DialOptions {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  /** Extra start-up parameters from the client (application_name, client_encoding, options...). */
  params: Record<string, string>;
  timeoutMs: number;
  clock: Clock;
  /** TLS to the database server: disable (default), require (encrypted; the chain verified when a CA is given), verify-full (CA + host name). */
  tls?: UpstreamTls;
}

/** Where a cancel for this upstream backend must go. */
export interface UpstreamKey { host: string; port: number; pid: number; key: number }

const MAX_BACKEND_MESSAGE = 1 << 30;

/** Connect (and negotiate TLS when asked), bounded by the timeout. */
function openTransport(o: DialOptions): Promise<net.Socket> {
  const mode = o.tls?.mode ?? 'disable';
  return new Promise((resolve, reject) => {
    const raw = net.connect({ host: o.host, port: o.port });
    raw.setNoDelay(true);
    let settled = false;
    let current: net.Socket = raw;
    const fail = (e: Error) => {
      if (settled) return;
      settled = true;
      timer.cancel();
      current.destroy();
      raw.destroy();
      reject(e);
    };
    const ok = (s: net.Socket) => {
      if (settled) return;
      settled = true;
      timer.cancel();
      s.removeAllListeners('error');
      raw.removeAllListeners('error');
      resolve(s);
    };
    const timer = o.clock.setTimer(o.timeoutMs, () => fail(new UpstreamError(null, `timed out after ${o.timeoutMs} ms connecting to the database server`)));
    raw.on('error', (e) => fail(new UpstreamError(null, `cannot reach the database server (${(e as NodeJS.ErrnoException).code ?? e.message})`)));
    raw.once('connect', () => {
      if (mode === 'disable') return ok(raw);
      raw.write(serialize.requestSsl());
      raw.once('data', (d: Buffer) => {
        if (d.length === 1 && d[0] === 0x53) {
          raw.pause();
          const t = tls.connect({
            ...tlsClientOptions(o.tls!), socket: raw, host: o.host, servername: net.isIP(o.host) ? undefined : o.host, minVersion: 'TLSv1.2',
          });
          current = t;
          t.once('secureConnect', () => ok(t));
          t.on('error', (e) => fail(new UpstreamError(null, `TLS to the database server failed: ${e.message}`)));
        } else if (d[0] === 0x4e) {
          fail(new UpstreamError(null, 'the database server does not accept TLS connections (the target requires upstream TLS)'));
        } else {
          fail(new UpstreamError(null, 'unexpected answer from the database server to SSLRequest'));
        }
      });
    });
  });
}

export async function dialUpstream(o: DialOptions): Promise<UpstreamConnection> {
  const socket = await openTransport(o);
  return login(socket, o);
}

function login(socket: net.Socket, o: DialOptions): Promise<UpstreamConnection> {
  return new Promise((resolve, reject) => {
    const splitter = new FrameSplitter(MAX_BACKEND_MESSAGE);
    const parameterFrames: Buffer[] = [];
    const noticeFrames: Buffer[] = [];
    let backend = { pid: 0, key: 0 };
    let scram: ScramClient | null = null;
    let done = false;
    const timer = o.clock.setTimer(o.timeoutMs, () => fail(new UpstreamError(null, `timed out after ${o.timeoutMs} ms connecting to the database server`)));
    function fail(e: Error) {
      if (done) return;
      done = true;
      timer.cancel();
      socket.removeAllListeners('data');
      socket.destroy();
      reject(e);
    }
    socket.on('error', (e) => fail(new UpstreamError(null, `lost the database server during login (${(e as NodeJS.ErrnoException).code ?? e.message})`)));
    socket.on('close', () => fail(new UpstreamError(null, 'the database server closed the connection during login')));
    socket.write(serialize.startup({ ...o.params, user: o.user, database: o.database }));
    const onFrame = (f: Frame): boolean => {
      switch (f.type) {
        case 'R': {
          const r = new Reader(f.body);
          const code = r.int32();
          if (code === 0) return false;
          if (code === 3) { socket.write(serialize.password(o.password)); return false; }
          if (code === 5) {
            const salt = r.bytes(4);
            const inner = createHash('md5').update(o.password + o.user).digest('hex');
            const outer = createHash('md5').update(Buffer.concat([Buffer.from(inner), salt])).digest('hex');
            socket.write(serialize.password('md5' + outer));
            return false;
          }
          if (code === 10) {
            const mechs: string[] = [];
            for (;;) { const m = r.cstring(); if (!m) break; mechs.push(m); }
            if (!mechs.includes(SCRAM)) throw new UpstreamError(null, `the database server offers no supported SASL mechanism (${mechs.join(', ')})`);
            scram = new ScramClient(o.password);
            socket.write(serialize.sendSASLInitialResponseMessage(SCRAM, scram.clientFirst()));
            return false;
          }
          if (code === 11) {
            if (!scram) throw new ProtocolViolation('unexpected SASLContinue');
            // The key derivation runs in the thread pool; the server sends nothing until client-final.
            scram.serverFirstAsync(r.rest().toString('utf8')).then(
              (final) => { if (!done) socket.write(serialize.sendSCRAMClientFinalMessage(final)); },
              (e: Error) => fail(new UpstreamError(null, `login to the database server failed: ${e.message}`)));
            return false;
          }
          if (code === 12) {
            if (!scram) throw new ProtocolViolation('unexpected SASLFinal');
            scram.serverFinal(r.rest().toString('utf8'));
            return false;
          }
          throw new UpstreamError(null, `the database server asks for an unsupported authentication method (${code})`);
        }
        case 'E': {
          const fields = decodeErrorFields(f.body);
          throw new UpstreamError(fields, `database server: ${fields.message}`, Buffer.from(f.raw));
        }
        case 'S': parameterFrames.push(Buffer.from(f.raw)); return false;
        case 'N': noticeFrames.push(Buffer.from(f.raw)); return false;
        case 'K': backend = decodeBackendKey(f.body); return false;
        case 'Z': return true;
        default: throw new ProtocolViolation(`unexpected message '${f.type}' from the database server during login`);
      }
    };
    socket.on('data', (chunk: Buffer) => {
      if (done) return;
      try {
        const frames = splitter.push(chunk);
        for (let i = 0; i < frames.length; i++) {
          const f = frames[i]!;
          if (onFrame(f)) {
            done = true;
            timer.cancel();
            socket.removeAllListeners('data');
            socket.removeAllListeners('close');
            socket.removeAllListeners('error');
            socket.pause();
            const after = frames.slice(i + 1).map((x) => x.raw);
            const rest = Buffer.concat([...after, splitter.drain()]);
            resolve({ socket, parameterFrames, noticeFrames, backend, status: String.fromCharCode(f.body[0] ?? 73), rest });
            return;
          }
        }
      } catch (e) {
        fail(e instanceof UpstreamError ? e : new UpstreamError(null, `login to the database server failed: ${(e as Error).message}`));
      }
    });
  });
}

/** Send a CancelRequest for an upstream backend on a new connection. */
export function sendCancel(k: UpstreamKey): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect({ host: k.host, port: k.port }, () => {
      s.end(serialize.cancel(k.pid | 0, k.key | 0));
    });
    s.on('error', () => resolve());
    s.on('close', () => resolve());
    s.setTimeout(5000, () => s.destroy());
  });
}
