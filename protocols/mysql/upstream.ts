/**
 * Dial the target and log in as the session's user with our own client handshake, so that after
 * authentication the data path relays packets untouched. Supports mysql_native_password and
 * caching_sha2_password (fast auth, full auth over TLS or with the server's RSA key), optional TLS.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { constants, publicEncrypt } from 'node:crypto';
import type { Clock } from '../../policies/clock.js';
import type { TargetConfig } from '../types.js';
import { PacketConn } from './conn.js';
import {
  CAP, FORMAT_CAPS, GATEWAY_CAPS, GATEWAY_EXT_CAPS, buildHandshakeResponse, buildSslRequest, nativeToken, parseErr, parseGreeting,
  sha2Token, xor, ProtocolError, type ErrInfo, type Greeting,
} from './packets.js';

export class UpstreamError extends Error {
  constructor(message: string, readonly server?: ErrInfo) {
    super(message);
    this.name = 'UpstreamError';
  }
}

export interface Address { host: string; port: number }

export const DEFAULT_PORT = 3306;

export interface UpstreamTls { ca?: string; servername?: string; rejectUnauthorized?: boolean }

/**
 * TLS to the server from the target's options.tls, for the session login and the admin connection
 * alike: true = encrypted, not verified; { ca } = the chain and the host name (servername, else the
 * address's host) are verified. null: no TLS.
 */
export function upstreamTls(target: TargetConfig): UpstreamTls | null {
  const t = target.options['tls'];
  if (t === true) return { rejectUnauthorized: false };
  if (t && typeof t === 'object') {
    const o = t as Record<string, unknown>;
    return {
      ca: typeof o['ca'] === 'string' ? o['ca'] : undefined,
      servername: typeof o['servername'] === 'string' ? o['servername'] : undefined,
      rejectUnauthorized: typeof o['rejectUnauthorized'] === 'boolean' ? o['rejectUnauthorized'] : undefined,
    };
  }
  return null;
}

/** Whether the server's certificate is checked (chain and name): with a CA unless turned off. */
export function verifiesServer(t: UpstreamTls): boolean {
  return t.rejectUnauthorized ?? !!t.ca;
}

export interface UpstreamLogin {
  address: Address;
  user: string;
  password: string;
  database: string | null;
  /** Capability flags the client negotiated with the gateway. */
  clientCaps: number;
  /** MariaDB extended capability flags the client negotiated with the gateway. */
  clientExtCaps?: number;
  /** The client's connection attributes, passed on as they came (program name, driver version...). */
  attrs?: Buffer | null;
  /** Told the target's greeting as soon as it arrives (also when the login then fails). */
  onGreeting?: (g: Greeting) => void;
  charset: number;
  maxPacket: number;
  allowLocalFiles: boolean;
  tls?: UpstreamTls | null;
  clock: Clock;
  timeoutMs?: number;
}

export interface UpstreamSession {
  conn: PacketConn;
  greeting: Greeting;
  /** The server's final OK payload (forwarded to the client). */
  ok: Buffer;
  caps: number;
  /** MariaDB extended capabilities in use on this connection (the client's, all of which the server has). */
  extCaps: number;
}

function dial(addr: Address, clock: Clock, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ host: addr.host, port: addr.port });
    s.setNoDelay(true);
    const timer = clock.setTimer(timeoutMs, () => { s.destroy(); reject(new UpstreamError(`timed out connecting to ${addr.host}:${addr.port}`)); });
    s.once('connect', () => { timer.cancel(); s.off('error', onErr); resolve(s); });
    const onErr = (e: Error) => { timer.cancel(); reject(new UpstreamError(`cannot reach ${addr.host}:${addr.port}: ${(e as NodeJS.ErrnoException).code ?? e.message}`)); };
    s.once('error', onErr);
  });
}

