/**
 * A MySQL packet stream over a socket: promise-style reads for the handshake phase, push-style
 * delivery with pause/resume (backpressure) for the relay phase, and an in-place TLS upgrade.
 */
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { PacketReader, ProtocolError, frame, type Packet } from './packets.js';
import { SocketListeners, tlsHandshake } from '../reader.js';

export class ConnClosedError extends Error {
  constructor(message = 'connection closed') {
    super(message);
    this.name = 'ConnClosedError';
  }
}

export class PacketConn {
  sock: Duplex;
  private reader: PacketReader;
  private queue: Packet[] = [];
  private waiter: { resolve: (p: Packet) => void; reject: (e: Error) => void } | null = null;
  private handler: ((p: Packet) => void) | null = null;
  private failure: Error | null = null;
  private pausedFlag = false;
  private closeHandlers: ((err: Error | null) => void)[] = [];
  /** Called after every chunk read from the socket has been handled (the relay flushes its writes here). */
  onChunkEnd: (() => void) | null = null;
  closed = false;
  /** Sequence id of the last packet read (a reply carries this + 1). */
  lastReadSeq = -1;
  bytesIn = 0;
  bytesOut = 0;

  constructor(sock: Duplex, maxPacket?: number) {
    this.sock = sock;
    this.reader = new PacketReader(maxPacket);
    this.listeners.attach(sock);
  }

  private onData = (chunk: Buffer) => {
    this.bytesIn += chunk.length;
    this.reader.push(chunk);
    if (!this.handler && !this.waiter && this.reader.buffered > 4 * this.reader.maxPacket + 65536) {
      this.fail(new ProtocolError('too much data sent before the gateway answered'));
      return;
    }
    this.drain();
    this.onChunkEnd?.();
  };
  private readonly listeners = new SocketListeners({ data: (c) => this.onData(c), closed: () => this.fail(new ConnClosedError()), error: (e) => this.fail(e) });

  private drain() {
    try {
      // Without a handler, parse only as many packets as someone waits for (after an SSLRequest the
      // next bytes are a TLS ClientHello, not a packet).
      while (!this.pausedFlag && !this.closed && (this.handler || this.waiter)) {
        const p = this.reader.next();
        if (!p) break;
        this.deliver(p);
      }
    } catch (e) {
      this.fail(e instanceof Error ? e : new ProtocolError(String(e)));
    }
  }

  private deliver(p: Packet) {
    this.lastReadSeq = p.lastSeq;
    if (this.handler) return this.handler(p);
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      return w.resolve(p);
    }
    this.queue.push(p);
  }

  private fail(e: Error) {
    if (this.closed) return;
    this.closed = true;
    this.failure = e;
    this.listeners.detach();
    this.sock.on('error', () => {});
    // A malformed packet leaves the socket open so the owner can answer with an ERR, then end().
    if (e instanceof ProtocolError) this.sock.pause();
    else this.sock.destroy();
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.reject(e);
    }
    for (const h of this.closeHandlers.splice(0)) h(e instanceof ConnClosedError ? null : e);
  }

  /** Called once when the connection closes (null: orderly close; else the error). */
  onClose(h: (err: Error | null) => void) {
    if (this.closed) h(this.failure instanceof ConnClosedError ? null : this.failure);
    else this.closeHandlers.push(h);
  }

  /** Next packet (handshake phase). */
  read(): Promise<Packet> {
    const q = this.queue.shift();
    if (q) return Promise.resolve(q);
    if (this.closed) return Promise.reject(this.failure ?? new ConnClosedError());
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      // packets may already sit in the reader
      this.drain();
    });
  }

  /** Switch to push delivery (relay phase); queued packets go first. */
  setHandler(h: (p: Packet) => void) {
    this.handler = h;
    const q = this.queue.splice(0);
    for (const p of q) h(p);
    if (!this.pausedFlag) {
      this.sock.resume();
      this.drain();
    }
  }

  pause() {
    this.pausedFlag = true;
    this.sock.pause();
  }

  resume() {
    if (!this.pausedFlag || this.closed) return;
    this.pausedFlag = false;
    this.sock.resume();
    this.drain();
  }

  get paused(): boolean { return this.pausedFlag; }

  /** Frame and send a payload; returns the next sequence id. */
  send(payload: Buffer, seq: number): number {
    const { bytes, next } = frame(payload, seq);
    this.writeRaw(bytes);
    return next;
  }

  /** Write bytes; false means the peer is slow (wait for 'drain'). */
  writeRaw(bytes: Buffer): boolean {
    if (this.sock.destroyed || !this.sock.writable) return true;
    this.bytesOut += bytes.length;
    return this.sock.write(bytes);
  }

  /** Bytes received and not yet delivered as packets (partial packets, packets waiting for a handler). */
  get buffered(): number {
    return this.reader.buffered;
  }

  /** Largest logical packet accepted from the peer (small during the handshake). */
  setMaxPacket(n: number) {
    this.reader.maxPacket = n;
  }

  private drainWaiters: (() => void)[] = [];
  /** Run fn once the socket drained; several callers while waiting share one listener. */
  onDrain(fn: () => void) {
    this.drainWaiters.push(fn);
    if (this.drainWaiters.length > 1) return;
    this.sock.once('drain', () => {
      for (const f of this.drainWaiters.splice(0)) f();
    });
  }

  /** Replace the socket by a TLS socket over it; bytes already read (a ClientHello) are handed to TLS. */
  async upgrade(make: (raw: Socket) => TLSSocket, waitFor: 'secure' | 'secureConnect'): Promise<void> {
    const raw = this.sock as Socket;
    this.listeners.detach();
    raw.pause();
    const rest = this.reader.takeRest();
    if (rest.length) raw.unshift(rest);
    const t = make(raw);
    this.sock = t;
    await tlsHandshake(t, waitFor, () => new ConnClosedError('closed during TLS handshake'));
    this.listeners.attach(t);
  }

  get encrypted(): boolean { return this.sock instanceof TLSSocket; }

  /** Flush what was written, then close. */
  end() {
    const wasClosed = this.closed;
    this.closed = true;
    if (!wasClosed) this.listeners.detach();
    this.sock.on('error', () => {});
    if (!this.sock.destroyed) {
      this.sock.end();
      const s = this.sock;
      const t = setTimeout(() => s.destroy(), 2000);
      t.unref();
    }
    if (!wasClosed) for (const h of this.closeHandlers.splice(0)) h(null);
  }

  destroy() {
    const wasClosed = this.closed;
    this.closed = true;
    if (!wasClosed) this.listeners.detach();
    this.sock.on('error', () => {});
    this.sock.destroy();
    if (!wasClosed) for (const h of this.closeHandlers.splice(0)) h(null);
  }
}
