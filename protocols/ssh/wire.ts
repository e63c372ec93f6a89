/**
 * Two SSH messages ssh2 does not expose with free text, written here on ssh2's own packet writer:
 *   - SSH_MSG_USERAUTH_BANNER (53) at any point of user authentication (ssh2 only sends one fixed
 *     banner at service accept), so a refused client reads why;
 *   - SSH_MSG_DISCONNECT (1) with a description (ssh2's disconnect() always sends an empty one).
 * Both go through the connection's cipher like every other packet.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
// ssh2 has no "exports" map: its internal helper module is reachable by path.
const { sendPacket } = require('ssh2/lib/protocol/utils.js') as {
  sendPacket(proto: unknown, packet: Buffer, bypass?: boolean): boolean;
};

interface PacketWriter {
  allocStart: number;
  allocStartKEX: number;
  alloc(len: number, forceStartKEX?: boolean): Buffer;
  finalize(packet: Buffer, force?: boolean): Buffer;
}
export interface SshProtocolInternals {
  _packetRW: { write: PacketWriter };
  _kex?: { sessionID: Buffer };
  _authsQueue?: string[];
}

export function protocolOf(conn: unknown): SshProtocolInternals | null {
  const p = (conn as { _protocol?: SshProtocolInternals } | null)?._protocol;
  return p && p._packetRW ? p : null;
}

export function sshString(v: string | Buffer): Buffer {
  const b = typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}

export function sendRaw(proto: SshProtocolInternals, payload: Buffer, bypass = false): void {
  const w = proto._packetRW.write;
  const start = bypass ? w.allocStartKEX : w.allocStart;
  const packet = w.alloc(payload.length, bypass);
  payload.copy(packet, start);
  sendPacket(proto, w.finalize(packet, bypass), bypass);
}

/** Strip control characters (except newline) so a message cannot drive the client's terminal. */
export function printable(text: string): string {
  return text.replace(/\r\n/g, '\n').replace(/[\x00-\x09\x0b-\x1f\x7f]/g, ' ');
}

export function sendBanner(conn: unknown, text: string): boolean {
  const proto = protocolOf(conn);
  if (!proto) return false;
  let msg = printable(text);
  if (!msg.endsWith('\n')) msg += '\n';
  sendRaw(proto, Buffer.concat([Buffer.from([53]), sshString(msg.replace(/\n/g, '\r\n')), sshString('')]));
  return true;
}

export const DISCONNECT = {
  PROTOCOL_ERROR: 2,
  SERVICE_NOT_AVAILABLE: 7,
  BY_APPLICATION: 11,
  NO_MORE_AUTH_METHODS_AVAILABLE: 14,
  ILLEGAL_USER_NAME: 15,
} as const;

/** Send DISCONNECT with a reason the person reads ("Received disconnect from ...: <text>"), then close. */
export function disconnectWith(conn: unknown, code: number, text: string): void {
  const c = conn as { _sock?: { end(): void; destroy(): void; writable?: boolean } } | null;
  const proto = protocolOf(conn);
  try {
    if (proto && c?._sock?.writable !== false) {
      const msg = printable(text).replace(/\n/g, ' ').slice(0, 500);
      const payload = Buffer.concat([Buffer.from([1]), Buffer.alloc(4), sshString(msg), sshString('')]);
      payload.writeUInt32BE(code, 1);
      sendRaw(proto, payload, true);
    }
  } catch { /* socket already gone */ }
  try { c?._sock?.end(); } catch { /* ignore */ }
  const t = setTimeout(() => { try { c?._sock?.destroy(); } catch { /* ignore */ } }, 2000);
  t.unref();
}

/** "Tollgate: <message>", without doubling a prefix the message already has. */
export function tollgate(message: string): string {
  return /^Tollgate:/.test(message) ? message : `Tollgate: ${message}`;
}

const { MAX_WINDOW, PACKET_SIZE } = require('ssh2/lib/Channel.js') as { MAX_WINDOW: number; PACKET_SIZE: number };

/**
 * Ask the SSH client to open an "auth-agent@openssh.com" channel (agent forwarding towards the
 * person's own agent). ssh2's server only opens forwarded-tcpip/x11 channels itself; this uses its
 * channel manager the same way, and ssh2's CHANNEL_OPEN_CONFIRMATION handler builds the Channel.
 */
export function openAgentChannel(conn: unknown, cb: (err: Error | undefined, stream?: import('node:stream').Duplex) => void): void {
  const c = conn as { _chanMgr?: { add(w: unknown): number } } | null;
  const proto = protocolOf(conn);
  if (!proto || !c?._chanMgr) { cb(new Error('ssh2 internals changed: cannot open an agent channel')); return; }
  const wrapper = Object.assign((err: Error | undefined, stream?: import('node:stream').Duplex) => cb(err, stream), { type: 'auth-agent@openssh.com' });
  const local = c._chanMgr.add(wrapper);
  if (local === -1) { cb(new Error('no free channels')); return; }
  const nums = Buffer.alloc(12);
  nums.writeUInt32BE(local, 0);
  nums.writeUInt32BE(MAX_WINDOW, 4);
  nums.writeUInt32BE(PACKET_SIZE, 8);
  sendRaw(proto, Buffer.concat([Buffer.from([90]), sshString('auth-agent@openssh.com'), nums]));
}