export async function loginUpstream(o: UpstreamLogin): Promise<UpstreamSession> {
  const timeoutMs = o.timeoutMs ?? 15_000;
  const raw = await dial(o.address, o.clock, timeoutMs);
  const conn = new PacketConn(raw, 1024 * 1024 * 1024);
  const timer = o.clock.setTimer(timeoutMs, () => conn.destroy());
  try {
    const g0 = await conn.read();
    const greeting = parseGreeting(g0.payload);
    o.onGreeting?.(greeting);
    const server = greeting.caps;
    if (!(server & CAP.PROTOCOL_41) || !(server & CAP.SECURE_CONNECTION)) throw new UpstreamError('the target speaks a pre-4.1 protocol');
    // What the client chose passes on unchanged where the server has it; the gateway sets only
    // what it must: its own TLS, authentication, the database, LOCAL INFILE by role, no compression.
    let caps = (o.clientCaps & GATEWAY_CAPS & server) | CAP.PROTOCOL_41 | CAP.SECURE_CONNECTION;
    caps &= ~(CAP.SSL | CAP.COMPRESS);
    if (o.attrs && server & CAP.CONNECT_ATTRS) caps |= CAP.CONNECT_ATTRS;
    else caps &= ~CAP.CONNECT_ATTRS;
    if (server & CAP.PLUGIN_AUTH) caps |= CAP.PLUGIN_AUTH;
    if (server & CAP.PLUGIN_AUTH_LENENC_CLIENT_DATA) caps |= CAP.PLUGIN_AUTH_LENENC_CLIENT_DATA;
    if (!o.allowLocalFiles) caps &= ~CAP.LOCAL_FILES;
    if (o.database) caps |= CAP.CONNECT_WITH_DB & server;
    else caps &= ~CAP.CONNECT_WITH_DB;
    if ((caps & FORMAT_CAPS) !== (o.clientCaps & FORMAT_CAPS)) {
      throw new UpstreamError(`the target does not support the client's protocol options (capabilities 0x${((o.clientCaps & FORMAT_CAPS) >>> 0).toString(16)})`);
    }
    // MariaDB's extensions change packet shapes (column definitions, result set headers, bulk
    // commands): the server must have every one the client chose.
    const extCaps = (o.clientExtCaps ?? 0) & GATEWAY_EXT_CAPS;
    if ((extCaps & greeting.extCaps) !== extCaps) {
      throw new UpstreamError(`the target does not support the MariaDB protocol extensions the client chose (0x${(extCaps >>> 0).toString(16)}, the target has 0x${(greeting.extCaps >>> 0).toString(16)}); connect again`);
    }
    if (!extCaps) caps |= CAP.LONG_PASSWORD; // CLIENT_MYSQL: no extended flags follow
    let seq = 1;
    if (o.tls) {
      if (!(server & CAP.SSL)) throw new UpstreamError('the target does not offer TLS');
      caps |= CAP.SSL;
      seq = conn.send(buildSslRequest(caps, o.maxPacket, o.charset, extCaps), seq);
      const tlsOpts = o.tls;
      await conn.upgrade((s) => tlsConnect({
        socket: s,
        host: o.address.host,
        ca: tlsOpts.ca,
        servername: tlsOpts.servername ?? (/^[\d.:]+$/.test(o.address.host) ? undefined : o.address.host),
        rejectUnauthorized: verifiesServer(tlsOpts),
      }), 'secureConnect');
    }
    const secure = conn.encrypted;
    let plugin = greeting.authPlugin === 'caching_sha2_password' ? 'caching_sha2_password' : 'mysql_native_password';
    let nonce = greeting.nonce;
    const token = (pl: string, n: Buffer) => (pl === 'caching_sha2_password' ? sha2Token(o.password, n) : nativeToken(o.password, n));
    seq = conn.send(buildHandshakeResponse({
      caps, maxPacket: o.maxPacket, charset: o.charset, user: o.user, authResponse: token(plugin, nonce),
      database: o.database, authPlugin: plugin, extCaps, attrs: o.attrs,
    }), seq);
    for (let round = 0; round < 6; round++) {
      const p = await conn.read();
      seq = (p.lastSeq + 1) & 0xff;
      const b = p.payload;
      if (b.length === 0) throw new ProtocolError('empty packet from the target during login');
      if (b[0] === 0x00) {
        timer.cancel();
        return { conn, greeting, ok: b, caps, extCaps };
      }
      if (b[0] === 0xff) {
        const e = parseErr(b);
        throw new UpstreamError(`the target refused the session user: ${e.code} ${e.message}`, e);
      }
      if (b[0] === 0xfe) {
        // AuthSwitchRequest
        const end = b.indexOf(0, 1);
        plugin = b.subarray(1, end < 0 ? b.length : end).toString('latin1');
        const data = end < 0 ? Buffer.alloc(0) : b.subarray(end + 1);
        nonce = data.subarray(0, 20);
        if (plugin === 'mysql_native_password' || plugin === 'caching_sha2_password') {
          seq = conn.send(token(plugin, nonce), seq);
        } else if (plugin === 'mysql_clear_password' && secure) {
          seq = conn.send(Buffer.from(o.password + '\0', 'utf8'), seq);
        } else {
          throw new UpstreamError(`the target asked for unsupported authentication method ${plugin.slice(0, 64)}`);
        }
        continue;
      }
      if (b[0] === 0x01 && plugin === 'caching_sha2_password') {
        if (b.length === 2 && b[1] === 0x03) continue; // fast auth ok; OK follows
        if (b.length === 2 && b[1] === 0x04) {
          if (secure) seq = conn.send(Buffer.from(o.password + '\0', 'utf8'), seq);
          else seq = conn.send(Buffer.from([0x02]), seq); // ask for the server's RSA key
          continue;
        }
        // the server's public key
        const pem = b.subarray(1).toString('latin1');
        const enc = publicEncrypt({ key: pem, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' },
          xor(Buffer.from(o.password + '\0', 'utf8'), nonce));
        seq = conn.send(enc, seq);
        continue;
      }
      throw new ProtocolError(`unexpected packet 0x${b[0]!.toString(16)} from the target during login`);
    }
    throw new ProtocolError('too many authentication rounds with the target');
  } catch (e) {
    timer.cancel();
    conn.destroy();
    throw e;
  }
}
