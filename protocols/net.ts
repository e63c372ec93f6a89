/**
 * Network helpers shared by the protocol modules (their TCP listeners), the demo servers, the tests
 * and the benchmarks (loopback ports).
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { ListenerAddress, ProtocolContext, ProtocolListener } from './types.js';

/** A port that was free a moment ago (the kernel's pick); callers that race for it retry. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

/** Resolves once something accepts connections on host:port; rejects after timeoutMs. */
export async function waitPort(host: string, port: number, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((res) => {
      const c = net.connect({ host, port });
      c.once('connect', () => { c.destroy(); res(true); });
      c.once('error', () => { c.destroy(); res(false); });
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on ${host}:${port}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * A TCP listener for a protocol's front door: every accepted socket gets TCP_NODELAY and goes to
 * `handle`; a handler that throws is logged and its socket destroyed (never the process); close()
 * stops accepting and destroys the open sockets.
 */
export async function listenTcp(address: ListenerAddress, log: Logger, protocol: string, handle: (sock: net.Socket) => Promise<void>): Promise<ProtocolListener> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => { /* handled by the connection */ });
    sock.setNoDelay(true);
    handle(sock).catch((e) => {
      log.error({ err: (e as Error).message }, `${protocol} connection failed unexpectedly`);
      sock.destroy();
    });
  });
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(address.port, address.host, () => { server.off('error', rej); res(); });
  });
  return {
    host: address.host,
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise<void>((res) => {
      server.close(() => res());
      for (const s of sockets) s.destroy();
    }),
  };
}

/** The gateway's TLS server context, made once on first use. */
export function lazySecureContext(ctx: ProtocolContext): () => tls.SecureContext {
  let secureContext: tls.SecureContext | null = null;
  return () => (secureContext ??= tls.createSecureContext({ cert: ctx.tls.cert, key: ctx.tls.key.reveal() }));
}
