/** Pull frames (TPKT or fast-path) from a socket during the connection sequence, with a size limit. */
import type { Duplex } from 'node:stream';
import { RdpProtocolError } from './errors.js';
import { FrameSplitter, type Frame } from './tpkt.js';

export class FrameReader {
  private splitter = new FrameSplitter();
  private queue: Frame[] = [];
  private waiter: (() => void) | null = null;
  private failure: Error | null = null;
  private closed = false;
  private sock: Duplex | null = null;
  private readonly onData = (c: Buffer) => {
    try {
      this.queue.push(...this.splitter.push(c));
      if (this.splitter.buffered > 70_000) throw new RdpProtocolError('oversized PDU');
    } catch (e) {
      this.failure = e as Error;
    }
    if (this.queue.length > 64) this.sock?.pause();
    this.wake();
  };
  private readonly onEnd = () => { this.closed = true; this.wake(); };
  private readonly onError = (e: Error) => { this.failure ??= e; this.wake(); };

  attach(sock: Duplex): void {
    this.sock = sock;
    this.closed = false;
    sock.on('data', this.onData);
    sock.on('end', this.onEnd);
    sock.on('close', this.onEnd);
    sock.on('error', this.onError);
    sock.resume();
  }

  /** Stop reading; returns frames and bytes not consumed yet (in order). */
  detach(): { frames: Frame[]; rest: Buffer } {
    const s = this.sock;
    if (s) {
      s.off('data', this.onData);
      s.off('end', this.onEnd);
      s.off('close', this.onEnd);
      s.off('error', this.onError);
      s.pause();
    }
    this.sock = null;
    const frames = this.queue;
    this.queue = [];
    return { frames, rest: this.splitter.take() };
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  async next(what: string): Promise<Frame> {
    for (;;) {
      const f = this.queue.shift();
      if (f) {
        if (this.queue.length < 8) this.sock?.resume();
        return f;
      }
      if (this.failure) throw this.failure instanceof RdpProtocolError ? this.failure : new RdpProtocolError(`connection error while waiting for ${what}: ${this.failure.message}`);
      if (this.closed) throw new RdpProtocolError(`the peer closed the connection while the gateway waited for ${what}`);
      await new Promise<void>((res) => { this.waiter = res; });
    }
  }
}
