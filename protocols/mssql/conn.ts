/**
 * A TDS connection during login: promise-style reads of packets and messages (within size
 * limits), and the switch to TLS (inside PRELOGIN packets, or TDS 8.0 strict TLS from the first
 * byte), for both the gateway's client side and its connection to the database. After login the
 * socket and the bytes already read are handed to the relay.
 */
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { MessageAssembler, PacketReader, type Packet } from './packets.js';
import { TdsTlsTransport } from './tls.js';
import { SocketListeners, tlsHandshake } from '../reader.js';

export class ConnClosedError extends Error {
  constructor(message = 'the connection closed') {
    super(message);
    this.name = 'ConnClosedError';
  }
}

export interface Message { type: number; status: number; payload: Buffer; packets: Packet[] }

export class TdsConn {
  sock: Duplex;
  private reader: PacketReader;
  private wake: (() => void) | null = null;
  private failure: Error | null = null;
  closed = false;
  /** True once TLS carries the connection. */
  encrypted = false;

  /** maxBuffered: bytes a peer may send before the gateway asked for them. */
  constructor(sock: Duplex, maxPacket: number, private maxBuffered = 256 * 1024) {
    this.sock = sock;
    this.reader = new PacketReader(maxPacket);
    this.listeners.attach(sock);
  }

  private onData = (c: Buffer) => {
    this.reader.push(c);
    if (this.reader.buffered > this.maxBuffered) {
      this.sock.pause();
    }
    this.signal();
  };
  private readonly listeners = new SocketListeners({ data: (c) => this.onData(c), closed: () => this.fail(new ConnClosedError()), error: (e) => this.fail(e) });

  private signal() {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private fail(e: Error) {
    if (this.closed) return;
    this.closed = true;
    this.failure = e;
    this.signal();
  }

  private async more(): Promise<void> {
    if (this.closed) throw this.failure ?? new ConnClosedError();
    this.sock.resume();
    await new Promise<void>((r) => { this.wake = r; });
  }

  /** The first byte the peer sent, not consumed. */
  async firstByte(): Promise<number> {
    for (;;) {
      const b = this.reader.peek(1);
      if (b) return b[0]!;
      await this.more();
    }
  }

  async packet(): Promise<Packet> {
    for (;;) {
      const p = this.reader.next();
      if (p) return p;
      await this.more();
    }
  }

  /** The next whole message (packets up to EOM), at most maxBytes of payload. */
  async message(maxBytes: number): Promise<Message> {
    const asm = new MessageAssembler(maxBytes);
    for (;;) {
      const m = asm.push(await this.packet());
      if (m) return m;
    }
  }

  write(b: Buffer): void {
    if (!this.sock.destroyed && this.sock.writable) this.sock.write(b);
  }

  /** Flush, then close (destroyed a little later if the peer does not). */
  end(): void {
    this.closed = true;
    this.listeners.detach();
    this.sock.on('error', () => {});
    if (this.sock.destroyed) return;
    this.sock.end();
    const s = this.sock;
    setTimeout(() => s.destroy(), 2000).unref();
  }

  destroy(): void {
    this.closed = true;
    this.listeners.detach();
    this.sock.on('error', () => {});
    this.sock.destroy();
  }

  /**
   * Run TLS over this connection. wrapped: inside PRELOGIN packets (TDS 7.x); otherwise TLS from
   * here on (TDS 8.0 strict). make gets the transport and returns the TLS socket.
   */
  async startTls(wrapped: boolean, role: 'server' | 'client', make: (transport: Duplex) => tls.TLSSocket): Promise<tls.TLSSocket> {
    const raw = this.sock;
    this.listeners.detach();
    raw.pause();
    const rest = this.reader.takeRest();
    let transport: Duplex;
    if (wrapped) {
      transport = new TdsTlsTransport(raw, role, rest);
    } else {
      if (rest.length) raw.unshift(rest);
      transport = raw;
    }
    const t = make(transport);
    t.on('error', () => { /* reported below or by the owner */ });
    await tlsHandshake(t, role === 'server' ? 'secure' : 'secureConnect', () => new ConnClosedError('the connection closed during the TLS handshake'));
    this.sock = t;
    this.encrypted = true;
    this.listeners.attach(t);
    return t;
  }

  /** Stop reading: the socket and the bytes already read go to the relay. */
  release(): { sock: Duplex; rest: Buffer } {
    this.listeners.detach();
    this.sock.pause();
    this.closed = true;
    return { sock: this.sock, rest: this.reader.takeRest() };
  }
}
