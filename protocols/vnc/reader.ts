/** Reads exact byte counts from a socket during the handshakes (before the relay takes over). */
import type { Duplex } from 'node:stream';
import { ByteQueue } from '../bounded.js';

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

export class ByteReader {
  private q = new ByteQueue();
  private waiter: (() => void) | null = null;
  private sock: Duplex | null = null;
  private ended = false;
  private readonly onData = (c: Buffer) => {
    this.q.push(c);
    if (this.q.length > 1 << 20) this.sock?.pause();
    this.wake();
  };
  private readonly onEnd = () => { this.ended = true; this.wake(); };

  constructor(sock?: Duplex, private what = 'the peer') {
    if (sock) this.attach(sock);
  }

  attach(sock: Duplex): void {
    this.sock = sock;
    this.ended = false;
    sock.on('data', this.onData);
    sock.on('end', this.onEnd);
    sock.on('close', this.onEnd);
    sock.resume();
  }

  detach(): void {
    if (!this.sock) return;
    this.sock.off('data', this.onData);
    this.sock.off('end', this.onEnd);
    this.sock.off('close', this.onEnd);
    this.sock.pause();
    this.sock = null;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  get buffered(): number { return this.q.length; }

  async read(n: number): Promise<Buffer> {
    while (this.q.length < n) {
      if (this.ended) throw new ProtocolError(`${this.what} closed the connection`);
      this.sock?.resume();
      await new Promise<void>((res) => { this.waiter = res; });
    }
    return Buffer.from(this.q.take(n));
  }

  async u8(): Promise<number> { return (await this.read(1))[0]!; }
  async u32(): Promise<number> { return (await this.read(4)).readUInt32BE(0); }

  /** A u32-length-prefixed string, refused above max bytes. */
  async string(max: number, label: string): Promise<Buffer> {
    const len = await this.u32();
    if (len > max) throw new ProtocolError(`${label} of ${len} bytes is too long (at most ${max})`);
    return this.read(len);
  }

  /** Whatever arrived beyond what was read. */
  take(): Buffer {
    return this.q.drain();
  }
}
