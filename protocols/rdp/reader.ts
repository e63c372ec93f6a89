/** Pull frames (TPKT or fast-path) from a socket during the connection sequence, on the shared socket reader. */
import type { Duplex } from 'node:stream';
import { SocketReader } from '../reader.js';
import { RdpProtocolError } from './errors.js';
import { frameLength, parseFrame, type Frame } from './tpkt.js';

export class FrameReader {
  private readonly r = new SocketReader({
    closed: (what) => new RdpProtocolError(`the peer closed the connection while the gateway waited for ${what ?? 'a PDU'}`),
    failed: (e, what) => (e instanceof RdpProtocolError ? e : new RdpProtocolError(`connection error while waiting for ${what ?? 'a PDU'}: ${e.message}`)),
    // A TPKT frame is at most 65535 bytes: a peer that pipelines more than a few is paused.
    highWater: 256 << 10,
  });

  attach(sock: Duplex): void { this.r.attach(sock); }

  /** Stop reading; returns the frames and bytes not consumed yet (in order: whole frames first). */
  detach(): { frames: Frame[]; rest: Buffer } {
    this.r.detach();
    const frames: Frame[] = [];
    try {
      for (let f = this.parse(); f; f = this.parse()) frames.push(f);
    } catch { /* a bad header stays in the rest: whoever reads on finds it */ }
    return { frames, rest: this.r.take() };
  }

  /** One whole frame from what has arrived, or null (a bad header throws). */
  private parse(): Frame | null {
    const q = this.r.q;
    const len = frameLength(q.peek(Math.min(q.length, 4)));
    if (!len || q.length < len) return null;
    return parseFrame(Buffer.from(q.take(len)));
  }

  next(what: string): Promise<Frame> {
    return this.r.until(() => this.parse(), what);
  }
}
