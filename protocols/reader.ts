/**
 * Pull reads from a socket while a protocol module runs its handshake (before a relay takes the
 * socket over): the bytes go into a ChunkQueue (or the module's own framer), and `until(parse)`
 * waits for more until parse finds what it needs. The socket is paused while too much waits
 * unread and resumed when a read waits; detach() hands the socket on with what is left.
 * Used by the PostgreSQL start-up, the MySQL handshake, the VNC handshakes and the RDP connection
 * sequence alike.
 */
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { ChunkQueue } from './chunks.js';

export interface SocketReaderOptions {
  /** The error a read throws once the peer closed with the read still wanting bytes (each protocol has its own); `what` is what was awaited. */
  closed(what?: string): Error;
  /** The error a read throws after a socket error (default: closed(what)). */
  failed?(err: Error, what?: string): Error;
  /** Pause the socket while more than this many bytes wait unread (default 1 MiB). */
  highWater?: number;
  /** Where received bytes go (default: the reader's own queue `q`); the caller's parse reads them from there. */
  onChunk?(chunk: Buffer): void;
}

export class SocketReader {
  /** Bytes received and not read yet (when no onChunk is given). */
  readonly q = new ChunkQueue();
  private sock: Duplex | null = null;
  private waiter: (() => void) | null = null;
  private ended = false;
  private failure: Error | null = null;
  private readonly highWater: number;

  private readonly onData = (c: Buffer) => {
    if (this.o.onChunk) this.o.onChunk(c);
    else {
      this.q.push(c);
      if (this.q.length > this.highWater) this.sock?.pause();
    }
    this.wake();
  };
  private readonly onEnd = () => { this.ended = true; this.wake(); };
  private readonly onError = (e: Error) => { this.failure ??= e; this.wake(); };

  constructor(private readonly o: SocketReaderOptions) {
    this.highWater = o.highWater ?? 1 << 20;
  }

  /** Read from this socket (resumed unless resume is false). */
  attach(sock: Duplex, resume = true): this {
    this.sock = sock;
    this.ended = false;
    this.failure = null;
    sock.on('data', this.onData);
    sock.on('end', this.onEnd);
    sock.on('close', this.onEnd);
    sock.on('error', this.onError);
    if (resume) sock.resume();
    return this;
  }

  /** Stop reading (the socket is paused); the bytes not read stay here (take()). */
  detach(): void {
    const s = this.sock;
    if (!s) return;
    s.off('data', this.onData);
    s.off('end', this.onEnd);
    s.off('close', this.onEnd);
    s.off('error', this.onError);
    s.pause();
    this.sock = null;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /**
   * Wait until parse returns a value (it runs now and after every chunk, end and error, and may
   * throw a protocol error). Once the peer closed or the socket failed with parse still wanting
   * more, throws closed(what) / failed(err, what).
   */
  async until<T>(parse: () => T | null | undefined, what?: string): Promise<T> {
    for (;;) {
      const v = parse();
      if (v !== null && v !== undefined) return v;
      if (this.failure) throw this.o.failed ? this.o.failed(this.failure, what) : this.o.closed(what);
      if (this.ended) throw this.o.closed(what);
      this.sock?.resume();
      await new Promise<void>((res) => { this.waiter = res; });
    }
  }

  /** Exactly n bytes (a view; queued bytes are never rewritten). */
  read(n: number, what?: string): Promise<Buffer> {
    return this.until(() => (this.q.length >= n ? this.q.take(n) : null), what);
  }

  /** Bytes received and not read. */
  get buffered(): number { return this.q.length; }

  /** The peer closed its side (seen while attached). */
  get peerClosed(): boolean { return this.ended; }

  /** Whatever arrived beyond what was read; the queue is empty afterwards. */
  take(): Buffer { return this.q.drain(); }
}

/**
 * A socket's data, its end or close, and its errors, listened to as one set (a connection that
 * moves to a TLS socket over the same transport takes them off and puts them on the new one).
 * Returns the function that takes them off again (idempotent).
 */
export function listenSocket(sock: Duplex, h: { data(c: Buffer): void; closed(): void; error(e: Error): void }): () => void {
  sock.on('data', h.data);
  sock.on('end', h.closed);
  sock.on('close', h.closed);
  sock.on('error', h.error);
  let on = true;
  return () => {
    if (!on) return;
    on = false;
    sock.off('data', h.data);
    sock.off('end', h.closed);
    sock.off('close', h.closed);
    sock.off('error', h.error);
  };
}

/** listenSocket's handlers, moved from socket to socket (attach takes them off the previous one). */
export class SocketListeners {
  private off: () => void = () => {};
  constructor(private readonly h: { data(c: Buffer): void; closed(): void; error(e: Error): void }) {}
  attach(sock: Duplex): void {
    this.off();
    this.off = listenSocket(sock, this.h);
  }
  detach(): void {
    this.off();
    this.off = () => {};
  }
}

/** Wait for a TLS socket's handshake (`secure` on a server, `secureConnect` on a client); rejects with its error, or closed() when it closes first. */
export function tlsHandshake(t: TLSSocket, ev: 'secure' | 'secureConnect', closed: () => Error): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const ok = () => { t.off('error', bad); t.off('close', gone); resolve(); };
    const bad = (e: Error) => { t.off(ev, ok); t.off('close', gone); reject(e); };
    const gone = () => { t.off(ev, ok); t.off('error', bad); reject(closed()); };
    t.once(ev, ok);
    t.once('error', bad);
    t.once('close', gone);
  });
}
