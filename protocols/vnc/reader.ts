/** Reads exact byte counts from a socket during the handshakes (before the relay takes over), on the shared socket reader. */
import type { Duplex } from 'node:stream';
import { SocketReader } from '../reader.js';

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

export class ByteReader extends SocketReader {
  constructor(sock?: Duplex, what = 'the peer') {
    super({ closed: () => new ProtocolError(`${what} closed the connection`) });
    if (sock) this.attach(sock);
  }

  async u8(): Promise<number> { return (await this.read(1))[0]!; }
  async u32(): Promise<number> { return (await this.read(4)).readUInt32BE(0); }

  /** A u32-length-prefixed string, refused above max bytes. */
  async string(max: number, label: string): Promise<Buffer> {
    const len = await this.u32();
    if (len > max) throw new ProtocolError(`${label} of ${len} bytes is too long (at most ${max})`);
    return this.read(len);
  }
}
