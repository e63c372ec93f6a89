/** A malformed or unexpected RDP PDU: the connection is closed cleanly, the process never crashes. */
export class RdpProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RdpProtocolError';
  }
}

export function need(buf: Buffer, offset: number, n: number, what: string): void {
  if (offset < 0 || n < 0 || offset + n > buf.length) throw new RdpProtocolError(`truncated ${what}`);
}
